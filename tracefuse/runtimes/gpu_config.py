"""GPU runtime configuration as pure functions: runtime options, optimization profiles, provider options,
and the check that ONNX Runtime really runs on the provider that was asked for.

Nothing here imports onnxruntime, tensorrt or torch, so all of it is tested on a machine without a GPU.
Runners (ort_gpu, trt_runner) and the TensorRT builder (trt_build) call these.

Optimization profiles: TensorRT needs, for every dynamic input, the smallest, the most common and the
largest shape it will see. They are derived from the artifact's named dynamic axes (manifest inputs,
from the ArchSpec): every axis gets a (min, opt, max) range from AXIS_DEFAULTS, from the user's
`shapes` option (`batch=1:8:32,sequence=1:128:512`), or, for an axis with no default, from the
artifact's validation shapes. The validation shapes must fit inside the profile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.artifact import Manifest, TensorSpec
from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)

Range = tuple[int, int, int]
ProfileShapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

# (min, opt, max) per named axis; sequence-like axes cover BERT's 512 positions.
AXIS_DEFAULTS: dict[str, Range] = {
    "batch": (1, 8, 32),
    "sequence": (1, 128, 512),
    "encoder_sequence": (1, 128, 512),
    "past_sequence": (1, 128, 512),
    "total_sequence": (2, 256, 1024),
}
# Same numbers as tracefuse.passes.precision.FP16_TOLERANCE (a runtime does not import passes; a test
# checks that they agree): the tolerance an fp16 engine is validated with.
FP16_TOLERANCE: dict[str, float] = {"atol": 1e-2, "rtol": 1e-2}
OPTION_HELP: dict[str, str] = {
    "allow_fallback": "1 to run (with a logged warning) when ONNX Runtime falls back to another provider",
    "fp16": "1 to let TensorRT pick fp16 kernels for an fp32 graph (TensorRT 10, ort-trt); 0 to forbid",
    "cache_dir": "directory for TensorRT engine and timing caches (default ~/.cache/tracefuse/tensorrt)",
    "workspace": "TensorRT builder workspace limit, e.g. 4G",
    "device_id": "CUDA device index (default 0)",
    "shapes": "optimization profile per axis, e.g. batch=1:8:32,sequence=1:128:512 (a single size fixes it)",
    "strongly_typed": "0 to build a weakly typed TensorRT 10 network (precision from flags, not the graph)",
    "tf32": "1 to allow TF32 matmuls for fp32 graphs (faster; fp16-like error, validated with the fp16 tolerance)",
}


@dataclass(frozen=True)
class GpuOptions:
    """Options of the GPU runners, parsed from `--runtime-option KEY=VALUE` (see OPTION_HELP)."""

    allow_fallback: bool = False
    fp16: bool | None = None
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "tracefuse" / "tensorrt")
    workspace: int | None = None
    device_id: int = 0
    shapes: dict[str, Range] = field(default_factory=dict)
    strongly_typed: bool = True
    tf32: bool = False


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise TracefuseError(f"runtime option '{key}' must be a yes/no value", found=repr(value),
                         fix=f"give {key}=1 or {key}=0")


def gpu_options(raw: Mapping[str, Any] | None) -> GpuOptions:
    """Parse runtime options (strings from the CLI, or Python values); unknown keys raise TracefuseError."""
    from tracefuse.resources import parse_size

    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(OPTION_HELP))
    if unknown:
        raise TracefuseError(f"unknown GPU runtime option(s): {', '.join(unknown)}",
                             fix="use: " + "; ".join(f"{k} ({v})" for k, v in OPTION_HELP.items()))
    opts: dict[str, Any] = {}
    if "allow_fallback" in raw:
        opts["allow_fallback"] = _flag("allow_fallback", raw["allow_fallback"])
    for key in ("strongly_typed", "tf32"):
        if key in raw:
            opts[key] = _flag(key, raw[key])
    if raw.get("fp16") is not None:
        opts["fp16"] = _flag("fp16", raw["fp16"])
    if raw.get("cache_dir"):
        opts["cache_dir"] = Path(raw["cache_dir"]).expanduser()
    if raw.get("workspace") is not None:
        opts["workspace"] = raw["workspace"] if isinstance(raw["workspace"], int) else parse_size(raw["workspace"])
    if raw.get("device_id") is not None:
        try:
            opts["device_id"] = int(raw["device_id"])
        except ValueError:
            raise TracefuseError("runtime option 'device_id' must be an integer", found=repr(raw["device_id"]),
                                 fix="give device_id=0 (see nvidia-smi for the indices)") from None
    if raw.get("shapes"):
        opts["shapes"] = raw["shapes"] if isinstance(raw["shapes"], dict) else parse_shapes(str(raw["shapes"]))
    return GpuOptions(**opts)


def parse_shapes(text: str) -> dict[str, Range]:
    """`batch=1:8:32,sequence=1:128:512` -> {axis: (min, opt, max)}; `batch=4` fixes an axis at 4."""
    ranges: dict[str, Range] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([A-Za-z_][\w.]*)=(\d+)(?::(\d+):(\d+))?", part)
        if not match:
            raise TracefuseError("a profile shape must read AXIS=MIN:OPT:MAX or AXIS=SIZE", found=repr(part),
                                 fix="e.g. shapes=batch=1:8:32,sequence=1:128:512")
        lo = int(match.group(2))
        ranges[match.group(1)] = (lo, int(match.group(3)), int(match.group(4))) if match.group(3) else (lo, lo, lo)
    return ranges


def axis_ranges(inputs: Sequence[TensorSpec], overrides: Mapping[str, Range] | None = None,
                validation_shapes: Sequence[Mapping[str, int]] = ()) -> dict[str, Range]:
    """(min, opt, max) for every named dynamic axis of `inputs`: the override, the default, or the range of
    the validation shapes; raises TracefuseError for an unordered range or an override of no axis."""
    overrides = dict(overrides or {})
    axes = [d for spec in inputs for d in spec.shape if isinstance(d, str)]
    stray = sorted(set(overrides) - set(axes))
    if stray:
        raise TracefuseError(f"profile shapes name axes the artifact's inputs do not have: {', '.join(stray)}",
                             fix=f"use the inputs' axes: {', '.join(dict.fromkeys(axes)) or 'none (all fixed)'}")
    ranges: dict[str, Range] = {}
    for axis in dict.fromkeys(axes):
        if axis in overrides:
            rng = tuple(int(v) for v in overrides[axis])
        elif axis in AXIS_DEFAULTS:
            rng = AXIS_DEFAULTS[axis]
        else:
            seen = [int(s[axis]) for s in validation_shapes if axis in s]
            if not seen:
                raise TracefuseError(f"no profile range for the dynamic axis '{axis}'",
                                     found="no default and no validation shape names it",
                                     fix=f"give one: --runtime-option shapes={axis}=MIN:OPT:MAX")
            rng = (min(seen), max(seen), max(seen))
            logger.warning("axis '%s' has no default profile range: using the validation shapes' %s", axis, rng)
        if not (len(rng) == 3 and 0 <= rng[0] <= rng[1] <= rng[2] and rng[2] > 0):
            raise TracefuseError(f"the profile range of axis '{axis}' must satisfy 0 <= min <= opt <= max",
                                 found=str(rng), fix=f"e.g. shapes={axis}=1:8:32")
        ranges[axis] = rng  # type: ignore[assignment]
    return ranges


def profile_shapes(inputs: Sequence[TensorSpec], overrides: Mapping[str, Range] | None = None,
                   validation_shapes: Sequence[Mapping[str, int]] = ()) -> ProfileShapes:
    """{input name: (min shape, opt shape, max shape)} for a TensorRT optimization profile."""
    ranges = axis_ranges(inputs, overrides, validation_shapes)
    return {spec.name: tuple(tuple(d if isinstance(d, int) else ranges[d][i] for d in spec.shape)  # type: ignore
                             for i in range(3))
            for spec in inputs}


def check_in_profile(profile: ProfileShapes, shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise TracefuseError when an input shape lies outside the profile (TensorRT would refuse it)."""
    for name, shape in shapes.items():
        lo, _, hi = profile[name]
        if any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi)):
            raise TracefuseError(
                f"input '{name}' has shape {list(shape)}, outside the engine's optimization profile",
                found=f"profile min {list(lo)}, max {list(hi)}",
                fix="rebuild with wider ranges: --runtime-option shapes=AXIS=MIN:OPT:MAX (or compile --shapes)")


