"""Axes fixed at their trace size (`--fixed-axes`): for models that torch.export specializes on a length."""

from __future__ import annotations

import json

import onnx
import pytest
from typer.testing import CliRunner

from tracefuse.artifact import TensorSpec
from tracefuse.cli import app
from tracefuse.errors import ExportError
from tracefuse.exporters.archspec import ArchSpec, fix_axes
from tracefuse.jobs.coverage_probe import probe


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
    assert row["exporter"] == "dynamo, fixed axes"
    assert row["cases"] == ["batch=1,sequence=9", "batch=3,sequence=9"]  # the table shows the fixed length


def test_coverage_retries_with_fixed_axes_when_the_graph_holds_the_trace_size(tmp_path):
    # dinov2_with_registers runs eagerly at any image size, but its graph interpolates the position table to the
    # trace size: ONNX Runtime fails at the second size, and the retry with the image size fixed validates
    row = probe("dinov2_with_registers", "feature-extraction", tmp_path)
    assert row["status"] == "validated", row
    assert row["exporter"] == "dynamo, fixed axes"
    assert [c.split(",")[0] for c in row["cases"]] == ["batch=1", "batch=3"]
    assert len({c.split(",", 1)[1] for c in row["cases"]}) == 1  # one image size: the trace's
