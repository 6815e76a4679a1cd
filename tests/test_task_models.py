"""Task models end to end on real bAbI data: --examples training, export, template, eval."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from edgellm.generator import load
from edgellm.tasks import COMPLETION_TOKEN, read_examples


@pytest.fixture(scope="module")
def babi(tmp_path_factory):
    out = tmp_path_factory.mktemp("babi")
    subprocess.run([sys.executable, REPO / "data" / "babi-qa1" / "to_jsonl.py", out], check=True, capture_output=True)
    lines = (out / "train.jsonl").read_text().splitlines()
    (out / "small.jsonl").write_text("\n".join(lines[:400]) + "\n")
    shutil.copy(REPO / "data" / "babi-qa1" / "LICENSE.md", out)  # the model card quotes it
    return out


def _answer(prompt: str) -> str:
    """The asked person's latest place, read from the statements."""
    *statements, question = prompt.split("\n")
    asked = question.rstrip("?").split()[-1]
    return " " + [s.rstrip(".").split()[-1] for s in statements if s.split()[0] == asked][-1]


def test_babi_conversion_options_keep_every_answer_right(tmp_path):
    subprocess.run([sys.executable, REPO / "data" / "babi-qa1" / "to_jsonl.py", tmp_path, "--relabel", "2",
                    "--balance", "--max-statements", "4"], check=True, capture_output=True)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) > 1000 and all(r["completion"] == _answer(r["prompt"]) for r in rows)
    assert {r["prompt"].count("\n") for r in rows} == {2, 4}  # the first two questions of each story
    assert sum(r["completion"] == " " + r["prompt"].split("\n")[-2].rstrip(".").split()[-1]
               for r in rows) < 0.4 * len(rows)  # balanced: the latest place is seldom the answer
    subprocess.run([sys.executable, REPO / "data" / "babi-qa1" / "to_jsonl.py", tmp_path, "--augment", "3"],
                   check=True, capture_output=True)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 10_000 and all(r["completion"] == _answer(r["prompt"]) for r in rows)
    assert len({r["prompt"] for r in rows}) > 2.5 * 10_000  # statements dropped: new stories
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert len(test) == 1000 and all(r["completion"] == _answer(r["prompt"]) for r in test)


@pytest.fixture(scope="module")
def task_folder(babi, tmp_path_factory):
    from edgellm.export.onnx_export import export
    from edgellm.training.train import train

    ckpt = tmp_path_factory.mktemp("runs") / "babi"
    metrics = train([], str(ckpt), examples=str(babi / "small.jsonl"), vocab_size=300, num_layers=1,
                    num_heads=2, hidden_size=32, context_length=192, batch_size=16, steps=20, warmup=2,
                    eval_interval=10, verbose=0, position_embedding="rope", use_bias=True)  # rotary positions and biases: exported and checked too
    assert metrics["val_loss"] > 0
    folder = tmp_path_factory.mktemp("models") / "babi"
    export(ckpt, folder)
    return folder


def test_task_model_folder_applies_the_template(task_folder):
    import onnx

    ops = [n.op_type for n in onnx.load(str(task_folder / "model.onnx")).graph.node]
    assert "LayerNormalization" in ops and "GlobalAveragePool" not in ops  # norms with a bias, fused
    config = json.loads((task_folder / "config.json").read_text())["edgellm"]
    assert config["prompt_template"] == "completion"
    defaults = json.loads((task_folder / "generation_config.json").read_text())
    assert defaults["do_sample"] is False and defaults["max_new_tokens"] == 192  # greedy, up to the context
    model = load(task_folder)
    assert model.task_template and COMPLETION_TOKEN in model.tokenizer.special_tokens
    prompt = "Mary moved to the bathroom.\nWhere is Mary?"
    wrapped = model.tokenizer.encode(prompt) + [model.tokenizer.special_tokens[COMPLETION_TOKEN]]
    by_ids = list(model.token_stream(wrapped, model.settings(temperature=0.0, max_new_tokens=6)))
    assert model.generate(prompt, temperature=0.0, max_new_tokens=6).token_ids == by_ids


