"""tracefuse bench on the CPU (ort-cpu beside PyTorch eager, one process each) and the CLI errors of the GPU
commands on a machine without a GPU. No wall-clock limits: only structure and signs are checked."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from tracefuse.errors import TracefuseError
from tracefuse.validation.bench_stats import add_ratios, render_markdown, summarize_times


def _cli(*args: str):
    from tracefuse.cli import app

    app.info.context_settings = None  # see tests/passes/test_api_passes.py
    return CliRunner().invoke(app, [str(a) for a in args])


def test_summarize_times_percentiles_and_throughput():
    stats = summarize_times([4.0, 1.0, 3.0, 2.0], batch=2, sequence=10)
    # numpy's linear percentiles of 1..4: p50 2.5, p90 3.7, p99 3.97
    assert stats["p50_ms"] == pytest.approx(2.5) and stats["p90_ms"] == pytest.approx(3.7)
    assert stats["p99_ms"] == pytest.approx(3.97) and stats["mean_ms"] == pytest.approx(2.5)
    assert stats["samples_per_s"] == pytest.approx(800.0) and stats["tokens_per_s"] == pytest.approx(8000.0)
    with pytest.raises(ValueError):
        summarize_times([], 1, 1)


def test_ratios_are_to_eager_at_the_same_shape():
    rows = [{"engine": "torch-eager", "batch": 1, "sequence": 8, "p50_ms": 4.0, "samples_per_s": 250.0},
            {"engine": "ort-cpu", "batch": 1, "sequence": 8, "p50_ms": 1.0, "samples_per_s": 1000.0},
            {"engine": "ort-cpu", "batch": 2, "sequence": 8, "p50_ms": 1.0, "samples_per_s": 2000.0},
            {"engine": "ort-cpu", "batch": 1, "sequence": 8, "error": "boom"}]
    add_ratios(rows)
    assert rows[1]["latency_vs_eager"] == pytest.approx(0.25) and rows[1]["throughput_vs_eager"] == pytest.approx(4)
    assert rows[2]["latency_vs_eager"] is None and rows[3]["latency_vs_eager"] is None


def test_bench_cpu_runtime_beside_torch_eager(bert_artifact, tmp_path):
    result = _cli("bench", bert_artifact, "--runtime", "ort-cpu", "--batch-sizes", "1,2", "--seq-lens", "8,16",
                  "--iters", "3", "--warmup", "1", "--threads", "1", "--json", tmp_path / "bench.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["device"].startswith("cpu") and data["eager_dtype"] == "float32" and data["precision"] == "fp32"
    rows = data["rows"]
    assert [(r["engine"], r["batch"], r["sequence"]) for r in rows] == [
        (e, b, s) for e in ("torch-eager", "ort-cpu") for b in (1, 2) for s in (8, 16)]
    for row in rows:
        assert "error" not in row, row
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["calls"] == 3
        assert row["samples_per_s"] > 0 and row["tokens_per_s"] > 0 and row["memory_mb"] > 0
        assert row["latency_vs_eager"] > 0 and row["throughput_vs_eager"] > 0
    assert all(r["latency_vs_eager"] == 1.0 for r in rows if r["engine"] == "torch-eager")
    assert "| ort-cpu | 2 | 16 |" in result.output and "| torch-eager | 1 | 8 |" in result.output
    assert render_markdown(data).count("\n| ") == 1 + len(rows)  # header + one line a row


def test_bench_refuses_bad_input(bert_artifact):
    from tracefuse.api_bench import bench

    with pytest.raises(TracefuseError, match="unknown runtime"):
        bench(bert_artifact, ["ort-gpu"])
    result = _cli("bench", bert_artifact, "--runtime", "ort-cpu", "--batch-sizes", "0,x")
    assert result.exit_code == 2 and "positive integers" in result.output


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_gpu_runtime_without_cuda_is_a_clear_error(bert_artifact):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error cannot be provoked")
    result = _cli("bench", bert_artifact, "--runtime", "ort-cuda", "--iters", "1")
    assert result.exit_code == 2 and "CUDA device" in result.output, result.output


def test_validate_cli_on_ort_cuda_without_gpu(bert_artifact):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: the fallback cannot be provoked")
    result = _cli("validate", bert_artifact, "--runtime", "ort-cuda")
    assert result.exit_code == 2 and "did not put the session on CUDAExecutionProvider" in result.output
    result = _cli("validate", bert_artifact, "--runtime", "ort-cuda", "-R", "allow_fallback=1")
    assert result.exit_code == 0 and "validation passed" in result.output, result.output
    result = _cli("validate", bert_artifact, "--runtime", "ort-cuda", "-R", "allow_fallback")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_compile_without_tensorrt_names_the_extra(bert_artifact, tmp_path):
    result = _cli("compile", bert_artifact, "--target", "tensorrt", "-o", tmp_path / "engine")
    assert result.exit_code == 2 and "pip install 'tracefuse[gpu]'" in result.output, result.output
    assert not (tmp_path / "engine").exists()
    result = _cli("compile", bert_artifact, "--target", "openvino", "-o", tmp_path / "engine")
    assert result.exit_code == 2 and "unknown compile target" in result.output
