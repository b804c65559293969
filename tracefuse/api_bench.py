"""`tracefuse bench`: latency percentiles, throughput and memory of an artifact on one or more runtimes, beside
PyTorch eager (on CUDA: fp16 with SDPA attention; on the CPU: fp32), at every batch size × sequence length.

Method (as benchmarks/bench_cpu.py): every engine runs in its own process (a torch session's threads or
CUDA allocations must not weigh on another engine), which times every shape after its warm-up calls. On
CUDA, inputs are put on the device once and the timed calls run on device tensors (IO binding, no host
copies) and end with a device synchronization; memory is the device memory the process holds after its
calls, less what it held before loading the engine. On the CPU memory is the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracefuse.artifact import Artifact, load_artifact
from tracefuse.errors import TracefuseError
from tracefuse.validation.bench_stats import TORCH_EAGER, add_ratios, summarize_times

GPU_RUNTIMES = ("ort-cuda", "ort-trt", "tensorrt")


def _sizes(art: Artifact, batch: int, sequence: int) -> dict[str, int]:
    axes = {d for s in art.manifest.inputs for d in s.shape if isinstance(d, str)}
    extra = sorted(axes - {"batch", "sequence"})
    if extra:
        raise TracefuseError("tracefuse bench times artifacts whose dynamic axes are batch and sequence",
                             found=f"also: {', '.join(extra)}", fix="benchmark an encoder artifact (no KV cache)")
    return {k: v for k, v in (("batch", batch), ("sequence", sequence)) if k in axes}


def _reference_source(art: Artifact, reference: str | None) -> str:
    source = art.manifest.source
    if reference:
        return reference
    if source.get("kind") == "factory":
        raise TracefuseError("this artifact's source is Python code (module:factory); tracefuse does not run code "
                             "named by a manifest", fix=f"pass --reference {source.get('id')} if you trust it")
    found = source.get("path") if source.get("kind") == "local" else source.get("id")
    if not found:
        raise TracefuseError("the manifest records no source for PyTorch eager", fix="pass --reference MODEL")
    return str(found)


# ── the worker: one engine, one process ─────────────────────────────────────────────────────────

def _memory_probe(device: str) -> Callable[[], float]:
    if device == "cuda":
        import torch

        torch.cuda.init()
        free, total = torch.cuda.mem_get_info()
        base = total - free
        return lambda: ((lambda f, t: (t - f - base) / 2**20)(*torch.cuda.mem_get_info()))
    import resource

    return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _torch_call(cfg: dict[str, Any], art: Artifact) -> Callable[[dict[str, Any]], Callable[[], None]]:
    import torch

    from tracefuse.exporters.cache_wrapper import make_wrapper
    from tracefuse.exporters.sources import load_source

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    m = art.manifest
    loaded = load_source(cfg["reference"], None if m.task == "custom" else m.task)
    module = loaded.module
    if hasattr(module, "set_attn_implementation"):
        try:
            module.set_attn_implementation("sdpa")
        except (ValueError, ImportError, AttributeError) as exc:  # a model without SDPA keeps its own attention
            sys.stderr.write(f"note: SDPA not available for this model ({exc}); eager attention\n")
    module = module.to(cfg["device"], torch.float16 if cfg["fp16"] else torch.float32).eval()
    wrapper = make_wrapper(module, tuple(s.name for s in m.inputs), tuple(s.name for s in m.outputs),
                           use_cache=m.export.get("use_cache", True), constants=m.export.get("constants"))

    def prepare(feeds: dict[str, Any]) -> Callable[[], None]:
        args = [torch.from_numpy(feeds[s.name]).to(cfg["device"]) for s in m.inputs]

        def call() -> None:
            with torch.inference_mode():
                wrapper(*args)
        return call
    return prepare


def _runtime_call(cfg: dict[str, Any], art: Artifact) -> Callable[[dict[str, Any]], Callable[[], None]]:
    from tracefuse.runtimes import open_runner

    runner = open_runner(art, cfg["engine"], threads=cfg["threads"], options=cfg["options"] or None).open()

    def prepare(feeds: dict[str, Any]) -> Callable[[], None]:
        if hasattr(runner, "bind"):  # ONNX Runtime GPU runners: inputs on the device once, IO binding
            binding = runner.bind(feeds)
            return lambda: runner.run_bound(binding)
        if hasattr(runner, "infer_device"):  # native TensorRT: torch CUDA tensors in and out
            import torch

            tensors = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
            return lambda: runner.infer_device(tensors)
        return lambda: runner.infer(feeds)
    return prepare


def worker(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Time one engine at every shape of `cfg` in this process; returns one row per shape."""
    from tracefuse.validation.inputs import generate_inputs

    art = load_artifact(cfg["artifact"])
    memory = _memory_probe(cfg["device"])
    sync = lambda: None  # noqa: E731
    if cfg["device"] == "cuda":
        import torch

        sync = torch.cuda.synchronize
    try:
        prepare = (_torch_call if cfg["engine"] == TORCH_EAGER else _runtime_call)(cfg, art)
    except Exception as exc:  # noqa: BLE001 - an engine that cannot open is reported on every shape
        error = f"{type(exc).__name__}: {str(exc).strip()[:400]}"
        return [{"engine": cfg["engine"], "batch": b, "sequence": s, "error": error} for b, s in cfg["shapes"]]
    rows = []
    for batch, sequence in cfg["shapes"]:
        row: dict[str, Any] = {"engine": cfg["engine"], "batch": batch, "sequence": sequence}
        try:
            call = prepare(generate_inputs(art.manifest.inputs, _sizes(art, batch, sequence), seed=batch + sequence))
            for _ in range(cfg["warmup"]):
                call()
            sync()
            times = []
            for _ in range(cfg["iters"]):
                start = time.perf_counter()
                call()
                sync()
                times.append((time.perf_counter() - start) * 1e3)
            row.update(summarize_times(times, batch, sequence), memory_mb=memory())
        except Exception as exc:  # noqa: BLE001 - one failing shape (e.g. out of memory) is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc) else ''}"
        rows.append(row)
    return rows


