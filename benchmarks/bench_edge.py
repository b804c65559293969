"""LiteRT (TFLite fp32 and dynamic int8) latency beside PyTorch eager and ONNX Runtime, as ratios of medians.

Method (as bench_cpu.py): every engine runs in its own process, processes alternate over rounds (the
order rotates each round), each reports the median of its timed calls, and an engine's figure is the
median of its per-round medians; ratios are to PyTorch eager in the same run, all at 2 threads.
Accuracy: cosine of mean-pooled embeddings to PyTorch's, on the same tokenized sentences.

Model: all-MiniLM-L6-v2 (real weights), batch 1 × sequence 128 (examples/sentences.txt, first sentence,
padded to 128).

Usage: python benchmarks/bench_edge.py [--rounds 3] [--iters 20] [--workdir build/bench-edge]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THREADS = 2
SEQ = 128
MODEL = "builtin:all-MiniLM-L6-v2"
ENGINES = ("torch", "ort", "litert-fp32", "litert-int8")


def _feeds() -> dict[str, np.ndarray]:
    from tracefuse.exporters.sources import load_source

    checkpoint = load_source(MODEL, None).checkpoint_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    sentence = (HERE.parent / "examples" / "sentences.txt").read_text().splitlines()[0]
    enc = tok([sentence], padding="max_length", max_length=SEQ, truncation=True, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def _worker(engine: str, workdir: Path, iters: int) -> dict:
    feeds = dict(np.load(workdir / "feeds.npz"))
    if engine == "torch":
        import torch

        from tracefuse.exporters.sources import load_source

        torch.set_num_threads(THREADS)
        model = load_source(MODEL, None).module.eval()
        args = {k: torch.from_numpy(v) for k, v in feeds.items()}

        def call():
            with torch.inference_mode():
                return model(**args).last_hidden_state.numpy()
    else:
        from tracefuse import api

        art = {"ort": "onnx", "litert-fp32": "tflite", "litert-int8": "tflite-int8"}[engine]
        runner = api.load(workdir / art, threads=THREADS)
        names = [s.name for s in runner.inputs]
        typed = {s.name: feeds[s.name].astype(s.dtype) for s in runner.inputs if s.name in feeds}
        assert set(typed) == set(names)

        def call():
            return runner.infer(typed)["last_hidden_state"]
    out = call()
    for _ in range(3):
        call()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    pooled = (out * mask).sum(1) / mask.sum(1)
    np.save(workdir / f"pooled-{engine}.npy", pooled)
    return {"engine": engine, "median_ms": statistics.median(times)}


def _prepare(workdir: Path) -> None:
    from tracefuse import api
    from tracefuse.api_tflite import quantize_tflite

    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "feeds.npz", **_feeds())
    if not (workdir / "onnx").exists():
        api.export(MODEL, workdir / "onnx", validate=False)
    if not (workdir / "tflite").exists():
        api.export(MODEL, workdir / "tflite", format="tflite", options={"shapes": f"1x{SEQ}"}, validate=False)
    if not (workdir / "tflite-int8").exists():
        quantize_tflite(workdir / "tflite", workdir / "tflite-int8", validate=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-edge"))
    parser.add_argument("--worker", choices=ENGINES)
    args = parser.parse_args()
    if args.worker:
        sys.stdout.write(json.dumps(_worker(args.worker, args.workdir, args.iters)) + "\n")
        return
    _prepare(args.workdir)
    per_round: dict[str, list[float]] = {e: [] for e in ENGINES}
    for r in range(args.rounds):
        order = ENGINES[r % len(ENGINES):] + ENGINES[:r % len(ENGINES)]
        for engine in order:
            proc = subprocess.run([sys.executable, __file__, "--worker", engine, "--workdir", str(args.workdir),
                                   "--iters", str(args.iters)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(THREADS)}, check=True)
            per_round[engine].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
    ref = np.load(args.workdir / "pooled-torch.npy")
    base = statistics.median(per_round["torch"])
    rows = []
    for engine in ENGINES:
        pooled = np.load(args.workdir / f"pooled-{engine}.npy")
        cos = float((ref * pooled).sum() / np.linalg.norm(ref) / np.linalg.norm(pooled))
        med = statistics.median(per_round[engine])
        rows.append({"engine": engine, "median_ms": round(med, 2), "speedup_vs_torch": round(base / med, 2),
                     "cosine_to_torch": round(cos, 5)})
    sizes = {name: sum(p.stat().st_size for p in (args.workdir / name).rglob("*")
                       if p.is_file() and p.name != "manifest.json")
             for name in ("onnx", "tflite", "tflite-int8")}
    result = {"model": MODEL, "shape": f"1x{SEQ}", "threads": THREADS, "rounds": args.rounds, "rows": rows,
              "graph_bytes": sizes}
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
