"""Shape-op simplification in `cleanup`: dims fixed by the graph become constants, dynamic dims never do."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from tracefuse.passes import _ort
from tracefuse.passes.cleanup import cleanup
from tracefuse.passes.shapes import simplify_shapes

HEADS, HIDDEN = 4, 32


def _i64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _scaled_heads() -> ir.Model:
    """x[batch, seq, 32] split into 4 heads with Reshape(-1); the head size is read back with Shape -> Slice
    -> Squeeze -> Cast -> Sqrt and divides the heads (the TorchScript DeBERTa scale), then the result is
    reshaped back and multiplied by the batch size read with Shape -> Gather (a dynamic dim)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "zero"], ["b"], axis=0),
        helper.make_node("Gather", ["xs", "one"], ["s"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        helper.make_node("Unsqueeze", ["s", "ax0"], ["s1"]),
        helper.make_node("Concat", ["b1", "s1", "heads", "minus1"], ["split"], axis=0),
        helper.make_node("Reshape", ["x", "split"], ["y"]),
        helper.make_node("Shape", ["y"], ["ys"]),
        helper.make_node("Slice", ["ys", "minus1", "big"], ["d1"]),
        helper.make_node("Squeeze", ["d1", "ax0"], ["d"]),
        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["df"], ["scale"]),
        helper.make_node("Div", ["y", "scale"], ["ys_scaled"]),
        helper.make_node("Reshape", ["ys_scaled", "xs"], ["back"]),
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["back", "bf"], ["out"]),
    ]
    inits = [_i64("zero", 0), _i64("one", 1), _i64("ax0", [0]), _i64("heads", [HEADS]), _i64("minus1", [-1]),
             _i64("big", [2**62])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def test_head_size_becomes_a_constant_and_the_sqrt_folds():
    model = _scaled_heads()
    stats = simplify_shapes(model)
    assert stats == {"resolved_dims": 1, "shape_reads_folded": 1}
    result = cleanup(model)
    assert "Sqrt" not in _ops(result.model)
    assert "Slice" not in _ops(result.model)
    divisors = [n.inputs[1].const_value for n in result.model.graph if n.op_type in ("Div", "Mul")
                if n.inputs[1] is not None and n.inputs[1].const_value is not None]
    # the head size is 32 / 4 = 8: the scale folds to sqrt(8).
    assert any(np.allclose(t.numpy(), np.sqrt(8.0)) or np.allclose(t.numpy(), 1 / np.sqrt(8.0))
               for t in divisors), divisors


def test_dynamic_batch_dim_keeps_its_shape_read():
    result = cleanup(_scaled_heads())
    shapes_of_x = [n for n in result.model.graph if n.op_type == "Shape" and n.inputs[0].name == "x"]
    assert shapes_of_x, _ops(result.model)
    gathered = [u.node for n in shapes_of_x for u in n.outputs[0].uses() if u.node.op_type == "Gather"]
    assert gathered, "the batch size must still be read from Shape(x) at run time"
    assert result.model.graph.inputs[0].shape[0].value == "batch"


@pytest.mark.parametrize(("batch", "sequence"), [(1, 3), (3, 11)])
def test_outputs_match_the_unfused_graph_at_several_sizes(batch, sequence):
    x = np.random.default_rng(batch * 100 + sequence).standard_normal((batch, sequence, HIDDEN)).astype(np.float32)
    expected = _ort.run_cases(_ort.session(_scaled_heads()), [("c", {"x": x})])[0]["out"]
    actual = _ort.run_cases(_ort.session(cleanup(_scaled_heads()).model), [("c", {"x": x})])[0]["out"]
    # hand check: the graph computes x / sqrt(8) * batch.
    np.testing.assert_allclose(expected, x / np.sqrt(8.0) * batch, rtol=1e-6)
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def test_reshape_with_two_unknown_dims_is_not_resolved():
    """[batch, seq, 32] -> [-1, 32]: the -1 is batch * seq, a dynamic dim: nothing is resolved."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["y"]), helper.make_node("Shape", ["y"], ["ys"]),
             helper.make_node("Gather", ["ys", "zero"], ["rows"], axis=0),
             helper.make_node("Cast", ["rows"], ["rf"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        [helper.make_tensor_value_info("rf", TensorProto.FLOAT, [])],
        [_i64("flat", [-1, HIDDEN]), _i64("zero", 0)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    model = ir.serde.deserialize_model(proto)
    assert simplify_shapes(model) == {"resolved_dims": 0, "shape_reads_folded": 0}
    assert "Gather" in _ops(model)
