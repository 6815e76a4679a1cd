"""Pretrained models from elsewhere, mapped onto edgellm's one Keras model and its tokenizer.

Sources: a Hugging Face model folder (config.json, *.safetensors, tokenizer.json,
tokenizer_config.json; hf_folder.py) or a GGUF file from the llama.cpp world (gguf_file.py).
Architectures: the Llama family (LlamaForCausalLM, GGUF `llama`: SmolLM, SmolLM2, Llama-shaped
models with a byte-level BPE tokenizer) and GPT-2 (GPT2LMHeadModel, GGUF `gpt2`). Each reader
returns a `Pretrained`: the ModelConfig, the tensors under the roles of `TENSORS` (linear weights
as (out, in), torch's layout), the tokenizer and the source's special ids, BOS policy and chat
template. `build_model` turns it into a Keras `GPT`; `edgellm export SOURCE` and
`edgellm train --init SOURCE` then never know where it came from.

Example:
    >>> pretrained = load("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> model = build_model(pretrained)
    >>> pretrained.tokenizer.encode("In 1995")
    [788, 216, 33, 41, 41, 37]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgellm.folder.config import ModelConfig
from edgellm.tokenizer import Tokenizer

ARCHITECTURES = ("LlamaForCausalLM (GGUF llama)", "GPT2LMHeadModel (GGUF gpt2)")
SOURCES = "a GGUF file or a Hugging Face model folder (config.json, *.safetensors, tokenizer.json)"

# Every weight of training/model.py's GPT and its name in each source: (Hugging Face Llama,
# Hugging Face GPT-2, GGUF); {i} is the block. None: that source has no such tensor. A role
# ending in .bias is the bias of the role before the dot. q, k and v (Llama, GGUF llama) are
# stacked into the packed qkv projection; GPT-2 stores it packed already.
TENSORS = {
    "wte": ("model.embed_tokens.weight", "transformer.wte.weight", "token_embd.weight"),
    "wpe": (None, "transformer.wpe.weight", "position_embd.weight"),
    "ln_1": ("model.layers.{i}.input_layernorm.weight", "transformer.h.{i}.ln_1.weight", "blk.{i}.attn_norm.weight"),
    "ln_1.bias": (None, "transformer.h.{i}.ln_1.bias", "blk.{i}.attn_norm.bias"),
    "q": ("model.layers.{i}.self_attn.q_proj.weight", None, "blk.{i}.attn_q.weight"),
    "k": ("model.layers.{i}.self_attn.k_proj.weight", None, "blk.{i}.attn_k.weight"),
    "v": ("model.layers.{i}.self_attn.v_proj.weight", None, "blk.{i}.attn_v.weight"),
    "qkv": (None, "transformer.h.{i}.attn.c_attn.weight", "blk.{i}.attn_qkv.weight"),
    "qkv.bias": (None, "transformer.h.{i}.attn.c_attn.bias", "blk.{i}.attn_qkv.bias"),
    "proj": ("model.layers.{i}.self_attn.o_proj.weight", "transformer.h.{i}.attn.c_proj.weight",
             "blk.{i}.attn_output.weight"),
    "proj.bias": (None, "transformer.h.{i}.attn.c_proj.bias", "blk.{i}.attn_output.bias"),
    "ln_2": ("model.layers.{i}.post_attention_layernorm.weight", "transformer.h.{i}.ln_2.weight",
             "blk.{i}.ffn_norm.weight"),
    "ln_2.bias": (None, "transformer.h.{i}.ln_2.bias", "blk.{i}.ffn_norm.bias"),
    "fc_gate": ("model.layers.{i}.mlp.gate_proj.weight", None, "blk.{i}.ffn_gate.weight"),
    "fc": ("model.layers.{i}.mlp.up_proj.weight", "transformer.h.{i}.mlp.c_fc.weight", "blk.{i}.ffn_up.weight"),
    "fc.bias": (None, "transformer.h.{i}.mlp.c_fc.bias", "blk.{i}.ffn_up.bias"),
    "fc_proj": ("model.layers.{i}.mlp.down_proj.weight", "transformer.h.{i}.mlp.c_proj.weight",
                "blk.{i}.ffn_down.weight"),
    "fc_proj.bias": (None, "transformer.h.{i}.mlp.c_proj.bias", "blk.{i}.ffn_down.bias"),
    "ln_f": ("model.norm.weight", "transformer.ln_f.weight", "output_norm.weight"),
    "ln_f.bias": (None, "transformer.ln_f.bias", "output_norm.bias"),
    "lm_head": ("lm_head.weight", "lm_head.weight", "output.weight"),
}
HF_LLAMA, HF_GPT2, GGUF = range(3)  # the columns of TENSORS
# GPT-2 writes its linear layers as Conv1D, (in, out): transposed to (out, in) when read
CONV1D = ("qkv", "proj", "fc", "fc_proj")


@dataclass
class Pretrained:
    """A model read from a source: shape, tensors by role, tokenizer and its policies."""

    config: ModelConfig
    tensors: dict[str, np.ndarray]  # "role" or "role/i" (block i) -> float32; linear weights (out, in)
    tokenizer: Tokenizer
    special_tokens: dict  # eos_token_id, bos_token_id, pad_token_id
    stop_token_ids: list[int]
    chat_template: str | None
    add_bos_token: bool
    source: dict = field(default_factory=dict)  # path, format, architecture: the model card's provenance


def is_source(path: str | Path) -> bool:
    """Whether `path` is a GGUF file or a Hugging Face model folder (not an edgellm checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".gguf"
    return (path / "config.json").is_file() and not (path / "checkpoint.json").is_file()


def load(path: str | Path) -> Pretrained:
    """Read a GGUF file or a Hugging Face model folder. Raises ValueError naming what is unsupported."""
    from edgellm.training.pretrained import gguf_file, hf_folder

    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return gguf_file.read(path)
    if path.is_dir() and (path / "config.json").is_file():
        return hf_folder.read(path)
    raise ValueError(f"Not a pretrained model source. Received: {path}. Pass {SOURCES}.")


def unsupported(architecture: str) -> ValueError:
    return ValueError(f"edgellm cannot import the architecture {architecture!r}. Supported: "
                      f"{', '.join(ARCHITECTURES)}.")


def tensor_names(role: str, column: int, num_layers: int) -> list[tuple[str, str]]:
    """(key in Pretrained.tensors, source name) of `role` in source `column`, one per block if it has {i}."""
    name = TENSORS[role][column]
    if name is None:
        return []
    if "{i}" not in name:
        return [(role, name)]
    return [(f"{role}/{i}", name.format(i=i)) for i in range(num_layers)]


def build_model(pretrained: Pretrained):
    """A Keras `GPT` holding the pretrained weights (float32)."""
    from edgellm.training.model import GPT

    model = GPT(pretrained.config).build_weights()
    assign(model, pretrained.tensors)
    return model


def variables(model) -> list[tuple[str, object, bool]]:
    """Every weight of a built GPT as (key in the roles of TENSORS, its Keras variable, whether it
    is a linear weight: Keras's (in, out) kernel, (out, in) in the sources). `assign` and
    `model_tensors` walk this one list."""
    found = [("wte", model.wte.embeddings, False)]
    if model.wpe is not None:
        found.append(("wpe", model.wpe.embeddings, False))

    def norm(layer, key):  # RMSNorm's scale, or LayerNorm's gamma and (if centred) beta
        found.append((key, layer.gamma if hasattr(layer, "gamma") else layer.scale, False))
        if getattr(layer, "center", False):
            found.append((key.replace("/", ".bias/") if "/" in key else f"{key}.bias", layer.beta, False))

    def dense(layer, role, i):
        found.append((f"{role}/{i}", layer.kernel, True))
        if layer.use_bias:
            found.append((f"{role}.bias/{i}", layer.bias, False))

    for i, block in enumerate(model.blocks):
        norm(block.ln_1, f"ln_1/{i}")
        norm(block.ln_2, f"ln_2/{i}")
        for role, layer in (("qkv", block.attn.qkv), ("proj", block.attn.proj), ("fc", block.fc),
                            ("fc_proj", block.fc_proj), ("fc_gate", block.fc_gate)):
            if layer is not None:
                dense(layer, role, i)
    norm(model.ln_f, "ln_f")
    if model.lm_head is not None:
        found.append(("lm_head", model.lm_head.kernel, True))
    return found


def assign(model, tensors: dict[str, np.ndarray]) -> None:
    """Put `tensors` (roles of TENSORS, linear weights (out, in)) into a built GPT's variables."""
    if "wpe" in tensors:  # a source's position table may be longer than the context
        tensors = {**tensors, "wpe": tensors["wpe"][: model.config.context_length]}
    for key, variable, linear in variables(model):
        value = tensors.get(key)
        if value is None:
            raise ValueError(f"The source has no tensor for {key} (see TENSORS in training/pretrained/). Received: "
                             f"{len(tensors)} tensors. Pass a complete checkpoint of a supported architecture.")
        value = np.asarray(value, np.float32)
        value = value.T if linear else value
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"The source's {key} has shape {value.shape} but the model needs "
                             f"{tuple(variable.shape)}. Received: a checkpoint whose config does not match its tensors.")
        variable.assign(value)


def model_tensors(model) -> dict[str, np.ndarray]:
    """The weights of a built GPT under the roles of TENSORS, linear weights (out, in), float32:
    what `assign` takes (export --format hf names them)."""
    return {key: np.ascontiguousarray(np.asarray(variable, np.float32).T if linear else np.asarray(variable, np.float32))
            for key, variable, linear in variables(model)}


def pack_qkv(tensors: dict[str, np.ndarray], num_layers: int) -> None:
    """Stack separate q, k, v weights (out, in) into the packed qkv projection [q | k | v] (in place)."""
    for i in range(num_layers):
        if f"q/{i}" in tensors:
            tensors[f"qkv/{i}"] = np.concatenate([tensors.pop(f"{r}/{i}") for r in "qkv"], axis=0)
