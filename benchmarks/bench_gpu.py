"""GPU latency, throughput and fp16 accuracy of tracefuse's engines against PyTorch eager fp16 (SDPA), as ratios.

Issue 8's targets, on an H100 or H200 (one run):
- BERT-base (random weights, seeded), batch 1, sequence 128, fp16: TensorRT engine <= 0.35 x PyTorch eager fp16
  latency (p50); ONNX Runtime CUDA with fused attention <= 0.6 x.
- BERT-base, batch 32, sequence 512, fp16: throughput >= 2 x PyTorch eager fp16 SDPA.
- fp16 validation: cosine >= 0.999 to the fp32 reference on all-MiniLM-L6-v2's real weights (the sentences in
  examples/sentences.txt), on the TensorRT engine and on ORT CUDA.

Engines: `tensorrt` (tensorrt preset + fp16 pass, compiled with `tracefuse compile`), `ort-cuda` (cuda preset:
ONNX Runtime's fused attention / LayerNorm / GELU, + fp16 pass). Every engine is timed in its own process by
tracefuse.api_bench (same method as benchmarks/bench_cpu.py). Exit status 1 when a target is missed.

Usage: python benchmarks/bench_gpu.py [--iters 100] [--warmup 20] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = ((1, 128), (32, 512))
PROFILE = "batch=1:8:32,sequence=1:128:512"


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def prepare(source: str, name: str, work: Path) -> dict[str, Path]:
    """Export `source` and build the fp16 variants; returns {"tensorrt": engine artifact, "ort-cuda": ONNX}."""
    from tracefuse import api
    from tracefuse.api_gpu import compile_artifact
    from tracefuse.api_passes import optimize
    from tracefuse.passes.manager import preset_passes

    plain = work / f"{name}-plain"
    if not (plain / "manifest.json").exists():
        log(f"exporting {name}")
        api.export(source, plain, validate=False, overwrite=True)
    trt_graph = optimize(plain, work / f"{name}-trt-fp16", passes=[*preset_passes("tensorrt"), "fp16"],
                         validate=False, overwrite=True).artifact.path
    cuda_graph = optimize(plain, work / f"{name}-cuda-fp16", passes=[*preset_passes("cuda"), "fp16"],
                          validate=False, overwrite=True).artifact.path
    log(f"compiling the {name} TensorRT engine")
    engine = compile_artifact(trt_graph, work / f"{name}-engine", validate=False, overwrite=True,
                              runtime_options={"shapes": PROFILE, "cache_dir": str(work / "trt-cache")})
    log(f"  TensorRT {engine.build.get('tensorrt')}: {engine.build.get('layers')} layers "
        f"{engine.build.get('precisions')}, parse errors {len(engine.build.get('parse_errors', []))}")
    return {"tensorrt": engine.artifact.path, "ort-cuda": cuda_graph}


def speed(variants: dict[str, Path], args) -> list[dict]:
    """Time eager fp16 and each engine at SHAPES; rows carry ratios to eager."""
    from tracefuse.api_bench import bench

    rows = []
    for batch, seq in SHAPES:
        eager_rows = None
        for engine, path in variants.items():
            options = {"cache_dir": str(Path(args.workdir) / "trt-cache")} if engine == "tensorrt" else None
            result = bench(path, [engine], batch_sizes=[batch], seq_lens=[seq], iters=args.iters, warmup=args.warmup,
                           eager=eager_rows is None, runtime_options=options)
            if eager_rows is None:
                eager_rows = [r for r in result["rows"] if r["engine"] == "torch-eager"]
                rows += eager_rows
                device = result["device"]
            eager = eager_rows[0]
            for row in result["rows"]:
                if row["engine"] != engine:
                    continue
                if "error" not in row and "error" not in eager:
                    row["latency_vs_eager"] = row["p50_ms"] / eager["p50_ms"]
                    row["throughput_vs_eager"] = row["samples_per_s"] / eager["samples_per_s"]
                rows.append(row)
                log(f"  b{batch} s{seq} {engine}: {row.get('p50_ms', row.get('error'))} ms p50")
    for row in rows:
        row["device"] = device
    return rows


def accuracy(variants: dict[str, Path], texts: list[str]) -> dict[str, float]:
    """Worst cosine of each fp16 engine's outputs to PyTorch fp32, on the sentences and the generated cases."""
    from tracefuse import api

    worst = {}
    for engine, path in variants.items():
        report = api.validate(path, runtime=engine, texts=texts)
        worst[engine] = min(o["cosine"] for c in report["cases"] for o in c["outputs"] if "cosine" in o)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workdir", default=str(Path.home() / ".cache" / "tracefuse-bench-gpu"))
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import BertConfig, BertModel

    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "bert-base-random"
    if not (ckpt / "config.json").exists():
        torch.manual_seed(0)
        BertModel(BertConfig()).eval().save_pretrained(ckpt)
    rows = speed(prepare(str(ckpt), "bert", work), args)
    texts = [t.strip() for t in (HERE.parent / "examples" / "sentences.txt").read_text().splitlines() if t.strip()]
    cosines = accuracy(prepare("builtin:all-MiniLM-L6-v2", "minilm", work), texts)

    def ratio(engine, batch, key):
        row = next((r for r in rows if (r["engine"], r["batch"]) == (engine, batch)), {})
        return row.get(key)

    targets = [
        ("TensorRT latency b1 s128 <= 0.35 x eager", ratio("tensorrt", 1, "latency_vs_eager"), lambda v: v <= 0.35),
        ("ORT CUDA latency b1 s128 <= 0.6 x eager", ratio("ort-cuda", 1, "latency_vs_eager"), lambda v: v <= 0.6),
        ("TensorRT throughput b32 s512 >= 2 x eager", ratio("tensorrt", 32, "throughput_vs_eager"), lambda v: v >= 2),
        ("ORT CUDA throughput b32 s512 >= 2 x eager", ratio("ort-cuda", 32, "throughput_vs_eager"), lambda v: v >= 2),
        *((f"MiniLM fp16 cosine on {e} >= 0.999", c, lambda v: v >= 0.999) for e, c in cosines.items()),
    ]
    out = sys.stdout
    out.write(f"\n{rows[0]['device']}, {args.iters} timed calls after {args.warmup} warm-up, one process per engine, "
              f"load average {os.getloadavg()[0]:.1f}\n\n")
    out.write("| batch | seq | engine | p50 ms | p99 ms | samples/s | x eager latency | x eager throughput | GPU MB |\n"
              "|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        if "error" in r:
            out.write(f"| {r['batch']} | {r['sequence']} | {r['engine']} | error: {r['error']} | | | | | |\n")
            continue
        lat, thr = r.get("latency_vs_eager"), r.get("throughput_vs_eager")
        out.write(f"| {r['batch']} | {r['sequence']} | {r['engine']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['samples_per_s']:.0f} | {'-' if lat is None else f'{lat:.2f}'} | "
                  f"{'-' if thr is None else f'{thr:.2f}'} | {r['memory_mb']:.0f} |\n")
    out.write("\n| target | measured | met |\n|---|---:|---|\n")
    missed = 0
    for label, value, ok in targets:
        met = value is not None and ok(value)
        missed += not met
        out.write(f"| {label} | {'-' if value is None else f'{value:.4f}'} | {'yes' if met else 'NO'} |\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cosines": cosines}, indent=2))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
