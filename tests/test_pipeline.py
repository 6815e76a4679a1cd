"""The whole path on real text: tokenizer -> Keras training -> tf2onnx export -> runtime -> text."""

import json

import numpy as np
import pytest

from edgellm.folder import model_folder
from edgellm.generator import load
from tolerance import assert_float32_close

PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "The king", "What, ho!"]


def test_checkpoint_has_weights_tokenizer_history_and_curve(tiny_checkpoint):
    for name in ("checkpoint.json", "model.weights.h5", "tokenizer.json", "history.csv", "loss_curve.png"):
        assert (tiny_checkpoint / name).is_file(), name
    meta = json.loads((tiny_checkpoint / "checkpoint.json").read_text())
    first_loss = float((tiny_checkpoint / "history.csv").read_text().splitlines()[1].split(",")[1])
    # 30 steps on real text must beat the uniform guess, ln(384) = 5.95
    assert meta["metrics"]["val_loss"] < np.log(384)
    assert meta["metrics"]["train_loss"] < first_loss or meta["metrics"]["train_loss"] < 5.5


def test_model_folder_follows_the_contract(tiny_folder):
    import onnx

    for name in (*model_folder.REQUIRED_FILES, "genai_config.json", "README.md"):
        assert (tiny_folder / name).is_file(), name
    graph = onnx.load(tiny_folder / "model.onnx").graph
    inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    outputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.output}
    assert inputs["input_ids"] == ["batch_size", "sequence_length"]  # Optimum's names
    assert inputs["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert inputs["position_ids"] == ["batch_size", "sequence_length"]
    assert inputs["past_key_values.1.value"] == ["batch_size", 2, "past_sequence_length", 32]
    assert outputs["logits"] == ["batch_size", "sequence_length", 384]
    assert outputs["present.0.key"] == ["batch_size", 2, "total_sequence_length", 32]
    assert sorted(inputs) == sorted(model_folder.input_names(2))


def test_onnx_with_cache_matches_keras_full_recompute(tiny_checkpoint, tiny_folder):
    """The runtime's greedy ids for 32 new tokens are Keras's greedy ids, and the logits of the
    cached decode steps are Keras's full-recompute logits within float32's reordering (computed
    here, not by the export gate); the gate itself passes on the folder, batched as well."""
    from edgellm.export.validate import check_parity
    from edgellm.training import checkpoint

    model, _, _ = checkpoint.load_model(tiny_checkpoint)
    runtime = load(tiny_folder)
    for prompt in PROMPTS:
        ids = runtime.tokenizer.encode(prompt)
        result = runtime.generate(prompt, temperature=0, max_new_tokens=32, stop_token_ids=())
        seq = ids + result.token_ids
        expected = np.asarray(model(np.array([seq], np.int32), training=False))[0]  # (len(seq), vocab)
        assert expected[len(ids) - 1:-1].argmax(-1).tolist() == result.token_ids, prompt
        logits, past = runtime.forward(np.array([ids]), np.ones((1, len(ids)), np.int64),
                                       np.arange(len(ids))[None], runtime.empty_past(1))
        steps = [logits[0]]
        for i, token in enumerate(result.token_ids[:-1], start=len(ids)):
            logits, past = runtime.forward(np.array([[token]]), np.ones((1, i + 1), np.int64), np.array([[i]]), past)
            steps.append(logits[0])
        assert_float32_close(runtime.config, np.concatenate(steps), expected[:-1])
    report = check_parity(model, tiny_folder, prompts=PROMPTS, new_tokens=32)
    assert report["new_tokens_per_prompt"] == 32 and report["batch_sizes"] == [1, 3]


def test_parity_gate_rejects_a_model_that_differs(tiny_checkpoint, tiny_folder):
    from edgellm.export.validate import ParityError, check_parity
    from edgellm.training import checkpoint

    model, _, _ = checkpoint.load_model(tiny_checkpoint)
    kernel = model.blocks[0].fc.kernel
    kernel.assign(kernel.numpy() + 0.05)
    with pytest.raises(ParityError, match="does not match"):
        check_parity(model, tiny_folder, prompts=PROMPTS[:1], new_tokens=4)


def test_generation_is_reproducible_and_respects_limits(tiny_folder):
    model = load(tiny_folder)
    a = model.generate("ROMEO:", max_new_tokens=20, temperature=1.0, top_k=20, seed=3, stop_token_ids=())
    b = model.generate("ROMEO:", max_new_tokens=20, temperature=1.0, top_k=20, seed=3, stop_token_ids=())
    assert a.token_ids == b.token_ids and len(a.token_ids) == 20
    assert a.finish_reason == "length"
    assert a.text == model.tokenizer.decode(a.token_ids)
    assert "".join(model.stream("ROMEO:", max_new_tokens=20, temperature=1.0, top_k=20, seed=3,
                                stop_token_ids=())) == a.text
    # the context (64) bounds generation
    long = model.generate("ROMEO:", max_new_tokens=500, temperature=0.0, stop_token_ids=())
    assert len(model.tokenizer.encode("ROMEO:")) + len(long.token_ids) == 64
    assert long.finish_reason == "length"


def test_export_refuses_existing_folder_and_leaves_nothing_behind(tiny_checkpoint, tiny_folder):
    from edgellm.export.onnx_export import export

    before = sorted(p.name for p in tiny_folder.parent.iterdir())
    with pytest.raises(ValueError, match="already exists. Pass --force"):
        export(tiny_checkpoint, tiny_folder)
    assert sorted(p.name for p in tiny_folder.parent.iterdir()) == before
