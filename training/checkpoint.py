"""Checkpoint folder: what training writes and export reads.

    CHECKPOINT/
      checkpoint.json     format_version, architecture (ModelConfig), training options, metrics, data
      model.weights.h5    Keras weights
      tokenizer.json      the tokenizer the ids came from
      history.csv         step, train loss, validation loss, learning rate
      loss_curve.png      the loss curve

Each file is written to a temporary name and renamed, so an interrupted write leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgellm.config import ModelConfig
from edgellm.tokenizer import Tokenizer

FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_FILE = "tokenizer.json"


def save(out_dir: Path, model, tokenizer: Tokenizer, meta: dict) -> None:
    """Write weights, tokenizer and metadata into `out_dir`, each file atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_weights = out_dir / "model.tmp.weights.h5"  # Keras wants the .weights.h5 suffix
    model.save_weights(tmp_weights)
    os.replace(tmp_weights, out_dir / WEIGHTS_FILE)
    tokenizer.save(out_dir / TOKENIZER_FILE)
    doc = {"format_version": FORMAT_VERSION, "architecture": model.config.to_dict(), **meta}
    write_json(out_dir / META_FILE, doc)


def load_meta(ckpt_dir: Path) -> dict:
    """Read and check checkpoint.json; the weights are loaded by `load_model`."""
    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / META_FILE
    if not meta_path.is_file():
        raise ValueError(f"Not an edgellm checkpoint: {meta_path} is missing. "
                         "Pass the folder that `edgellm train --out` wrote.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"Checkpoint format_version must be {FORMAT_VERSION}. Received: "
                         f"{meta.get('format_version')!r} in {meta_path}. Re-train with this edgellm.")
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not (ckpt_dir / name).is_file():
            raise ValueError(f"Checkpoint {ckpt_dir} is incomplete: {name} is missing.")
    return meta


def load_model(ckpt_dir: Path):
    """Build the Keras model from checkpoint.json and load its weights."""
    from edgellm.training.model import GPT

    meta = load_meta(ckpt_dir)
    model = GPT(ModelConfig.from_dict(meta["architecture"])).build_weights()
    model.load_weights(Path(ckpt_dir) / WEIGHTS_FILE)
    return model, Tokenizer.load(Path(ckpt_dir) / TOKENIZER_FILE), meta


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
