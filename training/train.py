"""Train the edgellm Transformer on text files: `python training/train.py` or `edgellm train`.

    edgellm train data/tinyshakespeare/input.txt --out runs/shakespeare --steps 2000

Writes a checkpoint folder (see checkpoint.py) with the weights, the tokenizer, the training
record, history.csv and loss_curve.png. Keras and a backend (TensorFlow by default) are needed:
`pip install 'edgellm[train]'`.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

import click


def train(
    files: list[str],
    out: str,
    tokenizer_path: str | None = None,
    vocab_size: int = 2048,
    layers: int = 4,
    heads: int = 4,
    width: int = 256,
    context: int = 128,
    dropout: float = 0.0,
    batch_size: int = 32,
    steps: int = 1000,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    eval_interval: int = 250,
    val_fraction: float = 0.1,
    seed: int = 1337,
    xla: bool = True,
    verbose: int = 1,
    command: str | None = None,
    examples: str | None = None,
    too_long: str = "skip",
) -> dict:
    """Fit a model and write its checkpoint folder to `out`. Returns the final metrics.

    Example:
        >>> metrics = train(["data/tinyshakespeare/input.txt"], "runs/tiny", steps=20, layers=1,
        ...                 width=32, heads=2, context=32, vocab_size=300, verbose=0)
        >>> metrics["val_loss"] > 0
        True
    """
    import keras
    import numpy as np

    from edgellm.config import ModelConfig
    from edgellm.tokenizer import Tokenizer
    from edgellm.training import checkpoint
    from edgellm.training.data import WindowBatches, build_corpus, read_texts, validation_windows
    from edgellm.training.model import GPT

    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_interval", eval_interval)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1. Received: {name}={value}")
    out_dir = Path(out)
    _check_writable(out_dir)
    keras.utils.set_random_seed(seed)

    if examples:
        from edgellm.tasks import TASK_SPECIAL_TOKENS, read_examples
        from edgellm.training.tasks import ExampleBatches, split_examples, task_data

        pairs = read_examples(examples)
        if tokenizer_path:
            tokenizer = Tokenizer.load(tokenizer_path)
        else:
            train_pairs = split_examples(pairs, val_fraction)[0]
            tokenizer = Tokenizer.train([e.prompt + e.completion for e in train_pairs], vocab_size,
                                        TASK_SPECIAL_TOKENS)
        task = task_data(pairs, tokenizer, context, val_fraction, too_long)
        _log(verbose, f"{len(task.train):,} train examples, {len(task.val[0]):,} validation examples, "
                      f"{task.skipped} skipped as longer than the context")
    else:
        texts = read_texts(files)
        if tokenizer_path:
            tokenizer = Tokenizer.load(tokenizer_path)
        else:
            _log(verbose, f"training a {vocab_size}-token tokenizer on {len(files)} file(s)")
            tokenizer = Tokenizer.train([t[: len(t) - int(len(t) * val_fraction)] for t in texts], vocab_size)
        corpus = build_corpus(texts, tokenizer, val_fraction)
        _log(verbose, f"{len(corpus.train_ids):,} train tokens, {len(corpus.val_ids):,} validation tokens")

    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=context, num_layers=layers,
                         num_heads=heads, hidden_size=width, dropout=dropout)
    model = GPT(config).build_weights()
    _log(verbose, f"model: {model.count_params():,} parameters")

    eval_interval = min(eval_interval, steps)
    epochs = math.ceil(steps / eval_interval)
    if examples:
        batches = ExampleBatches(task.train, batch_size, eval_interval, seed, tokenizer.eos_token_id)
        validation = task.val  # (inputs, targets, weights): completion tokens only
        tokens_per_char = 1 / task.val_chars_per_token
    else:
        batches = WindowBatches(corpus.train_ids, context, batch_size, eval_interval, seed)
        validation = validation_windows(corpus.val_ids, context)
        # characters that the validation targets spell, for loss per character
        tokens_per_char = validation[1].size / len(tokenizer.decode(validation[1].reshape(-1).tolist()))

    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, epochs * eval_interval - warmup), alpha=0.1,
        warmup_target=lr, warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay,
                                       beta_1=0.9, beta_2=0.95, global_clipnorm=1.0)
    # decay matrices only: not embeddings, norms or biases
    optimizer.exclude_from_weight_decay(var_names=["embeddings", "gamma", "beta", "bias"])
    model.compile(optimizer=optimizer,
                  # with loss weights (task examples) the mean is over weighted (completion) tokens
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True, reduction="mean_with_sample_weight" if examples else "sum_over_batch_size"),
                  jit_compile=xla)  # XLA: about 7x faster on CPU under TensorFlow

    history: list[dict] = []
    started = time.perf_counter()

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            batches.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * eval_interval
            val_loss = float(logs["val_loss"])
            history.append({
                "step": step, "train_loss": float(logs["loss"]), "val_loss": val_loss,
                "val_loss_per_char": val_loss * tokens_per_char,
                "lr": float(schedule(step - 1)), "seconds": time.perf_counter() - started,
            })

    model.fit(batches, epochs=epochs, validation_data=validation, validation_batch_size=batch_size,
              callbacks=[Record()], verbose=verbose)

    final = history[-1]
    metrics = {
        "steps": final["step"],
        "tokens_seen": final["step"] * batch_size * context,
        "train_loss": final["train_loss"],
        "val_loss": final["val_loss"],
        "val_perplexity": math.exp(final["val_loss"]),
        "val_loss_per_char": final["val_loss_per_char"],
        "train_seconds": final["seconds"],
        "parameters": int(model.count_params()),
    }
    options = dict(vocab_size=tokenizer.vocab_size, context=context, layers=layers, heads=heads,
                   width=width, dropout=dropout, batch_size=batch_size, steps=steps, lr=lr,
                   warmup=warmup, weight_decay=weight_decay, eval_interval=eval_interval,
                   val_fraction=val_fraction, seed=seed, xla=xla)
    meta = {
        "command": command,
        "training": options,
        "metrics": metrics,
        "data": [str(f) for f in files] + ([examples] if examples else []),
        "task_examples": examples,
        "versions": {"keras": keras.__version__, "backend": keras.backend.backend(),
                     "numpy": np.__version__},
    }
    checkpoint.save(out_dir, model, tokenizer, meta)
    _write_history(out_dir, history)
    _log(verbose, f"val loss {metrics['val_loss']:.4f} ({metrics['val_loss_per_char']:.4f} per char), "
                  f"checkpoint in {out_dir}")
    return metrics


def _write_history(out_dir: Path, history: list[dict]) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(steps, [h["val_loss"] for h in history], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curve.png", dpi=100)
    plt.close(fig)


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"Output folder {out_dir} is not writable: {error.strerror}. "
                         "Choose another --out.") from None


def _log(verbose: int, message: str) -> None:
    if verbose:
        click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Checkpoint folder to write (weights, tokenizer, history, loss curve).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True, dir_okay=False),
              help="Reuse this tokenizer.json instead of training one.")
@click.option("--vocab-size", default=2048, help="Vocabulary size of the tokenizer to train.")
@click.option("--layers", default=4, help="Transformer blocks.")
@click.option("--heads", default=4, help="Attention heads per block.")
@click.option("--width", default=256, help="Hidden size (must divide by --heads).")
@click.option("--context", default=128, help="Context length in tokens.")
@click.option("--dropout", default=0.0, help="Dropout rate.")
@click.option("--batch-size", default=32, help="Windows per step.")
@click.option("--steps", default=1000, help="Optimizer steps.")
@click.option("--lr", default=1e-3, help="Peak learning rate (AdamW, warmup then cosine to 10%).")
@click.option("--warmup", default=100, help="Linear warmup steps.")
@click.option("--weight-decay", default=0.1, help="AdamW weight decay on matrices.")
@click.option("--eval-interval", default=250, help="Steps between validation runs and log rows.")
@click.option("--val-fraction", default=0.1, help="Last fraction of each file held out for validation.")
@click.option("--seed", default=1337, help="Seed for weights, batches and dropout.")
@click.option("--examples", type=click.Path(exists=True, dir_okay=False),
              help="Train a task model on prompt/completion pairs (JSONL or TSV) instead of FILES.")
@click.option("--too-long", type=click.Choice(["skip", "error"]), default="skip",
              help="Examples longer than the context: skip and count them, or stop.")
@click.option("--xla/--no-xla", default=True, help="Compile the training step with XLA.")
def command(files, out, tokenizer_path, **options):
    if bool(files) == bool(options["examples"]):
        raise click.UsageError("Pass text FILES or --examples FILE (one of the two).")
    """Train a decoder-only Transformer on UTF-8 text FILES.

    A byte-level BPE tokenizer is trained on the training part of the files unless --tokenizer
    is given. The last --val-fraction of each file is held out; validation loss is reported per
    token and per character.
    """
    try:
        command_line = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
        train(list(files), out, tokenizer_path=tokenizer_path, command=command_line, **options)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    command()
