"""Model folder format 2: the files Hugging Face's loaders and onnxruntime-genai read, format 1
folders still read and upgraded by `edgellm upgrade`, and the bad inputs around them. The real
loaders open the folders in test_interop.py (-m interop)."""

import json
import shutil

import onnx
import pytest
from click.testing import CliRunner

from edgellm.folder import model_folder
from edgellm.chat import template as chat_template
from edgellm.cli import main
from edgellm.generator import load

OLD_DIMENSIONS = {"batch_size": "batch", "sequence_length": "sequence", "past_sequence_length": "past_sequence",
                  "total_sequence_length": "total_sequence"}


def read(folder, name):
    return json.loads((folder / name).read_text())


def dimension_names(folder) -> set:
    graph = onnx.load(str(folder / "model.onnx")).graph
    return {d.dim_param for v in [*graph.input, *graph.output] for d in v.type.tensor_type.shape.dim if d.dim_param}


def test_exported_folder_speaks_hugging_face_and_genai(tiny_folder):
    config = read(tiny_folder, "config.json")
    doc = config["edgellm"]
    assert doc["format_version"] == model_folder.FORMAT_VERSION == 2 and "architecture" not in config
    arch = doc["architecture"]
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"], config["vocab_size"]) == \
        (arch["num_layers"], arch["num_heads"], arch["hidden_size"], arch["context_length"], arch["vocab_size"])
    assert config["eos_token_id"] == doc["special_tokens"]["eos_token_id"]
    tokenizer = read(tiny_folder, "tokenizer_config.json")
    assert tokenizer["eos_token"] == tokenizer["bos_token"] == tokenizer["pad_token"] == "<|endoftext|>"
    assert tokenizer["model_max_length"] == arch["context_length"]
    assert tokenizer["chat_template"] == chat_template.TEXT_TEMPLATE
    generation = read(tiny_folder, "generation_config.json")
    assert generation == {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                          "pad_token_id": config["pad_token_id"], "max_new_tokens": 200, "do_sample": True,
                          "temperature": 0.8, "top_k": 50, "top_p": 0.95}
    search = read(tiny_folder, "genai_config.json")["search"]  # the same defaults, not greedy
    assert (search["do_sample"], search["temperature"], search["top_k"], search["top_p"]) == (True, 0.8, 50, 0.95)
    assert dimension_names(tiny_folder) == set(OLD_DIMENSIONS)  # Optimum's names
    model = load(tiny_folder)
    assert (model.defaults.temperature, model.defaults.top_k, model.defaults.top_p) == (0.8, 50, 0.95)


def as_format_1(folder, out):
    """`folder` written as edgellm's format 1 exports were: edgellm's document at the top of
    config.json, generation_config.json in edgellm's names, no tokenizer_config.json, the old
    dimension names."""
    shutil.copytree(folder, out)
    doc = read(folder, "config.json")["edgellm"]
    (out / "config.json").write_text(json.dumps({**doc, "format_version": 1, "model_type": "edgellm-gpt"}))
    (out / "generation_config.json").write_text(json.dumps({
        "format_version": 1, "max_new_tokens": 200, "temperature": 0.8, "top_k": 50, "top_p": 0.95,
        "stop_token_ids": [doc["special_tokens"]["eos_token_id"]]}))
    (out / "tokenizer_config.json").unlink()
    proto = onnx.load(str(out / "model.onnx"))
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = OLD_DIMENSIONS[dim.dim_param]
    onnx.save(proto, str(out / "model.onnx"))
    return out


def test_format_1_folders_are_read_and_upgraded_in_place(tiny_folder, tmp_path):
    old = as_format_1(tiny_folder, tmp_path / "tiny")
    folder = model_folder.read(old)
    assert folder.format_version == 1 and folder.chat_template == chat_template.TEXT_TEMPLATE
    greedy = dict(temperature=0.0, max_new_tokens=12)
    before = load(old).generate("ROMEO:", **greedy).token_ids
    assert before == load(tiny_folder).generate("ROMEO:", **greedy).token_ids

    out = CliRunner().invoke(main, ["upgrade", str(old)])
    assert out.exit_code == 0, out.output
    for name in ("tokenizer_config.json", "generation_config.json", "genai_config.json"):
        assert read(old, name) == read(tiny_folder, name)  # what a fresh export writes
    upgraded, fresh = read(old, "config.json"), read(tiny_folder, "config.json")
    assert upgraded["edgellm"]["provenance"].pop("upgrade")["from_format_version"] == 1
    assert upgraded == fresh
    assert dimension_names(old) == set(OLD_DIMENSIONS)
    assert load(old).generate("ROMEO:", **greedy).token_ids == before
    assert "Upgraded from format 1 with `edgellm upgrade" in (old / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    again = CliRunner().invoke(main, ["upgrade", str(old)])  # already current: one line
    assert again.exit_code == 1 and again.output.strip().splitlines() == [
        f"Error: {old} is already a format 2 folder: nothing to upgrade."]


def test_upgrade_refuses_a_folder_of_an_unknown_format_version(tiny_folder, tmp_path):
    folder = as_format_1(tiny_folder, tmp_path / "future")
    (folder / "config.json").write_text(json.dumps({**read(folder, "config.json"), "format_version": 7}))
    out = CliRunner().invoke(main, ["upgrade", str(folder)])
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert "format_version must be one of [1, 2]. Received: format_version=7. Upgrade edgellm" in out.output


def test_export_refuses_an_existing_output_folder_in_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "taken").mkdir()
    out = CliRunner().invoke(main, ["export", str(tiny_checkpoint), str(tmp_path / "taken"), "--format", "hf"])
    assert out.exit_code == 1 and out.output.strip().splitlines() == [
        f"Error: Output folder {tmp_path / 'taken'} already exists. Pass --force to replace it."]


def test_task_folders_carry_the_task_template():
    folder = model_folder.read("en-fr")
    assert folder.format_version == 2 and folder.chat_template == chat_template.TASK_TEMPLATE
    tokenizer = model_folder.read_tokenizer(folder)
    completion = tokenizer.special_tokens["<|completion|>"]
    prompt = "English: Go.\nFrench:"
    ids = chat_template.encode(tokenizer, folder.chat_template, [{"role": "user", "content": prompt}])
    assert ids == tokenizer.encode(prompt) + [completion]
    assert read(folder.path, "generation_config.json")["do_sample"] is False
    assert read(folder.path, "genai_config.json")["search"]["do_sample"] is False
