"""Block-wise int8 and int4 weights from a float32 folder (`edgellm quantize`): measured, kept only
within the limits; folders that are not float32, and output folders inside the input, refused."""

import json
import shutil

import numpy as np
import pytest

from click.testing import CliRunner

from edgellm.cli import main
from edgellm.export import blockwise, quantize
from test_folder_format import as_format_1


def test_decide_keeps_the_variant_only_within_the_limits():
    assert quantize.decide({"val_perplexity": 40.0}, {"val_perplexity": 40.19})[0]  # +0.475%
    keep, why = quantize.decide({"val_perplexity": 40.0}, {"val_perplexity": 40.21}, "int4")  # +0.525%
    assert not keep and why.startswith("float32 kept: int4 raises held-out perplexity by +0.5")
    task = {"task_metric_name": "chrf", "task_metric": 55.0}
    assert quantize.decide(task, {**task, "task_metric": 54.6})[0]
    keep, why = quantize.decide(task, {**task, "task_metric": 54.4})
    assert not keep and "lowers chrf by 0.60 points" in why
    keep, why = quantize.decide({}, {})  # nothing to measure with: float32
    assert not keep and "edgellm quantize FOLDER OUT --task" in why


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantize_folder_measures_the_variant_against_float32(tiny_folder, tmp_path, weights):
    out = tmp_path / f"tiny-{weights}"
    result = quantize.quantize_folder(tiny_folder, out, weights=weights)
    config = json.loads((out / "config.json").read_text())["edgellm"]
    assert config["onnx"]["weights"] == result["weights"] == config["provenance"]["quantization"]["weights"]
    assert result["scheme"] == {"operator": "com.microsoft.MatMulNBits", "bits": int(weights[3:]), "block_size": 32,
                                "symmetric": True, "accuracy_level": 4}
    figures = result["figures"]
    change = figures[weights]["val_perplexity"] / figures["float32"]["val_perplexity"] - 1
    assert result["weights"] == (weights if change <= quantize.MAX_PERPLEXITY_CHANGE else "float32")
    size = (out / "model.onnx").stat().st_size
    assert size == figures[result["weights"]]["file_bytes"] and not (out / "model.float32.onnx").exists()
    assert figures[weights]["file_bytes"] < (0.35 if weights == "int8" else 0.25) * figures["float32"]["file_bytes"]
    agreement = result["greedy_agreement"]
    assert agreement["prompts"] > 4 and 0 <= agreement["token_agreement"] <= 1
    card = (out / "README.md").read_text()
    assert result["decision"] in card and result["command"] in card
    if result["weights"] != "float32":  # a quantized folder is not quantized again
        with pytest.raises(ValueError, match=f"holds {weights} weights; edgellm quantize needs the float32 graph"):
            quantize.quantize_folder(out, tmp_path / "again")


def test_what_quantize_refuses(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="already exists"):
        quantize.quantize_folder(tiny_folder, tmp_path)
    with pytest.raises(ValueError, match="--task and --eval-file together"):
        quantize.quantize_folder(tiny_folder, tmp_path / "task", task="qa")
    with pytest.raises(ValueError, match="weights must be one of"):
        quantize.quantize_folder(tiny_folder, tmp_path / "x", weights="int3")
    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    for out in (folder / "sub", folder, tmp_path):  # inside the input, the input, around it
        with pytest.raises(ValueError, match="must be outside .* and not hold it"):
            quantize.quantize_folder(folder, out, force=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_folder.iterdir())
    nested = CliRunner().invoke(main, ["quantize", str(folder), str(folder / "sub")])  # one line, exit 1
    assert nested.exit_code == 1 and nested.output.count("\n") == 1 and "must be outside" in nested.output
    old = tmp_path / "old-int8"  # int8 of edgellm before block-wise weights: no float32 graph left
    shutil.copytree(tiny_folder, old)
    _dynamic_int8(tiny_folder / "model.onnx", old / "model.onnx")
    with pytest.raises(ValueError, match=r"holds quantized operators \(DynamicQuantizeLinear, MatMulInteger\); "
                                         "edgellm quantize needs the float32 graph. Pass a float32 folder"):
        quantize.quantize_folder(old, tmp_path / "requantized")
    old_format = as_format_1(tiny_folder, tmp_path / "format-1")  # an older format: upgrade first
    with pytest.raises(ValueError, match=f"{old_format} is a format 1 model folder. Run `edgellm upgrade"):
        quantize.quantize_folder(old_format, tmp_path / "old")
    config = folder / "config.json"
    config.write_text('{"edgellm": {')  # corrupt: the reader names the file
    with pytest.raises(ValueError, match="config.json"):
        quantize.quantize_folder(folder, tmp_path / "corrupt")


def _dynamic_int8(source, out):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


@pytest.mark.parametrize("bits", [8, 4])
def test_a_table_lookup_gives_exactly_the_rows_matmulnbits_multiplies_by(bits):
    """The embedding lookup (standard operators) dequantizes as MatMulNBits does: a one-hot row
    times the quantized weight (float activations, accuracy_level 1) is the looked-up row."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rows, width = 40, 64
    table = np.random.default_rng(bits).normal(size=(rows, width)).astype(np.float32)
    packed, scales = blockwise._block_quantize(table, bits)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["looked_up"]),
         helper.make_node("MatMulNBits", ["onehot", "packed", "scales_flat"], ["product"], domain="com.microsoft",
                          K=width, N=rows, bits=bits, block_size=blockwise.BLOCK_SIZE, accuracy_level=1)],
        "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None]),
                   helper.make_tensor_value_info("onehot", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("looked_up", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("product", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(packed, "packed"),
         numpy_helper.from_array(scales.reshape(-1), "scales_flat")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    assert blockwise.quantize_tables(model, bits) == 1 and model.graph.node[0].op_type == "Gather"
    assert not any(i.name == "table" for i in model.graph.initializer)  # the float table is gone
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[3, 0, 39], [7, 7, 1]])
    # (width, rows) identity: column j of the product is row j of the dequantized table
    looked_up, product = session.run(None, {"ids": ids, "onehot": np.eye(width, dtype=np.float32)})
    assert looked_up.shape == (2, 3, width)
    np.testing.assert_array_equal(looked_up, product.T[ids])  # exact: the same (q - zero) * scale
    assert np.abs(looked_up - table[ids]).max() <= np.abs(table).max() / (2 ** (bits - 1) - 1)  # within a step
