"""Tiny pretrained sources for the tests, written without torch: Hugging Face folders
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json, in transformers' names and
layouts) and GGUF files written with `gguf`'s own writer, float32 or Q8_0, from the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgellm.tokenizer import Tokenizer

TEXT = ("In 1995 the café served 12 crêpes for 3.50 euros. def area(r):\n    return 3.14159 * r ** 2\n"
        "Les élèves déjà partis; x = [1, 22, 333]  # naïve\n") * 20
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=96, rope_theta=500.0, rms_norm_eps=1e-6)
GPT2 = dict(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=96)


def tokenizer(split_digits: bool) -> Tokenizer:
    base = Tokenizer.train([TEXT], vocab_size=300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    # pad to the model's vocabulary with unused special tokens, as pretrained vocabularies often are
    extra = [f"<|unused{i}|>" for i in range(LLAMA["vocab_size"] - base.vocab_size)]
    padded = base.with_special_tokens(extra)
    return Tokenizer(padded.token_bytes, list(padded.merges), padded.special_tokens, split_digits)


def llama_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """transformers' LlamaForCausalLM names and (out, in) layouts, untied head."""
    rng = np.random.default_rng(seed)
    c, f, head = LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    kv = LLAMA["num_key_value_heads"] * head

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    t = {"model.embed_tokens.weight": w(LLAMA["vocab_size"], c), "model.norm.weight": 1 + w(c),
         "lm_head.weight": w(LLAMA["vocab_size"], c)}
    for i in range(LLAMA["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": 1 + w(c), p + "post_attention_layernorm.weight": 1 + w(c),
              p + "self_attn.q_proj.weight": w(c, c), p + "self_attn.k_proj.weight": w(kv, c),
              p + "self_attn.v_proj.weight": w(kv, c), p + "self_attn.o_proj.weight": w(c, c),
              p + "mlp.gate_proj.weight": w(f, c), p + "mlp.up_proj.weight": w(f, c), p + "mlp.down_proj.weight": w(c, f)}
    return t


def gpt2_tensors(seed: int = 1) -> dict[str, np.ndarray]:
    """transformers' GPT2LMHeadModel names, Conv1D (in, out) layouts, tied head."""
    rng = np.random.default_rng(seed)
    c = GPT2["n_embd"]

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    t = {"transformer.wte.weight": w(GPT2["vocab_size"], c), "transformer.wpe.weight": w(GPT2["n_positions"], c),
         "transformer.ln_f.weight": 1 + w(c), "transformer.ln_f.bias": w(c)}
    for i in range(GPT2["n_layer"]):
        p = f"transformer.h.{i}."
        t |= {p + "ln_1.weight": 1 + w(c), p + "ln_1.bias": w(c), p + "ln_2.weight": 1 + w(c), p + "ln_2.bias": w(c),
              p + "attn.c_attn.weight": w(c, 3 * c), p + "attn.c_attn.bias": w(3 * c),
              p + "attn.c_proj.weight": w(c, c), p + "attn.c_proj.bias": w(c),
              p + "mlp.c_fc.weight": w(c, 4 * c), p + "mlp.c_fc.bias": w(4 * c),
              p + "mlp.c_proj.weight": w(4 * c, c), p + "mlp.c_proj.bias": w(c)}
    return t


def write_hf(folder: Path, kind: str, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    llama = kind == "llama"
    tok = tokenizer(split_digits=llama)
    eos = tok.special_tokens["<|im_end|>" if llama else "<|endoftext|>"]
    config = ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", **LLAMA, "hidden_act": "silu",
               "tie_word_embeddings": False, "bos_token_id": tok.special_tokens["<|im_start|>"]} if llama else
              {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **GPT2, "activation_function": "gelu_new",
               "layer_norm_epsilon": 1e-5, "bos_token_id": eos})
    config["eos_token_id"] = eos
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tok.save(folder / "tokenizer.json")
    special = {"eos_token": tok.decode([eos]), "bos_token": tok.decode([config["bos_token_id"]])}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", **special, "chat_template": CHATML if llama else None}))
    return folder


def write_gguf(path: Path, kind: str, tensors: dict[str, np.ndarray], quantize: bool) -> Path:
    """The same model as `write_hf` in llama.cpp's names and layouts; with `quantize`, Q8_0 matrices."""
    import gguf

    from edgellm.training.pretrained import gguf_file

    llama = kind == "llama"
    tok = tokenizer(split_digits=llama)
    w = gguf.GGUFWriter(str(path), kind)
    if llama:
        c, heads = LLAMA["hidden_size"], LLAMA["num_attention_heads"]
        w.add_block_count(LLAMA["num_hidden_layers"]), w.add_context_length(LLAMA["max_position_embeddings"])
        w.add_embedding_length(c), w.add_feed_forward_length(LLAMA["intermediate_size"])
        w.add_head_count(heads), w.add_head_count_kv(LLAMA["num_key_value_heads"])
        w.add_rope_freq_base(LLAMA["rope_theta"]), w.add_layer_norm_rms_eps(LLAMA["rms_norm_eps"])
        w.add_rope_dimension_count(c // heads), w.add_tokenizer_pre("smollm"), w.add_chat_template(CHATML)
        w.add_eos_token_id(tok.special_tokens["<|im_end|>"])
    else:
        c = GPT2["n_embd"]
        w.add_block_count(GPT2["n_layer"]), w.add_context_length(GPT2["n_positions"]), w.add_embedding_length(c)
        w.add_feed_forward_length(4 * c), w.add_head_count(GPT2["n_head"]), w.add_layer_norm_eps(1e-5)
        w.add_tokenizer_pre("gpt-2"), w.add_eos_token_id(tok.special_tokens["<|endoftext|>"])
    doc = tok.to_json()
    w.add_tokenizer_model("gpt2"), w.add_add_bos_token(False)
    w.add_token_list(list(doc["model"]["vocab"])), w.add_token_merges([" ".join(m) for m in doc["model"]["merges"]])
    w.add_token_types([3 if i in tok.special_tokens.values() else 1 for i in range(tok.vocab_size)])
    from edgellm.training import pretrained

    column, layers = (pretrained.HF_LLAMA, LLAMA["num_hidden_layers"]) if llama else (pretrained.HF_GPT2, GPT2["n_layer"])
    names = {hf: (role, gg) for role in pretrained.TENSORS  # Hugging Face name -> (role, GGUF name)
             for (_, hf), (_, gg) in zip(pretrained.tensor_names(role, column, layers),
                                         pretrained.tensor_names(role, pretrained.GGUF, layers))}
    for name, value in tensors.items():
        role, gguf_name = names[name]
        if not llama and role in pretrained.CONV1D:
            value = value.T  # llama.cpp stores GPT-2's Conv1D weights as (out, in)
        if llama and role in ("q", "k"):
            value = gguf_file.permute(value, heads if role == "q" else LLAMA["num_key_value_heads"])
        value = np.ascontiguousarray(value)
        if quantize and value.ndim == 2:
            w.add_tensor(gguf_name, gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name, value)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


def q8_0(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors as a Q8_0 GGUF holds them: matrices quantized and dequantized along their rows."""
    import gguf

    q = gguf.GGMLQuantizationType.Q8_0
    return {k: gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(v), q), q) if v.ndim == 2 else v
            for k, v in tensors.items()}
