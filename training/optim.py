"""The optimizer: AdamW with decay on weight matrices only, linear warmup then cosine decay,
global-norm clipping and gradient accumulation.

Keras counts an accumulation micro-step as an optimizer iteration and calls the learning-rate
schedule with that count, so the schedule divides it by `grad_accum` to work in optimizer steps.

Example:
    >>> schedule = WarmupCosine(peak=1e-3, warmup=10, total=100)
    >>> [round(float(schedule(s)), 6) for s in (0, 9, 99)]
    [0.0001, 0.001, 0.0001]
"""

from __future__ import annotations

import math

import keras
from keras import ops

from edgellm.training.checkpoint import PLAN_VARIABLE


@keras.saving.register_keras_serializable(package="edgellm")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step): linear from peak/warmup up to `peak` over `warmup` steps, then cosine down to
    `peak * min_ratio` at step `total`, then flat. `step` counts micro-steps when
    `grad_accum` > 1."""

    def __init__(self, peak: float, warmup: int, total: int, min_ratio: float = 0.1, grad_accum: int = 1):
        self.peak, self.warmup, self.total = float(peak), int(warmup), int(total)
        self.min_ratio, self.grad_accum = float(min_ratio), int(grad_accum)
        self.planned = None  # a variable holding `total` once plan_with() is called

    def plan_with(self, optimizer) -> None:
        """Hold `total` in a variable of `optimizer`, so `set_total` moves the end of the decay
        while training runs (the time budget's plan, callbacks.RunControl) without tracing the
        step again. A variable of the optimizer, so JAX's step receives it as state."""
        self.planned = optimizer.add_variable((), initializer=keras.initializers.Constant(self.total),
                                              dtype="float32", name=PLAN_VARIABLE)

    def set_total(self, total: int) -> None:
        self.total = int(total)
        self.planned.assign(float(total))

    def __call__(self, step):
        step = ops.cast(ops.floor_divide(step, self.grad_accum), "float32")
        total = self.total if self.planned is None else ops.convert_to_tensor(self.planned)
        # step s uses the rate of "s + 1 steps done", so the first step is not wasted at lr = 0
        warm = self.peak * (step + 1.0) / max(1, self.warmup)
        progress = ops.clip((step - self.warmup) / ops.maximum(1.0, total - self.warmup), 0.0, 1.0)
        floor = self.peak * self.min_ratio
        cosine = floor + 0.5 * (self.peak - floor) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total,
                "min_ratio": self.min_ratio, "grad_accum": self.grad_accum}


def no_decay_variables(model: keras.Model) -> list:
    """Embeddings, norm scales/offsets and biases: everything but the Dense kernels."""
    embeddings = {id(v) for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)
                  for v in layer.trainable_variables}
    return [v for v in model.trainable_variables if len(v.shape) < 2 or id(v) in embeddings]


def make_schedule(opts) -> WarmupCosine:
    return WarmupCosine(opts.lr, opts.warmup, opts.steps, opts.min_lr_ratio, opts.grad_accum)


def make_optimizer(model: keras.Model, schedule, opts) -> keras.optimizers.AdamW:
    """AdamW for `model` from TrainOptions `opts`, before the optimizer is built.

    Example:
        >>> opts = resolve({})
        >>> model.compile(optimizer=make_optimizer(model, make_schedule(opts), opts), loss=...)
    """
    clip = opts.clip_norm or None
    if clip is None and opts.distribute != "none":
        # Measured with Keras 3.15 and tf.distribute: without clipping, a 2-replica run drifted
        # away from the same run on one device; with a bound that never binds it follows it.
        clip = 1e30
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=opts.weight_decay, beta_1=0.9, beta_2=opts.beta2,
        epsilon=1e-8, global_clipnorm=clip,
        gradient_accumulation_steps=opts.grad_accum if opts.grad_accum > 1 else None)
    # by identity, not by name: a name pattern like "bias" would also match a future "qkv_bias_kernel"
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer
