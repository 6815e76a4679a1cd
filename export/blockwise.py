"""Block-wise 8-bit and 4-bit weights: onnxruntime's MatMulNBits, and embedding tables that every loader runs.

Every MatMul with a constant weight becomes `com.microsoft.MatMulNBits` (onnxruntime's
`MatMulNBitsQuantizer`): the weight in blocks of 32 along its input dimension, each block with its
own float scale, symmetric (zero point 2^(bits-1)). With `accuracy_level=4` onnxruntime quantizes
the activations to int8 too, but each row (token) by itself, so a row's logits never depend on
the other rows of the call, unlike dynamic quantization's one scale per call.

Each constant embedding table read by a Gather is stored the same way, [rows, blocks, bytes]
uint8 with [rows, blocks] scales, and looked up with standard ONNX operators (Gather, BitShift,
Cast, Sub, Mul, Reshape), so any ONNX runtime reads it. A tied embedding (the output layer's
weight, whose transpose the input Gather reads) is stored once: the lookup reads the output
MatMulNBits's own weight and scales, whose rows are the table's rows.
"""

from __future__ import annotations

import logging

import numpy as np

BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # int8 activations, each row quantized by itself
BITS = {"int8": 8, "int4": 4}


def scheme(weights: str) -> dict:
    """How a block-wise variant was made, as config.json records it."""
    return {"operator": "com.microsoft.MatMulNBits", "bits": BITS[weights], "block_size": BLOCK_SIZE,
            "symmetric": True, "accuracy_level": ACCURACY_LEVEL}


def quantize(float32_path, out_path, weights: str) -> None:
    """Write the `weights` ("int8" or "int4") model of the float32 ONNX file `float32_path`."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                  MatMulNBitsQuantizer)

    bits = BITS[weights]
    config = DefaultWeightOnlyQuantConfig(block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=ACCURACY_LEVEL,
                                          bits=bits)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # quiet its per-node progress
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(float32_path)), algo_config=config)
        quantizer.process()
    finally:
        logging.getLogger().setLevel(level)
    proto = quantizer.model.model
    quantize_tables(proto, bits)
    onnx.save(proto, str(out_path))


def quantize_tables(proto, bits: int) -> int:
    """Replace each Gather of a constant float table [rows, width] by a block-wise lookup; a table
    that is the transpose of a MatMulNBits weight reads that weight. Returns how many were replaced."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    transposes = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and n.input[0] in inits}
    replaced = 0
    for gather in [n for n in graph.node if n.op_type == "Gather"]:
        data = gather.input[0]
        if data in transposes:  # a tied embedding: (width, rows) quantized already as a MatMul's weight
            weight = transposes[data].input[0]
            packed, scales, width = f"{weight}_Q{bits}", f"{weight}_scales", inits[weight].dims[0]
            if packed not in inits or scales not in inits:
                continue
        elif data in inits and len(inits[data].dims) == 2 and inits[data].data_type == 1:  # float (rows, width)
            table = numpy_helper.to_array(inits[data])
            width = table.shape[1]
            packed, scales = f"{data}_Q{bits}", f"{data}_scales"
            q, s = _block_quantize(table, bits)
            graph.initializer.extend([numpy_helper.from_array(q, packed), numpy_helper.from_array(s, scales)])
        else:
            continue
        if width % BLOCK_SIZE:  # the lookup's reshape needs whole blocks
            continue
        at = list(graph.node).index(gather)
        graph.node.remove(gather)
        for k, node in enumerate(_lookup(graph, gather, packed, scales, width, bits)):
            graph.node.insert(at + k, node)
        replaced += 1
    used = {i for n in graph.node for i in n.input}
    for node in [n for n in transposes.values() if n.output[0] not in used]:
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return replaced


def _block_quantize(table: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) float -> packed (rows, blocks, bytes) uint8 and (rows, blocks) scales, in
    MatMulNBits's layout of the weight's transpose (onnxruntime's own kernel does the rounding)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    rows, width = table.shape
    blocks = width // BLOCK_SIZE
    packed = np.zeros((rows, blocks, BLOCK_SIZE * bits // 8), np.uint8)
    scales = np.zeros((rows, blocks), np.float32)
    zero_points = np.zeros((rows, (blocks * bits + 7) // 8), np.uint8)
    weight = np.ascontiguousarray(table.T.astype(np.float32))  # (width, rows): a MatMul's (K, N)
    kernel = quantize_matmul_8bits if bits == 8 else quantize_matmul_4bits
    kernel(packed, weight, scales, zero_points, BLOCK_SIZE, rows, width, True)
    return packed, scales


def _lookup(graph, gather, packed: str, scales: str, width: int, bits: int) -> list:
    """Nodes computing gather's output (ids..., width) from the packed rows and their scales."""
    from onnx import TensorProto, helper, numpy_helper

    ids, out = gather.input[1], gather.output[0]
    p = f"{gather.name or out}/blockwise"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), f"{p}/last"),
        numpy_helper.from_array(np.array([width // BLOCK_SIZE, BLOCK_SIZE], np.int64), f"{p}/blocks"),
        numpy_helper.from_array(np.float32(2 ** (bits - 1)), f"{p}/zero"),
        numpy_helper.from_array(np.array([width], np.int64), f"{p}/width")])
    node = helper.make_node
    nodes = [node("Gather", [packed, ids], [f"{p}/q"]),  # (ids..., blocks, bytes)
             node("Gather", [scales, ids], [f"{p}/s"])]  # (ids..., blocks)
    codes = f"{p}/q"
    if bits == 4:  # two values a byte, the first in the low four bits
        graph.initializer.append(numpy_helper.from_array(np.uint8(4), f"{p}/four"))
        nodes += [node("BitShift", [f"{p}/q", f"{p}/four"], [f"{p}/high"], direction="RIGHT"),
                  node("BitShift", [f"{p}/high", f"{p}/four"], [f"{p}/high_bits"], direction="LEFT"),
                  node("Sub", [f"{p}/q", f"{p}/high_bits"], [f"{p}/low"]),
                  node("Unsqueeze", [f"{p}/low", f"{p}/last"], [f"{p}/low1"]),
                  node("Unsqueeze", [f"{p}/high", f"{p}/last"], [f"{p}/high1"]),
                  node("Concat", [f"{p}/low1", f"{p}/high1"], [f"{p}/pairs"], axis=-1)]
        codes = f"{p}/pairs"
    return [*nodes,
            node("Shape", [ids], [f"{p}/id_shape"]),
            node("Concat", [f"{p}/id_shape", f"{p}/blocks"], [f"{p}/block_shape"], axis=0),
            node("Concat", [f"{p}/id_shape", f"{p}/width"], [f"{p}/shape"], axis=0),
            node("Cast", [codes], [f"{p}/f"], to=TensorProto.FLOAT),
            node("Reshape", [f"{p}/f", f"{p}/block_shape"], [f"{p}/fb"]),  # (ids..., blocks, 32)
            node("Sub", [f"{p}/fb", f"{p}/zero"], [f"{p}/centred"]),
            node("Unsqueeze", [f"{p}/s", f"{p}/last"], [f"{p}/s1"]),
            node("Mul", [f"{p}/centred", f"{p}/s1"], [f"{p}/values"]),  # exactly MatMulNBits's dequantized weight
            node("Reshape", [f"{p}/values", f"{p}/shape"], [out])]  # (ids..., width)
