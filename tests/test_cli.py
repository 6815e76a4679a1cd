"""The edgellm command in a subprocess, as users run it, and through click's CliRunner."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgellm.cli import main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def edgellm(*args, input=None, cwd=None, env=ENV):
    """The command in a subprocess; its stdout and stderr as written (a carriage return stays one)."""
    result = subprocess.run([sys.executable, "-m", "edgellm", *map(str, args)], capture_output=True,
                            input=None if input is None else input.encode(), env=env, cwd=cwd, timeout=600)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


# what TensorFlow, absl, XLA, tf2onnx and Keras print of their own; and a terminal's escapes
LIBRARY_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::|^WARNING|Warning: |warnings\.warn|oneDNN|"
                          r"To enable the following instructions|Epoch \d|[\x1b\r]", re.MULTILINE)
PROGRESS = re.compile(r"^step (\d+/\d+): loss \d+\.\d{4}, val loss \d+\.\d{4} \(\d+\.\d{4} per char, perplexity "
                      r"\d+\.\d\d\), lr \d\.\de-\d\d, \d{1,3}(,\d{3})* tokens/s, \d+ s$", re.MULTILINE)


def test_train_export_generate_commands(corpus_file, tmp_path):
    """The commands as a user runs them: with TensorFlow's own log level (unset), stderr holds
    edgellm's lines only, and a log file gets the progress as plain lines."""
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    ckpt, folder = tmp_path / "ckpt", tmp_path / "model"
    shape = ("--layers", 1, "--heads", 2, "--width", 32, "--context", 32, "--vocab-size", 300, "--batch-size", 8)
    train = edgellm("train", corpus_file, "--out", ckpt, "--steps", 6, "--eval-interval", 3, *shape, "--warmup", 2,
                    env=env)
    assert train.returncode == 0, train.stderr
    assert (ckpt / "model.weights.h5").is_file() and (ckpt / "loss_curve.png").is_file()
    assert not LIBRARY_LINE.findall(train.stderr), train.stderr
    assert [m.group(1) for m in PROGRESS.finditer(train.stderr)] == ["3/6", "6/6"], train.stderr
    shown = edgellm("train", "--out", ckpt, "--resume", "--steps", 10, "--library-logs", env=env)
    assert shown.returncode == 0 and re.search(r"^I\d{4} .*XLA", shown.stderr, re.MULTILINE), shown.stderr
    assert [m.group(1) for m in PROGRESS.finditer(shown.stderr)] == ["9/10", "10/10"], shown.stderr

    export = edgellm("export", ckpt, folder, env=env)
    assert export.returncode == 0, export.stderr
    assert not LIBRARY_LINE.findall(export.stderr), export.stderr
    assert (folder / "model.onnx").is_file() and (folder / "README.md").is_file()
    # int8 by default: kept or refused, and the decision is said
    weights = json.loads((folder / "config.json").read_text())["edgellm"]["onnx"]["weights"]
    assert ("int8: held-out perplexity" if weights == "int8" else "float32 kept: int8 raises") in export.stderr
    both = edgellm("export", ckpt, tmp_path / "other", "--quantize", "int8", "--fp16")
    assert both.returncode != 0 and "Choose one of --quantize int8 and --fp16." in both.stderr

    generate = edgellm("generate", "ROMEO:", "--model", folder, "-n", 12, "--seed", 1)
    assert generate.returncode == 0, generate.stderr
    assert generate.stdout.startswith("ROMEO:") and len(generate.stdout) > len("ROMEO:\n")

    from_stdin = edgellm("generate", "-", "--model", folder, "-n", 5, "-t", 0, input="ROMEO:")
    assert from_stdin.returncode == 0 and from_stdin.stdout.startswith("ROMEO:")


def test_errors_are_one_line_and_exit_nonzero(tmp_path, tiny_folder):
    bad = [
        ("generate", "hi", "--model", "no-such-model"),
        ("generate", "hi", "--model", tiny_folder, "--top-p", "1.5"),
        ("generate", "hi", "--model", tiny_folder, "-t", "-1"),
        ("generate", "hi", "--model", tiny_folder, "-n", "0"),
        ("generate", "", "--model", tiny_folder),
        ("export", tmp_path, tmp_path / "out"),
        ("export", tiny_folder.parent, tiny_folder),
    ]
    for args in bad:
        result = edgellm(*args)
        assert result.returncode != 0, args
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("Error:") and "Traceback" not in result.stderr, (args, result.stderr)


