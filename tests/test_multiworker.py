"""Several worker processes on 127.0.0.1: MultiWorkerMirroredStrategy (and JAX's multi-process
data parallelism) against one process, chief-only writes, a killed worker, resuming, bad input."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgellm.training import checkpoint
from edgellm.training.cluster import free_ports

# --clip-norm 0: Keras clips each replica's share of the gradient, so a binding clip differs from one process
SHAPE = ["--layers", "1", "--heads", "2", "--width", "32", "--context", "32", "--vocab-size", "300",
         "--batch-size", "8", "--warmup", "2", "--lr", "3e-3", "--seed", "5", "--eval-tokens", "256", "--no-xla",
         "--clip-norm", "0"]
WORKER_TIMEOUT = 300  # seconds a worker may take (two TensorFlow processes on two shared cores)
LOST_WORKER_TIMEOUT = 60  # a survivor notices a killed worker in ~35 s (training/distribute.py)


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


class Workers:
    """`edgellm train` in one process per worker; always ended, by PID, when the block ends."""

    def __init__(self, tmp: Path, args_of, n: int = 2, env: dict | None = None, ports: list[int] | None = None):
        self.tmp, self.ports = tmp, ports or free_ports(n)
        self.processes, self.logs = [], []
        for i in range(n):
            (tmp / f"tmp{i}").mkdir(parents=True, exist_ok=True)
            log = open(tmp / f"worker{i}.log", "w")
            self.logs.append(log)
            worker_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config(self.ports, i),
                          "TMPDIR": str(tmp / f"tmp{i}"), **(env or {})}
            self.processes.append(subprocess.Popen([sys.executable, "-m", "edgellm", "train", *map(str, args_of(i))],
                                                   stdout=log, stderr=subprocess.STDOUT, env=worker_env))

    def __enter__(self):
        return self

    def wait(self, timeout: float = WORKER_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        for p in self.processes:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        return [p.returncode for p in self.processes]

    def output(self, i: int) -> str:
        self.logs[i].flush()
        return (self.tmp / f"worker{i}.log").read_text()

    def __exit__(self, *exc):
        for p in self.processes:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        for log in self.logs:
            log.close()


def one_process(corpus_file, out: Path, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "edgellm", "train", corpus_file, "--out", out, *SHAPE, *args],
                            capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def val_losses(folder: Path) -> list[float]:
    return [row["val_loss"] for row in checkpoint.read_history(folder)]


def test_two_workers_match_one_process_and_only_the_chief_writes(corpus_file, tmp_path):
    run = ["--steps", "6", "--eval-interval", "3", "--cache-dir", tmp_path / "cache"]
    one_process(corpus_file, tmp_path / "one", *run, "--no-tensorboard")
    outs = [tmp_path / "chief", tmp_path / "other"]  # worker 1 is given its own --out: it must stay unwritten
    with Workers(tmp_path, lambda i: [corpus_file, "--out", outs[i], *SHAPE, *run,
                                      "--distribute", "multiworker"]) as workers:
        assert workers.wait() == [0, 0], workers.output(0)[-3000:] + workers.output(1)[-3000:]
        assert "2 replica(s)" in workers.output(0) and "worker 1 of 2" in workers.output(1)
    one, two = val_losses(tmp_path / "one"), val_losses(outs[0])
    print("validation loss, one process:", one, "two workers:", two)
    assert len(two) == 2 and two == pytest.approx(one, abs=1e-4)
    assert {p.name for p in outs[0].iterdir()} >= {"checkpoint.json", "model.weights.h5", "history.csv",
                                                   "loss_curve.png", "logs"}
    assert not outs[1].exists() and list((tmp_path / "tmp1").iterdir()) == []  # its temporary folder is gone
    export = subprocess.run([sys.executable, "-m", "edgellm", "export", outs[0], tmp_path / "model"],
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0 and "max logit difference vs Keras" in export.stderr, export.stderr[-3000:]


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_and_resume_ends_as_an_uninterrupted_run(corpus_file, tmp_path):
    run = ["--steps", "300", "--eval-interval", "20", "--cache-dir", tmp_path / "cache", "--no-tensorboard",
           "--distribute", "multiworker"]
    whole = tmp_path / "whole"
    with Workers(tmp_path / "whole-run", lambda i: [corpus_file, "--out", whole, *SHAPE, *run]) as workers:
        assert workers.wait() == [0, 0], workers.output(0)[-3000:] + workers.output(1)[-3000:]
    out = tmp_path / "shared"  # one --out for both, as on shared storage: --resume reads it on each worker
    args = [corpus_file, "--out", out, *SHAPE, *run]
    with Workers(tmp_path / "first", lambda i: args) as workers:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while not checkpoint.read_history(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers.processes[1].poll() is None, workers.output(1)[-3000:]
        os.kill(workers.processes[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        chief = workers.processes[0]
        chief.wait(timeout=LOST_WORKER_TIMEOUT)
        noticed = time.monotonic() - killed
        message = workers.output(0)
    print(f"the chief stopped {noticed:.1f} s after worker 1 was killed")
    assert chief.returncode == 1 and f"worker 1 (127.0.0.1:{workers.ports[1]}) of the cluster stopped or cannot be " \
        "reached" in message, message
    assert "Restart every worker with --resume" in message and "Traceback" not in message
    stopped_at = checkpoint.load_meta(out)["state"]["step"]
    assert 20 <= stopped_at < 300
    with Workers(tmp_path / "again", lambda i: ["--out", out, "--resume"]) as workers:
        assert workers.wait() == [0, 0], workers.output(0)[-3000:] + workers.output(1)[-3000:]
        assert f"resuming at step {stopped_at}" in workers.output(0)
    uninterrupted, resumed = val_losses(whole), val_losses(out)
    print("validation loss, uninterrupted:", uninterrupted[-1], "killed at step", stopped_at,
          "and resumed:", resumed[-1])
    assert len(resumed) == len(uninterrupted) == 15 and resumed == pytest.approx(uninterrupted, abs=1e-6)


def test_jax_processes_match_one_process(corpus_file, tmp_path):
    """jax.distributed.initialize over loopback (gloo collectives on CPU) and keras.distribution
    data parallelism: each process feeds its rows of every batch."""
    pytest.importorskip("jax")
    jax = {"KERAS_BACKEND": "jax"}
    run = ["--steps", "6", "--eval-interval", "3", "--cache-dir", tmp_path / "cache", "--no-tensorboard", "--xla"]
    result = subprocess.run([sys.executable, "-m", "edgellm", "train", corpus_file, "--out", tmp_path / "one", *SHAPE,
                             *run], capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **jax})
    assert result.returncode == 0, result.stderr[-3000:]
    with Workers(tmp_path, lambda i: [corpus_file, "--out", tmp_path / "two", *SHAPE, *run,
                                      "--distribute", "multiworker"], env=jax) as workers:
        assert workers.wait() == [0, 0], workers.output(0)[-3000:] + workers.output(1)[-3000:]
        assert "2 replica(s)" in workers.output(0)
    one, two = val_losses(tmp_path / "one"), val_losses(tmp_path / "two")
    print("JAX validation loss, one process:", one, "two processes:", two)
    assert checkpoint.load_meta(tmp_path / "two")["versions"]["backend"] == "jax"
    assert len(two) == 2 and two == pytest.approx(one, abs=1e-4)


def edgellm_train(tf_config: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgellm", "train", *map(str, args)], capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config})


@pytest.mark.parametrize("config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'TF_CONFIG must be a JSON object with a "cluster" and a "task"'),
    ('{"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     "must list the machines under cluster.worker only"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "which is not \"host:port\""),
    ('{"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 2}}',
     "task.index must be this worker's place in cluster.worker, 0 to 1. It is 2"),
])
def test_a_bad_tf_config_is_one_line(corpus_file, tmp_path, config, message):
    result = edgellm_train(config, corpus_file, "--out", tmp_path / "out", "--distribute", "multiworker", *SHAPE)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "out").exists()


def test_a_port_in_use_is_named(corpus_file, tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = edgellm_train(tf_config([port, free_ports(1)[0]], 0), corpus_file, "--out", tmp_path / "out",
                               "--distribute", "multiworker", *SHAPE)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"Port {port} of this worker is in use by another process. Received: TF_CONFIG cluster.worker[0]=" \
           f"'127.0.0.1:{port}'" in result.stderr


def test_workers_started_differently_name_the_difference(corpus_file, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[:40_000])
    files, lrs = [corpus_file, other], ["3e-3", "1e-3"]
    with Workers(tmp_path, lambda i: [files[i], "--out", tmp_path / f"out{i}", *SHAPE, "--lr", lrs[i], "--steps", "2",
                                      "--cache-dir", tmp_path / "cache", "--distribute", "multiworker"]) as workers:
        assert workers.wait() == [1, 1]
        for i in range(2):
            assert "Workers differ in --lr, the training data (or tokenizer): every worker must run the same " \
                   f"command on the same data. Received: this worker ({i}) has lr={float(lrs[i])!r}" in workers.output(i)
            assert "Traceback" not in workers.output(i)