def test_eval_qa_through_the_cli_and_record_it_in_the_model_card(task_folder, babi):
    result = subprocess.run([sys.executable, "-m", "edgellm", "eval", "--task", "qa", babi / "test.jsonl",
                             "-m", task_folder, "--max-examples", "12", "--json", "--record"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    model = load(task_folder)
    correct = sum(model.generate(e.prompt, temperature=0.0).text.strip() == e.completion.strip()
                  for e in read_examples(babi / "test.jsonl")[:12])
    assert metrics["task"] == "qa" and metrics["examples"] == metrics["examples_read"] == 12
    assert metrics["exact_match"] == pytest.approx(100 * correct / 12)  # in percent, as the other tasks' 0-100
    assert metrics["too_long"] == 0  # every bAbI test prompt fits in the context
    kept = json.loads((task_folder / "config.json").read_text())["edgellm"]["provenance"]["evaluations"]
    assert [e["metrics"] for e in kept] == [metrics] and kept[0]["settings"] == {"decoding": "greedy"}
    card = (task_folder / "README.md").read_text()
    assert "## Evaluation: qa on" in card and ", decoding greedy (" in card and f"| exact_match | {metrics['exact_match']:.4f} |" in card
    assert "--max-examples 12" in card and "A task model" in card
    from edgellm.evaluate import record

    record(task_folder, "qa", babi / "test.jsonl", metrics, "again", {"decoding": "greedy"})  # replaces
    record(task_folder, "qa", babi / "test.jsonl", metrics, "beams", {"decoding": "beam search, 2 beams"})
    kept = json.loads((task_folder / "config.json").read_text())["edgellm"]["provenance"]["evaluations"]
    assert [e["command"] for e in kept] == ["again", "beams"]
    card = (task_folder / "README.md").read_text()
    assert "### Data licence" in card and "> (10,000 train and 1,000 test questions). Licence: Creative Commons Attribution 3.0" in card


def test_translation_metrics_group_references_of_a_repeated_prompt(task_folder, babi):
    sacrebleu = pytest.importorskip("sacrebleu")
    from edgellm.tasks import Example, evaluate

    model = load(task_folder)
    examples = read_examples(babi / "test.jsonl")[:4]
    # the same prompt twice, with a second reference: translated once, scored against both
    examples.append(Example(examples[0].prompt, " kitchen"))
    metrics = evaluate(model, examples, "translation")
    hypotheses = [model.generate(e.prompt, temperature=0.0).text.strip() for e in examples[:4]]
    references = [[e.completion.strip() for e in examples[:4]], ["kitchen", None, None, None]]
    assert metrics["examples"] == 4 and metrics["examples_read"] == 5
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, references).score)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, references).score)
    path = babi / "repeated.jsonl"
    path.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n" for e in examples))
    out = subprocess.run([sys.executable, "-m", "edgellm", "eval", "--task", "translation", path, "-m", task_folder],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "examples: 4 (distinct prompts of the 5 read: a repeated prompt is scored once" in out.stdout
    assert "examples_read" not in out.stdout and f"chrf: {metrics['chrf']:.4f}" in out.stdout


def test_fine_tuning_starts_from_the_init_checkpoint_and_keeps_its_shape(babi, corpus_file, tmp_path):
    """--init: a text model pretrained with a tokenizer holding the task tokens is fine-tuned on
    examples; it starts from those weights (a near-zero learning rate leaves them), keeps the
    tokenizer and shape, and a contradicting shape flag is refused."""
    from edgellm.tasks import TASK_SPECIAL_TOKENS
    from edgellm.tokenizer import Tokenizer
    from edgellm.training import checkpoint
    from edgellm.training.train import train

    text = corpus_file.read_text() + (babi / "small.jsonl").read_text()
    Tokenizer.train([text], 320, TASK_SPECIAL_TOKENS).save(tmp_path / "tok.json")
    shape = dict(num_layers=1, num_heads=2, hidden_size=32, context_length=192, batch_size=8, warmup=1,
                 eval_interval=2, verbose=0)
    train([str(corpus_file)], str(tmp_path / "lm"), tokenizer=str(tmp_path / "tok.json"), steps=2, **shape)
    train([], str(tmp_path / "qa"), examples=str(babi / "small.jsonl"), init=str(tmp_path / "lm"), steps=1,
          lr=1e-12, warmup=0, eval_interval=1, verbose=0)
    (lm, lm_tok, _), (qa, qa_tok, meta) = checkpoint.load_model(tmp_path / "lm"), checkpoint.load_model(tmp_path / "qa")
    assert qa_tok.to_json() == lm_tok.to_json() and meta["architecture"] == checkpoint.load_meta(tmp_path / "lm")["architecture"]
    for a, b in zip(lm.get_weights(), qa.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # a text model whose tokenizer lacks the task tokens: they are added, the embedding grows
    Tokenizer.train([text], 320).save(tmp_path / "plain.json")
    train([str(corpus_file)], str(tmp_path / "lm2"), tokenizer=str(tmp_path / "plain.json"), steps=2, **shape)
    train([], str(tmp_path / "qa2"), examples=str(babi / "small.jsonl"), init=str(tmp_path / "lm2"), steps=1,
          lr=1e-12, warmup=0, eval_interval=1, verbose=0)
    (lm, lm_tok, _), (qa, qa_tok, _) = checkpoint.load_model(tmp_path / "lm2"), checkpoint.load_model(tmp_path / "qa2")
    assert qa_tok.vocab_size == lm_tok.vocab_size + 1 and COMPLETION_TOKEN in qa_tok.special_tokens
    assert qa_tok.encode(text[:2000]) == lm_tok.encode(text[:2000])
    grown, before = qa.wte.embeddings.numpy(), lm.wte.embeddings.numpy()
    np.testing.assert_allclose(grown[: lm_tok.vocab_size], before, atol=1e-6)
    with pytest.raises(ValueError, match="--width must be the --init checkpoint's"):
        train([], str(tmp_path / "qa3"), examples=str(babi / "small.jsonl"), init=str(tmp_path / "lm"), hidden_size=64,
              steps=1, verbose=0)
