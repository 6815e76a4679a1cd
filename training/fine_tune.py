"""Fine-tuning starts from another checkpoint (`--init`): its shape, its tokenizer, its weights.

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

from edgellm.training import checkpoint, options


def shape_of_init(opts, given: dict):
    """Options with the model shape of the --init checkpoint; a flag that contradicts it is an error."""
    if opts.tokenizer:
        raise ValueError("Pass --init or --tokenizer, not both: a fine-tuned model keeps the tokenizer of "
                         f"its checkpoint. Received: init={opts.init!r}, tokenizer={opts.tokenizer!r}")
    arch = {"num_kv_heads": 0, **checkpoint.load_meta(opts.init)["architecture"]}  # older checkpoints lack it
    for name in options.SHAPE:
        if name in given and given[name] != arch[name]:
            raise ValueError(f"{options.flag(name)} must be the --init checkpoint's ({arch[name]!r}): "
                             f"fine-tuning keeps the model's shape. Received: {given[name]!r}. Drop the flag.")
    return dataclasses.replace(opts, **{name: arch[name] for name in options.SHAPE})


def load_init_weights(model, init: str) -> None:
    """The --init checkpoint's weights into `model`; token ids added to its tokenizer keep their
    fresh random rows in the embedding (and output layer)."""
    before, _, _ = checkpoint.load_model(init)

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
