"""Build serialized TensorRT engines from ONNX graphs with the `tensorrt` Python API (imported lazily).

Precision: by default the network is strongly typed: every tensor keeps the type the ONNX graph gives it,
so fp16 means an fp16 graph (`tracefuse optimize --passes ...,fp16`) and int8/fp8 means explicit Q/DQ
nodes. TensorRT 11 has only strongly typed networks (its FP16/INT8 builder flags are gone); TensorRT 10
also builds weakly typed networks (`strongly_typed=0`), where `fp16=1` sets the FP16 builder flag.

Caches: the timing cache (one file per TensorRT version and GPU) makes later builds faster; built engines
are cached under a key of (graph sha256, TensorRT version, GPU name, profile, flags), so the `tensorrt`
runner builds an ONNX artifact once per machine.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.artifact import Artifact
from tracefuse.errors import MissingDependencyError, TracefuseError
from tracefuse.runtimes.gpu_config import (
    GpuOptions,
    ProfileShapes,
    check_in_profile,
    engine_cache_key,
    profile_shapes,
)

logger = logging.getLogger(__name__)
INSTALL = ("pip install 'tracefuse[gpu]' on a machine with an NVIDIA GPU and CUDA 12 "
           "(TensorRT wheels are Linux x86-64 and aarch64 only)")


class EngineBuildError(TracefuseError):
    """TensorRT could not parse the graph or build an engine; `report` lists the nodes that failed."""

    def __init__(self, problem: str, *, report: dict[str, Any], found: str | None = None, fix: str | None = None):
        super().__init__(problem, found=found, fix=fix)
        self.report = report


@dataclass
class BuildResult:
    """A serialized engine and what the build reported (parse errors, layer precisions, flags, seconds)."""

    engine: bytes
    report: dict[str, Any] = field(default_factory=dict)


def import_tensorrt():
    """The tensorrt module; MissingDependencyError naming the extra to install when it is absent."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError("the tensorrt runtime needs NVIDIA TensorRT's Python package (tensorrt>=10)",
                                     found=f"import tensorrt failed: {exc}", fix=INSTALL) from exc
    return tensorrt


def require_cuda(device_id: int = 0) -> str:
    """The name of CUDA device `device_id` (torch sees it); TracefuseError when there is none."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() <= device_id:
        raise MissingDependencyError(
            f"the GPU runtimes need CUDA device {device_id}, and torch sees "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA device(s)",
            found=f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})",
            fix="run on a machine with an NVIDIA GPU and a CUDA build of torch; choose another device_id")
    return torch.cuda.get_device_name(device_id)


def trt_major(trt) -> int:
    """TensorRT's major version."""
    return int(re.match(r"\d+", trt.__version__).group(0))


def _parse_error(error) -> dict[str, Any]:
    entry: dict[str, Any] = {"desc": error.desc()}
    for key in ("code", "node", "node_name", "node_operator"):
        try:
            value = getattr(error, key)()
        except (AttributeError, TypeError):
            continue
        entry[key] = str(value) if key == "code" else value
    return entry


def _network_flags(trt, strongly_typed: bool) -> int:
    if not strongly_typed:
        if trt_major(trt) >= 11:
            raise TracefuseError(f"TensorRT {trt.__version__} builds only strongly typed networks",
                                 fix="drop strongly_typed=0; make the graph fp16 with the fp16 pass instead of fp16=1")
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise TracefuseError(f"TensorRT {trt.__version__} has no strongly typed networks",
                             fix="upgrade to tensorrt>=10, or pass --runtime-option strongly_typed=0")
    return 1 << int(flag)


def _precision_flags(trt, config, *, strongly_typed: bool, fp16: bool, tf32: bool = False) -> None:
    tf32_flag = getattr(trt.BuilderFlag, "TF32", None)
    if tf32_flag is not None and not tf32:
        config.clear_flag(tf32_flag)  # on by default: fp32 matmuls would lose fp32 precision
    if not fp16:
        return
    if strongly_typed:
        raise TracefuseError(
            "fp16=1 asks the builder to choose fp16 kernels, but a strongly typed network takes its precision "
            "from the graph", fix="run the fp16 pass first (tracefuse optimize ART -o OUT --passes fp16), or, on "
            "TensorRT 10, add --runtime-option strongly_typed=0")
    flag = getattr(trt.BuilderFlag, "FP16", None)
    if flag is None:
        raise TracefuseError(f"TensorRT {trt.__version__} has no FP16 builder flag (removed in TensorRT 11)",
                             fix="run the fp16 pass first: tracefuse optimize ART -o OUT --passes fp16")
    config.set_flag(flag)


_PRECISIONS = (("fp16", ("fp16", "half")), ("bf16", ("bf16", "bfloat")), ("fp8", ("fp8",)), ("int8", ("int8",)),
               ("int32", ("int32",)), ("int64", ("int64",)), ("fp32", ("fp32", "float")))


