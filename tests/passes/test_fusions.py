"""Each fusion: the fused op appears and ONNX Runtime gives the unfused graph's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.passes import graphs as g
from tracefuse.artifact import load_artifact
from tracefuse.graphs.onnx_file import load_onnx, op_histogram
from tracefuse.passes.base import get_pass

# (label, graph, pass, the op types the graph holds after the pass)
CASES = [
    ("decomposed layer norm", g.layer_norm, "fuse-norm", ["LayerNormalization"]),
    ("decomposed layer norm, standard op", g.layer_norm, "fuse-norm-standard", ["LayerNormalization"]),
    ("residual + decomposed layer norm", lambda: g.layer_norm(residual=True), "fuse-norm", ["SkipLayerNormalization"]),
    ("residual + LayerNormalization", g.skip_layer_norm, "fuse-norm", ["SkipLayerNormalization"]),
    ("decomposed RMS norm (no default attributes)", g.rms_norm, "fuse-norm", ["SimplifiedLayerNormalization"]),
    ("RMS norm with Div(1, sqrt) (TorchScript rsqrt)", g.rms_norm_div, "fuse-norm", ["SimplifiedLayerNormalization"]),
    ("decomposed RMS norm, standard opset-23 op", g.rms_norm, "fuse-norm-standard", ["RMSNormalization"]),
    ("RMS norm with Div(1, sqrt), standard op", g.rms_norm_div, "fuse-norm-standard", ["RMSNormalization"]),
    ("exact GELU", g.erf_gelu, "fuse-gelu", ["Gelu"]),
    ("bias + exact GELU", lambda: g.erf_gelu(bias=True), "fuse-gelu", ["BiasGelu"]),
    ("tanh GELU, Transformers gelu_new order", g.tanh_gelu, "fuse-gelu", ["FastGelu"]),
    # The cpu variants keep the residual / bias Add out of the fused op (ONNX Runtime's CPU Skip* and
    # BiasGelu kernels measured slower: benchmarks/bench_kernels.py).
    ("cpu: residual + decomposed layer norm", lambda: g.layer_norm(residual=True), "fuse-norm-cpu",
     ["Add", "LayerNormalization"]),
    ("cpu: residual + LayerNormalization stays apart", g.skip_layer_norm, "fuse-norm-cpu",
     ["Add", "LayerNormalization"]),
    ("cpu: decomposed RMS norm", g.rms_norm, "fuse-norm-cpu", ["SimplifiedLayerNormalization"]),
    ("cpu: bias + exact GELU", lambda: g.erf_gelu(bias=True), "fuse-gelu-cpu", ["Add", "Gelu"]),
    ("cpu: tanh GELU", g.tanh_gelu, "fuse-gelu-cpu", ["FastGelu"]),
]


@pytest.mark.parametrize(("label", "build", "pass_name", "ops_after"), CASES, ids=[c[0] for c in CASES])
def test_fusion_on_pattern_variant(label, build, pass_name, ops_after):
    model = build()
    feeds = g.feeds_for(model)
    expected = g.run(model, feeds)
    result = get_pass(pass_name)(model)
    assert g.ops(result.model) == ops_after, f"{label}: {g.ops(result.model)}"
    assert result.stats["found"] == 1 and result.stats["fused"] == 1
    assert result.stats["report"].endswith(": 1/1")
    np.testing.assert_allclose(g.run(result.model, feeds)[0], expected[0], rtol=1e-4, atol=1e-5)


def test_unfusable_attention_is_counted_and_explained():
    model = g.softmax_attention_core()
    result = get_pass("fuse-attention")(model, explain=True)
    assert result.stats["found"] == 1 and result.stats["fused"] == 0
    assert result.stats["report"] == "attention: 0/1"
    assert "Softmax" in g.ops(result.model)
    reasons = result.stats["explain"]
    assert reasons and reasons[0]["stage"] == "sdpa"
    assert all(r["reason"] and r["status"] != "SUCCESS" for r in reasons)


def test_explain_names_the_failed_check_without_rewriting():
    # onnxscript's RMS rule needs the default attribute written out; explain on the raw pattern
    # (before the pass adds defaults) must say so, and leave the graph as it was.
    from tracefuse.passes.fusions import NORM_STAGES, FusionPass, norm_candidates

    model = g.rms_norm()
    before = g.ops(model)
    rms_stage = tuple(s for s in NORM_STAGES if s.name == "rms_norm")
    reasons = FusionPass("t", "norm", rms_stage, norm_candidates, ()).explain(model)
    assert g.ops(model) == before
    assert any("noop_with_empty_axes" in r["reason"] for r in reasons)


def test_all_fusions_on_tiny_bert(bert_artifact):
    from tracefuse.passes import _ort
    from tracefuse.passes.manager import Pipeline
    from tracefuse.validation.inputs import generate_inputs

    model = load_onnx(bert_artifact / "model.onnx")
    feeds = generate_inputs(load_artifact(bert_artifact).manifest.inputs, {"batch": 2, "sequence": 11})
    expected = _ort.run_cases(_ort.session(model), [("c", feeds)])[0]
    result = Pipeline.from_names(["cleanup", "fuse-norm", "fuse-gelu", "fuse-attention"]).run(model)
    stats = {s["name"]: s["stats"] for s in result.steps}
    # tiny:bert has 2 layers: 2 attention blocks, 2 GELUs, 5 LayerNorms (embeddings + 2 per layer).
    assert stats["fuse-attention"]["report"] == "attention: 2/2"
    assert stats["fuse-gelu"]["report"] == "gelu: 2/2"
    assert stats["fuse-norm"]["report"] == "norm: 5/5"
    ops = op_histogram(result.model)
    assert ops["com.microsoft::Attention"] == 2 and ops["com.microsoft::SkipLayerNormalization"] == 4
    assert ops["com.microsoft::BiasGelu"] == 2 and "Softmax" not in ops and "Erf" not in ops
    actual = _ort.run_cases(_ort.session(result.model), [("c", feeds)])[0]
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-3, atol=1e-4)


def test_transpose_and_scale_fold_into_fused_matmul():
    model = g.softmax_attention_core()
    feeds = g.feeds_for(model)
    expected = g.run(model, feeds)
    result = get_pass("fuse-matmul")(model)
    assert g.ops(result.model) == ["FusedMatMul", "Softmax", "MatMul"]
    assert result.stats["report"] == "matmul: 1/1"
    np.testing.assert_allclose(g.run(result.model, feeds)[0], expected[0], rtol=1e-4, atol=1e-5)


def test_attention_from_the_torchscript_exporter_fuses(artifacts_dir):
    # The TorchScript exporter writes eager softmax attention with a [1]-shaped NaN-guard constant and
    # unrelated symbolic sequence dims; tracefuse's scalar_where rule and ORT's symbolic shape
    # inference let onnxscript's rules fuse it.
    from tracefuse import api
    from tracefuse.passes import _ort
    from tracefuse.passes.manager import Pipeline
    from tracefuse.validation.inputs import generate_inputs

    out = artifacts_dir / "bert-torchscript"
    art = api.export("tiny:bert", out, exporter="torchscript", validate=False).artifact
    model = load_onnx(art.graph_path)
    feeds = generate_inputs(art.manifest.inputs, {"batch": 2, "sequence": 9})
    expected = _ort.run_cases(_ort.session(model), [("c", feeds)])[0]
    result = Pipeline.from_names(["cleanup", "fuse-attention"]).run(model, explain=True)
    stats = result.steps[1]["stats"]
    assert stats["report"] == "attention: 2/2", stats["explain"]
    assert stats["matches"]["scalar_where"] >= 2
    ops = op_histogram(result.model)
    assert ops.get("com.microsoft::MultiHeadAttention", 0) + ops.get("com.microsoft::Attention", 0) == 2
    assert "Softmax" not in ops
    actual = _ort.run_cases(_ort.session(result.model), [("c", feeds)])[0]
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-3, atol=1e-4)
