"""How good a model does 100 seconds of CPU training give? Validation loss per character on
tinyshakespeare, against nanoGPT's quick CPU run.

    nice python bench/train_quality.py                      # the tuned shape below
    nice python bench/train_quality.py --width 96 --lr 3e-3 # any `edgellm train` option overrides it

Data: data/tinyshakespeare/input.txt, first 90% train, last 10% validation (nanoGPT's split).
Budget: 100 s of training wall-clock (`--time-budget`), XLA compilation included; tokenizer
training and tokenization (cached) are not counted. The steps are planned by `--time-budget`
itself from the speed measured as training goes (training/callbacks.py, RunControl), so the
cosine schedule ends with the budget however the machine's load changes. The figure is the loss
on the whole validation split.

Reference: nanoGPT's quick CPU config (`python train.py config/train_shakespeare_char.py
--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`) took
about 100 s on this kind of 2-core machine and reached 1.8857 nats per character (character-level
model: its loss per token is its loss per character). It is a figure measured once, not rerun here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "tinyshakespeare" / "input.txt"
NANOGPT_LOSS_PER_CHAR = 1.8857
# the tuned shape: in 100 s on 2 cores a small, shallow model that takes many steps wins
TUNED = dict(vocab_size=512, num_layers=2, num_heads=4, hidden_size=96, context_length=128, batch_size=16,
             dropout=0.0, lr=4e-3, warmup=50, min_lr_ratio=0.1, weight_decay=0.1, beta2=0.99, clip_norm=1.0)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=100.0, help="training seconds")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-quality"))
    from edgellm.training.options import flag

    for name, value in TUNED.items():  # the flags of `edgellm train`: --layers for num_layers
        parser.add_argument(flag(name), dest=name, type=type(value), default=value)
    args = parser.parse_args()
    shape = {name: getattr(args, name) for name in TUNED}

    import numpy as np

    from edgellm.training import data
    from edgellm.training.train import train

    load_before = os.getloadavg()
    cap = 10**6  # --steps only caps the plan; one evaluation, at the end
    started = time.perf_counter()
    metrics = train([DATA], args.out, steps=cap, eval_interval=cap, time_budget=args.budget, val_fraction=0.1,
                    tensorboard=False, verbose=0, force=True, **shape)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()

    chars = len(data.split_text(data.read_texts([DATA])[0], 0.1)[1])  # evaluated whole (eval_tokens = 0)
    print(f"\nshape: {shape}")
    print(f"trained {metrics['steps']} steps in {metrics['train_seconds']:.1f} s "
          f"(budget {args.budget:.0f} s; {wall:.1f} s with data preparation, the final validation and save), "
          f"{metrics['tokens_per_sec']:,.0f} tokens/s, {metrics['parameters']:,} parameters")
    print(f"validation: {metrics['val_loss']:.4f} nats/token, perplexity {metrics['val_perplexity']:.2f}, "
          f"{metrics['val_loss_per_char']:.4f} nats/char over {chars:,} characters")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores)")
    print(f"\n| run | val loss per char | ratio to nanoGPT |\n|---|---|---|\n"
          f"| nanoGPT quick CPU config (reference) | {NANOGPT_LOSS_PER_CHAR:.4f} | 1.000 |\n"
          f"| edgellm, {args.budget:.0f} s | {metrics['val_loss_per_char']:.4f} | "
          f"{metrics['val_loss_per_char'] / NANOGPT_LOSS_PER_CHAR:.3f} |")
    assert np.isfinite(metrics["val_loss_per_char"])


if __name__ == "__main__":
    main()
