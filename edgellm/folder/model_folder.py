"""The model folder: the contract between `edgellm export` and the runtime.

    NAME/
      model.onnx              decoder with KV cache (Hugging Face/Optimum input, output and dimension names)
      config.json             Hugging Face's keys (model_type gpt2 or llama, n_layer, ...) and edgellm's
                              document under "edgellm": format_version, architecture, special tokens,
                              ONNX names, KV-cache layout, provenance
      tokenizer.json          byte-level BPE, Hugging Face format
      tokenizer_config.json   tokenizer class, special tokens, model_max_length, chat_template (Jinja)
      generation_config.json  default sampling settings, Hugging Face's names
      genai_config.json       lets onnxruntime-genai run the same folder
      README.md               model card

Format 1 folders (edgellm's document at the top of config.json, no tokenizer_config.json,
generation_config.json in edgellm's names) are still read; `edgellm upgrade FOLDER` rewrites
one into format 2 (docs/interop.md).

Shipped models live in the repository's models/ folder, which is installed as package data
(`edgellm.models`), so `load("shakespeare")` works from a checkout and from an installed wheel.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgellm.folder import json_file
from edgellm.folder.config import ModelConfig
from edgellm.folder.generation_config import GenerationConfig

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"
GENAI_CONFIG_FILE = "genai_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, GENERATION_CONFIG_FILE)
EDGELLM_KEY = "edgellm"  # config.json's key of edgellm's own document (format 2)
# how model.onnx caches keys and values (config.json's onnx.kv_cache): export/graph/attention.py
# writes "in_place", edgellm/session/session.py runs both; folders without the key are "concat"
KV_CACHES = ("in_place", "concat")
SPECIAL_IDS = ("eos_token_id", "bos_token_id", "pad_token_id")
FIX = "Re-export the model folder with `edgellm export`."


def input_names(num_layers: int) -> list[str]:
    names = ["input_ids", "attention_mask", "position_ids"]
    for i in range(num_layers):
        names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    return names


def output_names(num_layers: int) -> list[str]:
    names = ["logits"]
    for i in range(num_layers):
        names += [f"present.{i}.key", f"present.{i}.value"]
    return names


@dataclass
class ModelFolder:
    path: Path
    config: ModelConfig
    special_tokens: dict  # eos_token_id, bos_token_id, pad_token_id
    generation: dict  # generation_config.json in edgellm's names (GenerationConfig's)
    meta: dict  # edgellm's document: config.json's "edgellm" key (format 1: the whole config.json)
    chat_template: str  # tokenizer_config.json's Jinja template (format 1: the one format 2 writes)
    format_version: int = FORMAT_VERSION

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, **variables) -> str:
        """`messages` rendered by the folder's chat template; a TemplateError names the file."""
        from edgellm.chat import template as chat_template

        return chat_template.render(self.chat_template, messages, add_generation_prompt,
                                    where=str(self.path / TOKENIZER_CONFIG_FILE), **variables)

    def encode_chat(self, tokenizer, messages: list[dict], add_generation_prompt: bool = True,
                    **variables) -> list[int]:
        """The ids of `messages` in the folder's chat template: the one path from a conversation to
        model ids (`edgellm chat`, the server's /v1/chat/completions). Special tokens the template
        writes (ChatML's <|im_start|>) are special ids, the contents plain text."""
        from edgellm.chat import template as chat_template

        return chat_template.encode(tokenizer, self.chat_template, messages, add_generation_prompt,
                                    where=str(self.path / TOKENIZER_CONFIG_FILE), **variables)

    @property
    def kv_cache(self) -> str:
        """How model.onnx caches keys and values: "in_place" or "concat" (see session.py)."""
        return self.meta.get("onnx", {}).get("kv_cache", "concat")

    @property
    def capacity_mask(self) -> bool:
        """Whether model.onnx takes an attention mask as wide as the whole in-place cache, zeros
        beyond the filled part (export/graph/attention.py; folders exported before it do not)."""
        return bool(self.meta.get("onnx", {}).get("capacity_mask", False))