def layer_precision(fmt: str) -> str:
    """The precision named by an engine inspector's 'Format/Datatype' string, e.g. 'Row major linear FP16'."""
    text = fmt.lower()
    return next((name for name, keys in _PRECISIONS if any(k in text for k in keys)), "other")


def layer_report(trt, engine_bytes: bytes) -> dict[str, Any]:
    """Layer count and a histogram of layer precisions (outputs' data types) from the engine inspector."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    try:
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    except (AttributeError, ValueError, RuntimeError) as exc:
        return {"error": f"the engine inspector gave no layer information: {exc}"}
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    precisions: Counter[str] = Counter()
    for layer in layers:
        outs = layer.get("Outputs") or [{}]
        fmt = str(outs[0].get("Format/Datatype", "unknown")) if isinstance(outs[0], dict) else "unknown"
        precisions[layer_precision(fmt)] += 1
    return {"layers": len(layers) or len(info.get("Layers", [])), "precisions": dict(precisions)}


def build_engine(onnx_path: Path, profile: ProfileShapes, *, strongly_typed: bool = True, fp16: bool = False,
                 tf32: bool = False, workspace: int | None = None, timing_cache: Path | None = None) -> BuildResult:
    """Parse `onnx_path` and build a serialized engine with one optimization profile.

    Raises EngineBuildError (its `report` lists every parse error: node, operator, message) when the
    parser refuses nodes or the build fails.
    """
    import time

    trt = import_tensorrt()
    start = time.perf_counter()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, trt_logger)
    parsed = parser.parse_from_file(str(onnx_path))
    errors = [_parse_error(parser.get_error(i)) for i in range(parser.num_errors)]
    report: dict[str, Any] = {"tensorrt": trt.__version__, "strongly_typed": strongly_typed, "fp16_flag": fp16,
                              "tf32": tf32, "parse_errors": errors}
    if not parsed:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse {onnx_path.name}: {len(errors)} node(s) failed",
            report=report, found="; ".join(f"{e.get('node_name') or e.get('node')} ({e.get('node_operator', '?')}): "
                                           f"{e['desc']}" for e in errors[:5]),
            fix="optimize the graph for TensorRT first (tracefuse optimize ART -o OUT --preset tensorrt), which "
                "keeps only standard ONNX ops; or run it on ort-trt, which runs the unsupported nodes on CUDA")
    config = builder.create_builder_config()
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    _precision_flags(trt, config, strongly_typed=strongly_typed, fp16=fp16, tf32=tf32)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        if name in network_inputs:
            trt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(trt_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build an engine for {onnx_path.name}",
                               report=report, fix="run with -v to see TensorRT's log; check the profile shapes "
                               "and the workspace (--runtime-option workspace=8G)")
    if timing_cache is not None:
        atomic_write(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    engine = bytes(memoryview(serialized))
    report.update(layer_report(trt, engine), build_seconds=round(time.perf_counter() - start, 2))
    return BuildResult(engine, report)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (no half-written cache entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def engine_for(artifact: Artifact, opts: GpuOptions) -> tuple[bytes, ProfileShapes, dict[str, Any]]:
    """(engine bytes, profile, build report) for an ONNX artifact: from the engine cache when this graph,
    TensorRT version, GPU, profile and flags were built before, else built now and cached."""
    trt = import_tensorrt()
    gpu = require_cuda(opts.device_id)
    m = artifact.manifest
    profile = profile_shapes(m.inputs, opts.shapes, m.validation_shapes)
    for sizes in m.validation_shapes if not opts.shapes else ():
        check_in_profile(profile, {s.name: [d if isinstance(d, int) else sizes[d] for d in s.shape]
                                   for s in m.inputs})
    flags = {"strongly_typed": opts.strongly_typed, "fp16": bool(opts.fp16), "tf32": opts.tf32,
             "workspace": opts.workspace}
    graph_sha = str(m.files.get(m.graph, {}).get("sha256", ""))
    key = engine_cache_key(graph_sha, trt.__version__, gpu, profile, flags)
    engine_path = opts.cache_dir / "engines" / f"{key}.engine"
    report_path = engine_path.with_suffix(".json")
    if graph_sha and engine_path.is_file() and report_path.is_file():
        logger.info("engine cache hit: %s", engine_path)
        report = json.loads(report_path.read_text())
        return engine_path.read_bytes(), profile, {**report, "cache": "hit", "cache_key": key}
    timing = opts.cache_dir / f"timing-{trt.__version__}-{re.sub(r'[^A-Za-z0-9.]+', '_', gpu)}.cache"
    result = build_engine(artifact.graph_path, profile, strongly_typed=opts.strongly_typed, fp16=bool(opts.fp16),
                          tf32=opts.tf32, workspace=opts.workspace, timing_cache=timing)
    report = {**result.report, "gpu": gpu, "profile": {k: [list(s) for s in v] for k, v in profile.items()}}
    if graph_sha:  # a manifest-less graph has no hash to key the cache with
        atomic_write(engine_path, result.engine)
        atomic_write(report_path, json.dumps(report, indent=2).encode())
    return result.engine, profile, {**report, "cache": "miss", "cache_key": key}
