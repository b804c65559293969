"""The pass manager: pipelines of named passes, and check mode naming the pass that breaks the outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tests.passes import graphs as g
from tracefuse.passes.base import FunctionPass, PassCheckFailed, PassError, PassResult, register_pass, unregister_pass
from tracefuse.passes.manager import PRESETS, Pipeline, preset_passes


def _perturb(model: ir.Model, *, explain: bool = False) -> PassResult:
    """A deliberately wrong pass: scales the largest float initializer by 1.5."""
    value = max((v for v in model.graph.initializers.values() if v.dtype == ir.DataType.FLOAT),
                key=lambda v: v.const_value.size)
    value.const_value = ir.tensor(value.const_value.numpy() * 1.5)
    return PassResult(model, {"perturbed": value.name})


@pytest.fixture
def perturb_pass():
    register_pass("test-perturb", lambda: FunctionPass("test-perturb", _perturb), "test only: breaks numerics")
    yield "test-perturb"
    unregister_pass("test-perturb")


def test_check_names_the_pass_that_breaks_the_outputs(perturb_pass):
    model = g.layer_norm(residual=True)
    cases = [("c", g.feeds_for(model))]
    with pytest.raises(PassCheckFailed) as info:
        Pipeline.from_names(["cleanup", "fuse-norm", perturb_pass, "fuse-gelu"]).run(model, check_cases=cases)
    assert info.value.pass_name == perturb_pass
    assert info.value.exit_code == 1
    assert perturb_pass in str(info.value)
    steps = info.value.steps
    assert [s["name"] for s in steps] == ["cleanup", "fuse-norm", perturb_pass]
    assert steps[0]["check"]["passed"] and steps[1]["check"]["passed"] and not steps[2]["check"]["passed"]


def test_check_without_raising_records_the_failed_pass(perturb_pass):
    model = g.erf_gelu(bias=True)
    result = Pipeline.from_names([perturb_pass, "fuse-gelu"]).run(
        model, check_cases=[("c", g.feeds_for(model))], raise_on_failure=False)
    assert result.failed_pass == perturb_pass
    assert len(result.steps) == 1  # the pipeline stops at the failing pass


def test_check_passes_for_sound_passes_and_records_stats():
    model = g.layer_norm(residual=True)
    feeds = g.feeds_for(model)
    expected = g.run(model, feeds)[0]
    result = Pipeline.from_names(["cleanup", "fuse-norm"]).run(model, check_cases=[("c", feeds)])
    assert result.failed_pass is None
    assert all(s["check"]["passed"] for s in result.steps)
    assert result.steps[1]["stats"]["report"] == "norm: 1/1"
    assert result.steps[1]["check"]["max_abs"] < 1e-4
    np.testing.assert_allclose(g.run(result.model, feeds)[0], expected, rtol=1e-4, atol=1e-5)


def test_unknown_pass_and_preset_are_usage_errors():
    with pytest.raises(PassError, match="unknown pass 'fuse-everything'") as info:
        Pipeline.from_names(["cleanup", "fuse-everything"])
    assert info.value.exit_code == 2 and "fuse-norm" in str(info.value)
    with pytest.raises(PassError, match="unknown preset"):
        preset_passes("tpu")
    with pytest.raises(PassError, match="twice"):
        Pipeline.from_names(["cleanup", "cleanup"])


def test_presets_use_registered_passes_and_tensorrt_has_no_contrib_ops():
    for name in PRESETS:
        assert Pipeline.from_names(list(preset_passes(name))).names == list(PRESETS[name])
    model = g.layer_norm(residual=True)
    result = Pipeline.from_names(list(preset_passes("tensorrt"))).run(model)
    assert all(n.domain in ("", "ai.onnx") for n in result.model.graph)


def test_cleanup_folds_constants_and_removes_identities():
    model = g.erf_gelu()
    # Put an Identity in front of the output and a constant subexpression feeding the Div.
    graph = model.graph
    div = next(n for n in graph if n.op_type == "Div")
    two = ir.node("Constant", [], attributes={"value": ir.tensor(np.array(2.0, np.float32))})
    sqrt = ir.node("Sqrt", [two.outputs[0]])
    graph.insert_before(div, [two, sqrt])
    div.replace_input_with(1, sqrt.outputs[0])
    last = graph.outputs[0].producer()
    identity = ir.node("Identity", [last.outputs[0]])
    graph.append(identity)
    identity.outputs[0].name, last.outputs[0].name = "y", "y_pre"
    identity.outputs[0].dtype, identity.outputs[0].shape = last.outputs[0].dtype, last.outputs[0].shape
    graph.outputs[0] = identity.outputs[0]
    feeds = g.feeds_for(model)
    expected = g.run(model, feeds)[0]
    result = Pipeline.from_names(["cleanup"]).run(model)
    ops = g.ops(result.model)
    assert "Identity" not in ops and "Sqrt" not in ops and "Constant" not in ops
    assert result.steps[0]["stats"]["nodes_after"] < result.steps[0]["stats"]["nodes_before"]
    np.testing.assert_allclose(g.run(result.model, feeds)[0], expected, rtol=1e-5, atol=1e-6)