def shipped_models_dir() -> Path | None:
    spec = importlib.util.find_spec("edgellm.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def shipped_model_names() -> list[str]:
    root = shipped_models_dir()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def resolve(name_or_path: str | Path) -> Path:
    """A folder path, or the name of a shipped model -> the model folder's path."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    root = shipped_models_dir()
    if root is not None and "/" not in str(name_or_path) and (root / str(name_or_path)).is_dir():
        return root / str(name_or_path)
    raise ValueError(f"No model folder or shipped model named {str(name_or_path)!r}. "
                     f"Shipped models: {', '.join(shipped_model_names()) or 'none'}; "
                     "or pass the path of a folder written by `edgellm export`.")


def read(name_or_path: str | Path) -> ModelFolder:
    """Find and check a model folder: files present, format version, each field the runtime reads of
    the right type (json_file.py names the file and the field otherwise)."""
    path = resolve(name_or_path)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise ValueError(f"Model folder {path} is incomplete: {name} is missing. "
                             "Re-export it with `edgellm export`.")
    document = json_file.read_object(path / CONFIG_FILE, FIX)
    # format 1 kept edgellm's document at the top
    meta = document.section(EDGELLM_KEY) if EDGELLM_KEY in document.doc else document
    version = meta.doc.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        newer = type(version) is int and version > FORMAT_VERSION
        raise meta.error("format_version", f"must be one of {list(READABLE_VERSIONS)}", version,
                         "Upgrade edgellm (pip install -U edgellm) to read it." if newer else FIX)
    config = meta.build("architecture", ModelConfig.from_dict, meta.get("architecture", dict))
    special = _check_fields(meta, config)
    generation_file = json_file.read_object(path / GENERATION_CONFIG_FILE, FIX)
    generation = generation_file.doc
    if version == 1:
        old = generation.pop("format_version", 1)
        if old != 1:
            raise ValueError(f"{path / GENERATION_CONFIG_FILE}: format_version must be 1 in a format 1 folder. "
                             f"Received: format_version={old!r}. Re-export with this edgellm.")
        template = _default_template(meta.doc)
    else:
        generation_file.get("do_sample", bool, False)
        generation_file.get("eos_token_id", (int, list, type(None)), None)
        generation = _from_hf_names(generation)
        if not (path / TOKENIZER_CONFIG_FILE).is_file():
            raise ValueError(f"Model folder {path} is incomplete: {TOKENIZER_CONFIG_FILE} is missing. "
                             "Re-export it with `edgellm export`.")
        tokenizer_config = json_file.read_object(path / TOKENIZER_CONFIG_FILE, FIX)
        template = tokenizer_config.get("chat_template", str, None)
        if template is None:
            raise tokenizer_config.error("chat_template", "must be a Jinja string", None)
    if (path / MODEL_FILE).stat().st_size < 1024:
        raise ValueError(f"{path / MODEL_FILE} is only {(path / MODEL_FILE).stat().st_size} bytes: it is "
                         "truncated or not a model. Re-export the model folder.")
    return ModelFolder(path, config, special, generation, meta.doc, template, version)


def _check_fields(meta: json_file.JsonObject, config: ModelConfig) -> dict:
    """Each other field of edgellm's document that the runtime reads, of the right type (json_file.py
    names the file and the field otherwise). Returns the special token ids."""
    special = meta.section("special_tokens", {})
    for key in SPECIAL_IDS:
        token = special.get(key, (int, type(None)), None)
        if token is not None and not 0 <= token < config.vocab_size:
            raise special.error(key, f"must be a token id in [0, {config.vocab_size})", token)
    onnx = meta.section("onnx", {})
    kv_cache = onnx.get("kv_cache", str, "concat")
    if kv_cache not in KV_CACHES:
        raise onnx.error("kv_cache", f"must be one of {', '.join(KV_CACHES)}", kv_cache)
    onnx.get("capacity_mask", bool, False)
    meta.get("prompt_template", (str, type(None)), None)
    provenance = meta.section("provenance", {})
    for key in ("metrics", "parity"):
        provenance.get(key, (dict, type(None)), None)
    return special.doc


def _default_template(meta: dict) -> str:
    """The chat template that format 2 writes for this kind of model (a task model or not)."""
    from edgellm.chat import template as chat_template

    return chat_template.TASK_TEMPLATE if meta.get("prompt_template") == "completion" else chat_template.TEXT_TEMPLATE


def _from_hf_names(doc: dict) -> dict:
    """generation_config.json in Hugging Face's names -> edgellm's: do_sample false is greedy
    (temperature 0), eos_token_id the stop ids; the bos and pad ids are config.json's business."""
    doc = dict(doc)
    for name in ("bos_token_id", "pad_token_id", "transformers_version", "_from_model_config"):
        doc.pop(name, None)
    if doc.pop("do_sample", False) is False:
        for name in ("temperature", "top_k", "top_p", "min_p", "typical_p"):
            doc.pop(name, None)
        doc["temperature"] = 0.0
    eos = doc.pop("eos_token_id", None)
    if eos is not None:
        doc.setdefault("stop_token_ids", [eos] if isinstance(eos, int) else list(eos))
    return doc


