"""The JSON files of a model folder that other runtimes read, written from edgellm's own document.

- config.json: Hugging Face's keys for the loaders (transformers, Optimum, transformers.js), and
  edgellm's document under the one key "edgellm" (format_version, architecture, special tokens,
  ONNX names, KV-cache layout, provenance). `model_type` is "gpt2" (its keys n_layer, n_head,
  n_embd, n_positions), or "llama" when the model has fewer key/value heads than query heads, since
  the loaders size their empty cache by `num_key_value_heads`, which GPT-2's config lacks, or
  RMSNorm or a SwiGLU MLP (a pretrained Llama-family model).
  "architectures" names GPT2LMHeadModel only for an exact GPT-2 (see `gpt2_mismatch`).
- tokenizer_config.json: tokenizer class, special tokens, model_max_length, chat_template.
- generation_config.json: the folder's default settings under Hugging Face's names.
- genai_config.json: onnxruntime-genai's description, its search section the same defaults.

Example:
    >>> doc = config_json(cfg, {"eos_token_id": 2047, "bos_token_id": 2047, "pad_token_id": 2047}, {})
    >>> doc["model_type"], doc["n_layer"]
    ('gpt2', 4)
"""

from __future__ import annotations

import json
from pathlib import Path

from edgellm.chat import template as chat_template
from edgellm.folder import model_folder
from edgellm.tasks import COMPLETION_TOKEN, END_TOKEN

LAYER_NORM_EPSILON = 1e-5  # training/model.py's LayerNormalization


def write(folder: Path, cfg, tokenizer, doc: dict, settings: dict, chat_template: str | None = None) -> None:
    """Write the four JSON files into `folder` from edgellm's document `doc` (config.json's
    "edgellm" key) and the default generation `settings` (GenerationConfig's names); a pretrained
    model brings its own `chat_template` and special tokens (doc["special_tokens"])."""
    special = doc["special_tokens"]
    generation = generation_config(settings, special)
    write_config(folder, cfg, doc)
    doc_tokenizer = tokenizer_config(tokenizer, cfg, doc.get("prompt_template") == "completion")
    if chat_template is not None:
        names = {key.replace("_id", ""): tokenizer.decode([i]) for key, i in special.items() if i is not None}
        doc_tokenizer.update(names, unk_token=None, chat_template=chat_template)
    _write(folder / model_folder.TOKENIZER_CONFIG_FILE, doc_tokenizer)
    _write(folder / model_folder.GENERATION_CONFIG_FILE, generation)
    _write(folder / model_folder.GENAI_CONFIG_FILE, genai_config(cfg, special, generation, doc["onnx"]["kv_cache"]))


def write_config(folder: Path, cfg, doc: dict) -> None:
    _write(folder / model_folder.CONFIG_FILE, config_json(cfg, doc["special_tokens"], doc))


def _write(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def gpt2_mismatch(cfg) -> str | None:
    """Why the architecture is not exactly GPT-2's (None when it is): learned positions and one
    key/value head per query head; missing biases are GPT-2's with zeros."""
    if cfg.position_embedding != "learned":
        return f"position_embedding={cfg.position_embedding!r} (GPT-2 has a learned position table)"
    if cfg.kv_heads != cfg.num_heads:
        return f"num_kv_heads={cfg.num_kv_heads} (GPT-2 has one key/value head per query head)"
    if (cfg.norm, cfg.mlp, cfg.norm_eps, cfg.ffn_size) != ("layer", "gelu", LAYER_NORM_EPSILON, 4 * cfg.hidden_size):
        return (f"norm={cfg.norm!r}, norm_eps={cfg.norm_eps}, mlp={cfg.mlp!r}, intermediate_size={cfg.ffn_size} "
                f"(GPT-2 has LayerNorm with epsilon 1e-5 and a GELU MLP 4 x hidden_size wide)")
    return None


def llama_mismatch(cfg) -> str | None:
    """Why the architecture is not exactly Llama's (None when it is): RMSNorm, SwiGLU, rotary
    positions, no biases."""
    if (cfg.norm, cfg.mlp, cfg.position_embedding, cfg.use_bias) != ("rms", "swiglu", "rope", False):
        return f"norm={cfg.norm!r}, mlp={cfg.mlp!r}, position_embedding={cfg.position_embedding!r}, use_bias={cfg.use_bias}"
    return None


def config_json(cfg, special: dict, edgellm_doc: dict) -> dict:
    """config.json: Hugging Face's keys, then edgellm's document under "edgellm"."""
    common = {"vocab_size": cfg.vocab_size, **special, "tie_word_embeddings": cfg.tie_embeddings,
              "use_cache": True}
    if cfg.kv_heads != cfg.num_heads or cfg.norm == "rms" or cfg.mlp == "swiglu":
        hf = {"model_type": "llama", "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_heads,
              "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim, "num_hidden_layers": cfg.num_layers,
              "intermediate_size": cfg.ffn_size, "max_position_embeddings": cfg.context_length,
              "hidden_act": "silu" if cfg.mlp == "swiglu" else "gelu_pytorch_tanh"}
        if llama_mismatch(cfg) is None:
            hf = {"architectures": ["LlamaForCausalLM"], **hf, "rms_norm_eps": cfg.norm_eps,
                  "rope_theta": cfg.rope_theta, "attention_bias": False, "mlp_bias": False}
    else:
        hf = {"model_type": "gpt2", "n_layer": cfg.num_layers, "n_head": cfg.num_heads, "n_embd": cfg.hidden_size,
              "n_positions": cfg.context_length, "n_ctx": cfg.context_length, "n_inner": 4 * cfg.hidden_size,
              "activation_function": "gelu_new", "layer_norm_epsilon": LAYER_NORM_EPSILON,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True}
        if gpt2_mismatch(cfg) is None:
            hf = {"architectures": ["GPT2LMHeadModel"], **hf}
    return {**hf, **common, "edgellm": edgellm_doc}


def tokenizer_config(tokenizer, cfg, task: bool) -> dict:
    """tokenizer_config.json: what AutoTokenizer, transformers.js and onnxruntime-genai read."""
    end = tokenizer.eos_token_id
    if end is None:
        raise ValueError(f"The tokenizer has no {END_TOKEN} token. Received special tokens: "
                         f"{sorted(tokenizer.special_tokens)}. Train it with edgellm's default special tokens.")
    doc = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": END_TOKEN, "eos_token": END_TOKEN, "pad_token": END_TOKEN, "unk_token": END_TOKEN,
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg.context_length,
        "model_input_names": ["input_ids", "attention_mask"],
        "added_tokens_decoder": {str(i): {"content": text, "special": True, "lstrip": False, "rstrip": False,
                                          "normalized": False, "single_word": False}
                                 for text, i in sorted(tokenizer.special_tokens.items(), key=lambda kv: kv[1])},
        "chat_template": chat_template.TASK_TEMPLATE if task else chat_template.TEXT_TEMPLATE,
    }
    if task:
        doc["additional_special_tokens"] = [COMPLETION_TOKEN]
    return doc


