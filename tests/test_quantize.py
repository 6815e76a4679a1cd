"""int8 weights from a float32 folder (`edgellm quantize`): measured, kept only within the limits."""

import json

import pytest

from edgellm.export import quantize


def test_decide_keeps_int8_only_within_the_limits():
    assert quantize.decide({"val_perplexity": 40.0}, {"val_perplexity": 40.19})[0]  # +0.475%
    keep, why = quantize.decide({"val_perplexity": 40.0}, {"val_perplexity": 40.21})  # +0.525%
    assert not keep and why.startswith("float32 kept: int8 raises held-out perplexity by +0.5")
    task = {"task_metric_name": "chrf", "task_metric": 55.0}
    assert quantize.decide(task, {**task, "task_metric": 54.6})[0]
    keep, why = quantize.decide(task, {**task, "task_metric": 54.4})
    assert not keep and "lowers chrf by 0.60 points" in why
    keep, why = quantize.decide({}, {})  # nothing to measure with: float32
    assert not keep and "edgellm quantize FOLDER OUT --task" in why


def test_quantize_folder_measures_int8_against_float32(tiny_folder, tmp_path):
    out = tmp_path / "tiny-int8"
    result = quantize.quantize_folder(tiny_folder, out)
    config = json.loads((out / "config.json").read_text())["edgellm"]
    assert config["onnx"]["weights"] == result["weights"] == config["provenance"]["quantization"]["weights"]
    figures = result["figures"]
    change = figures["int8"]["val_perplexity"] / figures["float32"]["val_perplexity"] - 1
    assert result["weights"] == ("int8" if change <= quantize.MAX_PERPLEXITY_CHANGE else "float32")
    size = (out / "model.onnx").stat().st_size
    assert size == figures[result["weights"]]["file_bytes"] and not (out / "model.float32.onnx").exists()
    assert figures["int8"]["file_bytes"] < 0.5 * figures["float32"]["file_bytes"]
    agreement = result["greedy_agreement"]
    assert agreement["prompts"] > 4 and 0 <= agreement["token_agreement"] <= 1
    card = (out / "README.md").read_text()
    assert result["decision"] in card and result["command"] in card
    if result["weights"] == "int8":  # an int8 folder is not quantized again
        with pytest.raises(ValueError, match="holds int8 weights. Pass a float32 folder."):
            quantize.quantize_folder(out, tmp_path / "again")
    with pytest.raises(ValueError, match="already exists"):
        quantize.quantize_folder(tiny_folder, out)
    with pytest.raises(ValueError, match="--task and --eval-file together"):
        quantize.quantize_folder(tiny_folder, tmp_path / "task", task="qa")
