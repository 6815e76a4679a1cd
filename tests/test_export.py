"""edgellm export: variants, onnxruntime-genai compatibility, and failures that leave nothing behind."""

import json

import numpy as np
import pytest

from conftest import TINY
from edgellm.generator import load
from tolerance import assert_float32_close


@pytest.mark.parametrize("name", ["tiny", "shakespeare"])
def test_onnxruntime_genai_runs_the_folder_unchanged_with_the_same_greedy_tokens(name, request):
    """The tiny float32 export, and the shipped folder with its int8 weights."""
    og = pytest.importorskip("onnxruntime_genai")
    from edgellm.folder import model_folder

    tiny_folder = request.getfixturevalue("tiny_folder") if name == "tiny" else model_folder.resolve(name)
    if name == "shakespeare":
        assert json.loads((tiny_folder / "config.json").read_text())["edgellm"]["onnx"]["weights"] == "int8"
    model = load(tiny_folder)
    for prompt in ("ROMEO:", "The king"):
        ids = model.tokenizer.encode(prompt)
        params = og.GeneratorParams(og.Model(str(tiny_folder)))
        params.set_search_options(max_length=len(ids) + 24, do_sample=False)
        generator = og.Generator(og.Model(str(tiny_folder)), params)
        generator.append_tokens(ids)
        theirs = []
        while not generator.is_done():
            generator.generate_next_token()
            theirs.append(int(generator.get_next_tokens()[0]))
        ours = model.generate(prompt, max_new_tokens=24, temperature=0.0, stop_token_ids=()).token_ids
        assert theirs == ours


def test_kv_cache_layouts_in_the_graph(tiny_folder, tiny_concat_folder):
    import onnx

    for folder, attention, layout in ((tiny_folder, "GroupQueryAttention", "in_place"),
                                      (tiny_concat_folder, "Softmax", "concat")):
        graph = onnx.load(str(folder / "model.onnx")).graph
        ops = {n.op_type for n in graph.node}
        assert attention in ops and ("GroupQueryAttention" in ops) == (layout == "in_place")
        # export/graph's fusions ran: norms are LayerNormalization, not tf2onnx's mean/variance chain
        assert "LayerNormalization" in ops and "GlobalAveragePool" not in ops
        onnx_meta = json.loads((folder / "config.json").read_text())["edgellm"]["onnx"]
        assert onnx_meta["kv_cache"] == layout and onnx_meta["capacity_mask"] == (layout == "in_place")
        genai = json.loads((folder / "genai_config.json").read_text())
        assert genai["search"]["past_present_share_buffer"] == (layout == "in_place")
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(str(tiny_concat_folder / "model.onnx")).graph.node)
    attention = [n for n in onnx.load(str(tiny_folder / "model.onnx")).graph.node if n.op_type == "GroupQueryAttention"]
    assert all(n.input[1] == n.input[2] == "" for n in attention)  # fed the packed qkv projection


def test_grouped_query_attention_exports_a_smaller_cache(corpus_file, tmp_path):
    """--kv-heads 1 with 2 query heads: the cache holds one head; both layouts pass the export
    gate and generate the same tokens; onnxruntime-genai is told the key/value head count."""
    import onnx

    from edgellm.export.onnx_export import export
    from edgellm.training.train import train

    train([str(corpus_file)], str(tmp_path / "ckpt"), **{**TINY, "steps": 10, "num_kv_heads": 1})
    models = {}
    for layout in ("in_place", "concat"):
        export(tmp_path / "ckpt", tmp_path / layout, kv_cache=layout, weights="float32")  # int8: its own test
        models[layout] = load(tmp_path / layout)
    in_place = models["in_place"]
    assert in_place.config.kv_heads == 1 and in_place.session.empty_past(1)[0].shape == (1, 1, 0, 32)
    graph = onnx.load(str(tmp_path / "in_place" / "model.onnx")).graph
    assert {a.i for n in graph.node if n.op_type == "GroupQueryAttention" for a in n.attribute
            if a.name == "kv_num_heads"} == {1}
    genai = json.loads((tmp_path / "in_place" / "genai_config.json").read_text())["model"]["decoder"]
    assert (genai["num_attention_heads"], genai["num_key_value_heads"]) == (2, 1)
    prompts = ["ROMEO:", "First Citizen:\nBefore we proceed", "O"]
    for settings in (dict(temperature=0.0, max_new_tokens=12), dict(num_beams=3, max_new_tokens=6)):
        assert [r.token_ids for r in in_place.generate(prompts, **settings)] == \
            [r.token_ids for r in models["concat"].generate(prompts, **settings)]


