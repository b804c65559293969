"""GPU runtimes on a real NVIDIA GPU (`make gpu-test`): ort-cuda, ort-trt and native TensorRT validated against
PyTorch on tiny:bert, fp32 and fp16, the engine cache, IO binding with CUDA tensors, and bench on the GPU.

Every test is marked `gpu` and skips, with the reason, where CUDA, onnxruntime-gpu or tensorrt is missing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tracefuse.artifact import load_artifact
from tracefuse.validation.inputs import generate_inputs

pytestmark = pytest.mark.gpu


def _no_cuda() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)"
    return None


def _no_provider(name: str) -> str | None:
    import onnxruntime as ort

    if name not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} has no {name} (providers: {', '.join(ort.get_available_providers())}); "
                "make gpu-test installs onnxruntime-gpu")
    return None


def _no_tensorrt() -> str | None:
    return None if importlib.util.find_spec("tensorrt") else "tensorrt is not installed (make gpu-test installs it)"


NO_CUDA, NO_TENSORRT = _no_cuda(), _no_tensorrt()
NO_ORT_CUDA, NO_ORT_TRT = _no_provider("CUDAExecutionProvider"), _no_provider("TensorrtExecutionProvider")


def needs(*reasons: str | None):
    """Skip (before any fixture runs) with the first reason that applies."""
    reason = next((r for r in reasons if r), None)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="module")
def fp16_artifact(bert_artifact, artifacts_dir):
    """tiny:bert through the tensorrt preset and the fp16 pass (standard ops, fp16 graph, fp32 io)."""
    from tracefuse.api_passes import optimize
    from tracefuse.passes.manager import preset_passes

    out = artifacts_dir / "bert-trt-fp16"
    if not out.exists():
        optimize(bert_artifact, out, passes=[*preset_passes("tensorrt"), "fp16"], validate=False)
    return out


@pytest.mark.parametrize("runtime", [pytest.param("ort-cuda", marks=needs(NO_CUDA, NO_ORT_CUDA)),
                                     pytest.param("ort-trt", marks=needs(NO_CUDA, NO_ORT_TRT, NO_TENSORRT))])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ort_gpu_validates_on_the_asked_provider(bert_artifact, fp16_artifact, tmp_path, runtime, precision):
    from tracefuse import api
    from tracefuse.runtimes import open_runner

    path = bert_artifact if precision == "fp32" else fp16_artifact
    report = api.validate(path, runtime=runtime, runtime_options={"cache_dir": str(tmp_path)})
    assert report["passed"] and report["runtime"] == runtime, report
    if precision == "fp16":
        assert report["tolerance"]["atol"] >= 1e-2
    with open_runner(load_artifact(path), runtime, options={"cache_dir": str(tmp_path)}) as runner:
        assert runner.on_asked_provider and runner.device == "cuda"


@needs(NO_CUDA, NO_ORT_CUDA)
def test_ort_cuda_io_binding_with_torch_cuda_tensors(bert_artifact):
    import torch

    from tracefuse.runtimes import open_runner

    art = load_artifact(bert_artifact)
    feeds = generate_inputs(art.manifest.inputs, {"batch": 2, "sequence": 11}, seed=2)
    with open_runner(art, "ort-cuda") as runner:
        expected = runner.infer(feeds)
        binding = runner.bind({k: torch.from_numpy(v).cuda() for k, v in feeds.items()})
        runner.run_bound(binding)
        outputs = dict(zip([o.name for o in art.manifest.outputs], binding.copy_outputs_to_cpu()))
    np.testing.assert_allclose(outputs["last_hidden_state"], expected["last_hidden_state"], rtol=1e-5, atol=1e-5)


@needs(NO_CUDA, NO_TENSORRT)
def test_tensorrt_compile_validate_and_engine_cache(bert_artifact, fp16_artifact, tmp_path):
    from tracefuse.api_gpu import compile_artifact

    options = {"cache_dir": str(tmp_path / "cache")}
    first = compile_artifact(fp16_artifact, tmp_path / "engine", runtime_options=options)
    assert first.report["passed"], first.report
    assert first.build["cache"] == "miss" and first.build["layers"] > 0 and first.build["parse_errors"] == []
    art = load_artifact(tmp_path / "engine")
    assert art.manifest.format == "tensorrt" and art.manifest.export["tensorrt"]["gpu"]
    second = compile_artifact(fp16_artifact, tmp_path / "engine2", runtime_options=options, validate=False)
    assert second.build["cache"] == "hit" and second.build["cache_key"] == first.build["cache_key"]
    fp32 = compile_artifact(bert_artifact, tmp_path / "engine32", runtime_options=options)
    assert fp32.report["passed"] and fp32.build["cache_key"] != first.build["cache_key"]


@needs(NO_CUDA, NO_TENSORRT)
def test_tensorrt_runner_refuses_shapes_outside_the_profile(bert_artifact, tmp_path):
    from tracefuse.errors import TracefuseError
    from tracefuse.runtimes import open_runner

    art = load_artifact(bert_artifact)
    options = {"cache_dir": str(tmp_path), "shapes": "batch=1:2:4,sequence=1:16:64"}
    with open_runner(art, "tensorrt", options=options) as runner:
        ok = runner.infer(generate_inputs(art.manifest.inputs, {"batch": 4, "sequence": 64}))
        assert ok["last_hidden_state"].shape[:2] == (4, 64)
        with pytest.raises(TracefuseError, match="outside the engine's optimization profile"):
            runner.infer(generate_inputs(art.manifest.inputs, {"batch": 5, "sequence": 8}))


@needs(NO_CUDA, NO_ORT_CUDA, NO_TENSORRT)
def test_bench_on_gpu_beside_torch_eager_fp16(fp16_artifact, tmp_path):
    from tracefuse.api_bench import bench

    result = bench(fp16_artifact, ["ort-cuda", "tensorrt"], batch_sizes=[1, 4], seq_lens=[32], iters=5, warmup=2,
                   runtime_options={"cache_dir": str(tmp_path)})
    assert result["eager_dtype"] == "float16" and "cpu" not in result["device"]
    assert {r["engine"] for r in result["rows"]} == {"torch-eager", "ort-cuda", "tensorrt"}
    for row in result["rows"]:
        assert "error" not in row, row
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["memory_mb"] > 0 and row["latency_vs_eager"] > 0
