"""The two KV cache layouts `edgellm export` writes, on attention alone: Concat against in place.

    python bench/attention_cache.py [--threads N]

Four attention layers of the benchmark shape (4 heads of 64) run one new token at positions 10
and 900 of a 1,024 context, built directly with onnx.helper:

- concat (`--kv-cache concat`): what tf2onnx makes of edgellm's attention: past and new
  keys/values are concatenated into a new present cache each step (a copy of the whole cache
  per token);
- in place (`--kv-cache in_place`, the default): onnxruntime's contrib GroupQueryAttention with
  past and present bound to the same preallocated (1, heads, 1024, 64) buffers, so a step writes
  one slot.

Both get the same past and must give the same output (checked). Prints microseconds per token
and the in-place speed-up, on attention alone; bench/runtime_context.py times whole exported models.
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

LAYERS, HEADS, HEAD_DIM, CONTEXT = 4, 4, 64, 1024
WIDTH = HEADS * HEAD_DIM


def _model(nodes, inputs, outputs, initializers=(), contrib=False):
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    return helper.make_model(helper.make_graph(nodes, "attention", inputs, outputs, list(initializers)),
                             opset_imports=opsets).SerializeToString()


def _io(name, shape, kind=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, kind, shape)


def concat_model() -> bytes:
    """q = k = v = the layer input; present = Concat(past, new) along the sequence."""
    nodes, inputs, outputs, x = [], [_io("x", [1, 1, WIDTH])], [], "x"
    for i in range(LAYERS):
        inputs += [_io(f"past_k{i}", [1, HEADS, "past", HEAD_DIM]), _io(f"past_v{i}", [1, HEADS, "past", HEAD_DIM])]
        outputs += [_io(f"present_k{i}", [1, HEADS, "total", HEAD_DIM]),
                    _io(f"present_v{i}", [1, HEADS, "total", HEAD_DIM])]
        nodes += [helper.make_node("Reshape", [x, "heads_shape"], [f"split{i}"]),
                  helper.make_node("Transpose", [f"split{i}"], [f"q{i}"], perm=[0, 2, 1, 3]),
                  helper.make_node("Concat", [f"past_k{i}", f"q{i}"], [f"present_k{i}"], axis=2),
                  helper.make_node("Concat", [f"past_v{i}", f"q{i}"], [f"present_v{i}"], axis=2),
                  helper.make_node("Transpose", [f"present_k{i}"], [f"kt{i}"], perm=[0, 1, 3, 2]),
                  helper.make_node("MatMul", [f"q{i}", f"kt{i}"], [f"scores{i}"]),
                  helper.make_node("Mul", [f"scores{i}", "scale"], [f"scaled{i}"]),
                  helper.make_node("Softmax", [f"scaled{i}"], [f"weights{i}"], axis=-1),
                  helper.make_node("MatMul", [f"weights{i}", f"present_v{i}"], [f"y{i}"]),
                  helper.make_node("Transpose", [f"y{i}"], [f"merged{i}"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"merged{i}", "out_shape"], [f"x{i + 1}"])]
        x = f"x{i + 1}"
    constants = [helper.make_tensor("heads_shape", TensorProto.INT64, [4], [1, 1, HEADS, HEAD_DIM]),
                 helper.make_tensor("out_shape", TensorProto.INT64, [3], [1, 1, WIDTH]),
                 helper.make_tensor("scale", TensorProto.FLOAT, [], [HEAD_DIM ** -0.5])]
    return _model(nodes, inputs, [_io(x, [1, 1, WIDTH])] + outputs, constants)


def in_place_model() -> bytes:
    inputs = [_io("x", [1, 1, WIDTH]), _io("seqlens_k", [1], TensorProto.INT32), _io("total", [], TensorProto.INT32)]
    nodes, outputs, x = [], [], "x"
    for i in range(LAYERS):
        for kv in "kv":
            inputs.append(_io(f"past_{kv}{i}", [1, HEADS, CONTEXT, HEAD_DIM]))
            outputs.append(_io(f"present_{kv}{i}", [1, HEADS, CONTEXT, HEAD_DIM]))
        nodes.append(helper.make_node("GroupQueryAttention", [x, x, x, f"past_k{i}", f"past_v{i}", "seqlens_k", "total"],
                                      [f"x{i + 1}", f"present_k{i}", f"present_v{i}"], domain="com.microsoft",
                                      num_heads=HEADS, kv_num_heads=HEADS))
        x = f"x{i + 1}"
    return _model(nodes, inputs, [_io(x, [1, 1, WIDTH])] + outputs, contrib=True)


def per_token(run, repeats: int) -> float:
    run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    concat = ort.InferenceSession(concat_model(), options)
    in_place = ort.InferenceSession(in_place_model(), options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, WIDTH)).astype(np.float32)
    names = [o.name for o in concat.get_outputs()]
    print(f"{LAYERS} attention layers, {HEADS} heads of {HEAD_DIM}, context {CONTEXT}, {args.threads} thread(s)")
    for position in (10, 900):
        past = {f"{kv}{i}": rng.standard_normal((1, HEADS, position, HEAD_DIM)).astype(np.float32)
                for i in range(LAYERS) for kv in "kv"}
        feed = {"x": x, **{"past_" + name: value for name, value in past.items()}}
        expected = concat.run(names[:1], feed)[0]
        binding = in_place.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_cpu_input("seqlens_k", np.array([position], np.int32))  # the new token's slot
        binding.bind_cpu_input("total", np.array(position + 1, np.int32))
        for name, value in past.items():
            buffer = np.zeros((1, HEADS, CONTEXT, HEAD_DIM), np.float32)
            buffer[:, :, :position] = value
            shared = ort.OrtValue.ortvalue_from_numpy(buffer)
            binding.bind_ortvalue_input("past_" + name, shared)
            binding.bind_ortvalue_output("present_" + name, shared)  # the same buffer: written in place
        binding.bind_output(in_place.get_outputs()[0].name, "cpu")
        in_place.run_with_iobinding(binding)  # each run rewrites the same slot: same inputs, same output
        got = next(o for o in binding.copy_outputs_to_cpu() if o.shape == expected.shape)
        assert np.abs(got - expected).max() < 1e-4, "the in-place cache disagrees with Concat"
        concat_us = 1e6 * per_token(lambda: concat.run(names, feed), args.repeats)
        in_place_us = 1e6 * per_token(lambda: in_place.run_with_iobinding(binding), args.repeats)
        print(f"position {position:4d}: concat {concat_us:6.0f} us/token, in place {in_place_us:6.0f} us/token, "
              f"in place {concat_us / in_place_us:.2f}x faster")


if __name__ == "__main__":
    main()
