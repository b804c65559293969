"""Validation: run a runtime and the reference on the same inputs and compare every output."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tracefuse.runtimes.base import Runner
from tracefuse.validation.metrics import compare

logger = logging.getLogger(__name__)


def validate_runner(
    runner: Runner,
    reference: Runner,
    cases: Sequence[tuple[str, dict[str, np.ndarray]]],
    tolerance: dict[str, float],
) -> dict[str, Any]:
    """Compare `runner` against `reference` on each named input case; returns the report dict.

    The report never raises on a mismatch: `passed` is False and each failing output says why.
    """
    atol, rtol = float(tolerance.get("atol", 1e-4)), float(tolerance.get("rtol", 1e-3))
    report_cases = []
    for name, feeds in cases:
        logger.info("validating case %s", name)
        expected = reference.infer(feeds)
        ref_ms = reference.last_latency_ms
        actual = runner.infer(feeds)
        outputs = []
        for spec in reference.outputs:
            if spec.name not in actual:
                outputs.append({"name": spec.name, "shape": list(expected[spec.name].shape), "passed": False,
                                "reason": f"the {runner.name} runtime did not return this output"})
                continue
            outputs.append(compare(spec.name, actual[spec.name], expected[spec.name], atol, rtol))
        report_cases.append({
            "name": name,
            "inputs": {k: list(np.shape(v)) for k, v in feeds.items()},
            "outputs": outputs,
            "passed": all(o["passed"] for o in outputs),
            "latency_ms": {runner.name: runner.last_latency_ms, reference.name: ref_ms},
        })
    return {
        "passed": bool(report_cases) and all(c["passed"] for c in report_cases),
        "runtime": runner.name,
        "reference": reference.name,
        "tolerance": {"atol": atol, "rtol": rtol},
        "cases": report_cases,
    }
