"""The model shipped in models/: found by name, documented, and its greedy output pinned."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgellm
from conftest import REPO
from edgellm.folder import model_folder

GOLDEN = json.loads((Path(__file__).parent / "golden" / "shakespeare_greedy.json").read_text())


def test_shipped_model_greedy_output_is_unchanged():
    """A regression pin: tokenizer, runtime loop and model.onnx together give these exact tokens."""
    model = edgellm.load(GOLDEN["model"])
    for prompt, expected in GOLDEN["cases"].items():
        result = model.generate(prompt, max_new_tokens=GOLDEN["max_new_tokens"], temperature=0.0, stop_token_ids=())
        assert result.token_ids == expected["token_ids"], prompt
        assert result.text == expected["text"]


def test_shipped_model_is_small_and_documented():
    assert "shakespeare" in model_folder.shipped_model_names()
    folder = model_folder.resolve("shakespeare")
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 20e6 and (folder / "model.onnx").stat().st_size <= 4.5e6  # block-wise int8, embedding included
    config = json.loads((folder / "config.json").read_text())["edgellm"]
    provenance = config["provenance"]
    assert provenance["command"].startswith("edgellm train data/tinyshakespeare/input.txt")
    card = (folder / "README.md").read_text()
    assert provenance["command"] in card and "loss_curve.png" in card
    assert f"{provenance['metrics']['val_loss']:.4f}" in card


@pytest.mark.parametrize("name", ["shakespeare", "en-fr", "babi-qa1", "summarize"])
def test_shipped_folders_hold_blockwise_int8_weights_measured_within_the_limits(name):
    """Each shipped model.onnx holds block-wise int8 weights, made from the float32 one by `edgellm
    quantize`, and its recorded figures are within the limits that command keeps them under."""
    import onnx

    from edgellm.export.quantize import MAX_PERPLEXITY_CHANGE, MAX_TASK_METRIC_DROP

    folder = model_folder.resolve(name)
    config = json.loads((folder / "config.json").read_text())["edgellm"]
    quantization = config["provenance"]["quantization"]
    assert config["onnx"]["weights"] == quantization["weights"] == "int8"
    assert quantization["scheme"]["operator"] == "com.microsoft.MatMulNBits" and quantization["scheme"]["bits"] == 8
    operators = {n.op_type for n in onnx.load(folder / "model.onnx").graph.node}
    assert "MatMulNBits" in operators and not operators & {"MatMul", "MatMulInteger", "DynamicQuantizeLinear"}
    f32, i8 = quantization["figures"]["float32"], quantization["figures"]["int8"]
    # 8 bits and one float scale per 32 weights: 28% of float32, a little more with norms and biases
    assert i8["file_bytes"] == (folder / "model.onnx").stat().st_size < 0.32 * f32["file_bytes"]
    if "val_perplexity" in f32:
        assert i8["val_perplexity"] / f32["val_perplexity"] - 1 <= MAX_PERPLEXITY_CHANGE
    else:
        assert f32["task_metric"] - i8["task_metric"] <= MAX_TASK_METRIC_DROP
    card = (folder / "README.md").read_text()
    assert "holds **int8** weights" in card and quantization["command"] in card
    assert quantization["command"].startswith("edgellm quantize ") and f" models/{name} " in quantization["command"]


def test_shipped_translation_model_translates_held_out_sentences():
    """models/en-fr: its recorded test figures meet the target, and a spread-out sample of the
    held-out test pairs, translated here through the runtime, scores close to them."""
    pytest.importorskip("sacrebleu")
    from edgellm.tasks import evaluate, read_examples

    folder = model_folder.resolve("en-fr")
    provenance = json.loads((folder / "config.json").read_text())["edgellm"]["provenance"]
    greedy = next(e for e in provenance["evaluations"] if e["settings"] == {"decoding": "greedy"})
    assert greedy["file"] == "data/tatoeba-fra-eng/test.tsv" and greedy["metrics"]["chrf"] >= 50
    card = (folder / "README.md").read_text()
    assert "CC BY 2.0 FR" in card and "tatoeba.org" in card and f"{greedy['metrics']['chrf']:.4f}" in card

    examples = read_examples(Path(__file__).parent.parent / "data" / "tatoeba-fra-eng" / "test.tsv")
    sources = sorted({e.prompt for e in examples})[::25]  # about 40 sentences of every length
    sample = [e for e in examples if e.prompt in set(sources)]
    metrics = evaluate(edgellm.load("en-fr"), sample, "translation")
    assert metrics["chrf"] >= greedy["metrics"]["chrf"] - 10, metrics


def test_shipped_qa_model_answers_held_out_questions(tmp_path):
    """models/babi-qa1: its recorded test accuracy meets the target, and every fifth test question,
    answered here through the runtime, is answered as well."""
    from edgellm.tasks import evaluate, read_examples

    folder = model_folder.resolve("babi-qa1")
    provenance = json.loads((folder / "config.json").read_text())["edgellm"]["provenance"]
    greedy = next(e for e in provenance["evaluations"] if e["settings"] == {"decoding": "greedy"})
    assert greedy["file"] == "data/babi-qa1/test.jsonl" and greedy["metrics"]["exact_match"] >= 99
    assert greedy["metrics"]["examples"] == 999  # distinct prompts: two of the 1,000 questions are the same
    card = (folder / "README.md").read_text()
    assert "Creative Commons Attribution 3.0" in card and f"{greedy['metrics']['exact_match']:.4f}" in card

    subprocess.run([sys.executable, REPO / "data" / "babi-qa1" / "to_jsonl.py", tmp_path], check=True,
                   capture_output=True)  # writes the test file (data/babi-qa1/test.jsonl) here
    sample = read_examples(tmp_path / "test.jsonl")[::5]
    metrics = evaluate(edgellm.load("babi-qa1"), sample, "qa")
    assert metrics["examples"] >= 199 and metrics["exact_match"] >= 98, metrics


def test_shipped_summarizer_beats_the_lead_baseline_with_beams():
    """models/summarize: its recorded test ROUGE-L with 4 beams is above the first-12-words baseline
    (29.2, bench/summarize_baselines.py), a sample of the test rows scored here comes close, and a
    description longer than its context is cut from the end (the folder's truncate "right")."""
    pytest.importorskip("rouge_score")
    from edgellm.tasks import evaluate, read_examples

    folder = model_folder.resolve("summarize")
    provenance = json.loads((folder / "config.json").read_text())["edgellm"]["provenance"]
    beams = next(e for e in provenance["evaluations"] if e["settings"] == {"decoding": "beam search, 4 beams"})
    assert beams["file"] == "data/debian-descriptions/test.jsonl.gz" and beams["metrics"]["rougeL"] > 29.2
    card = (folder / "README.md").read_text()
    assert "Debian package descriptions (Debian 12, main)" in card and f"{beams['metrics']['rougeL']:.4f}" in card

    model = edgellm.load("summarize")
    sample = read_examples(REPO / "data" / "debian-descriptions" / "test.jsonl.gz")[::10]
    metrics = evaluate(model, sample, "summarization", num_beams=4)
    assert metrics["too_long"] == 0 and metrics["rougeL"] >= beams["metrics"]["rougeL"] - 8, metrics
    long = " ".join(e.prompt for e in sample[:20])
    assert len(model.tokenizer.encode(long)) > model.config.context_length and model.generate(long).text.strip()
