"""Training options: one dataclass gives the defaults, the checks, the CLI flags and the saved config.

Options come, lowest priority first, from the defaults below, the checkpoint being resumed, a
config file (`--config run.json` or `run.toml`, keys as in the dataclass or as flags) and the
flags or keyword arguments. The resolved options are saved in checkpoint.json under "training".

The model's shape has the names of `ModelConfig` (num_layers, hidden_size, context_length, ...)
here, in checkpoints, config.json and Keras's get_config. Only flags and config-file keys may use
the short spellings of `edgellm.folder.config.SHORT_NAMES` (--layers, width = 256); `canonical` maps
them, and also the keys of checkpoints written before the names were unified.

Example:
    >>> opts = resolve({"steps": 50, "hidden_size": 64, "num_heads": 2})
    >>> opts.steps, model_config(opts, vocab_size=300).head_dim
    (50, 32)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from edgellm.folder.config import MLPS, NORMS, POSITION_EMBEDDINGS, SHORT_NAMES, ModelConfig

PRECISIONS = ("float32", "bfloat16", "float16")
ATTENTIONS = ("standard", "fused")
DISTRIBUTIONS = ("none", "mirrored", "multiworker")
# changing these would make the checkpoint meaningless (shape, data, batches) or the resume inexact
FIXED_ON_RESUME = ("init", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "tokenizer", "examples", "vocab_size", "val_fraction", "num_layers", "num_heads",
                   "num_kv_heads", "hidden_size", "context_length", "use_bias", "tie_embeddings",
                   "position_embedding", "norm", "norm_eps", "mlp", "intermediate_size", "rope_theta",
                   "batch_size", "grad_accum", "seed")
# LoRA's targets: edgellm's projections of each block -> their names in Hugging Face Llama and GPT-2
LORA_TARGETS = {"qkv": "q_proj, k_proj, v_proj (packed: one adapter) / c_attn", "proj": "o_proj / attn.c_proj",
                "fc_gate": "gate_proj (SwiGLU only)", "fc": "up_proj / c_fc", "fc_proj": "down_proj / mlp.c_proj"}
# the options that are the model's shape: ModelConfig's fields but dropout (a training choice)
SHAPE = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "dropout")


def _opt(default, help: str, choices: tuple = (), type=None):
    return field(default=default, metadata={"help": help, "choices": choices, "type": type})


@dataclass
class TrainOptions:
    # data
    tokenizer: str | None = _opt(None, "Reuse this tokenizer.json instead of training one.", type=str)
    vocab_size: int = _opt(2048, "Vocabulary size of the tokenizer to train. Smaller vocabularies "
                                 "train faster per step; larger ones see more text per token.")
    val_fraction: float = _opt(0.1, "Last fraction of each file held out for validation.")
    cache_dir: str | None = _opt(None, "Cache for token ids and trained tokenizers. "
                                       "[default: $EDGELLM_CACHE or ~/.cache/edgellm]", type=str)
    examples: str | None = _opt(None, "Train a task model on prompt/completion pairs (JSONL or TSV) "
                                      "instead of text FILES (see docs/tasks.md).", type=str)
    init: str | None = _opt(None, "Fine-tune: start from the weights of this checkpoint folder, or of a "
                                  "pretrained GGUF file or Hugging Face model folder (all weights trained), "
                                  "with its tokenizer and shape (the model flags then default to the "
                                  "source's); the optimizer starts afresh.", type=str)
    lora_rank: int = _opt(0, "LoRA: train low-rank adapters of this rank on a frozen --init model instead of all "
                             "its weights (0: full fine-tuning). The checkpoint keeps the adapters only; "
                             "export merges them into the weights.")
    lora_alpha: float | None = _opt(None, "LoRA: the adapters' output is scaled by alpha / rank. "
                                          "[default: the rank, a scale of 1]", type=float)
    lora_dropout: float = _opt(0.0, "LoRA: dropout rate on the adapters' input.")
    lora_targets: str = _opt(",".join(LORA_TARGETS), "LoRA: the projections of each block that get adapters, "
                                                     "comma-separated: qkv (attention's q, k, v), proj (its "
                                                     "output), fc_gate, fc, fc_proj (the MLP's; fc_gate in "
                                                     "SwiGLU models only). Default: all of them.")
    prompt_loss_weight: float = _opt(0.0, "Task models: weight of the prompt tokens in the training "
                                          "loss (0: completion only; validation always counts the "
                                          "completion only).")
    too_long: str = _opt("skip", "Examples longer than the context: skip and count them, stop (error), or "
                                 "cut the prompt's end and keep its start (right; the exported model "
                                 "then cuts long prompts the same way: truncate right).",
                         choices=("skip", "error", "right"))
    # model
    num_layers: int = _opt(4, "Transformer blocks.")
    num_heads: int = _opt(4, "Attention heads per block.")
    num_kv_heads: int = _opt(0, "Key/value heads per block (grouped-query attention; must divide --heads): "
                                "fewer shrink the KV cache and speed up long contexts. 0: one per head.")
    hidden_size: int = _opt(256, "Hidden size (must divide by --heads).")
    context_length: int = _opt(128, "Context length in tokens (the size of the position table).")
    dropout: float = _opt(0.0, "Dropout rate (embeddings, attention weights, residual branches).")
    use_bias: bool = _opt(False, "Biases in the Dense and LayerNorm layers.")
    tie_embeddings: bool = _opt(True, "Share the token embedding with the output layer.")
    position_embedding: str = _opt("learned", "Positions: a learned table (GPT-2), rotary (rope: relative "
                                              "positions) or alibi (a per-head penalty on distance: favours "
                                              "recent tokens).", choices=POSITION_EMBEDDINGS)
    norm: str = _opt("layer", "Normalization: LayerNorm (GPT-2) or RMSNorm (Llama).", choices=NORMS)
    norm_eps: float = _opt(1e-5, "Epsilon of the normalization layers.")
    mlp: str = _opt("gelu", "MLP: GPT-2's tanh GELU or Llama's gated SiLU (swiglu).", choices=MLPS)
    intermediate_size: int = _opt(0, "Inner width of the MLP (0: 4 x --width).")
    rope_theta: float = _opt(10000.0, "Rotary positions: the base of the wavelengths.")
    init_std: float = _opt(0.02, "Standard deviation of the initial weights (GPT-2: 0.02). Narrow "
                                 "models start with near-uniform attention at 0.02; about "
                                 "1/sqrt(width) lets them find attention patterns sooner.")
    # optimisation
    batch_size: int = _opt(32, "Windows per micro-batch.")
    grad_accum: int = _opt(1, "Micro-batches averaged into one optimizer step "
                              "(effective batch = batch-size x grad-accum).")
    steps: int = _opt(1000, "Optimizer steps.")
    lr: float = _opt(1e-3, "Peak learning rate (AdamW; linear warmup, then cosine decay).")
    min_lr_ratio: float = _opt(0.1, "Final learning rate as a fraction of --lr.")
    warmup: int = _opt(100, "Linear warmup steps.")
    weight_decay: float = _opt(0.1, "AdamW weight decay, applied to weight matrices only "
                                    "(not to embeddings, norms or biases).")
    beta2: float = _opt(0.95, "AdamW second-moment decay.")
    clip_norm: float = _opt(1.0, "Clip gradients to this global norm (0 = off).")
    precision: str = _opt("float32", "Compute precision; bfloat16/float16 keep float32 weights.",
                          choices=PRECISIONS)
    xla: bool = _opt(True, "Compile the training step with XLA (about 7x faster on CPU under TensorFlow).")
    attention: str = _opt("standard", "Attention in training: standard (explicit matmuls and softmax) "
                                      "or fused (keras.ops.dot_product_attention: cuDNN flash attention "
                                      "under JAX on a GPU in bfloat16/float16; no dropout on attention "
                                      "weights). Export always uses standard.", choices=ATTENTIONS)
    distribute: str = _opt("none", "Data parallelism. mirrored: every GPU of this machine (or CPU "
                                   "devices if there is none); multiworker: several processes or "
                                   "machines, each started with TF_CONFIG; --batch-size is the "
                                   "global batch (see docs/training.md).", choices=DISTRIBUTIONS)
    seed: int = _opt(1337, "Seed for weights, batches and dropout: the same seed repeats a run.")
    # monitoring and stopping
    eval_interval: int = _opt(250, "Steps between validation runs, checkpoints and log rows.")
    eval_tokens: int = _opt(0, "Validation tokens per evaluation, spread over the whole split (0 = all).")
    time_budget: float | None = _opt(None, "Train for this many seconds (wall-clock, evaluations included), "
                                           "then validate and save: the steps are planned from the measured "
                                           "speed as training goes, at most --steps.", type=float)
    tensorboard: bool = _opt(True, "Write TensorBoard logs to OUT/logs (when tensorflow is installed).")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.metadata["type"] or type(f.default)
            if value is None and f.default is None:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{f.name} must be {kind.__name__}. Received: {f.name}={value!r}")
            if kind is float and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number. Received: {f.name}={value!r}")
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}. "
                                 f"Received: {f.name}={value!r}")
        for name in ("vocab_size", "num_layers", "num_heads", "hidden_size", "context_length", "batch_size",
                     "grad_accum", "steps", "eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1. Received: {name}={getattr(self, name)}")
        for name in ("warmup", "eval_tokens", "weight_decay", "clip_norm", "prompt_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0. Received: {name}={getattr(self, name)}")
        _check_range("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True)
        _check_range("dropout", self.dropout, 0.0, 1.0)
        _check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0, high_closed=True)
        _check_range("beta2", self.beta2, 0.0, 1.0)
        for name in ("lr", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive. Received: {name}={getattr(self, name)}")
        self._check_lora()
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be a positive number of seconds. "
                             f"Received: time_budget={self.time_budget}")
        if self.num_kv_heads < 0 or (self.num_kv_heads and self.num_heads % self.num_kv_heads):
            raise ValueError(f"num_kv_heads (--kv-heads) must divide num_heads (--heads; 0: one per head). "
                             f"Received: num_kv_heads={self.num_kv_heads}, num_heads={self.num_heads}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size (--width) must be divisible by num_heads (--heads). Received: "
                             f"hidden_size={self.hidden_size}, num_heads={self.num_heads}")

    def _check_lora(self):
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank (--lora-rank) must be at least 0 (0: full fine-tuning). "
                             f"Received: lora_rank={self.lora_rank}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha (--lora-alpha) must be positive. Received: lora_alpha={self.lora_alpha}")
        _check_range("lora_dropout", self.lora_dropout, 0.0, 1.0)
        names = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        if not names or any(n not in LORA_TARGETS for n in names):
            raise ValueError(f"lora_targets (--lora-targets) must be a comma-separated list of "
                             f"{', '.join(LORA_TARGETS)}. Received: lora_targets={self.lora_targets!r}")
        if not self.lora_rank:
            return
        if not self.init:
            raise ValueError("lora_rank (--lora-rank) adapts a trained model: pass --init (an edgellm checkpoint, "
                             f"a GGUF file or a Hugging Face folder). Received: lora_rank={self.lora_rank}, no init")
        if self.examples:
            raise ValueError("lora_rank (--lora-rank) cannot train a task model yet: its new special tokens need "
                             "trained embedding rows, which the adapters leave frozen. Received: "
                             f"examples={self.examples!r}. Drop --lora-rank, or train on text FILES.")

    def to_dict(self) -> dict:
        """The options that are set (None means "not set" and is left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _check_range(name, value, low, high, low_open=False, high_closed=False):
    ok = (value > low if low_open else value >= low) and (value <= high if high_closed else value < high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if high_closed else ')'}"
        raise ValueError(f"{name} must be in {interval}. Received: {name}={value}")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
_LONG_NAMES = {short: name for name, short in SHORT_NAMES.items()}


def names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainOptions)]


