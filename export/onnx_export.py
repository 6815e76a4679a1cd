"""Keras checkpoint -> ONNX model folder, validated against Keras before it is written.

    edgellm export runs/shakespeare models/shakespeare

Steps: load the checkpoint under the TensorFlow backend; trace `GPT.decode` (the KV-cache
forward pass) with an explicit input signature; convert with tf2onnx; run the graph passes of
export/graph/, in this order: name the dynamic dimensions, store a tied embedding once, fuse
LayerNorms, let MatMuls take 3-D inputs, and (by default) rewrite each layer's attention into
GroupQueryAttention so the runtime can cache in place; write the folder's files (folder_files.py:
config.json, tokenizer_config.json, generation_config.json and genai_config.json, in the names
transformers, Optimum, transformers.js and onnxruntime-genai read) into a temporary folder next
to OUT_DIR, with `fmt="hf"` the weights as model.safetensors for transformers' GPT2LMHeadModel
(hf_weights.py); check the ONNX model against the Keras model (validate.py);
by default make block-wise int8 weights (int4 if asked for) and keep them only if they measure as
good as float32 (quantize.py, blockwise.py; float16 or float32 if asked for, variants.py); only then rename the folder into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgellm.folder import model_folder
from edgellm.folder.config import ModelConfig
from edgellm.folder.model_folder import input_names, output_names

DEFAULT_OPSET = 17
OPSETS = (17, 18)  # LayerNormalization (export/graph/fusions.py) is opset 17; tf2onnx 1.17 converts up to 18
FORMATS = ("onnx", "hf")  # hf: also model.safetensors for transformers (exact GPT-2 architectures only)


def _import_tensorflow():
    """Import TensorFlow and Keras on the TensorFlow backend, with a clear error otherwise."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from edgellm import libraries

    try:  # quietly in `edgellm export`
        keras, tf, tf2onnx = (libraries.load(name) for name in ("keras", "tensorflow", "tf2onnx"))
    except ImportError as error:
        raise ValueError(f"edgellm export needs TensorFlow, Keras and tf2onnx ({error.name} is missing). "
                         "Install them with: pip install 'edgellm[train]'") from None
    if keras.backend.backend() != "tensorflow":
        raise ValueError("edgellm export runs on the TensorFlow backend. "
                         f"Received: KERAS_BACKEND={keras.backend.backend()}. Unset it or set it to tensorflow.")
    return tf, tf2onnx


def to_onnx(model, opset: int = DEFAULT_OPSET, kv_cache: str = "in_place"):
    """Convert a GPT's KV-cache forward pass to an ONNX ModelProto with Optimum's names.
    `kv_cache` "in_place" rewrites the attention into GroupQueryAttention; "concat" keeps
    tf2onnx's graph of standard ONNX operators."""
    import onnx

    from edgellm.export import graph

    tf, tf2onnx = _import_tensorflow()
    cfg = model.config
    past_spec = [None, cfg.kv_heads, None, cfg.head_dim]  # (batch, kv heads, past, head_dim)
    names = input_names(cfg.num_layers)
    signature = [tf.TensorSpec([None, None], tf.int64, name=n) for n in names[:3]]
    signature += [tf.TensorSpec(past_spec, tf.float32, name=n) for n in names[3:]]

    @tf.function(input_signature=signature)
    def decode(input_ids, attention_mask, position_ids, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(cfg.num_layers)]
        logits, presents = model.decode(input_ids, attention_mask, position_ids, pairs)
        flat = [t for pair in presents for t in pair]
        return dict(zip(output_names(cfg.num_layers), [logits, *flat]))

    try:
        proto, _ = tf2onnx.convert.from_function(decode, input_signature=signature, opset=opset)
    except Exception as error:  # tf2onnx raises many types; the first line names the op
        raise ValueError(f"tf2onnx could not convert the model: {str(error).splitlines()[0]}. "
                         "Use layers built from keras.ops that tf2onnx supports.") from None
    unsupported = sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain or "")})
    if unsupported:
        raise ValueError(f"The model uses operations ONNX does not have: {', '.join(unsupported)}. "
                         "Replace the layers that produce them (exact GELU becomes Erfc: use the tanh form).")
    graph.run(proto, cfg, kv_cache)
    return proto


