"""Rewrite each layer's attention into onnxruntime's GroupQueryAttention, which can cache in place.

tf2onnx turns `CausalSelfAttention` into Concat(past, new) -> MatMul -> scale -> Add(bias) ->
Softmax -> MatMul, so every decode step copies the whole cache into a new present array. This
pass finds that chain from each `present.{i}.key`/`.value` output and replaces it with one
com.microsoft GroupQueryAttention node, fed the same query, new keys/values, past, scale and bias
(causal mask, padding mask and ALiBi's penalty, all already computed by the graph):

- run plainly, the node behaves like the Concat graph: present = past + new, one step longer;
- with past and present bound to one preallocated (batch, heads, capacity, head_dim) buffer
  (the runtime's IO binding, or onnxruntime-genai's past_present_share_buffer), it writes the
  new slot in place and reads only the filled part.

Inputs, outputs and their names stay the same; the node's sequence lengths come from the
attention mask's width (left padding is masked by the bias, as before). One limit of the op:
a step with more than one new token after a past needs batch 1.
"""

from __future__ import annotations

import numpy as np

DOMAIN = "com.microsoft"


class RewriteError(ValueError):
    """The graph's attention is not the chain this pass knows."""


def rewrite(proto, num_layers: int, num_heads: int, head_dim: int) -> None:
    """Replace the Concat cache of every layer of `proto` (changed in place) by GroupQueryAttention."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def only(name: str, op_types: tuple[str, ...], layer: int):
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type not in op_types:
            raise RewriteError(f"layer {layer}: expected {name} to feed one {' or '.join(op_types)}, "
                               f"found {[n.op_type for n in found]}")
        return found[0]

    def other_input(node, name: str) -> str:
        return next(i for i in node.input if i != name)

    new_nodes = _sequence_lengths()
    for i in range(num_layers):
        concat_k, concat_v = producer[f"present.{i}.key"], producer[f"present.{i}.value"]
        if concat_k.op_type != "Concat" or concat_v.op_type != "Concat":
            raise RewriteError(f"layer {i}: present.{i}.key/value do not come from Concat")
        past_k, new_k = concat_k.input
        past_v, new_v = concat_v.input
        transpose = only(f"present.{i}.key", ("Transpose",), i)  # keys transposed for q @ k^T
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
        if list(weighted.input) != [softmax.output[0], f"present.{i}.value"]:
            raise RewriteError(f"layer {i}: the attention weights do not multiply present.{i}.value")

        prefix = f"gqa_{i}"
        for name, source in (("q", query), ("k", new_k), ("v", new_v)):  # (b, h, s, d) -> (b, s, h * d)
            new_nodes += [helper.make_node("Transpose", [source], [f"{prefix}/{name}_bshd"], perm=[0, 2, 1, 3]),
                          helper.make_node("Reshape", [f"{prefix}/{name}_bshd", "gqa/merge_heads"],
                                           [f"{prefix}/{name}"])]
        new_nodes.append(helper.make_node(
            "GroupQueryAttention",
            [f"{prefix}/q", f"{prefix}/k", f"{prefix}/v", past_k, past_v, "gqa/seqlens_k", "gqa/total",
             "", "", "", bias],
            [f"{prefix}/y", f"present.{i}.key", f"present.{i}.value"],
            name=f"{prefix}/GroupQueryAttention", domain=DOMAIN,
            num_heads=num_heads, kv_num_heads=num_heads, scale=scale))
        new_nodes += [  # back to the (b, h, s, d) layout the graph continues from
            helper.make_node("Reshape", [f"{prefix}/y", "gqa/split_heads"], [f"{prefix}/y_bshd"]),
            helper.make_node("Transpose", [f"{prefix}/y_bshd"], [weighted.output[0]], perm=[0, 2, 1, 3])]
        for old in (concat_k, concat_v, transpose, scores, node, add, softmax, weighted):
            graph.node.remove(old)

    graph.initializer.extend([
        numpy_helper.from_array(np.array([0, 0, num_heads * head_dim], np.int64), "gqa/merge_heads"),
        numpy_helper.from_array(np.array([0, 0, num_heads, head_dim], np.int64), "gqa/split_heads"),
        numpy_helper.from_array(np.array([1], np.int32), "gqa/one"),
    ])
    graph.node.extend(new_nodes)
    _sort(graph)
    _remove_unused(graph)
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))


def _sequence_lengths() -> list:
    """total = the attention mask's width (int32 scalar); seqlens_k = total - 1 for every row."""
    from onnx import helper

    return [
        helper.make_node("Shape", ["attention_mask"], ["gqa/total_1d64"], start=1, end=2),
        helper.make_node("Cast", ["gqa/total_1d64"], ["gqa/total_1d"], to=6),  # int32
        helper.make_node("Squeeze", ["gqa/total_1d"], ["gqa/total"]),
        helper.make_node("Shape", ["attention_mask"], ["gqa/batch"], start=0, end=1),
        helper.make_node("Sub", ["gqa/total_1d", "gqa/one"], ["gqa/last_1d"]),
        helper.make_node("Expand", ["gqa/last_1d", "gqa/batch"], ["gqa/seqlens_k"]),
    ]


def _remove_unused(graph) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    unused = [i for i in graph.initializer if i.name not in needed]
    for init in unused:
        graph.initializer.remove(init)


def _sort(graph) -> None:
    """Topological order (ONNX requires each node after the producers of its inputs)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise RewriteError("the rewritten graph has a cycle or a missing input")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)
