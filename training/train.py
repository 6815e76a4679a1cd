"""Train the edgellm Transformer on text files: `python training/train.py` or `edgellm train`.

    edgellm train data/tinyshakespeare/input.txt --out runs/shakespeare --steps 2000
    edgellm train --out runs/shakespeare --resume --steps 4000     # continue, exactly

The run is a series of Keras `fit` calls, one per evaluation interval: each trains
`--eval-interval` steps on batches that depend only on (seed, position), validates, and saves the
checkpoint folder (see checkpoint.py). Ctrl-C finishes the current step, validates and saves;
`--time-budget` does the same when the time is up; a NaN loss stops with the last good checkpoint
kept. Keras and a backend (TensorFlow by default, or JAX) are needed: `pip install 'edgellm[train]'`.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import click

from edgellm import libraries
from edgellm.training import options as options_lib


def train(files: list[str] | None, out: str | Path, *, resume: bool = False,
          force: bool = False, verbose: int = 1, callbacks: list | None = None,
          command: str | None = None, **options) -> dict:
    """Fit a model and write its checkpoint folder to `out`. Returns the final metrics.

    Args:
        files: UTF-8 text files (on `resume`, default: the checkpoint's).
        out: checkpoint folder. It must not hold a checkpoint unless `resume` or `force`.
        resume: continue the checkpoint in `out` exactly where it stopped.
        force: replace a checkpoint in `out` with a new run.
        verbose: 0 silent, 1 one line per evaluation, redrawn as steps finish on a terminal,
            2 one line per evaluation.
        callbacks: extra Keras callbacks for each `fit` call.
        command: the command line, recorded in checkpoint.json.
        **options: any TrainOptions field (options.py), e.g. steps=1000, lr=1e-3.

    Example:
        >>> metrics = train(["data/tinyshakespeare/input.txt"], "runs/tiny", steps=20, num_layers=1,
        ...                 hidden_size=32, num_heads=2, context_length=32, vocab_size=300, verbose=0)
        >>> metrics["val_loss"] > 0
        True
    """
    with contextlib.ExitStack() as stack:
        return _train(stack, files, out, resume, force, verbose, callbacks, command, options)


def _train(stack, files, out, resume, force, verbose, callbacks, command, options) -> dict:
    from edgellm.training import checkpoint

    out_dir = Path(out)  # the options and the checkpoint are checked before Keras starts
    previous = checkpoint.previous_run(out_dir, resume, force)
    opts = options_lib.resolve(options, previous and previous["training"])
    from edgellm.training import cluster as cluster_lib

    cluster = cluster_lib.for_run(opts, lambda message: _log(verbose, message))  # TF_CONFIG too

    keras = libraries.load("keras")  # and TensorFlow: quietly in `edgellm train`

    from edgellm.tokenizer import Tokenizer
    from edgellm.training import data, distribute, fine_tune, optim
    from edgellm.training.callbacks import (LossNotFinite, Progress, Recorder, RunControl, StopOnNonFiniteLoss,
                                            tensorboard_logs)
    from edgellm.training.model import build_model

    files = ([str(f) for f in files] if files else
             [f for f in (previous or {}).get("data", []) if f != (previous or {}).get("task_examples")])
    # the chief (or a single process) writes to --out; other workers to a folder removed at the end
    place = stack.enter_context(cluster_lib.writing_place(out_dir, cluster))
    if cluster is not None:
        _log(verbose, f"worker {cluster.index} of {cluster.count} ({cluster.address}): " + (
            f"the chief, writes {out_dir}" if cluster.chief else f"writes to {place} (removed at the end); "
            "the chief, worker 0, writes the checkpoint"))
    checkpoint.check_writable(place)
    keras.utils.set_random_seed(opts.seed)

    fine_tuning = bool(opts.init) and not previous  # a resumed fine-tuning run restores its own state
    if fine_tuning:
        opts = fine_tune.shape_of_init(opts, options)
    # a pretrained source's special tokens and chat template, for export
    from_source = (fine_tune.init_meta(opts.init) if fine_tuning else
                   {k: previous[k] for k in fine_tune.SOURCE_KEYS if k in (previous or {})})
    tokenizer = (Tokenizer.load(out_dir / checkpoint.TOKENIZER_FILE) if previous
                 else fine_tune.init_tokenizer(opts.init) if fine_tuning
                 else Tokenizer.load(opts.tokenizer) if opts.tokenizer else None)
    if fine_tuning and opts.examples:  # a text model becomes a task model
        from edgellm.tasks import TASK_SPECIAL_TOKENS

        tokenizer = tokenizer.with_special_tokens(TASK_SPECIAL_TOKENS)
    if opts.examples:  # a task model: prompt/completion pairs, loss on the completions only
        from edgellm.training import tasks

        if files:
            raise ValueError(f"Pass text files or examples, not both. Received: {files} and "
                             f"examples={opts.examples!r}")
        tokenizer, task, fingerprint = tasks.prepare(opts.examples, tokenizer, opts.vocab_size, opts.context_length,
                                                     opts.val_fraction, opts.too_long)
        _check_same_data(previous, fingerprint, out_dir, opts.examples)
        _log(verbose, f"{len(task.train):,} train examples, {len(task.val[0]):,} validation examples, "
                      f"{task.skipped} skipped as longer than the context")
        validation, val_tokens_per_char = task.val, 1 / task.val_chars_per_token

        def batches(start, length):
            return tasks.ExampleBatches(task.train, opts.batch_size, opts.seed, tokenizer.eos_token_id,
                                        opts.context_length, start, length, prompt_weight=opts.prompt_loss_weight)
    else:
        texts = data.read_texts(files)
        cache_dir = Path(opts.cache_dir) if opts.cache_dir else data.default_cache_dir()
        if tokenizer is None:
            _log(verbose, f"tokenizer: {opts.vocab_size} ids, learned from {len(files)} file(s)")
            tokenizer = data.train_tokenizer(texts, opts.vocab_size, opts.val_fraction, cache_dir)
        ids = data.tokenize(texts, tokenizer, opts.val_fraction, cache_dir)
        fingerprint = ids.fingerprint
        _check_same_data(previous, fingerprint, out_dir, files)
        _log(verbose, f"data: {len(ids.train):,} train tokens, {len(ids.val):,} validation tokens")
        data.WindowBatches(ids.train, opts.context_length, opts.batch_size, opts.seed)  # checks the length
        validation = data.validation_windows(ids.val, opts.context_length, opts.eval_tokens)
        targets = validation[1]
        val_tokens_per_char = targets.size / max(1, len(tokenizer.decode(targets.reshape(-1).tolist())))

        def batches(start, length):
            return data.WindowBatches(ids.train, opts.context_length, opts.batch_size, opts.seed, start, length)

    config = options_lib.model_config(opts, tokenizer.vocab_size)
    history = checkpoint.read_history(out_dir) if previous else []
    state = (previous or {}).get("state", {})
    with distribute.data_parallel(opts.distribute, opts.batch_size, cluster) as parallel:
        replicas = parallel.replicas
        position = (previous or {}).get("state", {}).get("micro_step", 0)
        parallel.agree({**{k: v for k, v in opts.to_dict().items() if k not in cluster_lib.PER_WORKER},
                        "data": fingerprint, "resume_step": position // opts.grad_accum})
        validation = parallel.validation(validation)  # every batch splits evenly over the replicas
        model = build_model(config, opts.precision, opts.attention, opts.init_std)
        adapters = _lora(model, opts, previous, out_dir) if opts.lora_rank else {}
        schedule = optim.make_schedule(opts)
        optimizer = optim.make_optimizer(model, schedule, opts)
        xla = opts.xla and distribute.xla_works(opts.distribute)
        # with loss weights (task examples) the mean is over the weighted (completion) tokens
        reduction = "mean_with_sample_weight" if opts.examples else "sum_over_batch_size"
        model.compile(optimizer=optimizer, jit_compile=xla,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction))
        model.optimizer.build(model.trainable_variables)
        if opts.time_budget is not None:
            schedule.plan_with(model.optimizer)  # the decay ends with the budget: RunControl plans it
        parallel.prepare(model, batches(0, 1)[0])
        if fine_tuning and not adapters:
            fine_tune.load_init_weights(model, opts.init)
        position = checkpoint.restore_train_state(out_dir, model) if previous else 0
        _log(verbose, f"model: {model.count_params():,} parameters, {replicas} replica(s), "
                      f"{opts.precision}, XLA {'on' if xla else 'off'}, {opts.attention} attention"
                      + (f"; LoRA rank {opts.lora_rank}: {adapters['trainable_parameters']:,} trained" if adapters else "")
                      + (f"; resuming at step {position // opts.grad_accum}" if previous else ""))
        started = time.perf_counter()  # the time budget counts from the first step's compilation on
        total = opts.steps * opts.grad_accum  # micro-batches
        control = RunControl(opts.batch_size * opts.context_length, opts.grad_accum, total, opts.time_budget, started,
                             schedule if opts.time_budget is not None else None)
        recorder = Recorder(history, control, schedule, val_tokens_per_char, started, state.get("seconds", 0.0))
        progress = [Progress(recorder, live=None if verbose == 1 else False)] if verbose else []
        fit_callbacks = [control, StopOnNonFiniteLoss(control), recorder, *progress,
                         *tensorboard_logs(place, opts.tensorboard, lambda m: _log(verbose, m)), *(callbacks or [])]

        saved = []

        def save():
            meta = {**_meta(opts, files, command, history, model, fingerprint, control, keras), **from_source,
                    **({"lora": adapters} if adapters else {})}
            checkpoint.save(place, model, tokenizer, meta, history)
            saved.append(control.step)

        interval = opts.eval_interval * opts.grad_accum
        if position >= total:
            raise ValueError(f"Nothing to train: the checkpoint in {out_dir} is already at step "
                             f"{position // opts.grad_accum}. Received: steps={opts.steps}. "
                             "Raise --steps to go on.")
        try:
            with _stop_on_ctrl_c(control, verbose, alone=parallel.workers == 1):
                while position < control.total and not (control.expired or control.interrupted):
                    end = min(control.total, (position // interval + 1) * interval)
                    control.begin(position)
                    model.fit(parallel.train_input(batches(position, end - position)), steps_per_epoch=end - position,
                              epochs=position // interval + 1, initial_epoch=position // interval,
                              validation_data=validation, validation_batch_size=parallel.validation_batch_size,
                              shuffle=False,  # batch i must be batch i, or resuming is not exact
                              callbacks=fit_callbacks, verbose=0)
                    position = control.position
                    save()
        except LossNotFinite as error:
            kept = (f"the last good checkpoint (step {history[-1]['step']}) is kept in {out_dir}"
                    if history else "no checkpoint was written yet")
            raise LossNotFinite(f"Training stopped: {error}; {kept}. Lower --lr or --clip-norm, raise "
                                "--warmup, or use --precision float32, then continue with --resume.") from None
        except Exception as error:
            if parallel.workers == 1 or not distribute.lost_worker(error):
                raise
            kept = f"step {history[-1]['step']}" if history else "none yet"
            raise distribute.WorkerLost(
                f"Training stopped: {cluster_lib.lost_workers(str(error), cluster)} stopped or cannot be "
                f"reached ({type(error).__name__}). The last checkpoint ({kept}) is in {out_dir}. Restart "
                "every worker with --resume.") from None
    if control.interrupted:
        _log(1, f"interrupted at step {control.step}; checkpoint saved in {out_dir}. Continue with: "
                f"edgellm train --out {out_dir} --resume" if saved else "interrupted before the first step")
        raise KeyboardInterrupt
    metrics = _meta(opts, files, command, history, model, fingerprint, control, keras)["metrics"]
    _log(verbose, f"step {metrics['steps']}: val loss {metrics['val_loss']:.4f} "
                  f"({metrics['val_loss_per_char']:.4f} per char), checkpoint in {out_dir}"
                  + ("" if place == out_dir else " (the chief's)"))
    return metrics


def _lora(model, opts, previous: dict | None, out_dir: Path) -> dict:
    """The base's weights into `model`, frozen, with adapters added. Returns checkpoint.json's "lora"
    section: the adapters' options, the base's path and sha256 (a resumed run checks its base)."""
    from edgellm.training import fine_tune, lora

    if previous:
        base = previous["lora"]["base"]
        lora.check_base(base, out_dir)
    else:
        base = lora.base_record(opts.init)
    fine_tune.load_init_weights(model, base["path"])
    spec = lora.Spec.of(opts)
    return {"spec": spec.to_dict(), "base": base, "trainable_parameters": lora.enable(model, spec)}


def _check_same_data(previous: dict | None, fingerprint: str, out_dir: Path, received) -> None:
    if previous and previous["state"]["data_fingerprint"] != fingerprint:
        raise ValueError(f"The training data differ from those of the checkpoint in {out_dir}. Received: "
                         f"{received}. Resume with the same data, or start a new --out.")


def _meta(opts, files, command, history, model, fingerprint, control, keras) -> dict:
    import numpy as np

    last = history[-1] if history else {}
    return {
        "command": command,
        "training": opts.to_dict(),
        "metrics": {
            "steps": last.get("step"), "tokens_seen": control.position * opts.batch_size * opts.context_length,
            "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
            "val_perplexity": last.get("val_perplexity"), "val_loss_per_char": last.get("val_loss_per_char"),
            "tokens_per_sec": last.get("tokens_per_sec"), "train_seconds": last.get("seconds"),
            "parameters": int(model.count_params()),
        },
        "data": files + ([opts.examples] if opts.examples else []),
        "task_examples": opts.examples,
        "state": {"step": control.step, "micro_step": control.position, "data_fingerprint": fingerprint,
                  "seconds": last.get("seconds", 0.0), "finished": control.step >= opts.steps},
        "versions": {"keras": keras.__version__, "backend": keras.backend.backend(), "numpy": np.__version__},
    }


@contextlib.contextmanager
def _stop_on_ctrl_c(control, verbose: int, alone: bool = True):
    """First Ctrl-C: finish the step, validate, save, then raise KeyboardInterrupt. Second: quit.
    One of several workers quits at once (the others would wait for it at the next step); the
    others stop when they notice, and --resume continues from the last checkpoint."""
    if threading.current_thread() is not threading.main_thread() or not alone:
        yield
        return

    def handler(signum, frame):
        if control.interrupted:
            raise KeyboardInterrupt
        control.interrupted = True
        _log(1, "\nCtrl-C: stopping after this step to save a checkpoint (Ctrl-C again to quit now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _log(verbose: int, message: str) -> None:
    if verbose:
        click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Checkpoint folder to write (weights, optimizer state, tokenizer, history, loss curve).")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out exactly where it stopped; "
              "its options are the defaults (shape and data options cannot change).")
@click.option("--force", is_flag=True, help="Replace a checkpoint already in --out.")
@click.option("--verbose", "-v", type=click.IntRange(0, 2), default=1,
              help="0: quiet, 1: one line per evaluation, redrawn as steps finish on a terminal, "
                   "2: one line per evaluation.")
@options_lib.click_options
@libraries.option
@click.pass_context
def command(ctx, files, out, resume, force, verbose, **values):
    """Train a decoder-only Transformer on UTF-8 text FILES.

    A byte-level BPE tokenizer is learned from the training part of the files unless --tokenizer
    is given; token ids are cached on disk. The last --val-fraction of each file is held out;
    validation loss is reported per token, as perplexity and per character. Every
    --eval-interval steps the checkpoint in --out is saved (weights, optimizer state, resolved
    options). Ctrl-C saves before exiting; --resume continues. Progress goes to stderr; the
    checkpoint folder is printed on stdout. More in docs/training.md.

    \b
    edgellm train data/tinyshakespeare/input.txt --out runs/shakespeare --steps 2000
    edgellm train --out runs/shakespeare --resume --steps 4000
    edgellm train notes.txt --out runs/notes --config run.toml --lr 3e-3 --time-budget 600
    """
    from click.core import ParameterSource

    if not resume and bool(files) == bool(values["examples"]):
        raise click.UsageError("Pass text FILES or --examples FILE (one of the two), or --resume.")
    given = {k: v for k, v in values.items() if ctx.get_parameter_source(k) != ParameterSource.DEFAULT}
    command_line = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout holds the checkpoint folder only
            train(list(files), out, resume=resume, force=force, verbose=verbose, command=command_line, **given)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except RuntimeError as error:
        from edgellm.training.callbacks import LossNotFinite  # these import Keras: only once it runs
        from edgellm.training.distribute import WorkerLost

        if isinstance(error, (LossNotFinite, WorkerLost)):
            raise click.ClickException(str(error)) from None
        raise
    except KeyboardInterrupt:
        ctx.exit(130)
    click.echo(out)


if __name__ == "__main__":
    command()
