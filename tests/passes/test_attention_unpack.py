"""Fused Attention unpacked before quantization: MatMul + Split + MultiHeadAttention computes the same, and the
QKV projection is then quantized (ONNX Runtime's QAttention would drop the attention bias that carries the mask)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.passes import graphs as g
from tracefuse.artifact import load_artifact
from tracefuse.graphs.onnx_file import load_onnx, op_histogram
from tracefuse.passes import _ort
from tracefuse.passes.attention_unpack import attention_bias_nodes, unpack_attention
from tracefuse.validation.inputs import generate_inputs

B, S, D, HEADS = 2, 5, 16, 2


def _attention(*, with_bias_input: bool = True, concat_weight: bool = False, **attributes) -> ir.Model:
    """x -> com.microsoft Attention (constant QKV weight and bias; optionally an attention_bias input)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((D, 3 * D)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(rng.standard_normal(3 * D).astype(np.float32) * 0.1, "b")]
    nodes = []
    if concat_weight:  # what the attention fusion writes: the three projections concatenated at run time
        for i, part in enumerate(np.split(weight, 3, axis=1)):
            inits.append(numpy_helper.from_array(part, f"w{i}"))
        nodes.append(helper.make_node("Concat", ["w0", "w1", "w2"], ["w"], axis=1))
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D])]
    att_inputs = ["x", "w", "b"]
    if with_bias_input:
        inputs.append(helper.make_tensor_value_info("mask_bias", TensorProto.FLOAT, [B, 1, S, S]))
        att_inputs += ["", "", "mask_bias"]
    nodes.append(helper.make_node("Attention", att_inputs, ["y"], domain="com.microsoft", num_heads=HEADS,
                                  **attributes))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])],
                              inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    proto.ir_version = 9
    return ir.serde.deserialize_model(proto)


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    bias = np.zeros((B, 1, S, S), np.float32)
    bias[1, :, :, S - 2:] = -10000.0  # the second sequence's last two positions are padding
    return {"x": rng.standard_normal((B, S, D)).astype(np.float32), "mask_bias": bias}


@pytest.mark.parametrize("variant", [
    {"concat_weight": True, "qkv_hidden_sizes": [D, D, D]},
    {"concat_weight": False},
    {"concat_weight": False, "with_bias_input": False, "scale": 0.5},
], ids=["fused-by-tracefuse (Concat weight, qkv sizes)", "constant weight", "no attention bias, explicit scale"])
def test_unpacked_attention_computes_the_same(variant):
    model = _attention(**variant)
    feeds = _feeds()
    expected = g.run(model, {k: v for k, v in feeds.items() if k in {i.name for i in model.graph.inputs}})[0]
    assert unpack_attention(model) == 1
    assert g.ops(model) == ["MatMul", "Split", "MultiHeadAttention"]
    assert attention_bias_nodes(model) == []
    actual = g.run(model, {k: v for k, v in feeds.items() if k in {i.name for i in model.graph.inputs}})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    if "mask_bias" in {i.name for i in model.graph.inputs}:  # the padding mask still acts
        moved = dict(feeds, mask_bias=np.zeros_like(feeds["mask_bias"]))
        assert not np.allclose(g.run(model, moved)[0][1], actual[1], atol=1e-3)


@pytest.mark.parametrize("attributes", [{"unidirectional": 1}, {"qkv_hidden_sizes": [D, D // 2, D + D // 2]}],
                         ids=["unidirectional", "different Q and K widths"])
def test_attention_that_cannot_be_unpacked_is_left_and_named(attributes):
    model = _attention(**attributes)
    assert unpack_attention(model) == 0
    assert g.ops(model) == ["Attention"]
    assert attention_bias_nodes(model) == [model.graph[0].name]


def test_cpu_preset_then_dynamic_int8_quantizes_the_qkv_projection(bert_artifact, tmp_path):
    from tracefuse import api_passes

    fused = api_passes.optimize(bert_artifact, tmp_path / "cpu", preset="cpu", validate=False)
    result = api_passes.quantize(fused.artifact.path, tmp_path / "int8", mode="dynamic")
    stats = result.passes[-1]["stats"]
    assert stats["attention_unpacked"] == 2
    ops = op_histogram(load_onnx(result.artifact.graph_path))
    assert ops["com.microsoft::MultiHeadAttention"] == 2 and "com.microsoft::Attention" not in ops
    # 2 layers × (QKV, output, FFN in, FFN out) + the pooler: every projection is int8, the QKV ones included.
    assert ops["MatMulInteger"] == 9
    art = load_artifact(result.artifact.path)
    # Validated against PyTorch with padded rows (the generated masks pad all but the first row).
    assert result.report["passed"]
    feeds = generate_inputs(art.manifest.inputs, {"batch": 3, "sequence": 9})
    assert (feeds["attention_mask"] == 0).any()
    ref = _ort.run_cases(_ort.session(onnx.load(str(fused.artifact.graph_path)).SerializeToString()), [("c", feeds)])
    got = _ort.run_cases(_ort.session(str(result.artifact.graph_path)), [("c", feeds)])
    assert _ort.cosine(got[0]["last_hidden_state"], ref[0]["last_hidden_state"]) > 0.99
