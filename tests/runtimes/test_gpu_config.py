"""GPU runtime configuration, checked without a GPU: profiles, provider options, runtime options, and the
silent-fallback check against the real (CPU-only) onnxruntime."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

import numpy as np
import pytest

from tracefuse.artifact import Manifest, TensorSpec, load_artifact
from tracefuse.errors import MissingDependencyError, TracefuseError
from tracefuse.runtimes import open_runner
from tracefuse.runtimes.gpu_config import (
    FP16_TOLERANCE,
    artifact_precision,
    axis_ranges,
    check_in_profile,
    check_providers,
    engine_cache_key,
    gpu_options,
    parse_shapes,
    profile_shapes,
    trt_provider_options,
    validation_tolerance,
)
from tracefuse.runtimes.trt_build import layer_precision
from tracefuse.validation.inputs import generate_inputs

IDS = TensorSpec("input_ids", "int64", ("batch", "sequence"))
MASK = TensorSpec("attention_mask", "int64", ("batch", "sequence"))
PIXELS = TensorSpec("pixel_values", "float32", ("batch", 3, "height", 224))


def _manifest(inputs=(IDS, MASK), passes=(), shapes=({"batch": 1, "sequence": 16},)) -> Manifest:
    return Manifest(format="onnx", graph="model.onnx", source={}, task="feature-extraction", inputs=tuple(inputs),
                    outputs=(), validation_shapes=tuple(shapes), passes=tuple(passes))


def test_parse_shapes_ranges_and_fixed_sizes():
    assert parse_shapes("batch=1:8:32, sequence=64") == {"batch": (1, 8, 32), "sequence": (64, 64, 64)}
    for bad in ("batch=1:8", "batch", "batch=a:b:c", "=1:2:3"):
        with pytest.raises(TracefuseError, match="AXIS=MIN:OPT:MAX"):
            parse_shapes(bad)


def test_profile_defaults_cover_bert_batch_32_and_512_tokens():
    profile = profile_shapes([IDS, MASK])
    assert profile["input_ids"] == ((1, 1), (8, 128), (32, 512))
    assert profile["attention_mask"] == profile["input_ids"]


def test_profile_overrides_keep_fixed_dims_and_use_validation_shapes_for_unknown_axes():
    profile = profile_shapes([PIXELS], {"batch": (2, 4, 6)}, [{"batch": 1, "height": 200}, {"batch": 3, "height": 240}])
    assert profile["pixel_values"] == ((2, 3, 200, 224), (4, 3, 240, 224), (6, 3, 240, 224))


def test_profile_errors_name_the_axis_and_the_fix():
    with pytest.raises(TracefuseError, match="(?s)no profile range for the dynamic axis 'height'.*shapes=height="):
        axis_ranges([PIXELS])
    with pytest.raises(TracefuseError, match="axes the artifact's inputs do not have: frames"):
        axis_ranges([IDS], {"frames": (1, 2, 3)})
    with pytest.raises(TracefuseError, match="(?s)min <= opt <= max"):
        axis_ranges([IDS], {"batch": (8, 4, 32)})


def test_check_in_profile_refuses_shapes_outside_it():
    profile = profile_shapes([IDS], {"batch": (1, 2, 4), "sequence": (1, 16, 64)})
    check_in_profile(profile, {"input_ids": (4, 64)})
    with pytest.raises(TracefuseError, match=r"(?s)shape \[5, 8\], outside .* max \[4, 64\]"):
        check_in_profile(profile, {"input_ids": (5, 8)})


def test_trt_provider_options_profiles_caches_and_precision(tmp_path):
    opts = gpu_options({"cache_dir": str(tmp_path), "workspace": "2G", "shapes": "batch=1:2:4,sequence=8:16:32"})
    options = trt_provider_options(_manifest(), opts)
    assert options["trt_profile_min_shapes"] == "input_ids:1x8,attention_mask:1x8"
    assert options["trt_profile_opt_shapes"] == "input_ids:2x16,attention_mask:2x16"
    assert options["trt_profile_max_shapes"] == "input_ids:4x32,attention_mask:4x32"
    assert options["trt_max_workspace_size"] == str(2 * 1024**3)
    assert options["trt_engine_cache_enable"] == "1" and options["trt_engine_cache_path"].startswith(str(tmp_path))
    assert options["trt_timing_cache_path"].startswith(str(tmp_path))
    assert options["trt_fp16_enable"] == "0"  # an fp32 graph stays fp32 unless fp16=1 asks
    assert trt_provider_options(_manifest(passes=[{"name": "fp16"}]), opts)["trt_fp16_enable"] == "1"
    assert trt_provider_options(_manifest(), dataclasses.replace(opts, fp16=True))["trt_fp16_enable"] == "1"
    fixed = _manifest(inputs=[TensorSpec("x", "float32", (1, 4))], shapes=())
    assert "trt_profile_min_shapes" not in trt_provider_options(fixed, dataclasses.replace(opts, shapes={}))


def test_runtime_options_are_checked():
    opts = gpu_options({"allow_fallback": "yes", "device_id": "1", "fp16": "0", "strongly_typed": "false"})
    assert (opts.allow_fallback, opts.device_id, opts.fp16, opts.strongly_typed) == (True, 1, False, False)
    with pytest.raises(TracefuseError, match="(?s)unknown GPU runtime option.*fallback.*use: allow_fallback"):
        gpu_options({"fallback": "1"})
    with pytest.raises(TracefuseError, match="yes/no"):
        gpu_options({"allow_fallback": "maybe"})
    with pytest.raises(TracefuseError, match="device_id"):
        gpu_options({"device_id": "gpu0"})


def test_precision_and_tolerance_from_the_manifest():
    from tracefuse.passes.precision import FP16_TOLERANCE as PASS_FP16

    assert FP16_TOLERANCE == PASS_FP16  # the runtime's copy must agree with the fp16 pass
    assert artifact_precision(_manifest()) == "fp32"
    assert artifact_precision(_manifest(passes=[{"name": "cleanup"}, {"name": "fp16"}])) == "fp16"
    assert artifact_precision(_manifest(passes=[{"name": "quantize-dynamic"}])) == "int8"
    assert validation_tolerance(_manifest(), fp16_kernels=False) == {}
    assert validation_tolerance(_manifest(), fp16_kernels=True) == {"atol": 1e-2, "rtol": 1e-2}
    assert validation_tolerance(_manifest(passes=[{"name": "fp16"}]), fp16_kernels=False) == {"atol": 1e-2,
                                                                                              "rtol": 1e-2}


def test_tf32_is_off_unless_asked_and_lowers_the_tolerance(bert_artifact, tmp_path):
    from tracefuse.runtimes.gpu_config import cuda_provider_options

    assert cuda_provider_options(gpu_options({}))["use_tf32"] == "0"
    assert cuda_provider_options(gpu_options({"tf32": "1"}))["use_tf32"] == "1"
    art = load_artifact(bert_artifact)
    cache = {"cache_dir": str(tmp_path)}
    assert open_runner(art, "ort-cuda", options=cache).tolerance_floor == {}
    assert open_runner(art, "ort-cuda", options={**cache, "tf32": "1"}).tolerance_floor == FP16_TOLERANCE
    assert open_runner(art, "ort-trt", options=cache).tolerance_floor == FP16_TOLERANCE  # TensorRT's TF32 default
    assert open_runner(art, "tensorrt", options=cache).tolerance_floor == {}
    assert open_runner(art, "tensorrt", options={**cache, "tf32": "1"}).tolerance_floor == FP16_TOLERANCE


def test_engine_cache_key_changes_with_each_component():
    profile = profile_shapes([IDS])
    base = ("abc", "10.9.0", "NVIDIA H100 80GB HBM3", profile, {"fp16": False})
    key = engine_cache_key(*base)
    assert key == engine_cache_key(*base)
    variants = [("abd", *base[1:]), (base[0], "10.10.0", *base[2:]), (*base[:2], "NVIDIA H200", *base[3:]),
                (*base[:3], profile_shapes([IDS], {"batch": (1, 1, 1)}), base[4]), (*base[:4], {"fp16": True})]
    assert len({engine_cache_key(*v) for v in variants} | {key}) == 6


def test_layer_precision_names_inspector_formats():
    assert layer_precision("Row major linear FP16 format") == "fp16"
    assert layer_precision("Row major linear FP32") == "fp32"
    assert layer_precision("Channel major Int8 format") == "int8"
    assert layer_precision("Row major linear Int64") == "int64"


def test_check_providers_raises_or_warns(caplog):
    assert check_providers("CUDAExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"],
                           allow_fallback=False)
    with pytest.raises(TracefuseError, match="(?s)fell back to CPUExecutionProvider.*allow_fallback=1"):
        check_providers("CUDAExecutionProvider", ["CPUExecutionProvider"], allow_fallback=False)
    with caplog.at_level(logging.WARNING):
        assert not check_providers("TensorrtExecutionProvider", ["CUDAExecutionProvider"], allow_fallback=True)
    assert "fell back to CUDAExecutionProvider" in caplog.text


def _has_provider(name: str) -> bool:
    import onnxruntime as ort

    return name in ort.get_available_providers()


@pytest.mark.parametrize("runtime,provider", [("ort-cuda", "CUDAExecutionProvider"),
                                              ("ort-trt", "TensorrtExecutionProvider")])
def test_cpu_onnxruntime_fallback_is_an_error_unless_allowed(bert_artifact, tmp_path, caplog, runtime, provider):
    if _has_provider(provider):
        pytest.skip(f"this onnxruntime has {provider}: the fallback cannot be provoked here")
    art = load_artifact(bert_artifact)
    with pytest.raises(TracefuseError, match=f"(?s)did not put the session on {provider}.*tracefuse\\[gpu\\]"):
        open_runner(art, runtime, options={"cache_dir": str(tmp_path)}).open()
    feeds = generate_inputs(art.manifest.inputs, {"batch": 2, "sequence": 9}, seed=3)
    with open_runner(art, "ort-cpu") as cpu:
        expected = cpu.infer(feeds)
    with caplog.at_level(logging.WARNING), \
            open_runner(art, runtime, options={"allow_fallback": "1", "cache_dir": str(tmp_path)}) as runner:
        got = runner.infer(feeds)  # through IO binding, on the CPU the session fell back to
        assert runner.device == "cpu" and not runner.on_asked_provider
    assert "allowed by allow_fallback" in caplog.text
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)


def test_io_binding_takes_numpy_and_torch_feeds(bert_artifact, tmp_path):
    import torch

    art = load_artifact(bert_artifact)
    feeds = generate_inputs(art.manifest.inputs, {"batch": 1, "sequence": 5}, seed=4)
    with open_runner(art, "ort-cuda", options={"allow_fallback": "1"}) as runner:
        expected = runner.infer(feeds)
        binding = runner.bind({k: torch.from_numpy(v) for k, v in feeds.items()})
        runner.run_bound(binding)
        outs = dict(zip([o.name for o in art.manifest.outputs], binding.copy_outputs_to_cpu()))
    np.testing.assert_array_equal(outs["last_hidden_state"], expected["last_hidden_state"])


def test_runtime_options_refused_by_cpu_runtimes(bert_artifact):
    with pytest.raises(TracefuseError, match="takes no runtime options"):
        open_runner(load_artifact(bert_artifact), "ort-cpu", options={"allow_fallback": "1"})


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_missing_names_the_extra(bert_artifact):
    with pytest.raises(MissingDependencyError, match=r"pip install 'tracefuse\[gpu\]'"):
        open_runner(load_artifact(bert_artifact), "tensorrt").open()
