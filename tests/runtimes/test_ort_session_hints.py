"""The manifest's ONNX Runtime hints: the cpu preset's graph keeps Add + LayerNormalization / Gelu apart, and
runtimes open it with ONNX Runtime's own re-fusions of those ops disabled."""

from __future__ import annotations

import json
import shutil

import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from tests.passes import graphs as g
from tracefuse.artifact import Manifest, load_artifact
from tracefuse.errors import ArtifactError
from tracefuse.passes.base import get_pass
from tracefuse.passes.manager import ort_disabled_optimizers, preset_passes
from tracefuse.runtimes.ort_cpu import OrtCpuRunner, ort_session_kwargs


def _manifest(hints: dict) -> Manifest:
    return Manifest(format="onnx", graph="model.onnx", source={}, task="feature-extraction", inputs=(), outputs=(),
                    runtime_hints=hints)


def _ort_optimized_ops(model: ir.Model, tmp_path, **kwargs) -> list[str]:
    """The op types ONNX Runtime's CPU session ends up running, at its default (all) optimization level."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "ort-optimized.onnx")
    ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), options,
                         providers=["CPUExecutionProvider"], **kwargs)
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_cpu_preset_asks_for_the_disabled_ort_fusions():
    passes = [get_pass(name) for name in preset_passes("cpu")]
    assert ort_disabled_optimizers(passes) == ["BiasGeluFusion", "SkipLayerNormFusion"]
    assert ort_disabled_optimizers([get_pass(n) for n in preset_passes("cuda")]) == []


@pytest.mark.parametrize(("build", "pass_name", "fused_by_ort"), [
    (lambda: g.layer_norm(residual=True), "fuse-norm-cpu", "SkipLayerNormalization"),
    (lambda: g.erf_gelu(bias=True), "fuse-gelu-cpu", "BiasGelu"),
], ids=["layer norm", "gelu"])
def test_the_hints_stop_ort_from_fusing_the_add_back(build, pass_name, fused_by_ort, tmp_path):
    model = get_pass(pass_name)(build()).model
    hints = {"onnxruntime": {"disabled_optimizers": ort_disabled_optimizers([get_pass(pass_name)])}}
    # Without the hints ONNX Runtime folds the Add back in at load (the control: the names must be real).
    assert fused_by_ort in _ort_optimized_ops(model, tmp_path)
    with_hints = _ort_optimized_ops(model, tmp_path, **ort_session_kwargs(_manifest(hints)))
    assert fused_by_ort not in with_hints and "Add" in with_hints


def test_session_kwargs_from_the_manifest():
    assert ort_session_kwargs(_manifest({})) == {}
    hints = {"onnxruntime": {"disabled_optimizers": ["SkipLayerNormFusion"]}}
    assert ort_session_kwargs(_manifest(hints)) == {"disabled_optimizers": ["SkipLayerNormFusion"]}
    with pytest.raises(ArtifactError, match="malformed"):
        ort_session_kwargs(_manifest({"onnxruntime": {"disabled_optimizers": "SkipLayerNormFusion"}}))


def test_the_runner_opens_the_session_with_the_hints(bert_artifact, tmp_path, monkeypatch):
    art_dir = tmp_path / "bert"
    shutil.copytree(bert_artifact, art_dir)
    data = json.loads((art_dir / "manifest.json").read_text())
    data["runtime_hints"] = {"onnxruntime": {"disabled_optimizers": ["BiasGeluFusion", "SkipLayerNormFusion"]}}
    (art_dir / "manifest.json").write_text(json.dumps(data))
    art = load_artifact(art_dir)
    assert Manifest.from_dict(art.manifest.to_dict()).runtime_hints == data["runtime_hints"]
    seen = {}
    real = ort.InferenceSession

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    runner = OrtCpuRunner(art, threads=1)
    from tracefuse.validation.inputs import generate_inputs

    outputs = runner.open().infer(generate_inputs(art.manifest.inputs, {"batch": 1, "sequence": 7}))
    runner.close()
    assert outputs and seen["disabled_optimizers"] == ["BiasGeluFusion", "SkipLayerNormFusion"]


def test_cpu_preset_artifact_records_and_shows_the_hints(bert_artifact, tmp_path):
    from tests.passes.test_api_passes import _cli

    out = tmp_path / "bert-cpu"
    result = _cli("optimize", str(bert_artifact), "-o", str(out), "--preset", "cpu")
    assert result.exit_code == 0, result.output
    manifest = load_artifact(out).manifest
    assert manifest.runtime_hints == {"onnxruntime": {"disabled_optimizers": ["BiasGeluFusion", "SkipLayerNormFusion"]}}
    assert manifest.validation["passed"]  # validated through the runner, which applied the hints
    shown = _cli("inspect", str(out))
    assert "runtime hints for onnxruntime: disabled_optimizers" in shown.output
    assert "SkipLayerNormFusion" in shown.output
