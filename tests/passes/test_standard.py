"""Standard-op fusions: the opset-23 Attention and RMSNormalization ops, no com.microsoft ops, on tiny
bert-like (LayerNorm) and llama-like (RMSNorm, rotary attention) models; ONNX Runtime gives the unfused
graph's outputs, and the graph passes ONNX's full checker at opset 23."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.passes import graphs as g
from tracefuse.artifact import load_artifact
from tracefuse.graphs.onnx_file import load_onnx, op_histogram
from tracefuse.passes import _ort
from tracefuse.passes.base import PassError, get_pass
from tracefuse.passes.manager import Pipeline, for_target, preset_passes
from tracefuse.validation.inputs import generate_inputs


def _standard(art_dir, names):
    art = load_artifact(art_dir)
    model = load_onnx(art.graph_path)
    assert model.opset_imports[""] < 23  # the export's opset: the pass has to convert it
    feeds = generate_inputs(art.manifest.inputs, art.manifest.validation_shapes[-1], seed=3)
    expected = _ort.run_cases(_ort.session(model), [("c", feeds)])[0]
    result = Pipeline.from_names(names).run(model, explain=True)
    proto = ir.serde.serialize_model(result.model)
    onnx.checker.check_model(proto, full_check=True)
    actual = _ort.run_cases(_ort.session(result.model), [("c", feeds)])[0]
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    return result, {s["name"]: s["stats"] for s in result.steps}, op_histogram(result.model)


def _no_contrib_ops(ops):
    return [op for op in ops if "::" in op]


def test_standard_preset_on_bert_like(bert_artifact):
    result, stats, ops = _standard(bert_artifact, list(preset_passes("standard")))
    assert stats["fuse-attention-standard"]["report"] == "attention: 2/2"
    assert stats["fuse-attention-standard"]["opset"] == {"from": 18, "to": 23}
    assert stats["fuse-norm-standard"]["report"] == "norm: 5/5"
    assert stats["fuse-norm-standard"]["opset"] == {"from": 18, "to": 18}  # no RMSNorm: opset kept
    assert ops["Attention"] == 2 and ops["LayerNormalization"] == 5 and "RMSNormalization" not in ops
    assert "Softmax" not in ops and _no_contrib_ops(ops) == []
    assert result.model.opset_imports[""] == 23


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_standard_preset_on_llama_like(exporter, artifacts_dir):
    from tracefuse import api

    out = artifacts_dir / f"llama-{exporter}-std"
    if not out.exists():
        api.export("tiny:llama", out, exporter=exporter, validate=False)
    result, stats, ops = _standard(out, list(preset_passes("standard")))
    # tiny:llama: 2 layers, an RMSNorm before attention and MLP in each, plus the final one.
    assert stats["fuse-norm-standard"]["report"] == "norm: 5/5", stats["fuse-norm-standard"].get("explain")
    assert stats["fuse-norm-standard"]["opset"] == {"from": 18, "to": 23}
    assert stats["fuse-attention-standard"]["report"] == "attention: 2/2"
    assert ops["RMSNormalization"] == 5 and ops["Attention"] == 2
    assert "Softmax" not in ops and "ReduceMean" not in ops and _no_contrib_ops(ops) == []


def test_target_standard_maps_pass_names_and_refuses_contrib_only_passes(bert_artifact, tmp_path):
    from tracefuse import api_passes

    assert for_target(["cleanup", "fuse-norm", "fuse-attention"], "standard") == [
        "cleanup", "fuse-norm-standard", "fuse-attention-standard"]
    assert for_target(["fuse-norm-cpu"], "standard") == ["fuse-norm-standard"]
    with pytest.raises(PassError, match="fuse-gelu"):
        for_target(["fuse-gelu"], "standard")
    with pytest.raises(PassError, match="fuse-gelu-cpu"):
        for_target(["fuse-gelu-cpu"], "standard")
    result = api_passes.optimize(bert_artifact, tmp_path / "std", passes=["cleanup", "fuse-attention"],
                                 target="standard")
    ops = op_histogram(load_onnx(result.artifact.graph_path))
    assert ops["Attention"] == 2 and _no_contrib_ops(ops) == []
    assert result.report["passed"]


def test_a_graph_without_candidates_keeps_its_opset():
    model = g.erf_gelu()
    result = get_pass("fuse-attention-standard")(model)
    assert result.stats["found"] == 0 and result.stats["opset"] == {"from": 18, "to": 18}
    assert result.model.opset_imports[""] == 18
