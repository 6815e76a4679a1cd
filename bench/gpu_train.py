"""Training on a GPU: edgellm's own loop against a bare Keras `fit` and a compiled PyTorch GPT, and
the quality that 90 seconds of `edgellm train` reach on tinyshakespeare.

    KERAS_BACKEND=jax python bench/gpu_train.py --report OUT      # all parts: about 6 minutes on an H200
    KERAS_BACKEND=jax python bench/gpu_train.py --smoke           # tiny shapes, a few steps, on the CPU
    python bench/gpu_train.py --parts nano-edgellm,nano-torch     # some parts only

Speed, for nanoGPT's shakespeare-char shape (6 layers, 6 heads, width 384, context 256, batch 64,
a byte-level vocabulary of 257 ids) and GPT-2 small's (12 layers, 12 heads, width 768, context
1,024, batch 16, 50,304 ids: a 512-id BPE tokenizer padded with unused ids to GPT-2's padded
size), each in a fresh process:

- `edgellm`: `edgellm.training.train.train` itself (its data pipeline, callbacks, validation and
  checkpoint) on data/tinyshakespeare/input.txt, bfloat16, fused attention;
- `keras-fit`: the same GPT class and optimizer compiled and fit on arrays of windows of the same
  token ids, with no callback of edgellm's and no pipeline: what the loop costs is the difference;
- `torch`: a plain PyTorch GPT of the same shape (bench/torch_gpt.py), nanoGPT's recipe.

Tokens/s are steady state: from the end of step `skip` to the end of the last step, so
compilation is left out (Keras: completion times of the batches, seen by a callback; PyTorch: a
synchronised clock around the timed steps). Model FLOPs utilisation = tokens/s x FLOPs per token
/ peak, with FLOPs per token = 6 N + 12 L T C (nanoGPT's and PaLM's estimate: N parameters
without the position table, the tied embedding counted once as the output layer; L layers,
context T, width C; attention counted as if not causal) and peak = 989 TFLOP/s, the H200's
dense bfloat16 datasheet figure (the machine's own matrix products reached about 790 here).

Quality: `edgellm train` as a user runs it (a fresh process, nanoGPT's shakespeare-char recipe:
byte-level, dropout 0.2, lr 1e-3, beta2 0.99, bfloat16, fused attention), with the step count
planned from the `nano-edgellm` part's speed and `--time-budget` so that the whole command,
start included, takes at most `--quality-seconds` (90). The figure is the best validation loss
per character over the evaluations; nanoGPT's reference is 1.468 at 83 s (given, not rerun here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gpu_measure import PEAK_FLOPS, keras_device, step_timer, table  # bench/, beside this file

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "tinyshakespeare" / "input.txt"
SHAPES = {  # vocab: the model's ids; bpe: the ids a tokenizer learns (the rest are unused)
    "nano": dict(layers=6, heads=6, width=384, context=256, batch=64, vocab=257, bpe=257, steps=600, skip=50),
    "gpt2": dict(layers=12, heads=12, width=768, context=1024, batch=16, vocab=50304, bpe=512, steps=150, skip=20),
}
SMOKE_SHAPES = {
    "nano": dict(layers=2, heads=2, width=64, context=64, batch=8, vocab=257, bpe=257, steps=10, skip=3),
    "gpt2": dict(layers=2, heads=2, width=64, context=128, batch=4, vocab=1024, bpe=300, steps=10, skip=3),
}
QUALITY = dict(vocab_size=257, num_layers=6, num_heads=6, hidden_size=384, context_length=256, batch_size=64,
               dropout=0.2, lr=1e-3, min_lr_ratio=0.1, warmup=100, beta2=0.99, weight_decay=0.1, precision="bfloat16",
               attention="fused")  # training options, passed as `edgellm train` flags
SMOKE_QUALITY = dict(QUALITY, num_layers=2, num_heads=2, hidden_size=64, context_length=64, batch_size=16, warmup=5)
PARTS = ["nano-edgellm", "nano-keras-fit", "nano-torch", "quality", "gpt2-edgellm", "gpt2-keras-fit", "gpt2-torch"]


# ---- data shared by the parts --------------------------------------------------------------------

def tokenizer_file(shape: dict, work: Path) -> Path:
    """tokenizer.json with `bpe` learned ids (cached), padded with unused special ids to `vocab`."""
    from edgellm.tokenizer import Tokenizer
    from edgellm.training import data

    path = work / f"tokenizer-{shape['bpe']}-{shape['vocab']}.json"
    if not path.exists():
        learned = data.train_tokenizer(data.read_texts([DATA]), shape["bpe"], 0.1, work / "cache")
        unused = [f"<|unused_{i}|>" for i in range(shape["vocab"] - learned.vocab_size)]
        vocab = learned.token_bytes + [u.encode() for u in unused]
        specials = {**learned.special_tokens, **{u: learned.vocab_size + i for i, u in enumerate(unused)}}
        Tokenizer(vocab, list(learned.merges), specials).save(path)
    return path


def train_ids(shape: dict, work: Path):
    """The training token ids, as edgellm's pipeline stores them (the learned tokenizer gives the
    same ids as the padded one)."""
    from edgellm.training import data

    texts = data.read_texts([DATA])
    learned = data.train_tokenizer(texts, shape["bpe"], 0.1, work / "cache")
    return data.tokenize(texts, learned, 0.1, work / "cache").train


# ---- the parts -----------------------------------------------------------------------------------

def run_edgellm(shape: dict, work: Path, name: str, attention: str) -> dict:
    import keras

    from edgellm.training.train import train

    timer, steps = step_timer(), shape["skip"] + shape["steps"] + 1
    started = time.perf_counter()
    metrics = train([str(DATA)], work / name, force=True, tokenizer=str(tokenizer_file(shape, work)),
                    cache_dir=str(work / "cache"), num_layers=shape["layers"], num_heads=shape["heads"],
                    hidden_size=shape["width"], context_length=shape["context"], batch_size=shape["batch"], steps=steps,
                    eval_interval=steps, eval_tokens=shape["batch"] * shape["context"], warmup=10,
                    precision="bfloat16", attention=attention, tensorboard=False, verbose=0, callbacks=[timer])
    return {**timer.figures(shape["skip"], shape["batch"] * shape["context"]),
            "wall_seconds": time.perf_counter() - started, "loss": metrics["train_loss"],
            "parameters": metrics["parameters"], "position_parameters": shape["context"] * shape["width"],
            "attention": attention, "device": keras_device(), "backend": keras.backend.backend()}


def run_keras_fit(shape: dict, work: Path, attention: str) -> dict:
    import keras
    import numpy as np

    from edgellm.folder.config import ModelConfig
    from edgellm.training import optim, options
    from edgellm.training.model import build_model

    ids = train_ids(shape, work)
    batches = shape["skip"] + shape["steps"] + 1
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(ids) - shape["context"], size=batches * shape["batch"])
    windows = np.asarray(ids)[starts[:, None] + np.arange(shape["context"] + 1)].astype("int32")
    config = ModelConfig(vocab_size=shape["vocab"], context_length=shape["context"], num_layers=shape["layers"],
                         num_heads=shape["heads"], hidden_size=shape["width"])
    model = build_model(config, "bfloat16", attention)
    opts = options.resolve({"steps": batches, "warmup": 10})
    model.compile(optimizer=optim.make_optimizer(model, optim.make_schedule(opts), opts), jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = step_timer()
    history = model.fit(windows[:, :-1], windows[:, 1:], batch_size=shape["batch"], epochs=1, shuffle=False,
                        verbose=0, callbacks=[timer])
    return {**timer.figures(shape["skip"], shape["batch"] * shape["context"]), "loss": history.history["loss"][-1],
            "parameters": int(model.count_params()), "position_parameters": shape["context"] * shape["width"],
            "attention": attention, "device": keras_device(), "backend": keras.backend.backend()}


def run_torch(shape: dict, work: Path) -> dict:
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"skipped": "torch is not installed"}
    sys.path.insert(0, str(Path(__file__).parent))
    from torch_gpt import train_speed

    return train_speed(shape, train_ids(shape, work), steps=shape["steps"], warmup=shape["skip"] + 1)


def run_quality(args, planned_rate: float | None, first_step_seconds: float | None) -> dict:
    """`edgellm train` in a fresh process, planned to end within args.quality_seconds."""
    settings = SMOKE_QUALITY if args.smoke else QUALITY
    tokens_per_step = settings["batch_size"] * settings["context_length"]
    budget = args.quality_seconds - args.quality_overhead  # left for training (compilation included)
    steps = args.quality_steps
    evaluations = 8  # each validates and saves the checkpoint: about a second for this shape, guessed
    if planned_rate and not args.smoke:  # as many as fit, at most nanoGPT's 5000 (its schedule)
        compile_seconds = first_step_seconds or 20.0
        seconds = budget - compile_seconds - evaluations
        steps = min(steps, int(0.9 * seconds * planned_rate / tokens_per_step))
    steps = max(steps, evaluations)
    out = args.work / "quality"
    command = [sys.executable, "-m", "edgellm", "train", str(DATA), "--out", str(out), "--force",
               "--cache-dir", str(args.work / "cache"), "--no-tensorboard", "--verbose", "2",
               "--steps", str(steps), "--eval-interval", str(steps // evaluations), "--time-budget", f"{budget:g}"]
    from edgellm.training.options import flag

    for key, value in settings.items():
        command += [flag(key), str(value)]
    print("quality:", " ".join(command[1:]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    # run from outside the checkout: `-m edgellm` from its root would import ./edgellm, which lacks
    # the training package where edgellm is not installed (the device script's PYTHONPATH has it)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, cwd=args.work,
                            timeout=args.quality_seconds + 120)
    wall = time.perf_counter() - started
    if result.returncode:
        return {"error": f"edgellm train exited with {result.returncode}", "wall_seconds": wall}
    from edgellm.training import checkpoint

    rows = checkpoint.read_history(out)
    best = min(rows, key=lambda row: row["val_loss_per_char"])
    for name in (checkpoint.HISTORY_FILE, checkpoint.CURVE_FILE):
        if (out / name).exists():
            shutil.copy(out / name, args.report / f"quality_{name}")
    return {"best_val_loss_per_char": best["val_loss_per_char"], "best_at_step": best["step"],
            "last_val_loss_per_char": rows[-1]["val_loss_per_char"], "steps": rows[-1]["step"],
            "planned_steps": steps, "train_seconds": rows[-1]["seconds"], "wall_seconds": wall,
            "tokens_per_sec": rows[-1]["tokens_per_sec"], "command": "edgellm " + " ".join(command[3:])}


def run_part(name: str, args, results: dict) -> dict:
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    if name == "quality":
        nano = results.get("nano-edgellm", {})
        return run_quality(args, nano.get("tokens_per_sec"), nano.get("first_step_seconds"))
    shape_name, kind = name.split("-", 1)
    shape = shapes[shape_name]
    if kind == "edgellm":
        return run_edgellm(shape, args.work, name, args.attention)
    if kind == "keras-fit":
        return run_keras_fit(shape, args.work, args.attention)
    return run_torch(shape, args.work)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, few steps: checks the script on a CPU")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--attention", default="fused", choices=("fused", "standard"))
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-gpu", help="checkpoints and caches")
    parser.add_argument("--report", type=Path, default=None, help="gpu_train.json and the quality curve [--work]")
    parser.add_argument("--quality-seconds", type=float, default=90.0, help="wall-clock of the whole quality command")
    parser.add_argument("--quality-overhead", type=float, default=15.0,
                        help="seconds of it not in --time-budget: start, data, final validation and save")
    parser.add_argument("--quality-steps", type=int, default=5000, help="at most this many steps")
    parser.add_argument("--part-timeout", type=float, default=150.0, help="seconds for each part's process")
    parser.add_argument("--in-process", action="store_true", help="run the parts in this process (default "
                        "with --smoke); otherwise each in a fresh one, as a GPU needs")
    parser.add_argument("--run-part", help=argparse.SUPPRESS)  # internal: one part, result as JSON on stdout
    parser.add_argument("--given", default="{}", help=argparse.SUPPRESS)  # internal: earlier results
    args = parser.parse_args()
    if args.smoke:
        args.quality_seconds, args.quality_overhead, args.quality_steps = 40.0, 25.0, 30
    args.report = args.report or args.work
    args.work.mkdir(parents=True, exist_ok=True)
    args.report.mkdir(parents=True, exist_ok=True)
    if args.run_part:
        print("RESULT " + json.dumps(run_part(args.run_part, args, json.loads(args.given))), flush=True)
        return
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}. Choose from: {', '.join(PARTS)}")
    if not args.smoke:  # the bare fit may compile the very step the edgellm part compiled
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(args.work / "jax-cache"))
    results, started = {}, time.perf_counter()
    for name in parts:
        t0 = time.perf_counter()
        if args.in_process or args.smoke:
            results[name] = run_part(name, args, results)
        else:
            results[name] = _subprocess_part(name, args, results)
        results[name]["part_seconds"] = time.perf_counter() - t0
        print(f"[{time.perf_counter() - started:6.1f} s] {name}: {json.dumps(results[name])}", flush=True)
        (args.report / "gpu_train.json").write_text(json.dumps(
            {"smoke": args.smoke, "peak_flops": PEAK_FLOPS, "shapes": SMOKE_SHAPES if args.smoke else SHAPES,
             "results": results}, indent=2) + "\n")
    print(f"\nall parts: {time.perf_counter() - started:.0f} s\n\n{table(results, SMOKE_SHAPES if args.smoke else SHAPES)}", flush=True)


def _subprocess_part(name: str, args, results: dict) -> dict:
    command = [sys.executable, __file__, "--run-part", name, "--given", json.dumps(results), "--work", str(args.work),
               "--report", str(args.report), "--attention", args.attention,
               "--quality-seconds", str(args.quality_seconds), "--quality-overhead", str(args.quality_overhead),
               "--quality-steps", str(args.quality_steps)] + (["--smoke"] if args.smoke else [])
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
                                timeout=args.part_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.part_timeout:.0f} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        return {"error": f"exit code {result.returncode}", "stdout": result.stdout[-500:]}
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    main()
