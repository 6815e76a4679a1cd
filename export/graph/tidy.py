"""Two fixes to the graph tf2onnx writes, for the model folder's contract and its size.

- `name_dimensions`: tf2onnx names the dynamic dimensions `unk__N`; the folder's graph carries
  Optimum's names (`batch_size`, `sequence_length`, `past_sequence_length`,
  `total_sequence_length`), which other loaders read (transformers.js sizes its empty cache by
  `batch_size`, and by no other name).
- `share_transposed_weights`: TensorFlow folds the transpose of a tied output embedding into a
  second constant, doubling the embedding's bytes in model.onnx; it is stored once.
"""

from __future__ import annotations

import numpy as np

BATCH, SEQUENCE, PAST, TOTAL = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"


def name_dimensions(proto, cfg) -> int:
    """Replace the inputs' and outputs' dimensions by Optimum's names or the config's sizes.
    Returns how many graph inputs and outputs were named."""
    dims = {
        "input_ids": [BATCH, SEQUENCE],
        "position_ids": [BATCH, SEQUENCE],
        "attention_mask": [BATCH, TOTAL],
        "logits": [BATCH, SEQUENCE, cfg.vocab_size],
    }
    for i in range(cfg.num_layers):
        for kind in ("key", "value"):
            dims[f"past_key_values.{i}.{kind}"] = [BATCH, cfg.kv_heads, PAST, cfg.head_dim]
            dims[f"present.{i}.{kind}"] = [BATCH, cfg.kv_heads, TOTAL, cfg.head_dim]
    values = list(proto.graph.input) + list(proto.graph.output)
    for value in values:
        shape = value.type.tensor_type.shape
        for dim, want in zip(shape.dim, dims[value.name]):
            dim.Clear()
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
    return len(values)


def share_transposed_weights(proto, cfg=None) -> int:
    """Store a tied output embedding once. Returns how many constants were replaced.

    The folded copy becomes a Transpose node of the original; onnxruntime folds it back at load,
    so only the file gets smaller. `cfg` is unused (every pass takes proto and config).
    """
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    matrices = {name: numpy_helper.to_array(i) for name, i in inits.items() if len(i.dims) == 2}
    removed: set[str] = set()
    for name, array in matrices.items():
        for other, candidate in matrices.items():
            if other == name or other in removed or candidate.shape != array.shape[::-1]:
                continue
            if np.array_equal(candidate.T, array):
                removed.add(name)
                proto.graph.initializer.remove(inits[name])
                proto.graph.node.insert(0, onnx.helper.make_node("Transpose", [other], [name], perm=[1, 0],
                                                                 name=f"{name}/shared_transpose"))
                break
    return len(removed)
