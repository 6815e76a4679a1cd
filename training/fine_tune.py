"""Fine-tuning starts from another checkpoint (`--init`): its shape, its tokenizer, its weights.

`--init` may also name a pretrained source, a GGUF file or a Hugging Face model folder
(training/pretrained/): full fine-tuning of all its weights, with its tokenizer.

The new run keeps the model's shape (a flag that contradicts it is an error) and its tokenizer,
which train.py extends with a task model's special tokens; the embedding rows of those new ids
keep their fresh initialisation, every other weight comes from the checkpoint.

Example:
    >>> from edgellm.training import options
    >>> opts = shape_of_init(options.resolve({"init": "runs/shakespeare"}, None), given={})  # doctest: +SKIP
    >>> load_init_weights(model, opts.init)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from edgellm.folder.config import ModelConfig
from edgellm.training import checkpoint, options, pretrained


@functools.lru_cache(maxsize=1)
def _source(init: str) -> pretrained.Pretrained:
    return pretrained.load(init)


def init_tokenizer(init: str):
    """The tokenizer of the --init checkpoint or pretrained source."""
    from edgellm.tokenizer import Tokenizer

    return _source(init).tokenizer if pretrained.is_source(init) else Tokenizer.load(Path(init) / checkpoint.TOKENIZER_FILE)


def init_meta(init: str) -> dict:
    """What a checkpoint of a model fine-tuned from a pretrained source keeps of it for export (its
    special tokens, stop ids and chat template); nothing for an edgellm checkpoint."""
    if not pretrained.is_source(init):
        return {}
    from edgellm.export.onnx_export import pretrained_meta

    meta = pretrained_meta(_source(init))
    return {key: meta[key] for key in SOURCE_KEYS}


SOURCE_KEYS = ("source", "special_tokens", "stop_token_ids", "chat_template")  # kept in checkpoint.json


def shape_of_init(opts, given: dict):
    """Options with the model shape of the --init checkpoint; a flag that contradicts it is an error."""
    if opts.tokenizer:
        raise ValueError("Pass --init or --tokenizer, not both: a fine-tuned model keeps the tokenizer of "
                         f"its checkpoint. Received: init={opts.init!r}, tokenizer={opts.tokenizer!r}")
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}  # older checkpoints lack later fields
    arch = {**defaults, **(_source(opts.init).config.to_dict() if pretrained.is_source(opts.init)
                           else checkpoint.load_meta(opts.init)["architecture"])}
    for name in options.SHAPE:
        if name == "context_length" and arch["position_embedding"] != "learned" and \
                type(given.get(name)) is int and 1 <= given[name] <= arch[name]:
            arch[name] = given[name]  # no position table: shorter windows fine (SmolLM2's 8,192 is a lot on a CPU)
        if name in given and given[name] != arch[name]:
            raise ValueError(f"{options.flag(name)} must be the --init checkpoint's ({arch[name]!r}): "
                             f"fine-tuning keeps the model's shape. Received: {given[name]!r}. Drop the flag.")
    return dataclasses.replace(opts, **{name: arch[name] for name in options.SHAPE})


def base_model(init: str):
    """The plain GPT of an edgellm checkpoint (a LoRA checkpoint's merged) or of a pretrained source."""
    return pretrained.build_model(_source(init)) if pretrained.is_source(init) else checkpoint.load_model(init)[0]


def load_init_weights(model, init: str) -> None:
    """The --init checkpoint's weights into `model`; token ids added to its tokenizer keep their
    fresh random rows in the embedding (and output layer)."""
    before = base_model(init)

    def inside(var):  # the path below the model's own (auto-numbered) name
        return var.path.split("/", 1)[1]

    old = {inside(v): v for v in before.trainable_variables}
    for var in model.trainable_variables:
        value = old[inside(var)].numpy()
        if tuple(var.shape) != value.shape:  # grown along the vocabulary: keep the new rows' init
            grown = var.numpy()
            grown[tuple(slice(0, n) for n in value.shape)] = value
            value = grown
        var.assign(value)
    _source.cache_clear()  # a 135M source's float32 tensors: 0.5 GB not to hold through training
