"""Rewrite each layer's attention into onnxruntime's GroupQueryAttention, which can cache in place.

tf2onnx turns `CausalSelfAttention` into Concat(past, new) -> MatMul -> scale -> Add(bias) ->
Softmax -> MatMul, so every decode step copies the whole cache into a new present array. This
pass finds that chain from each `present.{i}.key`/`.value` output and replaces it with one
com.microsoft GroupQueryAttention node, fed the same query, new keys/values, past, scale and bias
(causal mask, padding mask and ALiBi's penalty, all already computed by the graph):

- run plainly, the node behaves like the Concat graph: present = past + new, one step longer;
- with past and present bound to one preallocated (batch, kv heads, capacity, head_dim) buffer
  (the runtime's IO binding, or onnxruntime-genai's past_present_share_buffer), it writes the
  new slot in place and reads only the filled part.

When the query, keys and values are plain slices of the qkv projection (no rotary positions in
between), the node takes that projection packed, and when the graph merges the heads right
after the attention, the node's (batch, seq, heads * head_dim) output replaces that merge; else
Transpose/Reshape pairs convert the layouts. Inputs, outputs and their names stay the same.
The node's total length is the attention mask's width, and each row's filled length is the
index of the last 1 in its mask (left padding is masked by the bias, as before): so a runtime
may pass a mask as wide as the whole cache, zeros beyond the filled part, and keep its shape
the same from step to step (config.json's onnx.capacity_mask), while a mask exactly as wide as
past + new tokens (onnxruntime-genai's) works as it always did. One limit of the op: a step with
more than one new token after a past needs batch 1.
"""

from __future__ import annotations

import numpy as np

from edgellm.export.graph.index import Graph, remove_unused, sort

DOMAIN = "com.microsoft"


class RewriteError(ValueError):
    """The graph's attention is not the chain this pass knows."""


def in_place_attention(proto, cfg) -> int:
    """The pass: rewrite every layer of `proto` for the model config `cfg`. Returns the layer count.
    Raises ValueError naming `--kv-cache concat` when the attention is not the known chain."""
    try:
        rewrite(proto, cfg.num_layers, cfg.num_heads, cfg.kv_heads, cfg.head_dim)
    except RewriteError as error:
        raise ValueError(f"Cannot rewrite the attention for the in-place cache ({error}). "
                         "Export with --kv-cache concat.") from None
    return cfg.num_layers


