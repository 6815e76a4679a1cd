"""A GGUF file (llama.cpp's format) -> `Pretrained`, read and dequantized with the `gguf` package.

Architectures `llama` and `gpt2`; every quantized type `gguf` dequantizes (Q4_0, Q4_1, Q8_0, K
quants, F16, ...) becomes float32. llama.cpp's converter permutes the rows of the query and key
weights of `llama` models (its rotary pairs adjacent channels, transformers' Llama the two
halves of each head); `unpermute` puts them back in transformers' order, which the Keras model
computes. The tokenizer is rebuilt from the metadata (tokenizer.ggml.tokens, merges,
token_type, pre) as a tokenizer.json document, so the reader is edgellm's own: "smollm" and the
other pre-tokenizers that cut digits one by one set `split_digits`.

Example:
    >>> pretrained = read("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> pretrained.config.num_kv_heads, pretrained.add_bos_token
    (3, False)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgellm.folder.config import ModelConfig
from edgellm.tokenizer import Tokenizer
from edgellm.tokenizer import json_format
from edgellm.training import pretrained as lib

# tokenizer.ggml.pre values whose pattern is GPT-2's, after cutting digits one by one or not
# (llama.cpp's llama-vocab.cpp)
DIGITS_PRE = ("smollm", "starcoder", "refact", "codeshell")
PLAIN_PRE = ("gpt-2", "gpt2", "mpt", "olmo")
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values of special tokens


def read(path: Path) -> lib.Pretrained:
    try:
        import gguf
    except ImportError:
        raise ValueError("Reading a GGUF file needs the gguf package. Install it with: pip install 'edgellm[train]'") from None
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # the reader raises ValueError, struct errors and more on a bad file
        raise ValueError(f"Cannot read {path} as GGUF: {error}. Pass a .gguf file written by llama.cpp or gguf.") from None
    meta = {name: _value(f) for name, f in reader.fields.items()}
    arch = meta.get("general.architecture")
    if arch not in ("llama", "gpt2"):
        raise lib.unsupported(f"GGUF {arch}")
    cfg = _config(meta, arch, path)
    tensors = {}
    stored = {t.name: t for t in reader.tensors}
    column = lib.GGUF
    for role in lib.TENSORS:
        for key, name in lib.tensor_names(role, column, cfg.num_layers):
            if name in stored:
                t = stored[name]
                value = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
                tensors[key] = value.reshape(tuple(int(n) for n in reversed(t.shape)))
    if arch == "llama":
        for i in range(cfg.num_layers):
            tensors[f"q/{i}"] = unpermute(tensors[f"q/{i}"], cfg.num_heads)
            tensors[f"k/{i}"] = unpermute(tensors[f"k/{i}"], cfg.kv_heads)
    if "lm_head" in tensors:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "tie_embeddings": False})
    lib.pack_qkv(tensors, cfg.num_layers)

    tokenizer = _tokenizer(meta, path)
    eos = meta.get("tokenizer.ggml.eos_token_id")
    special = {"eos_token_id": eos, "bos_token_id": meta.get("tokenizer.ggml.bos_token_id", eos),
               "pad_token_id": meta.get("tokenizer.ggml.padding_token_id", eos)}
    stops = [i for i in (eos, meta.get("tokenizer.ggml.eot_token_id")) if i is not None]
    return lib.Pretrained(cfg, tensors, tokenizer, special, list(dict.fromkeys(stops)),
                          meta.get("tokenizer.chat_template"), bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                          {"path": str(path), "format": "gguf", "architecture": arch,
                           "name": meta.get("general.name"), "license": meta.get("general.license")})


def unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's convert permutation of a query or key weight (heads * head_dim, in): its rows
    (head, half, pair) go back to transformers' (head, pair, half)."""
    out = weight.shape[0]
    return weight.reshape(heads, out // heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


def permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert permutation (the inverse of `unpermute`), for writing GGUF files in tests."""
    out = weight.shape[0]
    return weight.reshape(heads, 2, out // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def _config(meta: dict, arch: str, path: Path) -> ModelConfig:
    def key(name, default=None):
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise ValueError(f"{path}: the metadata key {arch}.{name} is missing. Received: keys "
                             f"{sorted(k for k in meta if k.startswith(arch))[:12]}. Re-convert the model with llama.cpp.")
        return value

    width, heads = int(key("embedding_length")), int(key("attention.head_count"))
    vocab = int(meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"]))
    common = dict(vocab_size=vocab, context_length=int(key("context_length")), num_layers=int(key("block_count")),
                  num_heads=heads, hidden_size=width, intermediate_size=int(key("feed_forward_length")))
    if arch == "gpt2":
        return ModelConfig(**common, use_bias=True, position_embedding="learned",
                           norm_eps=_float32(key("attention.layer_norm_epsilon", 1e-5)))
    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"edgellm's Llama has no rope scaling. Received: llama.rope.scaling.type={scaling!r} in "
                         f"{path}. Supported: none.")
    rotary = int(key("rope.dimension_count", width // heads))
    if rotary != width // heads:
        raise ValueError(f"edgellm rotates whole heads. Received: llama.rope.dimension_count={rotary} with a head "
                         f"size of {width // heads}. Supported: rope.dimension_count equal to the head size.")
    return ModelConfig(**common, num_kv_heads=int(key("attention.head_count_kv", heads)), use_bias=False,
                       position_embedding="rope", norm="rms", mlp="swiglu",
                       norm_eps=_float32(key("attention.layer_norm_rms_epsilon")),
                       rope_theta=_float32(key("rope.freq_base", 10000.0)))


def _tokenizer(meta: dict, path: Path) -> Tokenizer:
    """edgellm's tokenizer from the GGUF metadata, through a tokenizer.json document."""
    model, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "gpt-2")
    if model != "gpt2":
        raise ValueError(f"edgellm reads byte-level BPE tokenizers. Received: tokenizer.ggml.model={model!r} in "
                         f"{path} ('llama' is SentencePiece). Supported: 'gpt2'.")
    if pre not in DIGITS_PRE + PLAIN_PRE:
        raise ValueError(f"edgellm does not know the pre-tokenizer {pre!r} of {path}. Supported tokenizer.ggml.pre: "
                         f"{', '.join(DIGITS_PRE + PLAIN_PRE)}.")
    if meta.get("tokenizer.ggml.add_bos_token"):
        raise ValueError(f"{path} asks for a BOS token before every prompt (tokenizer.ggml.add_bos_token=true), "
                         "which edgellm's runtime does not add. Supported: add_bos_token=false (SmolLM, SmolLM2, GPT-2).")
    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or [1] * len(meta["tokenizer.ggml.tokens"])
    special = [i for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
    doc = json_format.document([b""], [], {})  # the layout; vocabulary, merges and specials below
    doc["model"]["vocab"] = {text: i for i, text in enumerate(tokens)}
    doc["model"]["merges"] = list(meta.get("tokenizer.ggml.merges") or [])
    doc["added_tokens"] = [{**doc_token, "id": i, "content": tokens[i]} for i in special
                           for doc_token in [{"single_word": False, "lstrip": False, "rstrip": False,
                                              "normalized": False, "special": True}]]
    if pre in DIGITS_PRE:
        doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [json_format.DIGITS, doc["pre_tokenizer"]]}
    return Tokenizer.from_json(doc, source=str(path))


def _value(field):
    """A metadata field's value: a scalar, a string or a list."""
    try:
        return field.contents()
    except Exception:  # a field type the reader cannot decode: not one edgellm reads
        return None


def _float32(value) -> float:
    """A float32 metadata value as the decimal it was written from (9.99999975e-06 -> 1e-05)."""
    return float(f"{float(value):.7g}")