def test_help_explains_every_command():
    for args in ([], ["train"], ["export"], ["generate"]):
        result = edgellm(*args, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, args


def test_generating_imports_neither_tensorflow_nor_keras(tiny_folder):
    code = (
        "import sys, edgellm\n"
        f"model = edgellm.load({str(tiny_folder)!r})\n"
        "print(model.generate('ROMEO:', max_new_tokens=8, seed=0).text)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    cli = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgellm", "generate", "ROMEO:", "-m",
                          tiny_folder, "-n", "4"], capture_output=True, text=True, env=ENV)
    assert cli.returncode == 0, cli.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in cli.stderr.splitlines() if "|" in line}
    assert not imported & {"tensorflow", "keras", "tf2onnx"}


def library_errors(tmp_path, folder) -> dict:
    """For each command of `edgellm`: arguments the library refuses, and a part of its message."""
    text = tmp_path / "text.txt"
    text.write_text("ROMEO: What, ho! " * 20, encoding="utf-8")
    return {
        "generate": (["generate", "hi", "--model", "no-such-model"], "No model folder or shipped model named"),
        "chat": (["chat", "--model", folder, "--top-p", "1.5"], "top_p must be in (0, 1]. Received: top_p=1.5"),
        "eval": (["eval", text, "--model", "no-such-model"], "No model folder or shipped model named"),
        "bench": (["bench", "--model", folder, "--prompt-tokens", "5000"], "prompt_tokens must be in [1, 63]"),
        "info": (["info", tmp_path], "is incomplete: model.onnx is missing"),
        "tokenize": (["tokenize", "hi", "--tokenizer", text], "text.txt is not valid JSON"),
        "tokenizer": (["tokenizer", "train", text, "--vocab-size", "257", "--special-token", "<a>",
                       "--special-token", "<b>"], "vocab_size must be at least 256 + 2"),
        "export": (["export", tmp_path, tmp_path / "out"], "Not an edgellm checkpoint"),
        "upgrade": (["upgrade", folder], "is already a format 2 folder: nothing to upgrade"),
        "quantize": (["quantize", Path(__file__).parent.parent / "models" / "shakespeare", tmp_path / "q"],
                     "holds int8 weights; edgellm quantize needs the float32 graph."),
        "train": (["train", text, "--out", tmp_path / "run", "--heads", "3", "--width", "32"],
                  "hidden_size (--width) must be divisible by num_heads (--heads). Received: hidden_size=32, num_heads=3"),
        "serve": (["serve", "no-such-model", "--port", "0"], "No model folder or shipped model named"),
        "web": (["web", "shakespeare", "--node-modules", tmp_path, "--port", "0"],
                "lacks the npm packages the page runs. Received: --node-modules"),
    }


def test_every_command_turns_library_errors_into_one_line(tmp_path, tiny_folder):
    cases = library_errors(tmp_path, tiny_folder)
    assert sorted(cases) == sorted(main.list_commands(None))  # a new command needs a case here
    for name, (args, message) in cases.items():
        result = CliRunner().invoke(main, [str(a) for a in args])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (name, result.output)
        assert lines[-1].startswith("Error: ") and message in lines[-1], (name, result.stderr)
        assert len([line for line in lines if line.startswith("Error")]) == 1, (name, result.stderr)


def test_missing_extras_and_unwritable_files_are_one_line(tmp_path, tiny_folder):
    import shutil

    blocked = "import sys; sys.modules['uvicorn'] = None; from edgellm.cli import main; main()"  # as if not installed
    result = subprocess.run([sys.executable, "-c", blocked, "serve", str(tiny_folder)], capture_output=True,
                            text=True, env=ENV, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == ("Error: edgellm serve needs uvicorn, which is not installed. "
                                     "Install it with: pip install 'edgellm[serve]'")
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    (folder / "README.md").unlink()
    (folder / "README.md").mkdir()  # the model card cannot be replaced
    text = tmp_path / "text.txt"
    text.write_text("ROMEO: What, ho! " * 20, encoding="utf-8")
    result = CliRunner().invoke(main, ["eval", str(text), "--model", str(folder), "--record"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.startswith("Error: Is a directory. Received: ") and result.stderr.count("\n") == 1
