"""Low-rank adapters (LoRA): fine-tune a few hundred thousand weights beside a frozen base model.

`edgellm train --init BASE --lora-rank R` freezes every weight of BASE (an edgellm checkpoint, a
GGUF file or a Hugging Face folder) and gives each targeted projection W (in, out) an adapter:
y = x W + (alpha / R) * dropout(x) A B, with A (in, R) and B (R, out). These are Keras's own LoRA
weights (`Dense.enable_lora`: A starts he-uniform, B at zero, so step 0 is the base model);
`Dense` below computes the adapter beside the frozen kernel, as PEFT does, so its dropout
applies to the adapter's input only and the backward pass never forms a full (in, out)
gradient. A checkpoint keeps only A and B (adapters.npz) and names its base by path and
sha256: a changed base is refused. Export merges: W + (alpha / R) A B, one plain model.

Targets are the projections of each block, in edgellm's names (Llama's and GPT-2's in options.LORA_TARGETS);
the default is all of them, PEFT's "all-linear" (embeddings and the output layer stay frozen).

Example:
    >>> model = fine_tune.base_model("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    >>> enable(model, Spec(rank=8))                                       # doctest: +SKIP
    >>> merged(model)  # a GPT without adapters, for export               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from keras import layers, ops

from edgellm.training.options import LORA_TARGETS

DEFAULT_TARGETS = ",".join(LORA_TARGETS)


class Dense(layers.Dense):
    """keras.layers.Dense whose LoRA adapter is computed beside the frozen kernel (Keras's own
    `call` multiplies by the merged kernel W + s A B), with optional dropout on the adapter's input."""

    lora_dropout = None

    def enable_lora(self, rank, lora_alpha=None, dropout: float = 0.0, **kwargs):
        super().enable_lora(rank, lora_alpha, **kwargs)
        if dropout:
            self._tracker.unlock()
            self.lora_dropout = layers.Dropout(dropout, name="lora_dropout")
            self._tracker.lock()

    def call(self, inputs, training=None):
        if not self.lora_enabled:
            return super().call(inputs, training=training)
        x = ops.matmul(inputs, self._kernel)  # (..., out): the frozen base
        a_in = inputs if self.lora_dropout is None else self.lora_dropout(inputs, training=training)
        low = ops.matmul(ops.matmul(a_in, self.lora_kernel_a), self.lora_kernel_b)  # through (..., rank)
        x = x + ops.cast(self.lora_alpha / self.lora_rank, x.dtype) * low
        return x if self.bias is None else x + self.bias


@dataclass(frozen=True)
class Spec:
    """What `enable` adds: the rank, the scale's alpha (default: the rank, a scale of 1), the
    dropout on the adapters' input, and the targeted projections (comma-separated LORA_TARGETS)."""

    rank: int
    alpha: float | None = None
    dropout: float = 0.0
    targets: str = DEFAULT_TARGETS

    @classmethod
    def of(cls, opts) -> "Spec":
        return cls(opts.lora_rank, opts.lora_alpha, opts.lora_dropout, opts.lora_targets)

    def names(self) -> list[str]:
        return [t.strip() for t in self.targets.split(",") if t.strip()]

    def to_dict(self) -> dict:
        return asdict(self)


def adapted_layers(model, spec: Spec) -> list[Dense]:
    """The model's projections that `spec` targets (fc_gate exists in SwiGLU models only)."""
    names = spec.names()
    found = []
    for block in model.blocks:
        for layer in (block.attn.qkv, block.attn.proj, block.fc_gate, block.fc, block.fc_proj):
            if layer is not None and layer.name in names:
                found.append(layer)
    return found


def enable(model, spec: Spec) -> int:
    """Freeze every weight of a built GPT and add adapters to the targeted projections. Returns the
    number of trainable (adapter) weights."""
    for variable in model.weights:
        variable.trainable = False
    for layer in adapted_layers(model, spec):
        layer.enable_lora(spec.rank, spec.alpha if spec.alpha is not None else spec.rank, spec.dropout)
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _inside(variable) -> str:
    """A variable's path below the model's own (auto-numbered) name: block_0/attn/qkv/lora_kernel_a."""
    return variable.path.split("/", 1)[1]


def adapters(model) -> dict[str, np.ndarray]:
    """A and B of every adapted projection, by path."""
    return {_inside(v): np.asarray(v) for v in model.trainable_weights}


def load_adapters(model, arrays: dict[str, np.ndarray], where: Path) -> None:
    wanted = {_inside(v): v for v in model.trainable_weights}
    if set(arrays) != set(wanted):
        raise ValueError(f"{where} holds adapters for other projections than checkpoint.json's lora section "
                         f"names ({len(arrays)} arrays, {len(wanted)} expected). The checkpoint is damaged: "
                         "train again into a new --out.")
    for name, variable in wanted.items():
        if tuple(arrays[name].shape) != tuple(variable.shape):
            raise ValueError(f"{where}: {name} has shape {arrays[name].shape}, the adapter {tuple(variable.shape)}. "
                             "The checkpoint is damaged: train again into a new --out.")
        variable.assign(arrays[name])


def merged(model):
    """A plain GPT (no adapters) whose kernels are W + (alpha / rank) A B: what export converts."""
    from edgellm.training.model import GPT

    plain = GPT(model.config).build_weights()
    values = {_inside(v): np.asarray(v) for v in model.weights if v.trainable is False}
    for layer in model._flatten_layers():
        if isinstance(layer, layers.Dense) and layer.lora_enabled:
            values[_inside(layer._kernel)] = np.asarray(layer.kernel)  # Keras's merge: W + (alpha / rank) A B
    for variable in plain.weights:
        variable.assign(values[_inside(variable)])
    return plain


def base_record(path: str) -> dict:
    """The base of a LoRA run: its absolute path and the sha256 of the files that hold its weights."""
    return {"path": str(Path(path).resolve()), "sha256": fingerprint(path)}


def fingerprint(path: str | Path) -> str:
    """sha256 of a GGUF file, of a Hugging Face folder's config.json and *.safetensors, or of an
    edgellm checkpoint's weights (model.weights.h5, or a LoRA checkpoint's adapters, whose own base
    is checked when it loads)."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif (path / "checkpoint.json").is_file():
        files = [f for f in (path / "model.weights.h5", path / "adapters.npz") if f.is_file()]
    else:
        files = [path / "config.json", *sorted(path.glob("*.safetensors"))]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def check_base(record: dict, ckpt_dir: Path) -> str:
    """The base path of a LoRA checkpoint, after checking that it is the one the adapters were trained on."""
    path = record["path"]
    if not Path(path).exists():
        raise ValueError(f"The base model of the LoRA checkpoint {ckpt_dir} is missing. Received: {path} "
                         "(checkpoint.json, lora.base.path). Put the base back at that path.")
    if fingerprint(path) != record["sha256"]:
        raise ValueError(f"The base model of the LoRA checkpoint {ckpt_dir} has changed since its adapters were "
                         f"trained. Received: {path} with sha256 {fingerprint(path)[:12]}..., expected "
                         f"{record['sha256'][:12]}.... Restore that base, or train the adapters again.")
    return path


def with_base(record: dict, ckpt_dir: Path):
    """The base of a LoRA checkpoint (checked) with its adapters enabled, as `record` (checkpoint.json's
    "lora") gives them; the adapters' values are then loaded with `load_adapters`."""
    from edgellm.training import fine_tune

    model = fine_tune.base_model(check_base(record["base"], ckpt_dir))
    enable(model, Spec(**record["spec"]))
    return model
