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
    """GPT2LMHeadModel's tensors from a Keras `GPT` (float32): its weights by role, named by the
    GPT-2 column of the importers' table (training/pretrained/ TENSORS), Conv1D layers (in, out)."""
    from edgellm.training.pretrained import CONV1D, HF_GPT2, TENSORS, model_tensors

    by_role = model_tensors(model)
    for key in list(by_role):  # a missing bias is GPT-2's with zeros
        role, _, i = key.partition("/")
        bias = f"{role}.bias/{i}" if i else f"{role}.bias"
        if f"{role}.bias" in TENSORS and TENSORS[f"{role}.bias"][HF_GPT2] and bias not in by_role:
            by_role[bias] = np.zeros(by_role[key].shape[0], np.float32)
    tensors = {}
    for key, value in by_role.items():
        role, _, i = key.partition("/")
        tensors[TENSORS[role][HF_GPT2].format(i=i)] = np.ascontiguousarray(value.T) if role in CONV1D else value
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
