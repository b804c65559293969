"""Benchmark figures: latency percentiles, throughput, ratios to PyTorch eager, and the Markdown table.

Pure functions on lists of per-call milliseconds; tracefuse.api_bench does the timing (one process per
engine) and calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TORCH_EAGER = "torch-eager"


def summarize_times(times_ms: Sequence[float], batch: int, sequence: int | None) -> dict[str, float]:
    """p50/p90/p99/mean latency (ms) and throughput (samples/s, tokens/s at the median) of one cell."""
    if not times_ms:
        raise ValueError("no timed calls to summarize")
    t = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = (float(np.percentile(t, q)) for q in (50, 90, 99))
    stats = {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(t.mean()), "calls": len(t),
             "samples_per_s": batch / (p50 / 1e3)}
    if sequence:
        stats["tokens_per_s"] = batch * sequence / (p50 / 1e3)
    return stats


def add_ratios(rows: list[dict[str, Any]], baseline: str = TORCH_EAGER) -> None:
    """Set `latency_vs_eager` (p50 / eager's p50) and `throughput_vs_eager` on every row whose shape the
    baseline also ran; None where it did not."""
    base = {(r["batch"], r.get("sequence")): r for r in rows if r["engine"] == baseline and "p50_ms" in r}
    for row in rows:
        ref = base.get((row["batch"], row.get("sequence")))
        ok = ref is not None and "p50_ms" in row
        row["latency_vs_eager"] = row["p50_ms"] / ref["p50_ms"] if ok else None
        row["throughput_vs_eager"] = row["samples_per_s"] / ref["samples_per_s"] if ok else None


def render_markdown(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table (one row per engine and shape), with the device and load."""
    lines = [f"device: {result['device']} · precision: {result['precision']} · {result['warmup']} warm-up + "
             f"{result['iters']} timed calls per cell · load average {result['load_average']:.1f}", "",
             "| engine | batch | seq | p50 ms | p90 ms | p99 ms | samples/s | × eager latency | memory MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['batch']} | {r.get('sequence') or '-'} | error: {r['error']} "
                         "| | | | | |")
            continue
        ratio = "-" if r.get("latency_vs_eager") is None else f"{r['latency_vs_eager']:.2f}"
        mem = "-" if r.get("memory_mb") is None else f"{r['memory_mb']:.0f}"
        lines.append(f"| {r['engine']} | {r['batch']} | {r.get('sequence') or '-'} | {r['p50_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['samples_per_s']:.1f} | {ratio} | {mem} |")
    return "\n".join(lines)