def test_an_unknown_attention_graph_is_refused_by_the_rewrite():
    from onnx import helper

    from edgellm.export.graph import attention

    graph = helper.make_graph([helper.make_node("Identity", ["past_key_values.0.key"], ["present.0.key"]),
                               helper.make_node("Identity", ["past_key_values.0.value"], ["present.0.value"])],
                              "g", [], [])
    with pytest.raises(attention.RewriteError, match="do not come from Concat"):
        attention.rewrite(helper.make_model(graph), num_layers=1, num_heads=2, kv_heads=2, head_dim=4)


@pytest.mark.parametrize("weights", ["int8", "int4", "float16"])
def test_smaller_variants_are_measured_against_float32(tiny_checkpoint, tmp_path, weights):
    from edgellm.export.onnx_export import export

    # int8 is the default: no weights argument
    provenance = export(tiny_checkpoint, tmp_path / weights, **({} if weights == "int8" else {"weights": weights}))
    config = json.loads((tmp_path / weights / "config.json").read_text())["edgellm"]
    figures = provenance["variants"]
    assert set(figures) == {"float32", weights}
    assert figures[weights]["file_bytes"] < figures["float32"]["file_bytes"]
    change = figures[weights]["val_perplexity"] / figures["float32"]["val_perplexity"] - 1
    if weights != "float16":  # kept only within +0.5% perplexity, else float32 with the reason
        quantization = provenance["quantization"]
        assert config["onnx"]["weights"] == quantization["weights"] == (weights if change <= 0.005 else "float32")
        assert quantization["greedy_agreement"]["prompts"] >= 4
        if quantization["weights"] == weights:  # every MatMul block-wise
            import onnx

            operators = {n.op_type for n in onnx.load(tmp_path / weights / "model.onnx").graph.node}
            assert "MatMulNBits" in operators and "MatMul" not in operators
        assert quantization["decision"] in (tmp_path / weights / "README.md").read_text()
    else:
        assert config["onnx"]["weights"] == weights and change <= 0.03
    shipped = config["onnx"]["weights"]
    size = (tmp_path / weights / "model.onnx").stat().st_size
    assert size == figures[shipped]["file_bytes"]
    assert f"holds **{shipped}** weights" in (tmp_path / weights / "README.md").read_text()
    result = load(tmp_path / weights).generate("ROMEO:", max_new_tokens=8, temperature=0.0)
    assert result.token_ids


def test_tied_embedding_is_stored_once(tiny_folder):
    import onnx

    graph = onnx.load(tiny_folder / "model.onnx").graph
    embedding_sized = [i.name for i in graph.initializer if sorted(i.dims) == [64, 384]]
    assert len(embedding_sized) == 1, embedding_sized