def flag(name: str) -> str:
    """The command-line flag of option `name`: `--layers` for num_layers, `--batch-size` for batch_size."""
    return "--" + SHORT_NAMES.get(name, name).replace("_", "-")


def canonical(doc: dict, where: str) -> dict:
    """`doc` with short spellings (`layers`, `width`, ...: flags, config files, older checkpoints)
    turned into the option names; both spellings of one option is an error naming `where`."""
    out = {}
    for key, value in doc.items():
        name = _LONG_NAMES.get(key, key)
        if name in out:
            raise ValueError(f"{where} sets {name} twice, as {name} and as {SHORT_NAMES[name]}. "
                             f"Received: {SHORT_NAMES[name]}={doc[SHORT_NAMES[name]]!r}, {name}={doc[name]!r}. "
                             "Keep one of them.")
        out[name] = value
    return out


def model_config(opts: TrainOptions, vocab_size: int) -> ModelConfig:
    """The ModelConfig of options `opts` for a tokenizer of `vocab_size` ids."""
    return ModelConfig(**{name: getattr(opts, name) for name in SHAPE if name != "vocab_size"},
                       vocab_size=vocab_size, dropout=opts.dropout)


def resolve(given: dict, resumed: dict | None = None) -> TrainOptions:
    """Defaults <- the resumed checkpoint's options <- `given`. Raises ValueError for unknown keys,
    bad values, and changes to FIXED_ON_RESUME options."""
    unknown = sorted(set(given) - set(names()))
    if unknown:
        hints = [f"{key} is {_LONG_NAMES[key]}" for key in unknown if key in _LONG_NAMES]
        raise ValueError(f"Unknown training option(s) {unknown}" + (f" ({', '.join(hints)})" if hints else "")
                         + f". Allowed: {', '.join(names())}")
    base = {k: v for k, v in (resumed or {}).items() if k in names()}
    if resumed is not None:
        for key in FIXED_ON_RESUME:
            if key in given and given[key] != base.get(key, _DEFAULTS[key]):
                shown = flag(key)
                raise ValueError(f"{shown} cannot change when resuming: the checkpoint has "
                                 f"{base.get(key)!r}. Received: {given[key]!r}. Drop {shown}, or start "
                                 "a new run in another --out.")
    return TrainOptions(**{**base, **given})


