"""Axes fixed at their trace size (`--fixed-axes`): for models that torch.export specializes on a length."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from tracefuse.artifact import TensorSpec
from tracefuse.cli import app
from tracefuse.errors import ExportError, SpecializedAxesError
from tracefuse.exporters.archspec import ArchSpec, fix_axes
from tracefuse.exporters.onnx_exporter import export_onnx, specialized_axes
from tracefuse.exporters.wrapper import FlatWrapper
from tracefuse.jobs.coverage_probe import FIXED, _next_attempts, fixed_axes_of, fixed_label, probe


def _spec() -> ArchSpec:
    ids = TensorSpec("input_ids", "int64", ("batch", "sequence"), {"kind": "int", "low": 0, "high": 9})
    return ArchSpec("made_up", "feature-extraction", (ids,), {"batch": 2, "sequence": 9},
                    ({"batch": 1, "sequence": 16}, {"batch": 3, "sequence": 37}))


def test_fixed_axes_take_the_trace_size_everywhere():
    fixed = fix_axes(_spec(), ["*"])
    assert fixed.inputs[0].shape == ("batch", 9)
    assert fixed.validation_shapes == ({"batch": 1, "sequence": 9}, {"batch": 3, "sequence": 9})
    assert fix_axes(_spec(), ["sequence"]) == fixed
    with pytest.raises(ExportError) as info:
        fix_axes(_spec(), ["samples"])
    assert "'samples'" in str(info.value) and "batch, sequence" in str(info.value)


def test_cli_export_with_a_fixed_axis_validates_and_records_it(tmp_path):
    out = tmp_path / "rwkv"
    result = CliRunner().invoke(app, ["export", "tiny:rwkv", "-o", str(out), "--fixed-axes", "sequence",
                                      "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and len(report["cases"]) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["fixed_axes"] == ["sequence"]
    graph = onnx.load(str(out / manifest["graph"]), load_external_data=False).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 9]


def test_coverage_retries_with_fixed_axes_when_torch_export_specializes_one(tmp_path):
    # mamba's dynamo export fails: torch.export infers a static sequence where the spec asked for a dynamic one
    row = probe("mamba", "feature-extraction", tmp_path)
    assert row["status"] == "validated", row
    assert row["exporter"] == "dynamo, fixed sequence"  # the axis torch.export named, not every axis
    assert row["cases"] == ["batch=1,sequence=9", "batch=3,sequence=9"]  # the table shows the fixed length


def test_coverage_fixes_only_the_batch_of_a_model_that_specializes_it(tmp_path):
    # pixtral's vision tower concatenates its images' patches: torch.export holds the image count (batch) at
    # its trace size; with batch fixed, the image size stays dynamic and validates at two sizes
    row = probe("pixtral", "feature-extraction", tmp_path, exporters=("dynamo",))
    assert row["status"] == "validated" and row["exporter"] == "dynamo, fixed batch", row
    sizes = [c.split(",", 1) for c in row["cases"]]
    assert {b for b, _ in sizes} == {"batch=2"} and len({hw for _, hw in sizes}) == 2


class _PairsOnly(torch.nn.Module):
    def forward(self, x):
        return {"y": x * torch.arange(2.0).reshape(2, 1)}  # broadcasting pins the batch at 2


def test_a_specialized_axis_is_named_with_the_flag_that_fixes_it(tmp_path):
    spec = TensorSpec("x", "float32", ("batch", "sequence"), {"kind": "normal"})
    out = TensorSpec("y", "float32", ("batch", "sequence"), None)
    with pytest.raises(SpecializedAxesError) as info:
        export_onnx(FlatWrapper(_PairsOnly(), ("x",), ("y",)), {"x": torch.ones(2, 5)}, [spec], [out], tmp_path)
    assert info.value.axes == ("batch",)
    assert "'batch' at 2" in str(info.value) and "--fixed-axes batch" in str(info.value)
    # the transformers exporter names keyword inputs; causes are searched too
    cause = ValueError("- but tracing inferred a static shape of 4 for dimension inputs['x'].shape[1].")
    wrapped = RuntimeError("Failed to export the model with torch.export")
    wrapped.__cause__ = cause
    assert specialized_axes(wrapped, [spec]) == {"sequence": 4}
    assert specialized_axes(RuntimeError("something else"), [spec]) == {}


def test_fixed_labels_name_the_axes_and_retry_once_more_when_torch_export_names_another():
    assert fixed_label(None) == FIXED and fixed_axes_of(FIXED) == ("*",)
    assert fixed_label(["batch"]) == "dynamo, fixed batch" and fixed_axes_of("dynamo, fixed batch,sequence") == (
        "batch", "sequence")
    assert fixed_axes_of("dynamo") == ()
    conflict = {"exporter": "dynamo", "status": "failed", "stage": "export", "exported": False,
                "reason": "ValueError: Found the following conflicts between user-specified ranges and inferred "
                "ranges from model tracing:", "static_axes": ["batch"]}
    assert _next_attempts(conflict, ["transformers"]) == ["dynamo, fixed batch", "transformers"]
    again = {**conflict, "exporter": "dynamo, fixed batch", "static_axes": ["sequence"]}
    assert _next_attempts(again, ["transformers"]) == ["dynamo, fixed batch,sequence", "transformers"]
    assert _next_attempts({**again, "static_axes": ["batch"]}, ["transformers"]) == ["transformers"]


def test_coverage_retries_with_fixed_axes_when_the_graph_holds_the_trace_size(tmp_path):
    # dinov2_with_registers runs eagerly at any image size, but its dynamo graph interpolates the position table
    # to the trace size: ONNX Runtime fails at the second size, and the retry with the image size fixed
    # validates (its TorchScript graph, tried first in a full run, validates at both sizes)
    row = probe("dinov2_with_registers", "feature-extraction", tmp_path, exporters=("dynamo",))
    assert row["status"] == "validated", row
    assert row["exporter"] == "dynamo, fixed axes"
    assert [c.split(",")[0] for c in row["cases"]] == ["batch=1", "batch=3"]
    assert len({c.split(",", 1)[1] for c in row["cases"]}) == 1  # one image size: the trace's
