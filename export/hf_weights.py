"""`edgellm export --format hf`: the Keras weights as model.safetensors in GPT-2's names.

edgellm's default architecture is GPT-2's (pre-LayerNorm blocks, epsilon 1e-5, tanh GELU, a
learned position table, one key/value head per query head, qkv packed as [query | key | value]),
so transformers' GPT2LMHeadModel loads the folder (config.json's GPT-2 keys) and computes the
same logits. Missing biases (`use_bias=False`, the default) are written as zeros; an untied
output layer becomes `lm_head.weight` with `tie_word_embeddings: false`. Rotary or ALiBi
positions and grouped-query attention have no GPT-2 equivalent: those are refused.

Example:
    >>> check_architecture(model.config)  # raises ValueError when GPT-2 cannot hold it
    >>> save(model, "models/tiny")        # models/tiny/model.safetensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS_FILE = "model.safetensors"


def check_architecture(cfg) -> None:
    """Refuse, in one line, an architecture that transformers' GPT-2 cannot hold."""
    from edgellm.export.folder_files import gpt2_mismatch

    why = gpt2_mismatch(cfg)
    if why is not None:
        raise ValueError(f"--format hf needs an architecture that is exactly GPT-2's. Received: {why}. "
                         "Export without --format hf: the ONNX folder still opens in onnxruntime-genai, Optimum "
                         "and transformers.js (docs/interop.md).")


def state_dict(model) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's tensors from a Keras `GPT` (float32)."""
    cfg = model.config
    c = cfg.hidden_size

    def array(variable) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(variable, dtype=np.float32))

    def norm(layer, name: str) -> dict:
        beta = array(layer.beta) if layer.center else np.zeros(c, np.float32)
        return {f"{name}.weight": array(layer.gamma), f"{name}.bias": beta}

    def dense(layer, name: str) -> dict:  # Keras's (in, out) kernel is GPT-2's Conv1D layout already
        kernel = array(layer.kernel)
        bias = array(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1], np.float32)
        return {f"{name}.weight": kernel, f"{name}.bias": bias}

    tensors = {"transformer.wte.weight": array(model.wte.embeddings),
               "transformer.wpe.weight": array(model.wpe.embeddings)}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}"
        tensors |= norm(block.ln_1, f"{h}.ln_1") | dense(block.attn.qkv, f"{h}.attn.c_attn")
        tensors |= dense(block.attn.proj, f"{h}.attn.c_proj") | norm(block.ln_2, f"{h}.ln_2")
        tensors |= dense(block.fc, f"{h}.mlp.c_fc") | dense(block.fc_proj, f"{h}.mlp.c_proj")
    tensors |= norm(model.ln_f, "transformer.ln_f")
    if model.lm_head is not None:
        tensors["lm_head.weight"] = np.ascontiguousarray(array(model.lm_head.kernel).T)  # (vocab, hidden)
    return tensors


def save(model, folder: str | Path) -> Path:
    """Write `folder`/model.safetensors (checked by `check_architecture` first)."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ValueError("--format hf needs safetensors. Install it with: pip install 'edgellm[train]'") from None
    check_architecture(model.config)
    path = Path(folder) / WEIGHTS_FILE
    save_file(state_dict(model), str(path), metadata={"format": "pt"})  # transformers reads "pt" files
    return path
