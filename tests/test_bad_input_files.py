"""Bad files, found systematically: any JSON value in any field edgellm reads of config.json,
generation_config.json and checkpoint.json either works (the model loads and generates) or is
refused with one ValueError naming the file and the field; nothing is written on failure. Also a
model.onnx of another shape, damaged checkpoints, and the Python API given the wrong type."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgellm import GenerationConfig, load
from edgellm.cli import main
from edgellm.training import checkpoint

REPO = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)
E = "edgellm."  # config.json's key of edgellm's document
FOLDER_FIELDS = {
    "config.json": ["edgellm", E + "format_version", E + "architecture", E + "architecture.vocab_size",
                    E + "architecture.context_length", E + "architecture.num_heads", E + "architecture.hidden_size",
                    E + "architecture.num_kv_heads", E + "architecture.dropout", E + "architecture.use_bias",
                    E + "architecture.position_embedding", E + "special_tokens", E + "special_tokens.eos_token_id",
                    E + "special_tokens.pad_token_id", E + "onnx", E + "onnx.kv_cache", E + "onnx.capacity_mask",
                    E + "prompt_template", E + "provenance", E + "provenance.metrics", "vocab_size", "n_layer"],
    "generation_config.json": ["max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed",
                               "eos_token_id", "stop_strings", "logit_bias", "num_beams", "truncate"],
    "tokenizer_config.json": ["chat_template", "model_max_length"],
}
CHECKPOINT_FIELDS = ["format_version", "architecture", "architecture.num_layers", "training", "training.steps",
                     "training.lr", "state", "state.micro_step", "state.data_fingerprint", "data", "task_examples",
                     "metrics", "versions"]


def edited(path: Path, field: str, value) -> None:
    doc = json.loads(path.read_text())
    *parents, key = field.split(".")
    target = doc
    for name in parents:
        target = target.setdefault(name, {}) if isinstance(target.get(name), dict) else target
    target[key] = value
    path.write_text(json.dumps(doc))


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def folder_copy(tiny_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "tiny"
    shutil.copytree(tiny_folder, folder)
    return folder


@FUZZ
@given(file_field=st.sampled_from([(f, k) for f, keys in FOLDER_FIELDS.items() for k in keys]), value=JSON)
def test_any_value_in_a_model_folder_field_works_or_is_named(tiny_folder, folder_copy, file_field, value):
    name, field = file_field
    shutil.copy(tiny_folder / name, folder_copy / name)
    edited(folder_copy / name, field, value)
    try:
        model = load(folder_copy)
    except ValueError as error:
        message = str(error)
        assert name in message and "\n" not in message, message
        return
    finally:
        shutil.copy(tiny_folder / name, folder_copy / name)
    try:  # it loaded: then it generates, or refuses the settings with a ValueError
        model.generate("ROMEO:", max_new_tokens=3)
    except ValueError:
        pass


@pytest.mark.parametrize("change, message", [
    (lambda f: shutil.copy(REPO / "models/babi-qa1/model.onnx", f / "model.onnx"),
     "past_key_values.0.key has KV heads 4, config.json's architecture says 2"),
    (lambda f: edited(f / "config.json", E + "architecture.hidden_size", 128),
     "past_key_values.0.key has head size 32, config.json's architecture says 64"),
    (lambda f: edited(f / "config.json", E + "architecture.context_length", 128),
     "fails at position 127, the last of context_length 128"),
    (lambda f: edited(f / "config.json", E + "special_tokens", None),
     "config.json: edgellm.special_tokens must be an object. Received: edgellm.special_tokens=null"),
    (lambda f: edited(f / "config.json", E + "special_tokens.pad_token_id", 4096),
     r"edgellm.special_tokens.pad_token_id must be a token id in \[0, 384\)"),
    (lambda f: edited(f / "generation_config.json", "logit_bias", {"x": 1}),
     "generation_config.json: logit_bias keys must be token ids"),
])
def test_a_folder_that_does_not_fit_together_is_refused_at_load(tiny_folder, tmp_path, change, message):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_folder, folder)
    change(folder)
    with pytest.raises(ValueError, match=message):
        load(folder)


def test_the_api_refuses_a_dict_for_a_generation_config(tiny_folder):
    model = load(tiny_folder)
    for call in (lambda: model.generate("hi", {"temperature": 0}), lambda: list(model.stream("hi", {"seed": 1})),
                 lambda: model.encode_prompt("hi", {"max_new_tokens": 2}),
                 lambda: list(model.token_stream([1, 2], {"seed": 1}))):
        with pytest.raises(ValueError, match="config must be a GenerationConfig. Received: a dict"):
            call()
    with pytest.raises(ValueError, match=r"prompt_ids must be a list of token ids in \[0, 384\)"):
        list(model.token_stream([1, 99999], GenerationConfig()))
    with pytest.raises(ValueError, match=r"threads must be an integer in \[1, 1024\]"):
        load(tiny_folder, threads=2**40)


@pytest.fixture(scope="module")
def checkpoint_copy(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


@FUZZ
@given(field=st.sampled_from(CHECKPOINT_FIELDS), value=JSON)
def test_any_value_in_a_checkpoint_field_is_read_or_named(tiny_checkpoint, checkpoint_copy, field, value, tmp_path):
    meta = checkpoint_copy / checkpoint.META_FILE
    shutil.copy(tiny_checkpoint / checkpoint.META_FILE, meta)
    edited(meta, field, value)
    before = digest(checkpoint_copy)
    try:
        checkpoint.load_meta(checkpoint_copy)
        return  # read: a value of the right type (training and export read it)
    except ValueError as error:
        assert "checkpoint.json" in str(error) and field.split(".")[-1] in str(error), str(error)
    # the same damage through the CLI: one line, nothing written, the checkpoint unchanged
    out = tmp_path / "exported"
    for args in (["export", str(checkpoint_copy), str(out)],
                 ["train", "--out", str(checkpoint_copy), "--resume", "--steps", "31"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert result.output.startswith("Error: ") and "checkpoint.json" in result.output
        assert "Traceback" not in result.output
    assert not out.exists() and digest(checkpoint_copy) == before


@pytest.mark.parametrize("name, content, message", [
    ("checkpoint.json", "{not json", "checkpoint.json is not valid JSON"),
    ("model.weights.h5", "garbage", "Cannot read .*model.weights.h5: .*The checkpoint is damaged"),
    ("train_state.npz", "garbage", "Cannot read .*train_state.npz: .*The checkpoint is damaged"),
])
def test_a_damaged_checkpoint_is_named(tiny_checkpoint, tmp_path, name, content, message):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoint, damaged)
    (damaged / name).write_text(content)
    before = digest(damaged)
    commands = [["train", "--out", str(damaged), "--resume", "--steps", "31"]]
    if name != "train_state.npz":  # export reads no optimizer state
        commands.append(["export", str(damaged), str(tmp_path / "out")])
    for args in commands:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(error) == 1 and __import__("re").search(message, error[0]), result.output
    assert not (tmp_path / "out").exists() and digest(damaged) == before


def test_digits_are_ascii_digits_wherever_text_becomes_a_number(tmp_path):
    """"²" and "٣" are digits to str.isdigit but not (or not plainly) to int(): every place that
    parses a number from text accepts ASCII digits only."""
    import re

    from edgellm.export import staging
    from edgellm.training import cluster

    repo = Path(__file__).resolve().parent.parent
    for path in [*(repo / "edgellm").rglob("*.py"), *(repo / "export").rglob("*.py"), *(repo / "training").rglob("*.py")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"(\w+)\.isdigit\(\)", line):
                assert f"{match.group(1)}.isascii() and" in line, f"{path.name}: {line.strip()}"
    odd = tmp_path / ".m.export-²-1"  # an export's leftover folder, its process id not a number
    odd.mkdir()
    assert staging.remove_leftovers(tmp_path / "m") == [] and odd.is_dir()
    config = {"cluster": {"worker": ["localhost:²"]}, "task": {"type": "worker", "index": 0}}
    with pytest.raises(ValueError, match="not \"host:port\" with a port in 1..65535"):
        cluster.from_environment({"TF_CONFIG": json.dumps(config)})
