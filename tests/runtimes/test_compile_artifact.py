"""`compile --target tensorrt` writes an engine artifact: checked without TensorRT by replacing only the engine
build (tracefuse.runtimes.trt_build.engine_for) with fixed bytes; the layout, the manifest record, the raised
fp16 tolerance, hash verification and the recorded profile are the real code paths."""

from __future__ import annotations

import importlib.util

import pytest

from tracefuse.artifact import load_artifact
from tracefuse.errors import ArtifactError, MissingDependencyError, TracefuseError
from tracefuse.runtimes import open_runner
from tracefuse.runtimes.gpu_config import gpu_options, profile_shapes
from tracefuse.runtimes.trt_runner import engine_profile

ENGINE = b"not a real engine: the build is replaced in this test"


@pytest.fixture
def fake_build(monkeypatch):
    calls = []

    def engine_for(artifact, opts):
        calls.append(opts)
        profile = profile_shapes(artifact.manifest.inputs, opts.shapes, artifact.manifest.validation_shapes)
        return ENGINE, profile, {"tensorrt": "10.99", "gpu": "test GPU", "parse_errors": [], "cache": "miss",
                                 "cache_key": "k" * 32, "fp16_flag": bool(opts.fp16)}

    monkeypatch.setattr("tracefuse.runtimes.trt_build.engine_for", engine_for)
    return calls


def test_compile_writes_an_engine_artifact(bert_artifact, tmp_path, fake_build):
    from tracefuse.api_gpu import compile_artifact

    result = compile_artifact(bert_artifact, tmp_path / "engine", validate=False,
                              runtime_options={"shapes": "batch=1:2:4", "fp16": "1", "strongly_typed": "0"})
    assert fake_build[0] == gpu_options({"shapes": "batch=1:2:4", "fp16": "1", "strongly_typed": "0"})
    art = load_artifact(tmp_path / "engine")  # hashes verified
    source = load_artifact(bert_artifact).manifest
    assert art.manifest.format == "tensorrt" and art.manifest.graph == "model.engine"
    assert (tmp_path / "engine" / "model.engine").read_bytes() == ENGINE
    assert not (tmp_path / "engine" / "model.onnx").exists()
    assert art.manifest.inputs == source.inputs and art.manifest.outputs == source.outputs
    assert art.manifest.source == source.source
    record = art.manifest.export["tensorrt"]
    assert record["gpu"] == "test GPU" and record["onnx_sha256"] == source.files["model.onnx"]["sha256"]
    assert engine_profile(art)["input_ids"] == ((1, 1), (2, 128), (4, 512))
    assert art.manifest.tolerance["atol"] >= 1e-2 and art.manifest.tolerance["rtol"] >= 1e-2  # fp16 kernels
    assert result.report is None and result.artifact.path == art.path
    assert art.manifest.tool_versions["tensorrt"] == "10.99"


def test_compile_refuses_non_onnx_and_tampered_engines(bert_artifact, tmp_path, fake_build):
    from tracefuse.api_gpu import compile_artifact

    compile_artifact(bert_artifact, tmp_path / "engine", validate=False)
    with pytest.raises(ArtifactError, match="builds from an ONNX artifact"):
        compile_artifact(tmp_path / "engine", tmp_path / "again", validate=False)
    (tmp_path / "engine" / "model.engine").write_bytes(b"something else")
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path / "engine")
    with pytest.raises(TracefuseError, match="unknown compile target"):
        compile_artifact(bert_artifact, tmp_path / "x", target="openvino")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_engine_artifact_runs_on_tensorrt_by_default(bert_artifact, tmp_path, fake_build):
    from tracefuse.api_gpu import compile_artifact

    compile_artifact(bert_artifact, tmp_path / "engine", validate=False)
    runner = open_runner(load_artifact(tmp_path / "engine"))
    assert runner.name == "tensorrt"
    with pytest.raises(MissingDependencyError, match=r"tracefuse\[gpu\]"):
        runner.open()
