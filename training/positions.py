"""Position schemes: how a token's place in the sequence enters the Transformer.

- learned (GPT-2): a table of `context_length` vectors, one added to each token embedding; the
  model cannot go past the table.
- rope (rotary, GPT-NeoX's half split): queries and keys are rotated by angles that grow with the
  position, so their dot product depends on the distance between them only; no weights.
- alibi (Press et al., 2022): no position vectors; each head adds a penalty proportional to the
  query-key distance to its attention scores, a built-in preference for recent tokens.

All three follow `position_ids` (learned, rope) or cache slots (alibi), so one forward pass
serves training, prefill and decode with a KV cache, and left-padded batches.

Example:
    >>> cos, sin = rotary_tables(np.arange(4)[None, :], head_dim=8)
    >>> tuple(cos.shape), alibi_slopes(4).tolist()
    ((1, 1, 4, 4), [0.25, 0.0625, 0.015625, 0.00390625])
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from edgellm.folder.config import ModelConfig


def learned_table(config: ModelConfig, init_std: float) -> keras.layers.Embedding | None:
    """GPT-2's position table (initialised at half the weights' deviation), or None for rope and alibi."""
    if config.position_embedding != "learned":
        return None
    return keras.layers.Embedding(config.context_length, config.hidden_size, name="wpe",
                                  embeddings_initializer=keras.initializers.RandomNormal(stddev=init_std / 2))


def rotary_tables(position_ids, head_dim: int, theta: float = 10000.0):
    """cos and sin of each position times each rotary frequency: (batch, 1, seq, head_dim / 2).
    Frequencies theta^(-2i / head_dim), computed in float64 like transformers' Llama, then float32."""
    inv_freq = (1.0 / (theta ** (np.arange(0, head_dim, 2, dtype="float64") / head_dim))).astype("float32")
    angles = ops.cast(position_ids, "float32")[:, None, :, None] * inv_freq  # (batch, 1, seq, half)
    return ops.cos(angles), ops.sin(angles)


def rotate(x, cos, sin):
    """Rotary position embedding of x (..., head_dim) with tables broadcastable to (..., head_dim / 2)."""
    half = ops.shape(x)[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = ops.cast(cos, x.dtype), ops.cast(sin, x.dtype)
    return ops.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes: 2^(-8i/n) for i = 1..n when n is a power of two; otherwise those of
    the power of two below, then every other slope of the one above."""
    def geometric(n):
        return 2.0 ** (-8.0 / n * np.arange(1, n + 1))

    below = 2 ** int(math.log2(num_heads))
    slopes = np.concatenate([geometric(below), geometric(2 * below)[0::2][: num_heads - below]])
    return slopes.astype("float32")


def alibi_penalty(query_pos, key_pos, num_heads: int):
    """The amount each head subtracts from its scores: slope x distance, (1, heads, seq, total).

    Distances are in cache slots: left padding sits before a row's first token, so between two
    real tokens the distance equals the distance in positions.
    """
    distance = ops.cast(ops.expand_dims(query_pos, 1) - ops.expand_dims(key_pos, 0), "float32")  # (seq, total)
    return alibi_slopes(num_heads)[None, :, None, None] * distance[None, None, :, :]
