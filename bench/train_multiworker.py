"""Training throughput of two worker processes on this machine against one process.

Both train the same shape on tinyshakespeare with the same global batch, seed and steps; the two
workers run `--distribute multiworker` over 127.0.0.1 (TF_CONFIG), so each computes half of
every batch and they all-reduce gradients over loopback. XLA is off in both (TensorFlow's
strategies do not use it on CPU devices), and so is gradient clipping (Keras clips each replica's
share, so a binding --clip-norm makes the two runs differ). Prints tokens per second (measured by the training
run from its first finished step on, so start-up and compilation are left out), wall-clock
seconds and the final validation loss.

    nice python bench/train_multiworker.py [--steps 60] [--width 128] [--batch-size 32]

On a machine with two cores the two workers share the same cores one process already uses, so
this shows the cost of the protocol (splitting, all-reduce, health checks), not the speed-up of
adding machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgellm.training.cluster import free_ports

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "tinyshakespeare" / "input.txt"


def run(workers: int, out: Path, flags: list[str]) -> dict:
    """`edgellm train` in `workers` processes (1: a plain run); the chief's figures."""
    ports = free_ports(workers)
    processes = []
    started = time.perf_counter()
    for i in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        extra = []
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": i}})
            extra = ["--distribute", "multiworker"]
        processes.append(subprocess.Popen([sys.executable, "-m", "edgellm", "train", str(DATA), "--out", str(out),
                                           *flags, *extra], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    try:
        errors = [p.communicate(timeout=1800)[1] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    wall = time.perf_counter() - started
    if any(p.returncode for p in processes):
        raise SystemExit(f"a run failed:\n{errors[0][-2000:]}\n{errors[-1][-2000:]}")
    metrics = json.loads((out / "checkpoint.json").read_text())["metrics"]
    return {"tokens_per_sec": metrics["tokens_per_sec"], "wall": wall, "val_loss": metrics["val_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        flags = ["--layers", "2", "--heads", "4", "--width", str(args.width), "--context", "128",
                 "--vocab-size", "512", "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                 "--eval-interval", str(args.steps), "--eval-tokens", "4096", "--no-xla", "--no-tensorboard",
                 "--clip-norm", "0",  # Keras clips each replica's gradient: with clipping the runs would differ
                 "--cache-dir", str(work / "cache"), "--force"]
        run(1, work / "warm", [*flags, "--steps", "1", "--eval-interval", "1"])  # fills the token cache
        load = os.getloadavg()[0]
        one = run(1, work / "one", flags)
        two = run(2, work / "two", flags)
    print(f"shape: 2 layers, width {args.width}, context 128, global batch {args.batch_size}, {args.steps} steps; "
          f"{os.cpu_count()} CPU cores, load average {load:.2f} before")
    print("\n| run | tokens/s | ratio | wall s | val loss |\n|---|---|---|---|---|")
    for name, r in (("one process", one), ("two workers, 127.0.0.1", two)):
        print(f"| {name} | {r['tokens_per_sec']:,.0f} | {r['tokens_per_sec'] / one['tokens_per_sec']:.2f} | "
              f"{r['wall']:.1f} | {r['val_loss']:.4f} |")


if __name__ == "__main__":
    main()
