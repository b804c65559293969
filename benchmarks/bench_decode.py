"""KV-cache decode step: ONNX Runtime CPU (tracefuse decoder artifact) vs PyTorch eager, ratio of medians.

One decode step = one new token for a batch of 1 on a cache of `--past` positions. Both engines compute
the same step: the artifact's graph through `tracefuse.load(...).infer` (the call `generate` makes), and
the model's eager forward with a `DynamicCache` holding the same past (built before the timer starts,
as generate() would have it). Each engine runs in its own process (torch's OpenMP threads keep spinning
after a call and would slow an ORT session beside them), the processes alternate over rounds (the order
flips each round), each reports the median of its timed calls, and an engine's figure is the median of
its round medians. The ratio printed is ORT / PyTorch: below 1 means the ONNX decode step is faster.

Usage: python benchmarks/bench_decode.py [--model tiny:llama] [--past 64] [--rounds 4] [--iters 200]
       [--threads 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time_calls(fn, iters: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        times.append(fn())
    return times


def worker(engine: str, artifact: str, past: int, iters: int, threads: int) -> None:
    """Time one decode step on one engine; print {"median_ms": ...} as JSON."""
    import numpy as np

    import tracefuse
    from tracefuse.artifact import load_artifact
    from tracefuse.validation.inputs import generate_inputs

    manifest = load_artifact(artifact).manifest
    sizes = {"batch": 1, "sequence": 1, "past_sequence": past, "total_sequence": past + 1}
    feeds = generate_inputs(manifest.inputs, sizes, seed=0)
    feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
    if engine == "ort":
        runner = tracefuse.load(artifact, threads=threads)

        def step() -> float:
            start = time.perf_counter()
            runner.infer(feeds)
            return (time.perf_counter() - start) * 1e3
    else:
        import torch
        from transformers import DynamicCache

        from tracefuse.exporters.sources import load_source

        torch.set_num_threads(threads)
        model = load_source(manifest.source["id"], manifest.task).module
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
        layers = sum(1 for k in feeds if k.startswith("past_key_values.")) // 2
        kwargs = {k: v for k, v in tensors.items() if not k.startswith("past_key_values.")}

        @torch.no_grad()
        def step() -> float:
            cache = DynamicCache(config=model.config)
            for i in range(layers):
                cache.update(tensors[f"past_key_values.{i}.key"], tensors[f"past_key_values.{i}.value"], i)
            start = time.perf_counter()
            model(**kwargs, past_key_values=cache, use_cache=True)
            return (time.perf_counter() - start) * 1e3

    times = _time_calls(step, iters)
    print(json.dumps({"engine": engine, "median_ms": statistics.median(times)}))


def _run_worker(engine: str, artifact: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--worker", engine, "--artifact", str(artifact), "--past", str(args.past),
           "--iters", str(args.iters), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["median_ms"])


def main() -> None:
    """Export (or reuse) the decoder artifact, alternate the engine processes, print the ratio of medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:llama")
    parser.add_argument("--past", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", choices=("ort", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.artifact, args.past, args.iters, args.threads)
        return

    from tracefuse import api

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-decode-"))
    artifact = workdir / args.model.replace(":", "-")
    if not (artifact / "manifest.json").is_file():
        print(f"exporting {args.model} (text-generation, KV cache) to {artifact}", flush=True)
        api.export(args.model, artifact, task="text-generation", validate=False)
    medians: dict[str, list[float]] = {"ort": [], "torch": []}
    for r in range(args.rounds):
        order = ("ort", "torch") if r % 2 == 0 else ("torch", "ort")
        for engine in order:
            medians[engine].append(_run_worker(engine, artifact, args))
        print(f"round {r + 1}: ort {medians['ort'][-1]:.3f} ms, torch {medians['torch'][-1]:.3f} ms", flush=True)
    ort_ms, torch_ms = statistics.median(medians["ort"]), statistics.median(medians["torch"])
    print(f"decode step, {args.model}, batch 1, past {args.past}, {args.threads} thread(s): "
          f"ONNX Runtime CPU {ort_ms:.3f} ms, PyTorch eager {torch_ms:.3f} ms, "
          f"ratio ORT/PyTorch {ort_ms / torch_ms:.3f}")


if __name__ == "__main__":
    main()