def export(checkpoint_dir: str | Path, out_dir: str | Path, opset: int = DEFAULT_OPSET,
           weights: str = "int8", force: bool = False, kv_cache: str = "in_place", fmt: str = "onnx") -> dict:
    """Export a training checkpoint to a validated model folder. Returns config.json's provenance.

    Args:
        checkpoint_dir: a folder written by `edgellm train`, or a pretrained source: a GGUF file or
            a Hugging Face model folder (training/pretrained/).
        out_dir: the model folder to create (refused if it exists, unless `force`).
        opset: ONNX opset.
        weights: "int8" (default) or "int4": block-wise weights (blockwise.py), kept where held-out
            perplexity rises by at most 0.5% and greedy agreement is recorded, else float32 with the
            reason (a task model keeps float32, see `edgellm quantize`); "float32", or "float16".
        force: replace `out_dir` if it exists.
        kv_cache: "in_place" (GroupQueryAttention, onnxruntime only; the runtime updates one
            preallocated cache) or "concat" (standard ONNX operators; the cache is copied each step).
        fmt: "onnx", or "hf" to add model.safetensors for transformers' GPT2LMHeadModel (refused for
            an architecture that is not exactly GPT-2's).

    Example:
        >>> provenance = export("runs/tiny", "models/tiny")
        >>> provenance["parity"]["greedy_tokens_equal"]
        True
    """
    import onnx

    from edgellm.folder import model_card
    from edgellm.export import folder_files, hf_weights, quantize, staging, validate, variants
    from edgellm.training import checkpoint, pretrained

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: format={fmt!r}")
    if weights not in variants.VARIANTS:
        raise ValueError(f"weights must be one of {variants.VARIANTS}. Received: weights={weights!r}")
    if kv_cache not in model_folder.KV_CACHES:
        raise ValueError(f"kv_cache must be one of {model_folder.KV_CACHES}. Received: kv_cache={kv_cache!r}")
    if type(opset) is not int or opset not in OPSETS:
        raise ValueError(f"opset must be in [{OPSETS[0]}, {OPSETS[-1]}] (the LayerNormalization operator needs 17, "
                         f"tf2onnx {OPSETS[-1]} at most). Received: opset={opset!r}")
    out_dir = Path(out_dir)
    staging.check_target(out_dir, force)  # clear errors before TensorFlow starts
    source = pretrained.load(checkpoint_dir) if pretrained.is_source(checkpoint_dir) else None
    meta = pretrained_meta(source) if source else checkpoint.load_meta(checkpoint_dir)
    if fmt == "hf":
        hf_weights.check_architecture(ModelConfig.from_dict(meta["architecture"]))
    _import_tensorflow()
    if source:
        model, tokenizer = pretrained.build_model(source), source.tokenizer
    else:
        model, tokenizer, meta = checkpoint.load_model(checkpoint_dir)
    proto = to_onnx(model, opset, kv_cache)

    tmp = staging.new_folder(out_dir)
    tmp.chmod(0o755)
    scratch = staging.new_folder(out_dir, "scratch-")
    try:
        onnx.save(proto, tmp / model_folder.MODEL_FILE)
        tokenizer.save(tmp / model_folder.TOKENIZER_FILE)
        eos = tokenizer.eos_token_id
        special = meta.get("special_tokens") or {"eos_token_id": eos, "bos_token_id": eos, "pad_token_id": eos}
        sampling = ({"max_new_tokens": model.config.context_length, "temperature": 0.0,  # a task: greedy
                     **({"truncate": "right"} if (meta.get("training") or {}).get("too_long") == "right" else {})}
                    if meta.get("task_examples") else
                    {"max_new_tokens": 200, "temperature": 0.8, "top_k": 50, "top_p": 0.95})
        provenance = {"checkpoint": str(checkpoint_dir), "source": meta.get("source"), "command": meta.get("command"),
                      "data": meta.get("data"), "training": meta.get("training"),
                      "metrics": meta.get("metrics"), "data_licences": _data_licences(meta.get("data") or []),
                      "versions": {**meta.get("versions", {}), **_export_versions()}}
        config = {  # edgellm's document: config.json's "edgellm" key
            "format_version": model_folder.FORMAT_VERSION,
            "architecture": model.config.to_dict(),
            "special_tokens": special,
            "onnx": {"file": model_folder.MODEL_FILE, "opset": opset, "weights": weights, "kv_cache": kv_cache,
                     "capacity_mask": kv_cache == "in_place",
                     "inputs": input_names(model.config.num_layers),
                     "outputs": output_names(model.config.num_layers)},
            "provenance": provenance,
        }
        if meta.get("task_examples"):  # a task model: the runtime wraps prompts in its template
            config["prompt_template"] = "completion"
        folder_files.write(tmp, model.config, tokenizer, config,
                           {**sampling, "stop_token_ids": meta.get("stop_token_ids") or [eos]}, meta.get("chat_template"))
        if fmt == "hf":
            hf_weights.save(model, tmp)

        # the gate runs on the float32 graph; a smaller variant is then measured against it
        provenance["parity"] = validate.check_parity(model, tmp)  # raises on mismatch
        if weights in ("int8", "int4"):  # kept only within quantize.py's limits, else float32 (the decision says why)
            float32_dir = scratch / "float32"
            shutil.copytree(tmp, float32_dir)
            variants.make_variant(float32_dir / model_folder.MODEL_FILE, tmp / model_folder.MODEL_FILE, weights)
            quantization = quantize.measure_quantized(float32_dir, tmp, config, weights)
            if quantization["weights"] == "float32":
                shutil.copy(float32_dir / model_folder.MODEL_FILE, tmp / model_folder.MODEL_FILE)
            config["onnx"]["weights"] = quantization["weights"]
            provenance["quantization"] = quantization
            figures = quantization["figures"]
        else:
            windows = variants.validation_windows(meta, tokenizer, model.config.context_length)
            figures = {"float32": variants.measure(tmp, windows)}
        if weights == "float16":
            float32_file = scratch / "model.float32.onnx"
            os.replace(tmp / model_folder.MODEL_FILE, float32_file)
            variants.make_variant(float32_file, tmp / model_folder.MODEL_FILE, weights)
            figures[weights] = variants.measure(tmp, windows)
        provenance["variants"] = figures
        folder_files.write_config(tmp, model.config, config)
        curve = Path(checkpoint_dir) / "loss_curve.png"
        if curve.is_file():
            shutil.copy(curve, tmp / "loss_curve.png")
        (tmp / "README.md").write_text(model_card.render(out_dir.name, config, tmp), encoding="utf-8")

        staging.move_into_place(tmp, out_dir)  # --force: the old folder is swapped out only now
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return provenance


def pretrained_meta(source) -> dict:
    """What export reads of a checkpoint's meta, for a pretrained source (training/pretrained/)."""
    return {"architecture": source.config.to_dict(), "source": source.source, "special_tokens": source.special_tokens,
            "stop_token_ids": source.stop_token_ids, "chat_template": source.chat_template}


def _data_licences(files: list[str]) -> dict:
    """The LICENSE.md beside each training file, when there is one, for the model card."""
    found = {}
    for file in files:
        licence = Path(file).parent / "LICENSE.md"
        if licence.is_file():
            found[str(licence)] = licence.read_text(encoding="utf-8")
    return found


def _export_versions() -> dict:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}
