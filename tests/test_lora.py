"""LoRA (training/lora.py): adapters trained on a frozen base, kept apart in the checkpoint, merged
into the weights at export.

A tiny random Llama folder (tests/pretrained_sources.py) is fine-tuned with adapters for a few
steps: the outputs change, the base's weights do not, the checkpoint holds the adapters only, the
export's graph is a plain export's (no LoRA operators) and its logits equal the Keras model with
adapters. Ctrl-C and --resume follow the uninterrupted run; a changed or missing base is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest

import pretrained_sources as sources

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
IDS = np.random.default_rng(0).integers(0, sources.LLAMA["vocab_size"], (2, 24)).astype(np.int32)
# float32 logits of two computations of a 2-layer width-64 model: dot products of about 100 terms
# of values near 1 (a merged kernel W + s A B against x W + s (x A) B) differ by far less than 1e-4
ATOL = 1e-4
LORA = dict(lora_rank=4, lora_alpha=8.0, lora_dropout=0.1, context_length=32, batch_size=4, steps=6,
            eval_interval=3, eval_tokens=64, lr=1e-2, warmup=1, seed=3, verbose=0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return sources.write_hf(tmp_path_factory.mktemp("base") / "llama", "llama", sources.llama_tensors())


@pytest.fixture(scope="module")
def adapted(base, corpus_file, tmp_path_factory):
    from edgellm.training.train import train

    out = tmp_path_factory.mktemp("runs") / "lora"
    train([str(corpus_file)], str(out), init=str(base), **LORA)
    return out


def logits(model, ids=IDS) -> np.ndarray:
    return np.asarray(model(ids, training=False))


def test_only_the_adapters_train_and_the_outputs_change(base, adapted):
    from edgellm.training import checkpoint, pretrained

    before = pretrained.build_model(pretrained.load(base))
    model, _, meta = checkpoint.load_model(adapted, merge=False)
    assert sorted(os.listdir(adapted)).count(checkpoint.WEIGHTS_FILE) == 0
    with np.load(adapted / checkpoint.ADAPTERS_FILE) as archive:  # 2 blocks x 5 projections x (A, B)
        assert len(archive.files) == 20 and all("lora_kernel" in name for name in archive.files)
    assert meta["lora"]["trainable_parameters"] == 2 * 4 * (64 + 128 + 64 + 64 + 3 * (64 + 96))
    frozen = {v.path.split("/", 1)[1]: np.asarray(v) for v in model.weights if "lora_kernel" not in v.path}
    for variable in before.weights:
        np.testing.assert_array_equal(frozen[variable.path.split("/", 1)[1]], np.asarray(variable))
    assert np.abs(logits(model) - logits(before)).max() > 0.1  # trained: not the base any more
    merged, _, _ = checkpoint.load_model(adapted)
    assert not any("lora" in v.path for v in merged.weights)
    np.testing.assert_allclose(logits(merged), logits(model), atol=ATOL, rtol=0)


def test_export_merges_the_adapters_into_a_plain_graph(base, adapted, tmp_path):
    import onnx

    from edgellm.export.onnx_export import export
    from edgellm.generator import Generator
    from edgellm.training import checkpoint

    provenance = export(adapted, tmp_path / "lora", weights="float32")  # the gate: against the merged model
    assert provenance["parity"]["greedy_tokens_equal"]
    export(base, tmp_path / "plain", weights="float32")
    graphs = [onnx.load(tmp_path / name / "model.onnx").graph for name in ("lora", "plain")]
    assert Counter(n.op_type for n in graphs[0].node) == Counter(n.op_type for n in graphs[1].node)
    # the weights: one initializer per kernel, under the same names (tf2onnx numbers its other constants)
    weights = [sorted((i.name, tuple(i.dims)) for i in g.initializer if "ReadVariableOp" in i.name) for g in graphs]
    assert weights[0] == weights[1] and len(weights[0]) > 10
    assert sorted((tuple(i.dims), i.data_type) for i in graphs[0].initializer) == \
        sorted((tuple(i.dims), i.data_type) for i in graphs[1].initializer)

    runtime = Generator(tmp_path / "lora", providers=["CPUExecutionProvider"])
    ids = IDS.astype(np.int64)
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    onnx_logits, _ = runtime.forward(ids, np.ones_like(ids), positions, runtime.empty_past(len(ids)))
    with_adapters, _, _ = checkpoint.load_model(adapted, merge=False)
    np.testing.assert_allclose(onnx_logits, logits(with_adapters), atol=ATOL, rtol=0)


def test_ctrl_c_then_resume_follows_the_uninterrupted_run(base, adapted, corpus_file, tmp_path):
    from test_training import ctrl_c_at

    from edgellm.training import checkpoint
    from edgellm.training.train import train

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train([str(corpus_file)], str(cut), init=str(base), callbacks=[ctrl_c_at(4)], **LORA)
    assert checkpoint.load_meta(cut)["state"]["step"] == 5  # the step under way when Ctrl-C came
    train(None, str(cut), resume=True, verbose=0)  # to step 6, with the dropout's seed state restored
    with np.load(adapted / checkpoint.ADAPTERS_FILE) as a, np.load(cut / checkpoint.ADAPTERS_FILE) as b:
        assert sorted(a.files) == sorted(b.files)
        assert max(float(np.abs(a[k] - b[k]).max()) for k in a.files) < 1e-6


def test_a_changed_or_missing_base_is_refused(base, adapted, corpus_file, tmp_path):
    from safetensors.numpy import save_file

    from edgellm.training import checkpoint
    from edgellm.training.train import train

    moved_base, ckpt = tmp_path / "base", tmp_path / "ckpt"
    shutil.copytree(base, moved_base)
    shutil.copytree(adapted, ckpt)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["lora"]["base"]["path"] = str(moved_base)
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    checkpoint.load_model(ckpt)  # the same bytes elsewhere: fine

    save_file(sources.llama_tensors(seed=5), str(moved_base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="has changed since its adapters were trained"):
        checkpoint.load_model(ckpt)
    with pytest.raises(ValueError, match="has changed since its adapters were trained"):
        train(None, str(ckpt), resume=True, steps=8, verbose=0)
    shutil.rmtree(moved_base)
    with pytest.raises(ValueError, match="is missing"):
        checkpoint.load_model(ckpt)


@pytest.mark.parametrize("given, message", [
    ({"lora_rank": 4}, "pass --init"),
    ({"lora_rank": 4, "init": "x", "examples": "e.jsonl"}, "cannot train a task model"),
    ({"lora_targets": "q,v"}, "comma-separated list of qkv, proj, fc_gate, fc, fc_proj"),
    ({"lora_rank": -1}, "at least 0"),
    ({"lora_alpha": 0.0}, "must be positive"),
    ({"lora_dropout": 1.0}, r"must be in \[0, 1\)"),
])
def test_lora_options_are_checked(given, message):
    from edgellm.training.options import resolve

    with pytest.raises(ValueError, match=message):
        resolve(given)


def test_cli_refuses_lora_without_init_in_one_line(corpus_file, tmp_path):
    from click.testing import CliRunner

    from edgellm.cli import main

    result = CliRunner().invoke(main, ["train", str(corpus_file), "--out", str(tmp_path / "r"), "--lora-rank", "8"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error: ")] == [
        "Error: lora_rank (--lora-rank) adapts a trained model: pass --init (an edgellm checkpoint, a GGUF file or "
        "a Hugging Face folder). Received: lora_rank=8, no init"]


@pytest.mark.parametrize("kind", ["gguf", "edgellm"])
def test_lora_trains_on_a_gguf_file_and_on_an_edgellm_checkpoint(kind, tiny_checkpoint, corpus_file, tmp_path):
    """Every source `--init` takes: a quantized GGUF file and a checkpoint of `edgellm train`."""
    from edgellm.training.train import train

    init = (sources.write_gguf(tmp_path / "llama.gguf", "llama", sources.llama_tensors(), quantize=True)
            if kind == "gguf" else tiny_checkpoint)
    out = tmp_path / "lora"
    options = {k: v for k, v in LORA.items() if k != "context_length"}  # the source's context
    train([str(corpus_file)], str(out), init=str(init), **{**options, "steps": 2, "eval_interval": 2})
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["lora"]["spec"]["rank"] == 4 and (out / "adapters.npz").is_file()
    assert not (out / "model.weights.h5").exists()  # the base stays where it is