def test_a_failure_mid_write_leaves_no_folder(tiny_checkpoint, tmp_path, monkeypatch):
    from edgellm.folder import model_card
    from edgellm.export.onnx_export import export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_card, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(tiny_checkpoint, tmp_path / "model", weights="float32")
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_get_clear_errors(tiny_checkpoint, tmp_path):
    import shutil

    from edgellm.export.onnx_export import export

    with pytest.raises(ValueError, match="Not an edgellm checkpoint"):
        export(tmp_path, tmp_path / "out")
    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    meta = json.loads((old / "checkpoint.json").read_text())
    (old / "checkpoint.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="checkpoint.json: format_version must be 1. Received: format_version=99"):
        export(old, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_operation_onnx_lacks_is_named(monkeypatch):
    import keras

    from edgellm.folder.config import ModelConfig
    from edgellm.export.onnx_export import to_onnx
    from edgellm.training.model import GPT

    exact_gelu = keras.activations.gelu
    monkeypatch.setattr(keras.activations, "gelu", lambda x, approximate=True: exact_gelu(x, approximate=False))
    model = GPT(ModelConfig(vocab_size=300, context_length=16, num_layers=1, num_heads=2, hidden_size=32))
    with pytest.raises(ValueError, match="operations ONNX does not have: Erfc"):
        to_onnx(model.build_weights())


def test_padded_batch_rows_match_single_rows(tiny_folder):
    """Left padding and the attention mask: a padded row's logits equal the row run alone."""
    from edgellm.export.validate import onnx_greedy_batch

    runtime = load(tiny_folder)
    rows = [runtime.tokenizer.encode(p) for p in ("ROMEO:", "First Citizen:\nWe are accounted poor")]
    tokens, logits = onnx_greedy_batch(runtime, rows, steps=6)
    for b, row in enumerate(rows):
        alone_tokens, alone_logits = onnx_greedy_batch(runtime, [row], steps=6)
        assert tokens[b] == alone_tokens[0]
        assert_float32_close(runtime.config, logits[b][0], alone_logits[0][0])


def test_alibi_positions_export_with_parity_on_padded_batches(corpus_file, tmp_path):
    """ALiBi's distance penalty is computed from cache slots: the export gate checks it against
    Keras at batch 1 and on a left-padded batch of 3."""
    from edgellm.export.onnx_export import export
    from edgellm.training.positions import alibi_slopes
    from edgellm.training.train import train

    assert alibi_slopes(4).tolist() == [2**-2, 2**-4, 2**-6, 2**-8]
    assert alibi_slopes(6).tolist() == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]  # the paper's rule
    train([str(corpus_file)], str(tmp_path / "ckpt"), **{**TINY, "steps": 10, "position_embedding": "alibi"})
    export(tmp_path / "ckpt", tmp_path / "model", weights="float32")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["edgellm"]["architecture"]["position_embedding"] == "alibi"
    assert config["model_type"] == "gpt2" and "architectures" not in config  # no GPT2LMHeadModel twin
    assert load(tmp_path / "model").generate("ROMEO:", temperature=0.0, max_new_tokens=5).token_ids
    # --format hf has no GPT-2 equivalent to write: one line, before TensorFlow starts, no folder
    with pytest.raises(ValueError, match="--format hf needs an architecture that is exactly GPT-2's. "
                                         "Received: position_embedding='alibi'"):
        export(tmp_path / "ckpt", tmp_path / "hf", fmt="hf")
    from click.testing import CliRunner

    from edgellm.cli import main
    out = CliRunner().invoke(main, ["export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--format", "hf"])
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert out.output.startswith("Error: --format hf needs an architecture that is exactly GPT-2's")
    assert not (tmp_path / "hf").exists()


def test_the_graph_passes_run_in_the_documented_order():
    from onnx import helper

    from edgellm.export import graph, onnx_export

    order = ["name_dimensions", "share_transposed_weights", "fuse_layer_norms", "direct_matmuls"]
    assert [p.__name__ for p in graph.passes("concat")] == order
    assert [p.__name__ for p in graph.passes("in_place")] == [*order, "in_place_attention"]
    documented = [graph.__doc__.index(f"`{name}`") for name in [*order, "in_place_attention"]]
    assert documented == sorted(documented)
    assert "name the dynamic dimensions, store a tied embedding once, fuse" in " ".join(onnx_export.__doc__.split())
    with pytest.raises(ValueError, match="kv_cache must be one of"):
        graph.passes("paged")
    identity = helper.make_graph([helper.make_node("Identity", [f"past_key_values.0.{kind}"], [f"present.0.{kind}"])
                                  for kind in ("key", "value")], "g", [], [])
    config = type("Config", (), dict(num_layers=1, num_heads=2, kv_heads=2, head_dim=4))
    with pytest.raises(ValueError, match="Export with --kv-cache concat"):
        graph.in_place_attention(helper.make_model(identity), config)


def test_variant_perplexity_is_the_runtimes_scoring(tiny_checkpoint, tiny_folder):
    """export measures each variant with edgellm.generation.scoring: each window's tokens are scored from
    that window alone, the last token of a context + 1 window included."""
    from edgellm.export import variants
    from edgellm.generation.sampling import log_softmax
    from edgellm.generation.scoring import score_ids, score_windows
    from edgellm.training import checkpoint

    model = load(tiny_folder)
    context = model.config.context_length
    windows = variants.validation_windows(checkpoint.load_meta(tiny_checkpoint), model.tokenizer, context)
    assert windows.shape[1] == context + 1 and len(windows) > 16  # more than one run of windows
    scored = score_windows(model, windows)
    assert scored.shape == (len(windows), context)
    for r, t in ((0, 0), (3, context // 2), (len(windows) - 1, context - 1)):
        x = windows[r:r + 1, :t + 1].astype(np.int64)
        logits, _ = model.forward(x, np.ones_like(x), np.arange(t + 1)[None], model.empty_past(1))
        assert_float32_close(model.config, scored[r, t], log_softmax(logits[0, -1])[windows[r, t + 1]],
                             scale=2 * np.abs(logits).max())
    short = windows[0, :context].tolist()  # a text within the context: one window, the same figures
    assert np.allclose(score_ids(model, short), score_windows(model, [short])[0])
    figures = variants.measure(tiny_folder, windows[:20], new_tokens=4)
    assert figures["val_loss"] == pytest.approx(-score_windows(model, windows[:20]).mean(), rel=1e-9)
    assert figures["val_perplexity"] == pytest.approx(np.exp(figures["val_loss"]))
    with pytest.raises(ValueError, match="windows must be"):
        score_windows(model, np.zeros((1, context + 2), np.int64))
