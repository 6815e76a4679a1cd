"""Every rewrite of the ONNX graph that tf2onnx makes, in the order `edgellm export` runs them.

1. `name_dimensions` (tidy.py): the dynamic dimensions get Optimum's names (`batch`, `sequence`,
   `past_sequence`, `total_sequence`) instead of tf2onnx's `unk__N`.
2. `share_transposed_weights` (tidy.py): a tied output embedding is stored once.
3. `fuse_layer_norms` (fusions.py): tf2onnx's twelve-node LayerNormalization becomes one node.
4. `direct_matmuls` (fusions.py): each Dense MatMul takes its 3-D input, without the Reshapes.
5. `in_place_attention` (attention.py, `kv_cache="in_place"` only): each layer's
   Concat -> MatMul -> Softmax -> MatMul attention becomes one GroupQueryAttention node, which
   can update a preallocated cache in place. It runs last: it takes the qkv projection packed
   only once that projection is a 3-D MatMul (pass 4).

Each pass is a function `(proto, cfg) -> int` that changes the ModelProto in place and returns
how much it changed (nodes fused, layers rewritten, ...). Passes 2-4 change speed or size only
and leave a pattern that does not match exactly as it was; the export's parity gate checks the
result against Keras either way.

Example:
    >>> from edgellm.export import graph
    >>> [p.__name__ for p in graph.passes("concat")]
    ['name_dimensions', 'share_transposed_weights', 'fuse_layer_norms', 'direct_matmuls']
"""

from __future__ import annotations

from edgellm.export.graph.attention import in_place_attention
from edgellm.export.graph.fusions import direct_matmuls, fuse_layer_norms
from edgellm.export.graph.tidy import name_dimensions, share_transposed_weights
from edgellm.folder.model_folder import KV_CACHES

COMMON = (name_dimensions, share_transposed_weights, fuse_layer_norms, direct_matmuls)


def passes(kv_cache: str = "in_place") -> tuple:
    """The passes export runs for a KV-cache layout ("in_place" or "concat"), in order."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}. Received: kv_cache={kv_cache!r}")
    return COMMON + ((in_place_attention,) if kv_cache == "in_place" else ())


def run(proto, cfg, kv_cache: str = "in_place") -> dict[str, int]:
    """Apply `passes(kv_cache)` to `proto` (changed in place) for the model config `cfg`.

    Args:
        proto: the onnx.ModelProto tf2onnx made of `GPT.decode`.
        cfg: the model's `ModelConfig` (layers, heads, sizes).
        kv_cache: "in_place" (ends with GroupQueryAttention) or "concat" (standard ONNX only).

    Returns:
        What each pass changed, by pass name.

    Example:
        >>> counts = run(proto, model.config, "concat")
        >>> counts["fuse_layer_norms"] == 2 * model.config.num_layers + 1
        True
    """
    return {apply.__name__: apply(proto, cfg) for apply in passes(kv_cache)}
