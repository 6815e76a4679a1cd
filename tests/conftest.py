"""Shared fixtures: a tiny model trained on real text and exported, once per test session."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt"
TINY = dict(vocab_size=384, num_layers=2, num_heads=2, hidden_size=64, context_length=64, batch_size=16,
            steps=30, warmup=5, eval_interval=15, lr=3e-3, seed=7, verbose=0)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """The first 60,000 characters of tinyshakespeare: real text, quick to train on."""
    path = tmp_path_factory.mktemp("data") / "shakespeare-head.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(corpus_file, tmp_path_factory) -> Path:
    from edgellm.training.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train([str(corpus_file)], str(out), **TINY)
    return out


@pytest.fixture(scope="session")
def tiny_folder(tiny_checkpoint, tmp_path_factory) -> Path:
    from edgellm.export.onnx_export import export

    out = tmp_path_factory.mktemp("models") / "tiny"
    export(tiny_checkpoint, out, weights="float32")  # the graph the gate checks against Keras
    return out


@pytest.fixture(scope="session")
def tiny_concat_folder(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same checkpoint exported with the Concat cache (standard ONNX operators only)."""
    from edgellm.export.onnx_export import export

    out = tmp_path_factory.mktemp("models") / "tiny-concat"
    export(tiny_checkpoint, out, weights="float32", kv_cache="concat")
    return out


@pytest.fixture(scope="session", params=["int8", "int4"])
def tiny_blockwise_folder(request, tiny_folder, tmp_path_factory) -> Path:
    """The tiny float32 folder with block-wise int8 or int4 weights (as export makes them, without
    the quality gate: these tests are about the arithmetic, not the quality)."""
    import json
    import shutil

    from edgellm.export import variants

    out = tmp_path_factory.mktemp("models") / f"tiny-{request.param}"
    shutil.copytree(tiny_folder, out)
    variants.make_variant(tiny_folder / "model.onnx", out / "model.onnx", request.param)
    document = json.loads((out / "config.json").read_text())
    document["edgellm"]["onnx"]["weights"] = request.param
    (out / "config.json").write_text(json.dumps(document, indent=2))
    return out