# ── the driver ──────────────────────────────────────────────────────────────────────────────────

def bench(
    artifact: str | os.PathLike[str],
    runtimes: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    seq_lens: Sequence[int] = (128, 512),
    iters: int = 50,
    warmup: int = 10,
    eager: bool = True,
    fp16: bool | None = None,
    reference: str | None = None,
    threads: int | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    timeout_s: float = 1800,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Benchmark `artifact` on each runtime (and PyTorch eager unless `eager=False`), one process per engine.

    The device is CUDA when a GPU runtime is asked for, else the CPU; PyTorch eager runs in fp16 on CUDA
    unless `fp16=False` (fp32 on the CPU). Returns {"device", "precision", "rows": [...], ...}; a row has
    p50/p90/p99/mean ms, samples/s, tokens/s, memory_mb and ratios to eager, or "error".
    """
    from tracefuse.runtimes import RUNTIMES
    from tracefuse.runtimes.gpu_config import artifact_precision

    art = load_artifact(artifact)
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise TracefuseError(f"unknown runtime(s): {', '.join(unknown) or '(none given)'}",
                             fix=f"use one or more of: {', '.join(RUNTIMES)}")
    if iters < 1 or warmup < 0 or not batch_sizes or not seq_lens or min([*batch_sizes, *seq_lens]) < 1:
        raise TracefuseError("bench needs iters >= 1, warm-up >= 0, and positive batch sizes and sequence lengths",
                             found=f"iters {iters}, warmup {warmup}, batches {list(batch_sizes)}, "
                                   f"sequences {list(seq_lens)}")
    device = "cuda" if any(r in GPU_RUNTIMES for r in runtimes) else "cpu"
    if device == "cuda":
        from tracefuse.runtimes.trt_build import require_cuda

        require_cuda(int((runtime_options or {}).get("device_id", 0)))
    eager_fp16 = device == "cuda" if fp16 is None else fp16
    if eager_fp16 and device == "cpu":
        raise TracefuseError("PyTorch eager fp16 is timed on CUDA only", fix="drop --fp16, or bench a GPU runtime")
    has_seq = "sequence" in _sizes(art, 1, 1)
    shapes = [(b, s if has_seq else None) for b in batch_sizes for s in (seq_lens if has_seq else [None])]
    engines = ([TORCH_EAGER] if eager else []) + list(runtimes)
    base = {"artifact": str(art.path), "shapes": shapes, "iters": iters, "warmup": warmup, "device": device,
            "fp16": eager_fp16, "threads": threads, "options": dict(runtime_options or {}),
            "reference": _reference_source(art, reference) if eager else None}
    rows = []
    for engine in engines:
        progress(f"timing {engine} ({len(shapes)} shapes)")
        rows += _run_worker({**base, "engine": engine}, timeout_s)
    add_ratios(rows)
    return {"artifact": str(art.path), "device": _device_name(device), "precision": artifact_precision(art.manifest),
            "eager_dtype": "float16" if eager_fp16 else "float32", "iters": iters, "warmup": warmup,
            "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count(), "rows": rows}


def _run_worker(cfg: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
    try:
        proc = subprocess.run([sys.executable, "-m", "tracefuse.api_bench", json.dumps(cfg)], capture_output=True,
                              text=True, timeout=timeout_s, env={"HF_HUB_OFFLINE": "1", **os.environ})
    except subprocess.TimeoutExpired:
        return [{"engine": cfg["engine"], "batch": b, "sequence": s, "error": f"timed out after {timeout_s:.0f}s"}
                for b, s in cfg["shapes"]]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return [{"engine": cfg["engine"], "batch": b, "sequence": s, "error": tail} for b, s in cfg["shapes"]]
    return json.loads(lines[-1])


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cuda (not available)"
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main(argv: Sequence[str]) -> None:
    """Worker entry point: `python -m tracefuse.api_bench CONFIG_JSON` prints the rows as one JSON line."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    cfg = json.loads(argv[0])
    cfg["shapes"] = [tuple(s) for s in cfg["shapes"]]
    rows = worker(cfg)
    sys.stdout.write("\n" + json.dumps(rows) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

