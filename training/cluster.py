"""Several worker processes training one model: the cluster, its checks, and who writes what.

Every worker runs the same `edgellm train ... --distribute multiworker` with TF_CONFIG naming the
cluster and its own place in it (the format of tf.distribute, read for JAX as well):

    TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 0}}'

Worker 0 is the chief: it alone writes the checkpoint, the logs and the loss curve into --out.
The others write theirs to a temporary folder that is removed when they end. On --resume every
worker reads the checkpoint in --out (shared storage, or a copy of the chief's on each machine).

Example:
    >>> cluster = from_environment({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                             '"task": {"type": "worker", "index": 1}}'})
    >>> cluster.count, cluster.chief, cluster.address
    (2, False, 'b:2')
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

EXAMPLE = ('{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 0}}')
# options that may differ between workers: where each machine caches, whether the chief logs
PER_WORKER = ("cache_dir", "tensorboard")


@dataclass(frozen=True)
class Cluster:
    workers: tuple[str, ...]  # "host:port" of each worker, in TF_CONFIG's order
    index: int  # this worker's place in `workers`

    @property
    def count(self) -> int:
        return len(self.workers)

    @property
    def chief(self) -> bool:
        return self.index == 0

    @property
    def address(self) -> str:
        return self.workers[self.index]


def from_environment(environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The cluster TF_CONFIG describes, or None when it is unset or empty. A TF_CONFIG that
    cannot be used is a ValueError that says what is wrong in it."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None

    def bad(what: str):
        return ValueError(f"TF_CONFIG {what}. Received: TF_CONFIG={text[:300]!r}. Set it as {EXAMPLE} "
                          "with this worker's index (see docs/training.md).")

    try:
        doc = json.loads(text)
    except ValueError as error:
        raise bad(f"is not valid JSON ({error})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cluster"), dict) or not isinstance(doc.get("task"), dict):
        raise bad('must be a JSON object with a "cluster" and a "task" object')
    jobs = doc["cluster"]
    if set(jobs) != {"worker"}:
        raise bad(f'must list the machines under cluster.worker only (worker 0 is the chief; no chief, ps or '
                  f'evaluator jobs); it has {sorted(jobs)}')
    workers = jobs["worker"]
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) for w in workers):
        raise bad('cluster.worker must be a non-empty list of "host:port" strings')
    for address in workers:
        host, _, port = address.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise bad(f'has the address {address!r}, which is not "host:port" with a port in 1..65535')
    if len(set(workers)) != len(workers):
        raise bad("lists an address twice in cluster.worker")
    task = doc["task"]
    if task.get("type") != "worker":
        raise bad(f'task.type must be "worker". It is {task.get("type")!r}')
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(workers):
        raise bad(f"task.index must be this worker's place in cluster.worker, 0 to {len(workers) - 1}. "
                  f"It is {index!r}")
    return Cluster(tuple(workers), index)


def for_run(opts, log) -> Cluster | None:
    """The cluster of a training run with options `opts`, checked; None for a single process.
    TF_CONFIG is read before Keras (and TensorFlow) start, so a bad one is the only line printed."""
    cluster = from_environment()
    if opts.distribute != "multiworker":
        if cluster is not None:
            log(f"TF_CONFIG is set but --distribute is {opts.distribute}: training in this process alone")
        return None
    if cluster is not None and cluster.count > 1 and opts.time_budget is not None:
        raise ValueError(f"--time-budget cannot be used with several workers: each would stop at another step. "
                         f"Received: time_budget={opts.time_budget}, {cluster.count} workers. Set --steps instead.")
    if cluster is not None:
        from edgellm import libraries

        if cluster.chief or libraries.load("keras").backend.backend() == "tensorflow":
            check_port_free(cluster)  # TensorFlow: every worker listens; JAX: the coordinator
    return cluster


def free_ports(n: int) -> list[int]:
    """`n` loopback ports free now, for a cluster of local workers (each binds its own later).

    Example:
        >>> len(set(free_ports(2)))
        2
    """
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def check_port_free(cluster: Cluster) -> None:
    """Refuse early when another process already listens on this worker's port (the collective
    service would otherwise fail deep inside TensorFlow, or JAX's coordinator hang)."""
    port = int(cluster.address.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as servers bind (gRPC too): a port left in TIME_WAIT by a stopped worker is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return
            raise ValueError(f"Port {port} of this worker is in use by another process. Received: "
                             f"TF_CONFIG cluster.worker[{cluster.index}]={cluster.address!r}. Stop that process, "
                             "or give this worker a free port in TF_CONFIG on every machine.") from None


def lost_workers(error: str, cluster: Cluster) -> str:
    """Which workers an error names as lost ("worker 1 (host:port)"), or "another worker"."""
    named = sorted({int(i) for i in re.findall(r"/job:worker/(?:replica:0/)?task:(\d+)", error)} - {cluster.index})
    named = [i for i in named if i < cluster.count]
    if not named:
        return "another worker of the cluster"
    return "worker " + ", ".join(f"{i} ({cluster.workers[i]})" for i in named) + " of the cluster"


def fingerprints(items: Mapping[str, object]) -> list[int]:
    """One 32-bit hash per item, in `items`' order: what workers compare to find a difference."""
    return [zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()) for value in items.values()]


def disagreement(items: Mapping[str, object], gathered, index: int) -> str | None:
    """The message naming the items whose hashes differ between workers, or None.

    Args:
        items: what this worker compares (option name -> value; "data" -> the data fingerprint).
        gathered: (workers, len(items)) hashes, one row per worker.
        index: this worker's row.
    """
    from edgellm.training.options import flag

    differ = [name for column, name in enumerate(items)
              if len({int(row[column]) for row in gathered}) > 1]
    if not differ:
        return None
    names = ", ".join("the training data (or tokenizer)" if n == "data" else flag(n) for n in differ)
    mine = ", ".join(f"{n}={items[n]!r}" for n in differ if n != "data")
    others = [str(w) for w, row in enumerate(gathered) if list(map(int, row)) != list(map(int, gathered[index]))]
    return (f"Workers differ in {names}: every worker must run the same command on the same data. "
            f"Received: this worker ({index}) has {mine or 'other data'}; worker(s) {', '.join(others)} differ. "
            "Start every worker with the same options and files.")


@contextlib.contextmanager
def writing_place(out_dir: Path, cluster: Cluster | None):
    """The folder this worker writes its checkpoint and logs to: --out for the chief (and a single
    process), a temporary folder for the other workers, removed when the block ends."""
    if cluster is None or cluster.chief:
        yield out_dir
        return
    place = Path(tempfile.mkdtemp(prefix=f"edgellm-worker-{cluster.index}-"))
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)