def rewrite(proto, num_layers: int, num_heads: int, kv_heads: int, head_dim: int) -> None:
    """Replace the Concat cache of every layer of `proto` (changed in place) by GroupQueryAttention."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    index = Graph(graph)
    producer, consumers, constants = index.producer, index.consumers, index.constants

    def only(name: str, op_types: tuple[str, ...], layer: int):
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type not in op_types:
            raise RewriteError(f"layer {layer}: expected {name} to feed one {' or '.join(op_types)}, "
                               f"found {[n.op_type for n in found]}")
        return found[0]

    def other_input(node, name: str) -> str:
        return next(i for i in node.input if i != name)

    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    new_nodes = _sequence_lengths(opset)
    for i in range(num_layers):
        concat_k, concat_v = producer[f"present.{i}.key"], producer[f"present.{i}.value"]
        if concat_k.op_type != "Concat" or concat_v.op_type != "Concat":
            raise RewriteError(f"layer {i}: present.{i}.key/value do not come from Concat")
        past_k, new_k = concat_k.input
        past_v, new_v = concat_v.input
        keys, values = _after_repeat(index, f"present.{i}.key"), _after_repeat(index, f"present.{i}.value")
        transpose = only(keys, ("Transpose",), i)  # keys transposed for q @ k^T
        scores = only(transpose.output[0], ("MatMul",), i)
        query = scores.input[0]
        if scores.input[1] != transpose.output[0]:
            raise RewriteError(f"layer {i}: the scores are not q @ k^T")
        node = only(scores.output[0], ("Mul", "Div"), i)
        factor = constants.get(other_input(node, scores.output[0]))
        if factor is None or factor.size != 1:
            raise RewriteError(f"layer {i}: the scores are scaled by a tensor, not a constant")
        scale = float(factor.reshape(())) if node.op_type == "Mul" else 1.0 / float(factor.reshape(()))
        add = only(node.output[0], ("Add",), i)
        bias = other_input(add, node.output[0])
        softmax = only(add.output[0], ("Softmax",), i)
        weighted = only(softmax.output[0], ("MatMul",), i)
        if list(weighted.input) != [softmax.output[0], values]:
            raise RewriteError(f"layer {i}: the attention weights do not multiply present.{i}.value")

        prefix = f"gqa_{i}"
        packed = _packed_qkv(index, query, new_k, new_v, num_heads, kv_heads)
        if packed is not None:  # the qkv projection itself: (b, s, 3 * h * d), split by the op
            qkv = [packed, "", ""]
        else:
            qkv = [f"{prefix}/{name}" for name in "qkv"]
            merges = ("gqa/merge_heads", "gqa/merge_kv_heads", "gqa/merge_kv_heads")
            for name, source, merge_shape in zip(qkv, (query, new_k, new_v), merges):  # (b, h, s, d) -> (b, s, h * d)
                new_nodes += [helper.make_node("Transpose", [source], [f"{name}_bshd"], perm=[0, 2, 1, 3]),
                              helper.make_node("Reshape", [f"{name}_bshd", merge_shape], [name])]
        merge = _merged_heads(index, weighted.output[0])
        output = merge[-1].output[0] if merge else f"{prefix}/y"
        new_nodes.append(helper.make_node(
            "GroupQueryAttention", [*qkv, past_k, past_v, "gqa/seqlens_k", "gqa/total", "", "", "", bias],
            [output, f"present.{i}.key", f"present.{i}.value"],
            name=f"{prefix}/GroupQueryAttention", domain=DOMAIN,
            num_heads=num_heads, kv_num_heads=kv_heads, scale=scale))
        if merge:  # the graph merged the heads into (b, s, h * d) next, which is the op's output
            for old in merge:
                graph.node.remove(old)
        else:  # back to the (b, h, s, d) layout the graph continues from
            new_nodes += [
                helper.make_node("Reshape", [output, "gqa/split_heads"], [f"{prefix}/y_bshd"]),
                helper.make_node("Transpose", [f"{prefix}/y_bshd"], [weighted.output[0]], perm=[0, 2, 1, 3])]
        for old in (concat_k, concat_v, transpose, scores, node, add, softmax, weighted):
            graph.node.remove(old)

    graph.initializer.extend([
        numpy_helper.from_array(np.array([0, 0, num_heads * head_dim], np.int64), "gqa/merge_heads"),
        numpy_helper.from_array(np.array([0, 0, kv_heads * head_dim], np.int64), "gqa/merge_kv_heads"),
        numpy_helper.from_array(np.array([0, 0, num_heads, head_dim], np.int64), "gqa/split_heads"),
        numpy_helper.from_array(np.array(0, np.int64), "gqa/zero64"),
        numpy_helper.from_array(np.array(1, np.int64), "gqa/one64"),
        *([numpy_helper.from_array(np.array([1], np.int64), "gqa/axis1")] if opset >= 18 else []),
    ])
    graph.node.extend(new_nodes)
    try:
        sort(graph)
    except ValueError as error:
        raise RewriteError(str(error)) from None
    remove_unused(graph)
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))


def _packed_qkv(index: Graph, query: str, key: str, value: str, num_heads: int, kv_heads: int) -> str | None:
    """The (b, s, (heads + 2 kv_heads) * d) projection that query, key and value are sliced from,
    when each is Slice(Transpose(Reshape(qkv, (b, s, heads + 2 kv_heads, d)), (0, 2, 1, 3))) over
    its heads and the projection is a 3-D MatMul; else None (rotary positions, for one, come in
    between)."""
    bounds = ((0, num_heads), (num_heads, num_heads + kv_heads), (num_heads + kv_heads, num_heads + 2 * kv_heads))
    sources = []
    for name, (start, end) in zip((query, key, value), bounds):
        sliced = index.op(name, "Slice")
        if not sliced or len(sliced.input) != 4:  # no steps input: step 1
            return None
        starts, ends, axes = (index.constants.get(n) for n in sliced.input[1:4])
        if any(c is None for c in (starts, ends, axes)):
            return None
        ranges = {int(a): (int(b), int(e)) for a, b, e in zip(axes.reshape(-1), starts.reshape(-1), ends.reshape(-1))}
        head_start, head_end = ranges.pop(1, (None, None))
        whole = all(b == 0 and e >= 2**31 - 1 for b, e in ranges.values())  # other axes: all of it
        if not whole or head_start != start or not (head_end == end or (end == bounds[2][1] and head_end > end)):
            return None
        sources.append(sliced.input[0])
    transpose = index.op(sources[0], "Transpose")
    if len(set(sources)) != 1 or transpose is None or list(transpose.attribute[0].ints) != [0, 2, 1, 3]:
        return None
    split = index.op(transpose.input[0], "Reshape")
    projection = split and index.op(split.input[0], "MatMul")
    if projection is None or index.op(projection.input[0], "Reshape") is not None:  # a 2-D MatMul
        return None
    return split.input[0]


def _after_repeat(index: Graph, name: str) -> str:
    """With grouped-query attention each cached key/value head is repeated for its group of query
    heads (Unsqueeze, Tile, Reshape, as tf2onnx lowers the repeat): the repeated tensor, or `name`."""
    unsqueeze = index.consumer_of(name, "Unsqueeze")
    tile = unsqueeze and index.sole_consumer(unsqueeze.output[0], "Tile")
    reshape = tile and index.sole_consumer(tile.output[0], "Reshape")
    return reshape.output[0] if reshape else name


def _merged_heads(index: Graph, attention: str) -> list | None:
    """The Transpose (0, 2, 1, 3) and Reshape that merge the heads of `attention` into
    (b, s, h * d) right after it, as CausalSelfAttention does; else None."""
    transpose = index.sole_consumer(attention, "Transpose")
    if transpose is None or list(transpose.attribute[0].ints) != [0, 2, 1, 3]:
        return None
    reshape = index.sole_consumer(transpose.output[0], "Reshape")
    return [transpose, reshape] if reshape is not None else None


def _sequence_lengths(opset: int) -> list:
    """total = the attention mask's width (int32 scalar); seqlens_k = each row's index of its last
    1 (int32, (batch,)), the filled length less one also when the mask is wider than that.
    From opset 18 on, ReduceMax takes its axes as an input instead of an attribute."""
    from onnx import helper

    axes = {"inputs": ["gqa/filled_slots", "gqa/axis1"]} if opset >= 18 else \
        {"inputs": ["gqa/filled_slots"], "axes": [1]}

    return [
        helper.make_node("Shape", ["attention_mask"], ["gqa/total_1d64"], start=1, end=2),
        helper.make_node("Cast", ["gqa/total_1d64"], ["gqa/total_1d"], to=6),  # int32
        helper.make_node("Squeeze", ["gqa/total_1d"], ["gqa/total"]),
        helper.make_node("Squeeze", ["gqa/total_1d64"], ["gqa/total64"]),
        helper.make_node("Range", ["gqa/zero64", "gqa/total64", "gqa/one64"], ["gqa/slots"]),
        helper.make_node("Mul", ["attention_mask", "gqa/slots"], ["gqa/filled_slots"]),
        helper.make_node("ReduceMax", outputs=["gqa/last64"], keepdims=0, **axes),
        helper.make_node("Cast", ["gqa/last64"], ["gqa/seqlens_k"], to=6),
    ]
