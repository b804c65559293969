"""optimize / quantize end to end on tiny:bert: new artifacts, manifests, validation, and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.passes.test_manager import _perturb
from tracefuse.artifact import load_artifact, sha256_file
from tracefuse.graphs.onnx_file import load_onnx, op_histogram
from tracefuse.passes.base import FunctionPass, register_pass, unregister_pass

runner = CliRunner()


def _cli(*args: str):
    from tracefuse.cli import app

    # cli.main stores {"verbose": ...} in app.info.context_settings, which breaks a second invocation
    # in the same process (click's Context takes no 'verbose'); start each invocation clean.
    app.info.context_settings = None
    return runner.invoke(app, list(args))


def test_optimize_cli_preset_writes_a_new_validated_artifact(bert_artifact, tmp_path):
    before = sha256_file(bert_artifact / "model.onnx")
    out = tmp_path / "bert-cuda"
    result = _cli("optimize", str(bert_artifact), "-o", str(out), "--preset", "cuda", "--check")
    assert result.exit_code == 0, result.output
    assert "attention: 2/2" in result.output and "validation passed" in result.output
    assert sha256_file(bert_artifact / "model.onnx") == before  # the source artifact is untouched
    art = load_artifact(out)
    original = load_artifact(bert_artifact).manifest
    assert art.manifest.inputs == original.inputs and art.manifest.outputs == original.outputs
    assert [p["name"] for p in art.manifest.passes] == ["cleanup", "fuse-norm", "fuse-gelu", "fuse-attention"]
    assert all(p["check"]["passed"] and p["preset"] == "cuda" for p in art.manifest.passes)
    assert art.manifest.validation["passed"]
    ops = op_histogram(load_onnx(art.graph_path))
    assert ops.get("com.microsoft::Attention") == 2 and "Softmax" not in ops


def test_optimize_check_names_the_wrong_pass_and_writes_nothing(bert_artifact, tmp_path):
    register_pass("test-perturb", lambda: FunctionPass("test-perturb", _perturb), "test only")
    try:
        out = tmp_path / "broken"
        result = _cli("optimize", str(bert_artifact), "-o", str(out), "--passes",
                      "cleanup,fuse-norm,test-perturb,fuse-gelu", "--check", "--no-validate")
    finally:
        unregister_pass("test-perturb")
    assert result.exit_code == 1, result.output
    assert "pass 'test-perturb' changed the outputs" in result.output
    assert not out.exists()


def test_optimize_usage_errors(bert_artifact, tmp_path):
    result = _cli("optimize", str(bert_artifact), "-o", str(tmp_path / "x"), "--passes", "cleanup,nope")
    assert result.exit_code == 2 and "unknown pass 'nope'" in result.output
    result = _cli("optimize", str(bert_artifact), "-o", str(tmp_path / "x"))
    assert result.exit_code == 2 and "preset or a pass list" in result.output


def test_quantize_dynamic_validates_by_cosine(bert_artifact, tmp_path):
    out = tmp_path / "bert-int8"
    result = _cli("quantize", str(bert_artifact), "-o", str(out), "--mode", "dynamic")
    assert result.exit_code == 0, result.output
    art = load_artifact(out)
    entry = art.manifest.passes[-1]
    assert entry["name"] == "quantize-dynamic" and entry["stats"]["quantized_nodes"] == entry["stats"]["candidates"]
    assert entry["stats"]["cosine"] > 0.999
    assert art.manifest.validation["passed"]
    assert art.manifest.tolerance["min_cosine"] == 0.99
    assert op_histogram(load_onnx(art.graph_path)).get("MatMulInteger", 0) >= 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passes"][-1]["stats"]["excluded"] == []


def test_accuracy_guard_keeps_sensitive_nodes_in_float(bert_artifact, tmp_path):
    from tracefuse import api_passes

    first = api_passes.quantize(bert_artifact, tmp_path / "q0", mode="dynamic", validate=False)
    all_quantized = first.passes[0]["stats"]["cosine"]
    target = 1.0 - (1.0 - all_quantized) / 4  # out of reach with every MatMul quantized
    guarded = api_passes.quantize(bert_artifact, tmp_path / "q1", mode="dynamic", target_cosine=target)
    stats = guarded.passes[0]["stats"]
    assert stats["cosine_all_quantized"] == pytest.approx(all_quantized)
    assert stats["excluded"], "the guard should have kept nodes in float"
    assert stats["cosine"] >= target and stats["target_met"]
    graph = load_onnx(guarded.artifact.graph_path)
    float_matmuls = {n.name for n in graph.graph if n.op_type in ("MatMul", "Gemm")}
    assert {e["node"] for e in stats["excluded"]} <= float_matmuls
    assert guarded.artifact.manifest.passes[-1]["stats"]["excluded"] == stats["excluded"]
    assert guarded.report["passed"] and guarded.report["criterion"] == f"cosine >= {target}"


def test_static_and_int4_quantization(bert_artifact):
    from tracefuse.passes.quantize import QuantizeOptions, quantize
    from tracefuse.validation.inputs import generate_inputs

    manifest = load_artifact(bert_artifact).manifest
    cases = [(str(s), generate_inputs(manifest.inputs, s, seed=i)) for i, s in enumerate(manifest.validation_shapes)]
    calib = tuple(generate_inputs(manifest.inputs, manifest.validation_shapes[0], seed=50 + i) for i in range(4))
    static = quantize(load_onnx(bert_artifact / "model.onnx"),
                      QuantizeOptions(mode="static", calibration=calib, calibration_method="percentile"), cases)
    ops = op_histogram(static.model)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert static.stats["cosine"] > 0.99 and static.stats["calibration"]["samples"] == 4
    int4 = quantize(load_onnx(bert_artifact / "model.onnx"), QuantizeOptions(mode="int4", block_size=16), cases)
    assert op_histogram(int4.model).get("com.microsoft::MatMulNBits", 0) == int4.stats["quantized_nodes"] > 0
    assert int4.stats["cosine"] > 0.99


def test_quantize_usage_errors(bert_artifact, tmp_path):
    result = _cli("quantize", str(bert_artifact), "-o", str(tmp_path / "x"), "--mode", "int3")
    assert result.exit_code == 2 and "unknown quantization mode" in result.output
    result = _cli("quantize", str(bert_artifact), "-o", str(tmp_path / "x"), "--mode", "int4", "--block-size", "24")
    assert result.exit_code == 2 and "block size" in result.output


def test_optimize_help_lists_every_registered_pass():
    from tracefuse.cli import app
    from tracefuse.cli_passes import PASS_NAMES
    from tracefuse.passes.base import available_passes

    assert sorted(PASS_NAMES) == sorted(available_passes())
    app.info.context_settings = None
    result = runner.invoke(app, ["optimize", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and all(name in result.output for name in PASS_NAMES)