def _ort_shapes(profile: ProfileShapes, index: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[index])}" for name, shapes in profile.items())


def artifact_precision(manifest: Manifest) -> str:
    """'fp16' when the fp16 pass made the graph, 'int8' when a quantize pass did, else 'fp32'."""
    names = [str(p.get("name", "")) for p in manifest.passes]
    if "fp16" in names:
        return "fp16"
    if any(n.startswith("quantize") for n in names):
        return "int8"
    return "fp32"


def cuda_provider_options(opts: GpuOptions) -> dict[str, str]:
    """CUDAExecutionProvider options: the device, the best-kernel search that suits fixed shapes, and TF32 off
    unless `tf32` allows it (so an fp32 graph computes in fp32 and validates at fp32 tolerances)."""
    return {"device_id": str(opts.device_id), "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": "1", "use_tf32": "1" if opts.tf32 else "0"}


def trt_provider_options(manifest: Manifest, opts: GpuOptions) -> dict[str, str]:
    """TensorrtExecutionProvider options: fp16 kernels (for an fp16 graph, or when fp16=1 asks for them), engine
    and timing caches, workspace, and explicit min/opt/max profile shapes for every input."""
    cache = opts.cache_dir / "ort-trt"
    fp16 = opts.fp16 if opts.fp16 is not None else artifact_precision(manifest) == "fp16"
    options = {
        "device_id": str(opts.device_id),
        "trt_fp16_enable": "1" if fp16 else "0",
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(cache),
    }
    if opts.workspace:
        options["trt_max_workspace_size"] = str(opts.workspace)
    profile = profile_shapes(manifest.inputs, opts.shapes, manifest.validation_shapes)
    if any(isinstance(d, str) for spec in manifest.inputs for d in spec.shape):
        for index, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            options[key] = _ort_shapes(profile, index)
    return options


