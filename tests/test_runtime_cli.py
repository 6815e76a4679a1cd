"""edgellm generate, chat, eval, bench and info as users run them, and the examples."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgellm.cli import main
from edgellm.folder.generation_config import GenerationConfig
from edgellm.generator import load

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_every_generation_setting_is_an_option():
    help_text = run("generate", "--help").output
    options = {"stop_token_ids": "--stop-token-id", "stop_strings": "--stop"}
    for field in dataclasses.fields(GenerationConfig):
        assert options.get(field.name, "--" + field.name.replace("_", "-")) in help_text, field.name


def test_generate_options_reach_the_generator(tiny_folder):
    model = load(tiny_folder)
    greedy = model.generate("ROMEO:", temperature=0, max_new_tokens=12, stop_token_ids=())
    out = run("generate", "ROMEO:", "-m", tiny_folder, "-t", 0, "-n", 12, "--ignore-eos", "--timings")
    assert out.exit_code == 0, out.output
    assert out.stdout == "ROMEO:" + greedy.text + "\n"
    assert "tokens/s" in out.stderr
    banned = greedy.token_ids[0]
    out = run("generate", "ROMEO:", "-m", tiny_folder, "-t", 0, "-n", 12, "--logit-bias", f"{banned}=-inf")
    expected = model.generate("ROMEO:", temperature=0, max_new_tokens=12, logit_bias={banned: float("-inf")})
    assert out.exit_code == 0 and out.stdout == "ROMEO:" + expected.text + "\n"
    stop = greedy.text[3:5]
    out = run("generate", "ROMEO:", "-m", tiny_folder, "-t", 0, "-n", 12, "--stop", stop.replace("\n", "\\n"))
    assert out.stdout == "ROMEO:" + greedy.text[:greedy.text.index(stop)] + "\n"


def test_generate_several_sequences_and_beams(tiny_folder):
    out = run("generate", "ROMEO:", "-m", tiny_folder, "--num-return-sequences", 3, "--seed", 2, "-n", 8, "-t", 1.0)
    assert out.exit_code == 0, out.output
    assert out.stdout.count("\n---\n") == 2 and out.stdout.count("ROMEO:") >= 3
    out = run("generate", "ROMEO:", "-m", tiny_folder, "--num-beams", 3, "--num-return-sequences", 2, "-n", 8)
    assert out.exit_code == 0 and out.stdout.count("\n---\n") == 1


def test_prompt_from_stdin(tiny_folder):
    out = run("generate", "-", "-m", tiny_folder, "-t", 0, "-n", 5, input="ROMEO:")
    assert out.exit_code == 0 and out.stdout.startswith("ROMEO:")


def test_a_prompt_too_long_prints_nothing_and_names_the_option(tiny_folder):
    long = "To be, or not to be, that is the question. " * 20  # over the tiny model's 64 tokens
    for args in ([], ["--num-return-sequences", 2, "-t", 1]):
        out = run("generate", long, "-m", tiny_folder, *args)
        assert out.exit_code == 1 and out.stdout == "", out.stdout[:80]
        assert "Received: --truncate error" in out.stderr and "pass --truncate left" in out.stderr
        assert "truncate='left'" not in out.stderr and "Traceback" not in out.output
    out = run("generate", long, "-m", tiny_folder, "--truncate", "left", "-n", 4)
    assert out.exit_code == 0 and out.stdout.startswith(long)


@pytest.mark.parametrize("args, message", [
    (["generate", "hi", "--top-p", "1.5"], "top_p must be in (0, 1]. Received: top_p=1.5"),
    (["generate", "hi", "-t", "-1"], "temperature must be 0 (greedy) or at least 1e-06"),
    (["generate", "hi", "-t", "1e-320"], "temperature must be 0 (greedy) or at least 1e-06"),
    (["chat", "--num-return-sequences", "2", "-t", "1"], "A chat reply is one sampled or greedy sequence"),
    (["generate", "hi", "-n", "0"], "max_new_tokens must be at least 1"),
    (["generate", ""], "The prompt is empty"),
    (["generate", "hi", "--logit-bias", "5"], "must be ID=VALUE"),
    (["generate", "hi", "--provider", "NoSuchProvider"], "Execution provider 'NoSuchProvider' is not available"),
    (["generate", "hi", "--threads", "0"], "0 is not in the range 1<=x<=1024"),
    (["eval", "missing.txt"], "does not exist"),
    (["bench", "--batch", "x"], "must be positive integers"),
])
def test_bad_input_is_one_line(tiny_folder, args, message):
    out = run(*args, "-m", tiny_folder)
    assert out.exit_code != 0 and isinstance(out.exception, SystemExit), out.output  # no traceback
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert message in out.output and lines[-1].startswith("Error"), out.output


def test_unknown_model_lists_the_shipped_ones():
    out = run("info", "no-such-model")
    assert out.exit_code == 1 and "No model folder or shipped model named 'no-such-model'" in out.output
    assert "Shipped models:" in out.output


def test_info_describes_the_folder(tiny_folder):
    out = run("info", tiny_folder, "--json")
    assert out.exit_code == 0, out.output
    details = json.loads(out.stdout)
    assert details["architecture"]["vocab_size"] == 384 and details["format_version"] == 2
    assert details["kv_cache"] == "in_place"
    assert "model.onnx" in details["files"] and details["generation_defaults"]["temperature"] > 0


def test_eval_reports_perplexity_through_the_onnx_model(tiny_folder, corpus_file, tmp_path):
    text = corpus_file.read_text()[:3000]
    (tmp_path / "sample.txt").write_text(text)
    out = run("eval", tmp_path / "sample.txt", "-m", tiny_folder, "--json")
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    scored = load(tiny_folder).score(text)
    assert metrics["tokens"] == len(scored.token_ids) - 1
    assert abs(metrics["perplexity"] - scored.perplexity) < 1e-6 * scored.perplexity
    assert metrics["loss_per_char"] < metrics["loss_per_token"]
    bad = run("eval", tmp_path / "sample.txt", "-m", tiny_folder, "--task", "summarize")
    assert bad.exit_code != 0 and "must be one of lm, translation, qa" in bad.output
    (tmp_path / "pairs.tsv").write_text("English: Go.\\nFrench:\t Va !\n")
    not_a_task_model = run("eval", tmp_path / "pairs.tsv", "-m", tiny_folder, "--task", "translation")
    assert not_a_task_model.exit_code != 0 and "is not a task model" in not_a_task_model.output


def test_bench_prints_figures(tiny_folder):
    out = run("bench", "-m", tiny_folder, "--new-tokens", 8, "--repeats", 1, "--batch", "1,2", "--json")
    assert out.exit_code == 0, out.output
    figures = json.loads(out.stdout)
    assert [r["batch"] for r in figures["runs"]] == [1, 2]
    assert all(r["decode_tokens_per_s"] > 0 for r in figures["runs"])


def test_chat_keeps_history_and_ends_on_end_of_input(tiny_folder):
    out = run("chat", "-m", tiny_folder, "-n", 6, "--seed", 0, input="Good morrow.\nWhat news?\n")
    assert out.exit_code == 0, out.output
    assert out.stderr.count("Model: ") == 2 and "Traceback" not in out.output
    # input that is not typed is echoed after the prompt: the transcript shows what was said
    assert "User: Good morrow.\nModel: " in out.stderr and "User: What news?\nModel: " in out.stderr


def test_chat_history_fits_the_context(tiny_folder):
    from edgellm.chat import Chat

    model = load(tiny_folder)
    chat = Chat(model, user="ROMEO", bot="JULIET", max_new_tokens=4, seed=0)
    for i in range(12):
        reply = "".join(chat.send(f"Hi {i}."))
        assert "\n\n" not in reply
    transcript = chat.transcript("Farewell.")
    assert len(model.tokenizer.encode(transcript)) <= model.config.context_length - 4
    assert transcript.endswith("ROMEO: Farewell.\nJULIET:") and "ROMEO: Hi 11.\n" in transcript
    assert "Hi 0." not in transcript  # the oldest turns were dropped


def test_chat_ends_cleanly_on_ctrl_c(tiny_folder):
    proc = subprocess.Popen([sys.executable, "-m", "edgellm", "chat", "-m", str(tiny_folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    seen = ""
    while "User: " not in seen and time.time() < deadline:  # wait for the first prompt
        seen += proc.stderr.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err


@pytest.mark.parametrize("script, args", [
    ("stream_completion.py", ["ROMEO:", "--max-new-tokens", "12"]),
    ("threaded_service.py", ["--workers", "3", "--max-new-tokens", "6"]),
])
def test_examples_run(tiny_folder, script, args):
    result = subprocess.run([sys.executable, str(REPO / "examples" / script), *args, "--model", str(tiny_folder)],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    if script == "threaded_service.py":
        assert len(result.stdout.splitlines()) == 6 and "(length" in result.stdout
    else:
        assert result.stdout.startswith("ROMEO:") and "tokens/s" in result.stderr


def test_import_is_light_and_never_loads_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); import edgellm; took = time.perf_counter() - t\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'onnxruntime', 'tensorflow', 'keras'})\n"
            "print(heavy); edgellm.GenerationConfig; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'onnxruntime', 'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]
