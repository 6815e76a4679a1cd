"""Summarization end to end on real Debian descriptions: train, export, generate, eval, bad input."""

import gzip
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from edgellm.generator import load
from edgellm.tasks import Example, evaluate, read_examples, rouge

DATA = REPO / "data" / "debian-descriptions"


def edgellm(*args, input=None):
    return subprocess.run([sys.executable, "-m", "edgellm", *map(str, args)], capture_output=True, text=True,
                          input=input)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """A few hundred short training rows and a few test rows of the real data."""
    out = tmp_path_factory.mktemp("debian")
    with gzip.open(DATA / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        short = [line for line in f if len(json.loads(line)["prompt"]) <= 150][:300]
    (out / "train.jsonl").write_text("".join(short), encoding="utf-8")
    test = [e for e in read_examples(DATA / "test.jsonl.gz") if len(e.prompt) <= 150][:6]
    (out / "test.jsonl").write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n"
                                            for e in test), encoding="utf-8")
    shutil.copy(DATA / "LICENSE.md", out)  # the model card quotes it
    return out


@pytest.fixture(scope="module")
def summarizer(rows, tmp_path_factory):
    from edgellm.export.onnx_export import export
    from edgellm.training.train import train

    ckpt = tmp_path_factory.mktemp("runs") / "summarize"
    metrics = train([], str(ckpt), examples=str(rows / "train.jsonl"), vocab_size=320, num_layers=1, num_heads=2,
                    hidden_size=32, context_length=256, batch_size=16, steps=12, warmup=2, eval_interval=6, lr=3e-3,
                    val_fraction=0.05, too_long="right", verbose=0)
    assert metrics["val_loss"] > 0
    folder = tmp_path_factory.mktemp("models") / "summarize"
    export(ckpt, folder)
    return folder


def test_summarization_model_generates_and_is_evaluated_with_rouge(summarizer, rows):
    """Train, export, generate (library and CLI print the synopsis alone), eval with ROUGE and chrF."""
    sacrebleu = pytest.importorskip("sacrebleu")
    from rouge_score import rouge_scorer

    model = load(summarizer)
    examples = read_examples(rows / "test.jsonl")
    synopsis = model.generate(examples[0].prompt, temperature=0).text
    cli = edgellm("generate", "-m", summarizer, examples[0].prompt)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == synopsis + "\n"  # the completion only: a task model does not echo its prompt

    result = edgellm("eval", "--task", "summarization", rows / "test.jsonl", "-m", summarizer, "--json", "--record")
    assert result.returncode == 0, result.stderr
    assert "summarization eval" in result.stderr  # the progress bar
    assert "INFO" not in result.stderr  # rouge-score's log line per scorer
    metrics = json.loads(result.stdout)
    assert sorted(metrics) == ["chrf", "examples", "examples_read", "rouge1", "rouge2", "rougeL", "task", "too_long"]
    assert metrics["examples"] == len(examples) and metrics["too_long"] == 0
    hypotheses = [model.generate(e.prompt, temperature=0).text.strip() for e in examples]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(scorer.score(e.completion, h)["rougeL"].fmeasure for e, h in zip(examples, hypotheses)) / len(examples)
    assert metrics["rougeL"] == pytest.approx(100 * expected)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [[e.completion for e in examples]]).score)
    card = (summarizer / "README.md").read_text()
    assert "## Evaluation: summarization on" in card and f"| rougeL | {metrics['rougeL']:.4f} |" in card
    assert "Debian package descriptions (Debian 12, main)" in card  # the data's attribution


def test_rouge_scores_the_best_reference_with_stemming():
    assert rouge(["Python library for parsing"], [["python libraries for parse"]])["rouge1"] == pytest.approx(100.0)
    assert rouge(["terminal emulator"], [["web browser", "terminal emulator"]])["rougeL"] == pytest.approx(100.0)
    assert rouge([""], [["web browser"]]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_bad_rows_are_refused_with_one_line(tmp_path, summarizer):
    good = json.dumps({"prompt": "A tool.", "completion": "tool"})
    cases = {
        "no-prompt.jsonl": (good + "\n" + json.dumps({"completion": "tool"}), 'line 2: needs a string field "prompt"'),
        "no-completion.jsonl": (json.dumps({"prompt": "A tool."}), 'line 1: needs a string field "completion"'),
        "empty-prompt.jsonl": (json.dumps({"prompt": " ", "completion": "tool"}), "line 1: the prompt is empty"),
        "not-json.jsonl": (good + "\n" + good + "\nA tool.\ttool", "line 3 is not valid JSON"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text + "\n")
        result = edgellm("eval", "--task", "summarization", tmp_path / name, "-m", summarizer)
        assert result.returncode == 1 and message in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_description_longer_than_the_context_keeps_its_start(summarizer):
    """Trained with --too-long right, the folder cuts a long description's end (truncate "right"
    in generation_config.json): generate and eval take it, and the model sees its first tokens and
    the template's marker; --truncate error refuses it with one line."""
    model = load(summarizer)
    assert json.loads((summarizer / "generation_config.json").read_text())["truncate"] == "right"
    long = "A library for parsing command line options in C programs. " * 12  # about 700 ids with 320
    ids = model.encode_prompt(long)
    whole = model.encode_prompt(long, model.settings(truncate="left", max_new_tokens=1))  # for its marker
    assert len(ids) == 256 - 256 // 2 and ids[:-1] == model.tokenizer.encode(long)[:len(ids) - 1]
    assert ids[-1] == whole[-1] == model.tokenizer.special_tokens["<|completion|>"]
    result = edgellm("generate", "-m", summarizer, long)
    assert result.returncode == 0 and result.stdout.strip() == model.generate(long).text.strip(), result.stderr
    result = edgellm("generate", "-m", summarizer, long, "--truncate", "error")
    assert result.returncode == 1 and "but the model's context is 256 tokens" in result.stderr
    assert result.stdout == "" and "--truncate left" in result.stderr  # nothing printed before the error
    assert len(result.stderr.strip().splitlines()) == 1
    metrics = evaluate(model, [Example(long, "C option parser"), Example("A C option parser.", "option parser")],
                       "summarization")
    assert metrics["examples"] == 2 and metrics["too_long"] == 0
    metrics = evaluate(model, [Example(long, "C option parser")], "summarization", truncate="error")
    assert metrics["too_long"] == 1  # scored empty and counted


def test_quantize_gates_a_summarizer_on_rouge_l(summarizer, rows, tmp_path):
    """`edgellm quantize --task summarization` scores float32 and int8 greedily with ROUGE-L on
    the file and keeps int8 only within 0.5 points."""
    from edgellm.export import quantize

    result = quantize.quantize_folder(summarizer, tmp_path / "q", task="summarization",
                                      eval_file=str(rows / "test.jsonl"))
    figures = result["figures"]
    assert figures["float32"]["task_metric_name"] == "rougeL"
    drop = figures["float32"]["task_metric"] - figures["int8"]["task_metric"]
    assert (result["weights"] == "int8") == (drop <= quantize.MAX_TASK_METRIC_DROP), result["decision"]
    expected = evaluate(load(summarizer), read_examples(rows / "test.jsonl"), "summarization")["rougeL"]
    assert figures["float32"]["task_metric"] == pytest.approx(expected)
