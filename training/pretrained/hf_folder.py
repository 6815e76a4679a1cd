"""A Hugging Face model folder -> `Pretrained`: config.json, *.safetensors, tokenizer.json and
tokenizer_config.json, as transformers' `save_pretrained` writes them.

LlamaForCausalLM (RMSNorm, SwiGLU, rotary, grouped-query attention, no biases) and
GPT2LMHeadModel (LayerNorm, tanh GELU, learned positions, biases, Conv1D weights). Features the
Keras model does not have (rope scaling, attention biases, a head size other than
hidden_size / heads) are refused by name.

Example:
    >>> pretrained = read("tiny-llama")  # a folder written by LlamaForCausalLM.save_pretrained
    >>> pretrained.config.norm, pretrained.config.mlp
    ('rms', 'swiglu')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgellm.folder import json_file
from edgellm.folder.config import ModelConfig
from edgellm.tokenizer import Tokenizer
from edgellm.training import pretrained as lib

GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # the tanh form training/model.py computes


def read(folder: Path) -> lib.Pretrained:
    folder = Path(folder)
    config = _json(folder / "config.json")
    architecture = (config.get("architectures") or [config.get("model_type")])[0]
    if architecture == "LlamaForCausalLM":
        cfg, column = _llama_config(config), lib.HF_LLAMA
    elif architecture == "GPT2LMHeadModel":
        cfg, column = _gpt2_config(config), lib.HF_GPT2
    else:
        raise lib.unsupported(architecture)
    tensors = _tensors(folder, cfg, column)
    tokenizer_config = _json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"{folder} has no tokenizer.json. Received: {sorted(p.name for p in folder.iterdir())}. "
                         "Save the tokenizer with the model (tokenizer.save_pretrained(folder)).")
    tokenizer = Tokenizer.load(folder / "tokenizer.json")
    special = {name: _token_id(config, tokenizer_config, tokenizer, name) for name in ("eos", "bos", "pad")}
    special = {f"{name}_token_id": i for name, i in special.items()}
    if special["pad_token_id"] is None:
        special["pad_token_id"] = special["eos_token_id"]
    eos = special["eos_token_id"]
    generation = _json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    stops = generation.get("eos_token_id", eos)
    stops = [stops] if isinstance(stops, int) else list(stops or [])
    return lib.Pretrained(cfg, tensors, tokenizer, special, stops, tokenizer_config.get("chat_template"),
                          bool(tokenizer_config.get("add_bos_token", False)),
                          {"path": str(folder), "format": "huggingface", "architecture": architecture})


def _llama_config(c: dict) -> ModelConfig:
    heads = c["num_attention_heads"]
    refusals = [
        ("rope_scaling", c.get("rope_scaling"), None, "rope scaling (Llama 3.1/3.2's long-context positions)"),
        ("attention_bias", c.get("attention_bias", False), False, "biases on the attention projections"),
        ("mlp_bias", c.get("mlp_bias", False), False, "biases on the MLP"),
        ("hidden_act", c.get("hidden_act", "silu"), "silu", "an activation other than SiLU"),
        ("head_dim", c.get("head_dim") or c["hidden_size"] // heads, c["hidden_size"] // heads,
         "a head size other than hidden_size / num_attention_heads"),
    ]
    for key, value, supported, what in refusals:
        if value != supported:
            raise ValueError(f"edgellm's Llama has no {what}. Received: {key}={value!r} in config.json. "
                             f"Supported: {key}={supported!r}.")
    return ModelConfig(vocab_size=c["vocab_size"], context_length=c.get("max_position_embeddings", 2048),
                       num_layers=c["num_hidden_layers"], num_heads=heads,
                       num_kv_heads=c.get("num_key_value_heads") or heads, hidden_size=c["hidden_size"],
                       use_bias=False, tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                       position_embedding="rope", norm="rms", norm_eps=float(c.get("rms_norm_eps", 1e-6)),
                       mlp="swiglu", intermediate_size=c["intermediate_size"],
                       rope_theta=float(c.get("rope_theta", 10000.0)))


def _gpt2_config(c: dict) -> ModelConfig:
    act = c.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise ValueError(f"edgellm's GPT-2 computes the tanh GELU. Received: activation_function={act!r} in "
                         f"config.json. Supported: {', '.join(GPT2_ACTIVATIONS)}.")
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if c.get(key):
            raise ValueError(f"edgellm's GPT-2 has no {key}. Received: {key}=true in config.json. Supported: false.")
    return ModelConfig(vocab_size=c["vocab_size"], context_length=c.get("n_positions", 1024),
                       num_layers=c["n_layer"], num_heads=c["n_head"], hidden_size=c["n_embd"], use_bias=True,
                       tie_embeddings=bool(c.get("tie_word_embeddings", True)), position_embedding="learned",
                       norm_eps=float(c.get("layer_norm_epsilon", 1e-5)), intermediate_size=c.get("n_inner") or 0)


def _tensors(folder: Path, cfg: ModelConfig, column: int) -> dict[str, np.ndarray]:
    """The source's tensors under TENSORS' roles, float32, linear weights (out, in)."""
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} has no *.safetensors file. Received: {sorted(p.name for p in folder.iterdir())}. "
                         "Save the model with save_pretrained(folder) (safetensors is its default).")
    stored: dict[str, np.ndarray] = {}
    for file in files:
        stored |= load_file(str(file))
    # transformers' GPT-2 names drop the "transformer." prefix when saved from GPT2Model
    stored |= {f"transformer.{k}": v for k, v in stored.items() if k.split(".")[0] in ("wte", "wpe", "h", "ln_f")}
    tensors = {}
    for role in lib.TENSORS:
        for key, name in lib.tensor_names(role, column, cfg.num_layers):
            if name in stored:
                value = stored[name].astype(np.float32)
                if column == lib.HF_GPT2 and role in lib.CONV1D:
                    value = value.T
                tensors[key] = value
    if "lm_head" not in tensors and not cfg.tie_embeddings:
        raise ValueError(f"{folder}: config.json says tie_word_embeddings=false but no lm_head.weight is stored. "
                         "Re-save the model with save_pretrained.")
    lib.pack_qkv(tensors, cfg.num_layers)
    return tensors


def _token_id(config: dict, tokenizer_config: dict, tokenizer: Tokenizer, name: str) -> int | None:
    """A special id: config.json's {name}_token_id, else tokenizer_config.json's {name}_token text."""
    value = config.get(f"{name}_token_id")
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        text = tokenizer_config.get(f"{name}_token")
        text = text.get("content") if isinstance(text, dict) else text
        value = tokenizer.special_tokens.get(text) if text else None
    return value


def _json(path: Path) -> dict:
    """One JSON object file of the folder, through edgellm's one JSON reader (json_file)."""
    return json_file.read_object(path, "Pass a folder written by transformers' save_pretrained.").doc
