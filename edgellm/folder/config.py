"""The model's shape: one dataclass shared by the Keras model, config.json and the runtime."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

POSITION_EMBEDDINGS = ("learned", "rope", "alibi")
NORMS = ("layer", "rms")  # LayerNorm (GPT-2) or RMSNorm (Llama)
MLPS = ("gelu", "swiglu")  # GPT-2's tanh-GELU MLP or Llama's gated SiLU MLP
# The short spellings users type for the shape's fields: `edgellm train` flags (--layers 4) and
# config-file keys (layers = 4). Checkpoints written before the names were unified used them too.
# Everywhere else (training options, checkpoints, config.json, Keras get_config) the field names hold.
SHORT_NAMES = {"num_layers": "layers", "num_heads": "heads", "num_kv_heads": "kv_heads", "hidden_size": "width",
               "context_length": "context", "position_embedding": "positions", "use_bias": "bias"}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder-only Transformer.

    The same keys appear in the Keras model's `get_config()`, in a checkpoint's and a model
    folder's config.json (under "architecture") and in the runtime.

    Example:
        >>> cfg = ModelConfig(vocab_size=512, context_length=64, num_layers=2, num_heads=2, hidden_size=64)
        >>> cfg.head_dim
        32
    """

    vocab_size: int
    context_length: int = 256
    num_layers: int = 4
    num_heads: int = 4
    hidden_size: int = 256
    # key/value heads (grouped-query attention): each serves num_heads / num_kv_heads query heads
    # and the KV cache shrinks by that factor; 0 means one per query head
    num_kv_heads: int = 0
    dropout: float = 0.0
    use_bias: bool = False
    tie_embeddings: bool = True
    # "learned" (GPT-2's table), "rope" (rotary, relative) or "alibi" (a per-head penalty growing
    # with distance: no position weights, and a built-in preference for recent tokens)
    position_embedding: str = "learned"
    # The fields below came with pretrained Llama-family models (training/pretrained/); config
    # files leave them out at their defaults (to_dict), so earlier folders read and write unchanged.
    norm: str = "layer"  # "layer" (LayerNorm, with a bias when use_bias) or "rms" (RMSNorm, a scale only)
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # "gelu": fc_proj(gelu(fc(x))); "swiglu": fc_proj(silu(fc_gate(x)) * fc(x))
    intermediate_size: int = 0  # the MLP's inner width; 0 means 4 * hidden_size
    rope_theta: float = 10000.0  # rotary base: the wavelengths run from 2 pi to about 2 pi rope_theta

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "num_layers", "num_heads", "hidden_size"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
        for name in ("use_bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false. Received: {name}={getattr(self, name)!r}")
        if type(self.dropout) not in (int, float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={self.dropout!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                "hidden_size must be divisible by num_heads. "
                f"Received: hidden_size={self.hidden_size}, num_heads={self.num_heads}"
            )
        if type(self.num_kv_heads) is not int or self.num_kv_heads < 0 or self.num_heads % self.kv_heads:
            raise ValueError(f"num_kv_heads must divide num_heads (0: as many as num_heads). Received: "
                             f"num_kv_heads={self.num_kv_heads!r}, num_heads={self.num_heads}")
        if not isinstance(self.position_embedding, str) or self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {', '.join(POSITION_EMBEDDINGS)}. "
                             f"Received: position_embedding={self.position_embedding!r}")
        for name, allowed in (("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}. Received: {name}={getattr(self, name)!r}")
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
        if type(self.intermediate_size) is not int or self.intermediate_size < 0:
            raise ValueError(f"intermediate_size must be a positive integer (0: 4 * hidden_size). "
                             f"Received: intermediate_size={self.intermediate_size!r}")
        if self.position_embedding == "rope" and self.head_dim % 2:
            raise ValueError(f"Rotary position embeddings need an even head size. Received: "
                             f"hidden_size={self.hidden_size}, num_heads={self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Heads in the KV cache: num_kv_heads, or num_heads when that is 0."""
        return self.num_kv_heads or self.num_heads

    @property
    def ffn_size(self) -> int:
        """The MLP's inner width: intermediate_size, or 4 * hidden_size when that is 0."""
        return self.intermediate_size or 4 * self.hidden_size

    def to_dict(self) -> dict:
        """The fields, leaving out the later ones (norm onwards) that hold their defaults."""
        later = {f.name: f.default for f in dataclasses.fields(self)[LATER_FIELDS:]}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in later or v != later[k]}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown model config keys {unknown}. Allowed keys: {sorted(known)}")
        if "vocab_size" not in d:
            raise ValueError("vocab_size is missing. Received: keys " + str(sorted(d)))
        return cls(**d)


LATER_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)].index("norm")
