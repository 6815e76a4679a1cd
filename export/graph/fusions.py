"""Small rewrites of the ONNX graph tf2onnx makes, so onnxruntime runs fewer nodes per token.

- `fuse_layer_norms`: tf2onnx spells Keras's LayerNormalization as twelve nodes, thirteen with
  a bias (two GlobalAveragePools for mean and variance, then Sub, Mul, Add, Sqrt, Reciprocal, Neg
  and four or five more Mul/Add); each becomes one ONNX LayerNormalization (opset 17).
- `direct_matmuls`: a Dense layer on (batch, sequence, features) becomes Reshape to 2-D, MatMul,
  then Reshape back with its target shape computed from Shape, Cast, Gather and Concat nodes on
  every run. ONNX MatMul takes the 3-D input as it is, so the first Reshape goes, and so does the
  second when its target is the (batch, sequence, out) shape the MatMul already has.

A pattern that does not match exactly is left as it was: these passes change speed only. The
export's parity gate checks the result against Keras either way.
"""

from __future__ import annotations

import numpy as np

from edgellm.export.graph.index import Graph, remove_unused, sort


def fuse_layer_norms(proto, cfg=None) -> int:
    """Replace each matched LayerNormalization pattern by one node. Returns how many.
    `cfg` is unused (every pass takes proto and config)."""
    from onnx import helper, numpy_helper

    g = Graph(proto.graph)
    fused = 0
    for mean in [n for n in proto.graph.node if n.op_type == "GlobalAveragePool"]:
        x, m = mean.input[0], mean.output[0]
        diff = g.consumer_of(m, "Sub")
        square = diff and g.sole_consumer(diff.output[0], "Mul")
        variance = square and list(square.input) == [diff.output[0]] * 2 and \
            g.sole_consumer(square.output[0], "GlobalAveragePool")
        add_eps = variance and g.sole_consumer(variance.output[0], "Add")
        sqrt = add_eps and g.sole_consumer(add_eps.output[0], "Sqrt")
        inverse = sqrt and g.sole_consumer(sqrt.output[0], "Reciprocal")
        scaled = inverse and g.sole_consumer(inverse.output[0], "Mul")
        neg = g.consumer_of(m, "Neg")
        if not (scaled and neg and list(diff.input) == [x, m]):
            continue
        eps = g.constants.get(next(i for i in add_eps.input if i != variance.output[0]))
        gamma_name = next(i for i in scaled.input if i != inverse.output[0])
        gamma = g.constants.get(gamma_name)
        if eps is None or eps.size != 1 or gamma is None or gamma.size != gamma.shape[-1]:
            continue
        s = scaled.output[0]
        x_scaled = g.consumer_of(s, "Mul", x)
        mean_scaled = g.consumer_of(s, "Mul", neg.output[0])
        shift = mean_scaled and g.sole_consumer(mean_scaled.output[0], "Add")  # - mean * scale (+ beta)
        if not (x_scaled and shift) or len(g.consumers.get(s, [])) != 2:
            continue
        beta, beta_add = np.zeros(gamma.size, np.float32), None
        if x_scaled.output[0] in shift.input:  # no beta: out = x * scale - mean * scale
            out = shift
        else:  # with beta (center=True): out = x * scale + (beta - mean * scale)
            beta_add, beta = shift, g.constants.get(next(i for i in shift.input if i != mean_scaled.output[0]))
            out = g.consumer_of(shift.output[0], "Add", x_scaled.output[0])
            if out is None or beta is None or beta.size != gamma.size:
                continue
        prefix = mean.name.rsplit("/moments", 1)[0]
        proto.graph.initializer.extend([
            numpy_helper.from_array(gamma.reshape(-1).astype(np.float32), f"{prefix}/ln_scale"),
            numpy_helper.from_array(beta.reshape(-1).astype(np.float32), f"{prefix}/ln_bias")])
        proto.graph.node.append(helper.make_node(
            "LayerNormalization", [x, f"{prefix}/ln_scale", f"{prefix}/ln_bias"], [out.output[0]],
            name=f"{prefix}/LayerNormalization", axis=-1, epsilon=float(eps.reshape(()))))
        for node in (mean, diff, square, variance, add_eps, sqrt, inverse, scaled, neg, x_scaled, mean_scaled, out,
                     *([beta_add] if beta_add is not None else [])):
            proto.graph.node.remove(node)
        fused += 1
    if fused:
        sort(proto.graph)
        remove_unused(proto.graph)
    return fused


def direct_matmuls(proto, cfg=None) -> int:
    """Let each Dense MatMul take its 3-D input directly. Returns how many were rewritten.
    `cfg` is unused (every pass takes proto and config)."""
    g = Graph(proto.graph)
    rewritten = 0
    for matmul in [n for n in proto.graph.node if n.op_type == "MatMul"]:
        weight = _weight_shape(g, matmul.input[1])
        flatten = g.op(matmul.input[0], "Reshape")
        target = flatten and g.constants.get(flatten.input[1])
        if weight is None or len(weight) != 2 or target is None or list(target) != [-1, weight[0]] \
                or len(g.consumers.get(flatten.output[0], [])) != 1:
            continue
        x = flatten.input[0]
        matmul.input[0] = x  # (batch, sequence, in) @ (in, out) -> (batch, sequence, out)
        proto.graph.node.remove(flatten)
        rewritten += 1
        unflatten = g.sole_consumer(matmul.output[0], "Reshape")
        if unflatten is not None and _is_batch_sequence_shape(g, unflatten.input[1], x, weight[1]):
            for node in g.consumers.get(unflatten.output[0], []):  # the Reshape is now the identity
                node.input[:] = [matmul.output[0] if i == unflatten.output[0] else i for i in node.input]
            for graph_output in proto.graph.output:
                if graph_output.name == unflatten.output[0]:
                    matmul.output[0] = graph_output.name
            proto.graph.node.remove(unflatten)
    if rewritten:
        sort(proto.graph)
        remove_unused(proto.graph)
    return rewritten


def _is_batch_sequence_shape(g: Graph, name: str, x: str, out_features: int) -> bool:
    """Whether `name` is tf2onnx's Tensordot target: Concat(Shape(x)[[0, 1]], [out]), with Casts."""
    concat = g.op(_skip_cast(g, name), "Concat")
    if concat is None or len(concat.input) != 2:
        return False
    last = g.constants.get(concat.input[1])
    gather = g.op(concat.input[0], "Gather")
    if last is None or list(last.reshape(-1)) != [out_features] or gather is None:
        return False
    axes = g.constants.get(gather.input[1])
    shape = g.op(_skip_cast(g, gather.input[0]), "Shape")
    return axes is not None and list(axes.reshape(-1)) == [0, 1] and shape is not None and shape.input[0] == x


def _weight_shape(g: Graph, name: str) -> tuple[int, ...] | None:
    """The shape of a constant weight, also one stored once and transposed (a tied embedding)."""
    if name in g.constants:
        return g.constants[name].shape
    transpose = g.op(name, "Transpose")
    if transpose is not None and transpose.input[0] in g.constants:
        return g.constants[transpose.input[0]].shape[::-1]
    return None


def _skip_cast(g: Graph, name: str) -> str:
    cast = g.op(name, "Cast")
    return cast.input[0] if cast is not None else name
