"""The decoder-only Transformer, in Keras 3 with keras.ops only (TensorFlow, JAX or PyTorch backend).

Pre-norm GPT blocks: x + attn(ln(x)), then x + mlp(ln(x)); LayerNorm and a tanh-GELU MLP
(GPT-2), or RMSNorm and a SwiGLU MLP (Llama), per the config's `norm` and `mlp`. Positions are a learned table
(GPT-2), rotary embeddings (rope) or ALiBi (see positions.py); optionally tied input/output
embeddings. Under mixed precision (a "mixed_bfloat16" or
"mixed_float16" dtype policy when the model is built) weights stay float32; attention softmax and
logits are computed in float32. One forward pass serves training (no cache) and the
exported decoder (past keys/values in, present keys/values out). With `attention="fused"` the
training pass calls `keras.ops.dot_product_attention` (cuDNN flash attention under JAX on a GPU in
bfloat16/float16, `scaled_dot_product_attention` under PyTorch); the decoder keeps the explicit
matmuls, which tf2onnx converts.

Example:
    >>> from edgellm.folder.config import ModelConfig
    >>> model = GPT(ModelConfig(vocab_size=300, context_length=16, num_layers=1, num_heads=2, hidden_size=32))
    >>> model(np.zeros((1, 8), "int32")).shape
    TensorShape([1, 8, 300])
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from edgellm.folder.config import ModelConfig
from edgellm.training import positions
from edgellm.training.lora import Dense  # keras.layers.Dense that can carry a LoRA adapter
from edgellm.training.options import ATTENTIONS

NEG_INF = -1e9  # additive mask value; finite so a fully masked row (a pad query) stays NaN-free


def _init(std: float):
    return keras.initializers.RandomNormal(stddev=std)


class CausalSelfAttention(layers.Layer):
    """Causal self-attention with `num_heads` query heads and `kv_heads` key/value heads
    (grouped-query attention when fewer: each key/value head serves a group of query heads)."""

    def __init__(self, config: ModelConfig, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.kv_heads, self.head_dim = config.num_heads, config.kv_heads, config.head_dim
        c = config.hidden_size
        # one projection laid out [query heads | key heads | value heads], each head_dim wide
        self.qkv = Dense((self.num_heads + 2 * self.kv_heads) * self.head_dim, use_bias=config.use_bias,
                                kernel_initializer=_init(init_std), name="qkv")
        # residual projections are scaled down with depth, as in GPT-2
        self.proj = Dense(c, use_bias=config.use_bias, name="proj",
                                 kernel_initializer=_init(init_std / math.sqrt(2 * config.num_layers)))
        self.attn_dropout = layers.Dropout(config.dropout)

    def _groups(self, k, v, axis: int):
        """Keys and values repeated so each query head meets its group's (a no-op without groups)."""
        group = self.num_heads // self.kv_heads
        if group == 1:
            return k, v
        return ops.repeat(k, group, axis=axis), ops.repeat(v, group, axis=axis)

    def call(self, x, bias, rotary=None, past_key=None, past_value=None, training=None, fused=False):
        # x: (batch, seq, hidden); bias: (batch or 1, heads or 1, seq, past + seq), or with `fused`
        # (no cache) None or ALiBi's penalty alone, the causal mask being the kernel's
        # rotary: None, or (cos, sin), each (batch, 1, seq, head_dim / 2)
        shape = ops.shape(x)
        batch, seq = shape[0], shape[1]
        h, kv = self.num_heads, self.kv_heads
        qkv = ops.reshape(self.qkv(x), (batch, seq, h + 2 * kv, self.head_dim))
        if fused:  # the layout the kernels take, (batch, seq, heads, head_dim); no attention dropout
            q, k, v = qkv[:, :, :h], qkv[:, :, h:h + kv], qkv[:, :, h + kv:]
            if rotary is not None:
                cos, sin = (ops.transpose(t, (0, 2, 1, 3)) for t in rotary)  # (batch, seq, 1, head_dim / 2)
                q, k = positions.rotate(q, cos, sin), positions.rotate(k, cos, sin)
            k, v = self._groups(k, v, axis=2)
            y = ops.dot_product_attention(q, k, v, bias=bias, is_causal=True)  # (batch, seq, heads, head_dim)
            return self.proj(ops.reshape(y, (batch, seq, h * self.head_dim))), None, None
        qkv = ops.transpose(qkv, (0, 2, 1, 3))  # (batch, h + 2 kv, seq, head_dim)
        q, k, v = qkv[:, :h], qkv[:, h:h + kv], qkv[:, h + kv:]
        if rotary is not None:  # cached keys are stored rotated at their own positions
            q, k = positions.rotate(q, *rotary), positions.rotate(k, *rotary)
        if past_key is not None:
            k = ops.concatenate([past_key, k], axis=2)  # (batch, kv, past + seq, head_dim)
            v = ops.concatenate([past_value, v], axis=2)
        k_all, v_all = self._groups(k, v, axis=1)  # (batch, heads, past + seq, head_dim)
        scores = ops.matmul(q, ops.transpose(k_all, (0, 1, 3, 2))) / math.sqrt(self.head_dim)
        # softmax in float32 also under mixed precision (no-op casts in float32); Keras has cast
        # `bias`, like every float input of a layer call, to the compute dtype
        scores = ops.cast(scores, "float32") + ops.cast(bias, "float32")
        weights = ops.softmax(scores, axis=-1)  # (batch, heads, seq, past + seq)
        weights = ops.cast(weights, self.compute_dtype)
        y = ops.matmul(self.attn_dropout(weights, training=training), v_all)  # (batch, heads, seq, head_dim)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (batch, seq, h * self.head_dim))
        return self.proj(y), k, v


