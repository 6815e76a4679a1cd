"""Checkpoint folder: what training writes, `--resume` continues and export reads.

    CHECKPOINT/
      checkpoint.json     format_version, architecture (ModelConfig), resolved training options
                          (the shape under ModelConfig's names; older checkpoints' short names are
                          mapped on reading), metrics, data, state (step, micro-step, data
                          fingerprint, seconds)
      model.weights.h5    Keras weights; a LoRA run (lora.py) writes adapters.npz instead (A
                          and B of each adapter only), and checkpoint.json's "lora" names their base (path, sha256)
      train_state.npz     optimizer variables (moments, step counter, accumulators) and the
                          dropout seed states: what an exact `--resume` needs beyond the weights
      tokenizer.json      the tokenizer the ids came from
      history.csv         step, train loss, validation loss (per token, perplexity, per char), lr,
                          tokens/s, seconds: one row per evaluation
      loss_curve.png      the loss curve

Every file is first written under a temporary name; the renames follow in a burst, with
checkpoint.json last and Ctrl-C held off meanwhile, so an interrupted save leaves the previous
checkpoint whole. train_state.npz repeats the micro-step, so a mix of two saves is detected.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np

from edgellm.folder import json_file
from edgellm.folder.config import ModelConfig
from edgellm.tokenizer import Tokenizer
from edgellm.training import options

FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.weights.h5"
ADAPTERS_FILE = "adapters.npz"  # a LoRA run's weights: its adapters (lora.py)
STATE_FILE = "train_state.npz"
TOKENIZER_FILE = "tokenizer.json"
HISTORY_FILE = "history.csv"
CURVE_FILE = "loss_curve.png"
FIX = "The checkpoint is damaged: train again into a new --out, or restore the folder from a copy."

PLAN_VARIABLE = "planned_steps"  # the time budget's plan of the schedule (optim.py), not saved


def save(out_dir: Path, model, tokenizer: Tokenizer, meta: dict, history: list[dict] | None = None) -> None:
    """Write weights, training state, tokenizer, history, curve and metadata into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []  # (temporary, final)

    def stage(name: str) -> Path:
        tmp = out_dir / f".tmp.{name}"  # keeps the suffix: Keras wants .weights.h5
        staged.append((tmp, out_dir / name))
        return tmp

    try:
        if meta.get("lora"):
            _save_arrays(stage(ADAPTERS_FILE), _lora().adapters(model))
        else:
            _save_weights(model, stage(WEIGHTS_FILE))
        micro_step = int(meta.get("state", {}).get("micro_step", 0))
        _save_train_state(stage(STATE_FILE), model, micro_step)
        tokenizer.save(stage(TOKENIZER_FILE))
        if history:
            _write_history(stage(HISTORY_FILE), stage(CURVE_FILE), history)
        doc = {"format_version": FORMAT_VERSION, "architecture": model.config.to_dict(), **meta}
        stage(META_FILE).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        with _interrupts_held():
            for tmp, final in staged:
                os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def load_meta(ckpt_dir: Path) -> dict:
    """Read and check checkpoint.json (each field training and export read, with its type); the
    weights are loaded by `load_model`."""
    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / META_FILE
    if not meta_path.is_file():
        raise ValueError(f"Not an edgellm checkpoint: {meta_path} is missing. "
                         "Pass the folder that `edgellm train --out` wrote.")
    meta = json_file.read_object(meta_path, FIX)
    version = meta.doc.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise meta.error("format_version", f"must be {FORMAT_VERSION}", version)
    meta.build("architecture", ModelConfig.from_dict, meta.get("architecture", dict))
    state = meta.section("state")
    for key, kind in (("step", int), ("micro_step", int), ("data_fingerprint", str), ("seconds", float)):
        value = state.get(key, kind)
        if kind is not str and value < 0:
            raise state.error(key, "must be >= 0", value)
    data = meta.get("data", list, [])
    if not all(isinstance(f, str) for f in data):
        raise meta.error("data", "must be a list of file paths", data)
    meta.get("task_examples", (str, type(None)), None)
    meta.get("command", (str, type(None)), None)
    for key in ("metrics", "versions"):
        meta.section(key, {})
    if "lora" in meta.doc:
        lora = meta.section("lora")
        lora.section("spec")
        base = lora.section("base")
        base.get("path", str), base.get("sha256", str)
    for name in (ADAPTERS_FILE if "lora" in meta.doc else WEIGHTS_FILE, TOKENIZER_FILE):
        if not (ckpt_dir / name).is_file():
            raise ValueError(f"Checkpoint {ckpt_dir} is incomplete: {name} is missing.")
    # older checkpoints spelled the shape's options as the flags (layers, width, kv_heads, ...)
    meta.doc["training"] = options.canonical(meta.get("training", dict, {}), f"{meta_path} (training)")
    meta.build("training", options.resolve, {}, meta.doc["training"])
    return meta.doc


def load_model(ckpt_dir: Path, merge: bool = True):
    """Build the Keras model from checkpoint.json and load its weights. A LoRA checkpoint's base is
    loaded (and checked) with its adapters, merged into the weights unless `merge` is False.

    Example:
        >>> model, tokenizer, meta = load_model("runs/shakespeare")
        >>> meta["metrics"]["val_loss_per_char"]
    """
    from edgellm.training.model import GPT

    meta = load_meta(ckpt_dir)
    if "lora" in meta:
        lora = _lora()
        model = lora.with_base(meta["lora"], Path(ckpt_dir))
        lora.load_adapters(model, _read_arrays(Path(ckpt_dir) / ADAPTERS_FILE), Path(ckpt_dir) / ADAPTERS_FILE)
        return (lora.merged(model) if merge else model), Tokenizer.load(Path(ckpt_dir) / TOKENIZER_FILE), meta
    model = GPT(ModelConfig.from_dict(meta["architecture"])).build_weights()
    _load_weights(model, Path(ckpt_dir) / WEIGHTS_FILE)
    return model, Tokenizer.load(Path(ckpt_dir) / TOKENIZER_FILE), meta