def read_tokenizer(folder: ModelFolder):
    """The folder's tokenizer, checked against the model's vocabulary size."""
    from edgellm.tokenizer import Tokenizer

    path = folder.path / TOKENIZER_FILE
    try:
        tokenizer = Tokenizer.load(path)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"Cannot read {path}: {error}. Re-export the model folder.") from None
    if tokenizer.vocab_size != folder.config.vocab_size:
        raise ValueError(f"Model folder {folder.path} does not fit together: {TOKENIZER_FILE} has "
                         f"{tokenizer.vocab_size} tokens but {CONFIG_FILE} says vocab_size "
                         f"{folder.config.vocab_size}. Re-export the folder from one checkpoint.")
    return tokenizer


def read_generation_config(folder: ModelFolder) -> GenerationConfig:
    """The folder's default settings; the stop ids default to the end-of-text id."""
    generation = dict(folder.generation)
    eos = folder.special_tokens.get("eos_token_id")
    generation.setdefault("stop_token_ids", [] if eos is None else [eos])
    config = GenerationConfig.from_dict(generation, source=str(folder.path / GENERATION_CONFIG_FILE))
    bad = config.id_outside(folder.config.vocab_size)
    if bad is not None:
        raise ValueError(f"{folder.path / GENERATION_CONFIG_FILE}: token id {bad} is outside the vocabulary "
                         f"of {folder.config.vocab_size} tokens. Re-export the model folder.")
    return config


def describe(name_or_path: str | Path) -> dict:
    """What `edgellm info` shows: where the folder is, its shape, files, defaults, provenance."""
    folder = read(name_or_path)
    provenance = folder.meta.get("provenance", {})
    metrics = provenance.get("metrics") or {}
    parity = provenance.get("parity") or {}
    files = {p.name: f"{p.stat().st_size / 1e6:.2f} MB" for p in sorted(folder.path.iterdir()) if p.is_file()}
    return {
        "model": str(name_or_path),
        "path": str(folder.path.resolve()),
        "shipped": folder.path.parent == shipped_models_dir(),
        "format_version": folder.format_version,
        "architecture": folder.config.to_dict(),
        "kv_cache": folder.kv_cache,
        "parameters": metrics.get("parameters"),
        "special_tokens": folder.special_tokens,
        "generation_defaults": read_generation_config(folder).to_dict(),
        "training": {k: metrics[k] for k in ("steps", "val_loss", "val_loss_per_char", "val_perplexity")
                     if k in metrics} | {"data": provenance.get("data")},
        "parity": {k: parity[k] for k in ("greedy_tokens_equal", "max_abs_logit_diff_prefill",
                                          "max_abs_logit_diff_decode") if k in parity},
        "files": files,
    }