def validation_tolerance(manifest: Manifest, *, fp16_kernels: bool) -> dict[str, float]:
    """The tolerance floor for validating on a GPU runtime: FP16_TOLERANCE when the graph is fp16 or the
    engine may pick fp16 kernels, else none (the manifest's tolerance applies)."""
    return dict(FP16_TOLERANCE) if fp16_kernels or artifact_precision(manifest) == "fp16" else {}


def check_providers(asked: str, active: Sequence[str], *, allow_fallback: bool, available: Sequence[str] = ()) -> bool:
    """True when `asked` is the session's first provider. Otherwise ONNX Runtime fell back silently: raise
    TracefuseError, or with `allow_fallback` log a warning and return False."""
    if active and active[0] == asked:
        return True
    message = (f"ONNX Runtime did not put the session on {asked}; it fell back to "
               f"{', '.join(active) or 'nothing'}")
    if allow_fallback:
        logger.warning("%s (allowed by allow_fallback); timings and precision are not the GPU's", message)
        return False
    raise TracefuseError(
        message,
        found=f"providers available in this onnxruntime build: {', '.join(available) or 'unknown'}",
        fix="install the GPU build (pip install 'tracefuse[gpu]', which replaces onnxruntime with onnxruntime-gpu) "
            "on a machine with an NVIDIA GPU and matching CUDA / TensorRT libraries, or pass "
            "--runtime-option allow_fallback=1 to run on the fallback anyway",
    )


def engine_cache_key(graph_sha256: str, trt_version: str, gpu_name: str, profile: ProfileShapes,
                     flags: Mapping[str, Any]) -> str:
    """The engine cache key: sha256 of (graph hash, TensorRT version, GPU name, profile, build flags)."""
    payload = json.dumps({"graph": graph_sha256, "tensorrt": trt_version, "gpu": gpu_name,
                          "profile": {k: [list(s) for s in v] for k, v in sorted(profile.items())},
                          "flags": dict(sorted(flags.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