def read_config_file(path: str | Path) -> dict:
    """Options from a JSON or TOML file; keys may be written `batch_size` or `batch-size`, and the
    shape's as the flags (`layers`) or as the options (`num_layers`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"Cannot read config file {path}: {error.strerror}.") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            doc = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except ImportError:
        raise ValueError("Reading a TOML config needs Python 3.11 or `pip install tomli`. "
                         "Or write the config as JSON.") from None
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ValueError(f"Config file {path} is not valid {kind} ({error}). Write options as JSON, "
                         "or as TOML in a .toml file.") from None
    if not isinstance(doc, dict):
        raise ValueError(f"Config file {path} must hold a table of options. Received: {type(doc).__name__}")
    doc = canonical({str(k).replace("-", "_"): v for k, v in doc.items()}, f"Config file {path}")
    unknown = sorted(set(doc) - set(names()))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} in config file {path}. "
                         f"Allowed: {', '.join(names())}")
    return doc


def click_options(fn):
    """Decorator: one click option per TrainOptions field, with its help, type and default, and
    `--config FILE`, whose options become the defaults that flags override."""
    import click

    for f in reversed(dataclasses.fields(TrainOptions)):
        name, meta = flag(f.name), f.metadata
        kind = click.Choice(meta["choices"]) if meta["choices"] else (meta["type"] or type(f.default))
        decls = [f"{name}/--no-{name[2:]}"] if isinstance(f.default, bool) else [name]
        fn = click.option(*decls, f.name, type=kind, default=f.default, help=meta["help"],
                          show_default=f.default is not None)(fn)

    def read_config(ctx, param, value):
        if value:
            try:
                ctx.default_map = {**(ctx.default_map or {}), **read_config_file(value)}
            except ValueError as error:
                raise click.BadParameter(str(error), ctx, param) from None
        return value

    return click.option("--config", "-c", type=click.Path(exists=True, dir_okay=False), is_eager=True,
                        expose_value=False, callback=read_config,
                        help="JSON or TOML file of options (keys as the flags, e.g. batch_size = 64); "
                             "flags override it.")(fn)
