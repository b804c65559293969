"""The dynamo exporter's custom translations, its retry with transformers' export patches, and its registry reuse."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tracefuse.artifact import TensorSpec
from tracefuse.exporters import onnx_exporter


class _Program:
    model = "graph"


def _fake_export(failures: list[Exception], calls: list):
    def export(*args, **kwargs):
        calls.append(kwargs.get("custom_translation_table"))
        if failures:
            raise failures.pop(0)
        return _Program()

    return export


SPECS = (TensorSpec("x", "float32", ("batch", 4)),)


def test_transformers_translations_cover_grouped_mm():
    table = onnx_exporter._transformers_translations()
    assert torch.ops.aten._grouped_mm.default in table


def _step_failure(step: int, cause: str) -> Exception:
    failure = RuntimeError(f"Failed to convert. This is step {step}/3 of exporting the model to ONNX.")
    failure.__cause__ = RuntimeError(cause)
    return failure


def _fake_patched(calls: list, result="patched graph"):
    def export_with_patches(wrapper, args, dynamic, input_names, output_names, opset, table, context):
        calls.append(table)
        with context():  # the registry and solver contexts open and close cleanly
            pass
        if isinstance(result, Exception):
            raise result
        return result

    return export_with_patches


def test_a_failure_after_capture_is_retried_with_transformers_patches_and_translations(monkeypatch):
    calls: list = []
    failure = _step_failure(3, "No ONNX function found for <OpOverload(op='aten._grouped_mm')>")
    monkeypatch.setattr(torch.onnx, "export", _fake_export([failure], calls))
    monkeypatch.setattr(onnx_exporter.transformers_patches, "export_with_patches", _fake_patched(calls))
    assert onnx_exporter._export_dynamo(None, (), SPECS, SPECS, 18) == "patched graph"
    assert calls[0] == onnx_exporter._first_translations()
    assert torch.ops.aten._grouped_mm.default in calls[1] and torch.ops.aten.index_put.default in calls[1]
    assert torch.ops.aten.linalg_solve_triangular.default in calls[1]


def test_when_the_retry_fails_too_the_first_failure_is_raised_with_its_cause(monkeypatch):
    calls: list = []
    failure = _step_failure(2, "decomposition of aten.foo failed")
    monkeypatch.setattr(torch.onnx, "export", _fake_export([failure], calls))
    monkeypatch.setattr(onnx_exporter.transformers_patches, "export_with_patches",
                        _fake_patched(calls, RuntimeError("patched export failed")))
    with pytest.raises(RuntimeError, match="step 2/3") as raised:
        onnx_exporter._export_dynamo(None, (), SPECS, SPECS, 18)
    assert str(raised.value.__cause__) == "decomposition of aten.foo failed" and len(calls) == 2


def test_only_ops_torch_onnx_lacks_are_added_to_every_export():
    from torch.onnx._internal.exporter import _registration

    missing = onnx_exporter._missing_translations()
    assert torch.ops.transformers.grouped_mm_fallback.default in missing  # transformers' MoE experts op
    known = _registration.ONNXRegistry.from_torchlib().functions
    assert missing and all(op.name() not in known for op in missing)
    assert torch.ops.aten.index_put.default not in missing  # torch.onnx's own function is kept


def test_capture_failures_are_not_retried(monkeypatch):
    calls: list = []
    monkeypatch.setattr(torch.onnx, "export", _fake_export([_step_failure(1, "data-dependent guard")], calls))
    monkeypatch.setattr(onnx_exporter.transformers_patches, "export_with_patches", _fake_patched(calls))
    with pytest.raises(RuntimeError, match="step 1/3"):
        onnx_exporter._export_dynamo(None, (), SPECS, SPECS, 18)
    assert calls == [onnx_exporter._first_translations()]


def test_an_moe_router_with_histc_exports_through_transformers_patches(tmp_path):
    from tracefuse import api

    # hunyuan_v1_moe counts tokens per expert with torch.histc(min=max=0), which torch.onnx cannot translate
    result = api.export("tiny:hunyuan_v1_moe", tmp_path / "hunyuan", task="feature-extraction")
    assert result.report["passed"] and len(result.report["cases"]) >= 2, result.report


def test_the_registry_of_onnx_functions_is_built_once_and_custom_translations_do_not_leak(monkeypatch):
    from torch.onnx._internal.exporter import _registration

    registry_class = _registration.ONNXRegistry
    original = registry_class.__dict__["from_torchlib"]
    built: list = []
    build = original.__func__

    def counting(cls, *args, **kwargs):
        built.append(args)
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(registry_class, "from_torchlib", classmethod(counting))
    monkeypatch.setattr(onnx_exporter, "_REGISTRIES", {})
    with onnx_exporter._reused_registry():
        first = registry_class.from_torchlib(opset_version=18)
        first.register_op(torch.ops.aten._grouped_mm.default, lambda *a: None)  # as a custom translation table does
        second = registry_class.from_torchlib(opset_version=18)
    assert len(built) == 1  # the second export reused the first build
    assert first is not second and second.opset_version == 18
    name = torch.ops.aten._grouped_mm.default.name()
    assert len(second.functions.get(name, [])) == len(first.functions[name]) - 1
    assert registry_class.__dict__["from_torchlib"].__func__ is counting  # the class is left as it was


def test_two_dynamo_exports_in_one_process_give_the_same_graph(tmp_path):
    import onnx

    from tracefuse import api

    graphs = []
    for name in ("one", "two"):
        result = api.export("tiny:bert", tmp_path / name, task="feature-extraction", validate=False)
        graphs.append(onnx.load(str(result.artifact.graph_path)).graph)
    assert [n.op_type for n in graphs[0].node] == [n.op_type for n in graphs[1].node]
    assert len(graphs[0].node) > 10


class _AllPositive(torch.nn.Module):
    def forward(self, x):
        return torch.ops.aten._is_all_true.default(x > 0)


def test_is_all_true_exports_and_matches_torch(tmp_path):
    x = torch.ones(2, 3)
    program = torch.onnx.export(_AllPositive(), (x,), dynamo=True, input_names=["x"],
                                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                                custom_translation_table={
                                    torch.ops.aten._is_all_true.default: onnx_exporter.all_true_translation})
    program.save(str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    for value in (np.ones((2, 3), np.float32), np.array([[1, -1, 1]], np.float32)):
        got = session.run(None, {"x": value})[0]
        assert bool(got) == bool(_AllPositive()(torch.from_numpy(value)))
