"""ONNX Runtime CPU kernels: each fused op against the plain ops it replaces, at BERT-base shapes.

The `cpu` preset keeps a fusion only where the fused kernel measures faster on ONNX Runtime's CPU
execution provider; this script is the measurement behind each choice (tracefuse/passes/fusions.py,
manager.py). Each variant is a one-node-group graph timed in its own process (an ONNX Runtime session's
intra-op threads keep spinning after a call and would slow the next session in the same process), the
processes alternated over rounds; the figure is the median of the per-round medians, and each pair
prints the fused / unfused ratio (below 1: the fusion pays). ONNX Runtime's own graph rewrites are
limited to the basic level, so each graph runs as written. The outputs of each pair are compared too.

Usage: python benchmarks/bench_kernels.py [--rounds 3] [--iters 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SEQ, HIDDEN, FFN, HEADS = 128, 768, 3072, 12


def _model(nodes, inputs: dict[str, list[int]], inits: dict[str, np.ndarray], out_shape: list[int]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "kernel",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, shape) for k, shape in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return model.SerializeToString()


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"gamma": rng.standard_normal(HIDDEN).astype(np.float32),
            "beta": rng.standard_normal(HIDDEN).astype(np.float32),
            "bias": rng.standard_normal(FFN).astype(np.float32),
            "wqkv": (rng.standard_normal((HIDDEN, 3 * HIDDEN)) * 0.05).astype(np.float32),
            "bqkv": (rng.standard_normal(3 * HIDDEN) * 0.05).astype(np.float32)}


def variants() -> dict[str, tuple[str, bytes, dict[str, list[int]]]]:
    """{name: (pair, model bytes, input shapes)}; each pair is a fused op and the plain ops it replaces."""
    from onnx import helper

    w = _weights()
    node = helper.make_node
    hid = {"x": [1, SEQ, HIDDEN], "skip": [1, SEQ, HIDDEN]}
    ffn = {"x": [1, SEQ, FFN]}
    norm = {"gamma": w["gamma"], "beta": w["beta"]}
    attn_inits = {"wqkv": w["wqkv"], "bqkv": w["bqkv"], "split": np.array([HIDDEN] * 3, np.int64)}
    return {
        "SkipLayerNormalization": ("residual + LayerNorm", _model(
            [node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft",
                  epsilon=1e-12)], hid, norm, hid["x"]), hid),
        "Add + LayerNormalization": ("residual + LayerNorm", _model(
            [node("Add", ["x", "skip"], ["s"]),
             node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)],
            hid, norm, hid["x"]), hid),
        "SkipSimplifiedLayerNormalization": ("residual + RMSNorm", _model(
            [node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y"], domain="com.microsoft",
                  epsilon=1e-6)], hid, {"gamma": w["gamma"]}, hid["x"]), hid),
        "Add + SimplifiedLayerNormalization": ("residual + RMSNorm", _model(
            [node("Add", ["x", "skip"], ["s"]),
             node("SimplifiedLayerNormalization", ["s", "gamma"], ["y"], axis=-1, epsilon=1e-6)], hid,
            {"gamma": w["gamma"]}, hid["x"]), hid),
        "BiasGelu": ("bias + GELU", _model(
            [node("BiasGelu", ["x", "bias"], ["y"], domain="com.microsoft")], ffn, {"bias": w["bias"]}, ffn["x"]), ffn),
        "Add + Gelu": ("bias + GELU", _model(
            [node("Add", ["x", "bias"], ["s"]), node("Gelu", ["s"], ["y"], domain="com.microsoft")], ffn,
            {"bias": w["bias"]}, ffn["x"]), ffn),
        "Attention": ("QKV projection + attention", _model(
            [node("Attention", ["x", "wqkv", "bqkv"], ["y"], domain="com.microsoft", num_heads=HEADS)],
            {"x": hid["x"]}, attn_inits, hid["x"]), {"x": hid["x"]}),
        "MatMul + Add + MultiHeadAttention": ("QKV projection + attention", _model(
            [node("MatMul", ["x", "wqkv"], ["p"]), node("Add", ["p", "bqkv"], ["qkv"]),
             node("Split", ["qkv", "split"], ["q", "k", "v"], axis=2),
             node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=HEADS)],
            {"x": hid["x"]}, attn_inits, hid["x"]), {"x": hid["x"]}),
    }


def _feeds(shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in sorted(shapes.items())}


def worker(name: str, iters: int, threads: int) -> None:
    """Time one variant in this process; prints {"median_us", "checksum"} as JSON."""
    import onnxruntime as ort

    _, model, shapes = variants()[name]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = _feeds(shapes)
    for _ in range(20):
        out = session.run(None, feeds)[0]
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e6)
    np.save(os.environ["BENCH_KERNELS_OUT"], out)
    sys.stdout.write(json.dumps({"median_us": statistics.median(times)}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.iters, args.threads)
        return
    import tempfile

    import onnxruntime as ort

    names = list(variants())
    per_round: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                out_path = os.path.join(tmp, f"{names.index(name)}.npy")
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", name, "--iters", str(args.iters),
                     "--threads", str(args.threads)],
                    capture_output=True, text=True, check=True, env={**os.environ, "BENCH_KERNELS_OUT": out_path})
                per_round[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_us"])
                outputs[name] = np.load(out_path)
            sys.stderr.write(f"round {r + 1}/{args.rounds} done\n")
    medians = {n: statistics.median(v) for n, v in per_round.items()}
    pairs: dict[str, list[str]] = {}
    for name, (pair, _, _) in variants().items():
        pairs.setdefault(pair, []).append(name)
    sys.stdout.write(f"\nONNX Runtime {ort.__version__}, CPU, {args.threads} threads, {args.rounds} rounds × "
                     f"{args.iters} calls, [1, {SEQ}, {HIDDEN}] (FFN {FFN})\n\n")
    sys.stdout.write("| block | fused op | µs | plain ops | µs | fused / plain | max abs diff |\n"
                     "|---|---|---:|---|---:|---:|---:|\n")
    for pair, (fused, plain) in pairs.items():
        diff = float(np.abs(outputs[fused] - outputs[plain]).max())
        sys.stdout.write(f"| {pair} | {fused} | {medians[fused]:.0f} | {plain} | {medians[plain]:.0f} | "
                         f"{medians[fused] / medians[plain]:.2f} | {diff:.1e} |\n")


if __name__ == "__main__":
    main()
