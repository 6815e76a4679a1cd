"""Pretrained sources (training/pretrained/): Hugging Face folders and GGUF files -> Keras -> ONNX.

The default run writes tiny sources without torch (tests/pretrained_sources.py) and checks that a
Hugging Face folder and a GGUF file of the same weights give the same Keras logits (the GGUF
query/key permutation undone, Q8_0 dequantized), that export's parity gate passes on them, and
that the tokenizer encodes like Hugging Face `tokenizers`. Under -m interop, transformers' own
forward pass on the same folders is the reference for Keras and ONNX.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import pretrained_sources as sources

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
IDS = np.random.default_rng(0).integers(0, sources.LLAMA["vocab_size"], (2, 24)).astype(np.int32)
# float32 logits of two computations of the same 2-layer model: about 100 terms per dot product
# of values near 1, so rounding differs by far less than 1e-4
ATOL = 1e-4


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    llama, gpt2 = sources.llama_tensors(), sources.gpt2_tensors()
    return {
        "llama": sources.write_hf(root / "llama", "llama", llama),
        "llama_q8": sources.write_hf(root / "llama-q8", "llama", sources.q8_0(llama)),
        "gpt2": sources.write_hf(root / "gpt2", "gpt2", gpt2),
        "llama.gguf": sources.write_gguf(root / "llama.gguf", "llama", llama, quantize=False),
        "llama-q8_0.gguf": sources.write_gguf(root / "llama-q8_0.gguf", "llama", llama, quantize=True),
        "gpt2.gguf": sources.write_gguf(root / "gpt2.gguf", "gpt2", gpt2, quantize=False),
    }


def keras_logits(source) -> np.ndarray:
    from edgellm.training import pretrained

    return np.asarray(pretrained.build_model(pretrained.load(source))(IDS))


@pytest.mark.parametrize("hf, gguf", [("llama", "llama.gguf"), ("llama_q8", "llama-q8_0.gguf"), ("gpt2", "gpt2.gguf")])
def test_gguf_file_and_hf_folder_of_the_same_weights_agree(made, hf, gguf):
    np.testing.assert_allclose(keras_logits(made[gguf]), keras_logits(made[hf]), atol=ATOL, rtol=0)


def test_gguf_config_and_tokenizer_follow_the_metadata(made):
    from edgellm.training import pretrained

    source = pretrained.load(made["llama-q8_0.gguf"])
    cfg = source.config
    assert (cfg.norm, cfg.mlp, cfg.num_kv_heads, cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings) == \
        ("rms", "swiglu", 2, 500.0, 1e-6, False)
    assert source.tokenizer.split_digits and not source.add_bos_token
    assert source.stop_token_ids == [source.tokenizer.special_tokens["<|im_end|>"]]
    assert source.tokenizer.encode("In 1995")[-4:] == [source.tokenizer.encode(d)[0] for d in "1995"]


def test_tokenizer_encodes_as_hugging_face_tokenizers(made):
    tokenizers = pytest.importorskip("tokenizers")
    from edgellm.training import pretrained

    text = sources.TEXT[:300] + " 2024-12-07, naïve façade: f(x)=x**2\n\tüber 42ms  ok"
    for name in ("llama", "gpt2.gguf"):
        ours = pretrained.load(made[name]).tokenizer
        theirs = tokenizers.Tokenizer.from_str(json.dumps(ours.to_json()))
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False).ids
    hf = tokenizers.Tokenizer.from_file(str(made["llama"] / "tokenizer.json"))
    assert pretrained.load(made["llama"]).tokenizer.encode(text) == hf.encode(text).ids


def test_export_a_quantized_gguf_passes_the_parity_gate_and_chats_in_its_template(made, tmp_path):
    import edgellm
    from edgellm.export.onnx_export import export

    provenance = export(made["llama-q8_0.gguf"], tmp_path / "m", weights="float32")
    assert provenance["parity"]["greedy_tokens_equal"]
    assert provenance["source"]["format"] == "gguf"
    model = edgellm.load(tmp_path / "m")
    tokenizer_config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == sources.CHATML and tokenizer_config["eos_token"] == "<|im_end|>"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["rope_theta"] == 500.0
    assert list(model.defaults.stop_token_ids) == [model.tokenizer.special_tokens["<|im_end|>"]]
    assert len(model.generate("12 crêpes", max_new_tokens=4, temperature=0, stop_token_ids=()).token_ids) == 4

    # the server's chat encodes in the template as `edgellm chat` does: ChatML's markers are special ids
    import openai
    from serving import running

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12 crêpes"}]
    ids = model.folder.encode_chat(model.tokenizer, messages)
    assert ids.count(model.tokenizer.special_tokens["<|im_start|>"]) == 3
    assert len(ids) < len(model.tokenizer.encode(model.folder.render_chat(messages)))  # markers as plain text
    expected = "".join(model.text_steps(ids, model.settings(max_new_tokens=6, temperature=0)))
    with running(model) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        reply = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0)
    assert reply.usage.prompt_tokens == len(ids) and reply.choices[0].message.content == expected.lstrip()


@pytest.mark.parametrize("bad, message", [
    ({"architectures": ["MistralForCausalLM"]}, "cannot import the architecture 'MistralForCausalLM'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 32.0}}, "no rope scaling"),
])
def test_unsupported_sources_are_refused_in_one_line(made, tmp_path, bad, message):
    import shutil

    from edgellm.training import pretrained

    folder = tmp_path / "bad"
    shutil.copytree(made["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **bad}))
    with pytest.raises(ValueError, match=message):
        pretrained.load(folder)


@pytest.mark.interop
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_keras_and_onnx_logits_equal_transformers(made, name, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from edgellm.export.onnx_export import export
    from edgellm.generator import Generator

    reference_model = transformers.AutoModelForCausalLM.from_pretrained(made[name]).eval()
    with torch.no_grad():
        reference = reference_model(torch.tensor(IDS, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(keras_logits(made[name]), reference, atol=ATOL, rtol=0)

    export(made[name], tmp_path / "m", weights="float32")
    runtime = Generator(tmp_path / "m", providers=["CPUExecutionProvider"])
    ids = IDS.astype(np.int64)
    mask = np.ones_like(ids)
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    logits, _ = runtime.forward(ids, mask, positions, runtime.empty_past(ids.shape[0]))
    np.testing.assert_allclose(logits, reference, atol=ATOL, rtol=0)


def test_train_init_from_a_gguf_fine_tunes_its_weights_and_keeps_its_chat_template(made, tmp_path, corpus_file):
    from edgellm.training import checkpoint, pretrained
    from edgellm.training.train import train

    out = tmp_path / "ft"
    # a learning rate of 1e-9 moves no weight by more than about 1e-9: the logits stay the source's
    train([str(corpus_file)], str(out), init=str(made["llama-q8_0.gguf"]), context_length=32, steps=1, lr=1e-9,
          warmup=1, batch_size=2, eval_interval=1, eval_tokens=64, verbose=0)
    model, tokenizer, meta = checkpoint.load_model(out)
    assert model.config.context_length == 32 and model.config.norm == "rms"
    np.testing.assert_allclose(np.asarray(model(IDS[:, :16])), keras_logits(made["llama-q8_0.gguf"])[:, :16],
                               atol=ATOL, rtol=0)
    assert meta["chat_template"] == sources.CHATML and tokenizer.split_digits
    assert meta["stop_token_ids"] == pretrained.load(made["llama-q8_0.gguf"]).stop_token_ids


def test_export_format_hf_writes_back_the_gpt2_tensors_it_imported(made):
    """Import and --format hf name weights from the one table (TENSORS): a GPT-2 folder read in
    and written out gives its own tensors back, names, layouts and values."""
    from safetensors.numpy import load_file

    from edgellm.export import hf_weights
    from edgellm.training import pretrained

    written = hf_weights.state_dict(pretrained.build_model(pretrained.load(made["gpt2"])))
    original = load_file(str(made["gpt2"] / "model.safetensors"))
    assert sorted(written) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)