def previous_run(out_dir: Path, resume: bool, force: bool) -> dict | None:
    """The checkpoint in `out_dir` to resume, or None for a new run (refusing to replace one
    unless `force`)."""
    if resume:
        return load_meta(out_dir)
    if (out_dir / META_FILE).is_file() and not force:
        raise ValueError(f"Output folder {out_dir} already holds a checkpoint. Pass --resume to "
                         "continue it, --force to replace it, or choose another --out.")
    return None


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"Output folder {out_dir} is not writable: {error.strerror}. "
                         "Choose another --out.") from None


def _optimizer_state(model) -> list:
    """The optimizer's variables but the time budget's plan, which a resumed run makes anew."""
    return [v for v in model.optimizer.variables if v.name != PLAN_VARIABLE]


def restore_train_state(ckpt_dir: Path, model) -> int:
    """Load weights, optimizer variables and seed states into a compiled `model` whose optimizer
    is built (a LoRA run's: its base loaded, its adapters enabled). Returns the micro-step the
    checkpoint was saved at."""
    ckpt_dir = Path(ckpt_dir)
    meta = load_meta(ckpt_dir)
    if not (ckpt_dir / STATE_FILE).is_file():
        raise ValueError(f"Checkpoint {ckpt_dir} has no {STATE_FILE}, so it cannot be resumed "
                         "exactly. Train a new run in another --out.")
    if "lora" in meta:
        _lora().load_adapters(model, _read_arrays(ckpt_dir / ADAPTERS_FILE), ckpt_dir / ADAPTERS_FILE)
    else:
        _load_weights(model, ckpt_dir / WEIGHTS_FILE)
    state = _read_arrays(ckpt_dir / STATE_FILE)

    def array(name: str) -> np.ndarray:
        if name not in state:
            raise ValueError(f"{ckpt_dir / STATE_FILE} has no array {name!r}. {FIX}")
        return state[name]

    micro_step = int(array("micro_step"))
    if micro_step != meta["state"]["micro_step"]:
        raise ValueError(f"Checkpoint {ckpt_dir} is inconsistent: {STATE_FILE} is from micro-step "
                         f"{micro_step} but {META_FILE} from {meta['state']['micro_step']}. Its save "
                         "was cut short; train a new run in another --out.")
    for group, variables in (("optimizer", _optimizer_state(model)), ("rng", _seed_states(model))):
        n = int(array(f"{group}_count"))
        if n != len(variables):
            raise ValueError(f"Checkpoint {ckpt_dir} holds {n} {group} variables but this run has "
                             f"{len(variables)}. Resume with the options it was trained with "
                             "(--precision, --grad-accum, --dropout).")
        for i, variable in enumerate(variables):
            value = array(f"{group}/{i}")
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{ckpt_dir / STATE_FILE}: {group}/{i} has shape {value.shape}, this run's "
                                 f"variable {tuple(variable.shape)}. {FIX}")
            variable.assign(value)
    return micro_step


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:  # numpy's errors for a file that is not an .npz archive, or a damaged one
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"Cannot read {path}: {_first_line(error)}. {FIX}") from None


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _lora():
    from edgellm.training import lora  # imports Keras: only once a LoRA checkpoint is met

    return lora


def _save_weights(model, path: Path) -> None:
    """model.weights.h5 without the optimizer's variables: train_state.npz holds them, and Keras's
    own save_weights would store them again (twice the weights' size)."""
    from keras.src.saving import saving_lib  # keras is pinned (pyproject.toml); no public way to skip them

    saving_lib.save_weights_only(model, str(path), objects_to_skip=_optimizer(model))


def _load_weights(model, path: Path) -> None:
    """Weights saved by `_save_weights`, or with the optimizer by older versions (then ignored)."""
    from keras.src.saving import saving_lib

    try:
        saving_lib.load_weights_only(model, str(path), objects_to_skip=_optimizer(model))
    except (OSError, ValueError, KeyError) as error:  # h5py's and Keras's: not HDF5, other layers or shapes
        raise ValueError(f"Cannot read {path}: {_first_line(error)}. {FIX}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__).rstrip(".")


def _optimizer(model) -> list | None:
    return [model.optimizer] if getattr(model, "optimizer", None) is not None else None


def _seed_states(model) -> list:
    """The dropout layers' seed-generator states: variables that save_weights leaves out."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _save_train_state(path: Path, model, micro_step: int) -> None:
    arrays = {"micro_step": np.array(micro_step)}
    for group, variables in (("optimizer", _optimizer_state(model)), ("rng", _seed_states(model))):
        arrays[f"{group}_count"] = np.array(len(variables))
        for i, variable in enumerate(variables):
            arrays[f"{group}/{i}"] = np.asarray(variable)
    _save_arrays(path, arrays)


def read_history(ckpt_dir: Path) -> list[dict]:
    path = Path(ckpt_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if k != "step" else int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_history(csv_path: Path, png_path: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], "o-", label="train (interval mean)")
    ax.plot(steps, [h["val_loss"] for h in history], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100, format="png")
    plt.close(fig)


@contextlib.contextmanager
def _interrupts_held():
    """Delay Ctrl-C (SIGINT) until the block is done, then deliver it to the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)
