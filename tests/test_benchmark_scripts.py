"""The benchmark scripts run (timings are never asserted): bench_kernels' fused and plain graphs compute the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_kernels_pairs_agree():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"), "--rounds", "1",
                           "--iters", "3", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "µs" not in line]
    blocks = {r[0].strip(): r for r in rows}
    assert set(blocks) == {"residual + LayerNorm", "residual + RMSNorm", "bias + GELU", "QKV projection + attention"}
    for block, row in blocks.items():
        assert float(row[5]) > 0, block  # the fused / plain ratio is printed
        assert float(row[6]) < 1e-4, f"{block}: the fused op and its plain ops differ by {row[6]}"
