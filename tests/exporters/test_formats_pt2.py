"""pt2 format: torch.export with one Dim per named axis, saved as an ExportedProgram or compiled by
AOTInductor; run with the pt2 runner and validated at both shapes; tampered files are refused."""

from __future__ import annotations

import shutil

import pytest

from tracefuse import api
from tracefuse.artifact import TensorSpec
from tracefuse.errors import ArtifactError, ExportError
from tracefuse.exporters.pt2_exporter import dynamic_shapes, make_dims, suggested_bounds

AOT_MODEL = "tests.exporters.format_models:mlp"


def test_shared_axes_are_one_dim_named_after_the_axis():
    specs = (TensorSpec("input_ids", "int64", ("batch", "sequence")),
             TensorSpec("attention_mask", "int64", ("batch", "sequence")),
             TensorSpec("pixel_values", "float32", ("batch", 3, 64, 64)))
    dims = make_dims(specs, {"sequence": {"max": 512}})
    assert sorted(dims) == ["batch", "sequence"]
    assert dims["batch"].__name__ == "batch" and dims["sequence"].max == 512
    (per_input,) = dynamic_shapes(specs, dims)
    assert per_input[0][0] is per_input[1][0] is per_input[2][0]
    assert per_input[0][1] is per_input[1][1] and 1 not in per_input[2]


def test_suggested_fixes_are_parsed_and_constants_refused():
    message = "Constraints violated\nSuggested fixes:\n  sequence = Dim('sequence', max=512)\n\nThe error above"
    assert suggested_bounds(message) == {"sequence": {"max": 512}}
    with pytest.raises(ExportError, match="specialized"):
        suggested_bounds("Suggested fixes:\n  batch = 2\n")


@pytest.fixture(scope="module")
def pt2_bert(tmp_path_factory):
    return api.export("tiny:bert", tmp_path_factory.mktemp("pt2") / "bert", format="pt2")


def test_bert_program_validates_at_both_shapes(pt2_bert):
    report, manifest = pt2_bert.report, pt2_bert.artifact.manifest
    assert report["passed"], report
    assert report["runtime"] == "pt2"
    assert [c["name"] for c in report["cases"]] == ["batch=1,sequence=16", "batch=3,sequence=37"]
    assert manifest.graph == "model.pt2" and manifest.export["aot"] is False
    # learned position embeddings bound the sequence axis; torch.export said so and the bound was applied
    assert manifest.export["dim_bounds"]["sequence"]["max"] == 512
    info = api.inspect(pt2_bert.artifact.path)["format_summary"]
    assert info["nodes"] > 20 and info["graph_bytes"] > 0


@pytest.mark.parametrize(("model", "dims"), [("tiny:vit", "named"), ("tiny:resnet", "inferred")])
def test_vision_programs_validate(tmp_path, model, dims):
    # resnet's height/width guards ("(h - 1) // 8 + 1 != 1") cannot be written as Dim bounds: the
    # exporter falls back to Dim.DYNAMIC and torch.export infers the ranges
    result = api.export(model, tmp_path / "m", format="pt2")
    assert result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    assert result.artifact.manifest.export["dims"] == dims


def test_tampered_program_is_refused_without_verify(pt2_bert, tmp_path):
    copy = tmp_path / "bert"
    shutil.copytree(pt2_bert.artifact.path, copy)
    data = bytearray((copy / "model.pt2").read_bytes())
    data[-100] ^= 0x01
    (copy / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="refusing to open 'model.pt2'"):
        api.load(copy, verify=False)


@pytest.fixture(scope="module")
def aot_mlp(tmp_path_factory):
    return api.export(AOT_MODEL, tmp_path_factory.mktemp("aot") / "mlp", format="pt2", options={"aot": True})


def test_aot_package_validates_and_reports_no_graph(aot_mlp):
    assert aot_mlp.report["passed"], aot_mlp.report
    assert [c["name"] for c in aot_mlp.report["cases"]] == ["batch=2", "batch=5"]
    manifest = aot_mlp.artifact.manifest
    assert manifest.graph == "model.aoti.pt2" and manifest.export["aot"] is True
    assert "compiled" in api.inspect(aot_mlp.artifact.path)["format_summary"]


def test_tampered_aot_package_is_refused(aot_mlp, tmp_path):
    copy = tmp_path / "mlp"
    shutil.copytree(aot_mlp.artifact.path, copy)
    with (copy / "model.aoti.pt2").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="refusing to open 'model.aoti.pt2'"):
        api.load(copy, verify=False)