def generation_config(settings: dict, special: dict) -> dict:
    """generation_config.json under Hugging Face's names from edgellm settings (GenerationConfig's
    names); temperature 0 is do_sample false, stop_token_ids are eos_token_id."""
    settings = dict(settings)
    stops = list(settings.pop("stop_token_ids", None) or [special["eos_token_id"]])
    doc = {"bos_token_id": special["bos_token_id"], "eos_token_id": stops[0] if len(stops) == 1 else stops,
           "pad_token_id": special["pad_token_id"], "max_new_tokens": settings.pop("max_new_tokens")}
    temperature = settings.pop("temperature", 1.0)
    sampling = {"top_k": settings.pop("top_k", 0), "top_p": settings.pop("top_p", 1.0)}
    if temperature == 0:
        doc["do_sample"] = False
    else:  # written out in full: Hugging Face's own default top_k is 50, edgellm's is off (0)
        doc.update(do_sample=True, temperature=temperature, **sampling)
    unknown = sorted(set(settings) - HF_SAME_NAMES)
    if unknown:
        raise ValueError(f"generation_config.json has no Hugging Face name for {unknown[0]!r}. "
                         f"Allowed settings: max_new_tokens, temperature, top_k, top_p, stop_token_ids, "
                         f"{', '.join(sorted(HF_SAME_NAMES))}.")
    return {**doc, **settings}


# settings that Hugging Face's GenerationConfig names as edgellm does
HF_SAME_NAMES = {"min_new_tokens", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size",
                 "num_beams", "length_penalty", "num_return_sequences", "stop_strings",
                 "truncate"}  # truncate: edgellm's own (transformers keeps an unknown key as an attribute)


def genai_config(cfg, special: dict, generation: dict, kv_cache: str = "in_place") -> dict:
    """onnxruntime-genai's description of the same folder (model type "decoder"), its search
    section the defaults of `generation` (a generation_config.json document); an in-place graph
    lets it share one buffer between past and present."""
    sample = generation.get("do_sample", False)
    return {
        "model": {
            "type": "decoder",
            "context_length": cfg.context_length,
            "vocab_size": cfg.vocab_size,
            **special,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": model_folder.MODEL_FILE,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "num_attention_heads": cfg.num_heads,
                "num_key_value_heads": cfg.kv_heads,
                "num_hidden_layers": cfg.num_layers,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": sample, "max_length": cfg.context_length, "min_length": 0,
                   "num_beams": generation.get("num_beams", 1), "num_return_sequences": 1,
                   "past_present_share_buffer": kv_cache == "in_place",
                   "repetition_penalty": generation.get("repetition_penalty", 1.0),
                   "temperature": generation.get("temperature", 1.0) if sample else 1.0,
                   # genai's top_k 1 is greedy; edgellm's 0 (off) is the whole vocabulary
                   "top_k": (generation.get("top_k") or cfg.vocab_size) if sample else 1,
                   "top_p": generation.get("top_p", 1.0) if sample else 1.0,
                   "early_stopping": True, "length_penalty": generation.get("length_penalty", 1.0),
                   "no_repeat_ngram_size": generation.get("no_repeat_ngram_size", 0), "diversity_penalty": 0.0},
    }