class RMSNorm(layers.Layer):
    """Llama's RMSNorm: x / sqrt(mean(x^2) + epsilon) * scale, computed in float32."""

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        x32 = ops.cast(x, "float32")
        x32 = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return ops.cast(x32 * ops.cast(self.scale, "float32"), self.compute_dtype)


def norm_layer(config: ModelConfig, name: str) -> layers.Layer:
    """The block's normalization: LayerNorm (a bias when use_bias) or RMSNorm, per config.norm."""
    if config.norm == "rms":
        return RMSNorm(config.norm_eps, name=name)
    return layers.LayerNormalization(epsilon=config.norm_eps, center=config.use_bias, name=name)


class Block(layers.Layer):
    def __init__(self, config: ModelConfig, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        c, inner = config.hidden_size, config.ffn_size
        self.ln_1 = norm_layer(config, "ln_1")
        self.attn = CausalSelfAttention(config, init_std, name="attn")
        self.ln_2 = norm_layer(config, "ln_2")
        self.fc = Dense(inner, use_bias=config.use_bias, kernel_initializer=_init(init_std), name="fc")
        # SwiGLU's gate (Llama's gate_proj); fc is then its up projection
        self.fc_gate = Dense(inner, use_bias=config.use_bias, kernel_initializer=_init(init_std),
                                    name="fc_gate") if config.mlp == "swiglu" else None
        self.fc_proj = Dense(c, use_bias=config.use_bias, name="fc_proj",
                                    kernel_initializer=_init(init_std / math.sqrt(2 * config.num_layers)))
        self.dropout = layers.Dropout(config.dropout)

    def call(self, x, bias, rotary=None, past_key=None, past_value=None, training=None, fused=False):
        a, k, v = self.attn(self.ln_1(x), bias, rotary, past_key, past_value, training=training, fused=fused)
        x = x + self.dropout(a, training=training)
        h = self.ln_2(x)
        if self.fc_gate is None:
            # tanh GELU: exact GELU lowers to the TF op Erfc, which tf2onnx cannot convert
            m = self.fc_proj(keras.activations.gelu(self.fc(h), approximate=True))
        else:
            m = self.fc_proj(keras.activations.silu(self.fc_gate(h)) * self.fc(h))
        return x + self.dropout(m, training=training), k, v


class GPT(keras.Model):
    """Decoder-only Transformer built from a `ModelConfig`.

    `call(input_ids)` is the training forward pass: (batch, seq) ids -> (batch, seq, vocab) logits.
    `decode(...)` is the exported forward pass with a KV cache. `attention` ("standard" or
    "fused") chooses how `call` computes attention; `decode` always uses the standard matmuls.
    `init_std` is the standard deviation of the initial weights (GPT-2's 0.02; residual
    projections are scaled down with depth, the position table starts at half of it).
    """

    def __init__(self, config: ModelConfig, attention: str = "standard", init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}. Received: "
                             f"attention={attention!r}")
        self.config, self.attention = config, attention
        self.wte = layers.Embedding(config.vocab_size, config.hidden_size,
                                    embeddings_initializer=_init(init_std), name="wte")
        self.wpe = positions.learned_table(config, init_std)  # None for rope and alibi
        self.drop = layers.Dropout(config.dropout)
        self.blocks = [Block(config, init_std, name=f"block_{i}") for i in range(config.num_layers)]
        self.ln_f = norm_layer(config, "ln_f")
        self.lm_head = None if config.tie_embeddings else Dense(
            config.vocab_size, use_bias=False, kernel_initializer=_init(init_std), name="lm_head")

    def call(self, input_ids, training=None):
        seq = ops.shape(input_ids)[1]
        if isinstance(seq, int) and seq > self.config.context_length:
            # an out-of-range position silently reads a clamped row under JAX, so say it here
            raise ValueError(f"The input has {seq} tokens but the position table holds "
                             f"context_length={self.config.context_length}. Received: input of shape "
                             f"{tuple(ops.shape(input_ids))}. Pass at most {self.config.context_length} tokens.")
        position_ids = ops.expand_dims(ops.arange(seq, dtype="int32"), 0)  # (1, seq)
        logits, _ = self._forward(input_ids, position_ids, None, None, training)
        return logits

    def decode(self, input_ids, attention_mask, position_ids, past):
        """One prefill or decode step with a KV cache.

        Args:
            input_ids: (batch, seq) int.
            attention_mask: (batch, past + seq) int, 1 for real tokens, 0 for padding.
            position_ids: (batch, seq) int.
            past: list of (key, value) per layer, each (batch, heads, past, head_dim).
        Returns:
            logits (batch, seq, vocab) and the list of present (key, value), each
            (batch, heads, past + seq, head_dim).
        """
        return self._forward(input_ids, position_ids, attention_mask, past, training=False)

    def _forward(self, input_ids, position_ids, attention_mask, past, training):
        seq = ops.shape(input_ids)[1]
        # the mask spans past + seq; the past arrays may be longer (a preallocated in-place cache)
        past_len = 0 if attention_mask is None else ops.shape(attention_mask)[1] - seq
        total = past_len + seq
        # query i sits at absolute position past_len + i and sees keys 0..past_len + i
        query_pos = ops.arange(seq, dtype="int32") + ops.cast(past_len, "int32")
        key_pos = ops.arange(total, dtype="int32")
        allowed = ops.expand_dims(key_pos, 0) <= ops.expand_dims(query_pos, 1)  # (seq, total)
        allowed = allowed[None, None, :, :]  # (1, 1, seq, total)
        if attention_mask is not None:
            allowed = ops.logical_and(allowed, ops.cast(attention_mask, "bool")[:, None, None, :])
        # the fused kernel masks causally itself (is_causal): its bias is ALiBi's penalty or nothing
        fused = self.attention == "fused" and past is None and attention_mask is None
        bias = None if fused else ops.where(allowed, 0.0, NEG_INF)  # (1 or batch, 1, seq, total)
        if self.config.position_embedding == "alibi":
            penalty = positions.alibi_penalty(query_pos, key_pos, self.config.num_heads)  # (1, heads, seq, total)
            bias = -penalty if fused else bias - penalty  # (1 or batch, heads, seq, total)

        x = self.wte(input_ids)  # (batch, seq, hidden)
        rotary = None
        if self.config.position_embedding == "rope":
            rotary = positions.rotary_tables(position_ids, self.config.head_dim, self.config.rope_theta)
        elif self.wpe is not None:
            x = x + self.wpe(position_ids)
        x = self.drop(x, training=training)
        presents = []
        for i, block in enumerate(self.blocks):
            pk, pv = (None, None) if past is None else past[i]
            x, k, v = block(x, bias, rotary, pk, pv, training=training, fused=fused)
            presents.append((k, v))
        x = self.ln_f(x)
        if self.lm_head is None:
            logits = ops.matmul(x, ops.transpose(ops.cast(self.wte.embeddings, x.dtype)))
        else:
            logits = self.lm_head(x)
        return ops.cast(logits, "float32"), presents

    def build_weights(self) -> "GPT":
        """Create all weights by running one tiny forward pass."""
        self(np.zeros((1, 2), "int32"))
        return self

    def get_config(self):
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config):
        return cls(ModelConfig.from_dict(config))


def build_model(config, precision: str, attention: str = "standard", init_std: float = 0.02):
    """A built GPT whose layers compute under `precision` (float32, or bfloat16/float16 mixed)."""
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:  # layers keep the policy they were built with; later models (export) stay float32
        return GPT(config, attention, init_std).build_weights()
    finally:
        keras.config.set_dtype_policy(before)
