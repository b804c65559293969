"""Step-wise validation of decoders with a KV cache: prefill, then decode steps fed with each engine's cache.

The runtime and the reference each keep their own cache (the runtime's `present.*` outputs become its
next past, the reference's become the reference's), so an error that builds up through the cache shows.
Both are given the same tokens: the reference's greedy choice (random tokens for models without logits).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.generation import empty_past, is_cache_graph, next_past, step_feeds
from tracefuse.validation.metrics import compare

logger = logging.getLogger(__name__)

STEP_BATCH = 2
STEP_PROMPT = 7
DECODE_STEPS = 2


def _vocab(runner: Runner) -> int:
    spec = next(s for s in runner.inputs if s.name == "input_ids")
    return int(spec.fill.get("high", 2))


def step_cases(
    runner: Runner,
    reference: Runner,
    tolerance: dict[str, float],
    *,
    steps: int = DECODE_STEPS,
    batch: int = STEP_BATCH,
    prompt: int = STEP_PROMPT,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Report cases for a prefill of `prompt` tokens and `steps` one-token decode steps."""
    atol, rtol = float(tolerance.get("atol", 1e-4)), float(tolerance.get("rtol", 1e-3))
    rng = np.random.default_rng(seed)
    specs = runner.inputs
    ids = rng.integers(0, _vocab(runner), size=(batch, prompt)).astype(np.int64)
    mask = np.ones_like(ids)
    past_run = past_ref = empty_past(specs, batch)
    cases = []
    for step in range(steps + 1):
        role = "prefill" if step == 0 else "decode"
        name = f"step {step}: {role} (past_sequence={mask.shape[1] - ids.shape[1]})"
        logger.info("validating %s", name)
        expected = reference.infer(step_feeds(specs, ids, mask, past_ref))
        ref_ms = reference.last_latency_ms
        actual = runner.infer(step_feeds(specs, ids, mask, past_run))
        outputs = [compare(o.name, actual[o.name], expected[o.name], atol, rtol) for o in reference.outputs]
        cases.append({
            "name": name,
            "inputs": {k: list(np.shape(v)) for k, v in step_feeds(specs, ids, mask, past_run).items()},
            "outputs": outputs,
            "passed": all(o["passed"] for o in outputs),
            "latency_ms": {runner.name: runner.last_latency_ms, reference.name: ref_ms},
        })
        if "logits" in expected:
            ids = np.argmax(expected["logits"][:, -1, :], axis=-1).astype(np.int64)[:, None]
        else:
            ids = rng.integers(0, _vocab(runner), size=(batch, 1)).astype(np.int64)
        past_ref, past_run = next_past(expected, specs), next_past(actual, specs)
        mask = np.ones((batch, mask.shape[1] + 1), dtype=np.int64)
    return cases


def add_step_cases(report: dict[str, Any], runner: Runner, reference: Runner) -> dict[str, Any]:
    """Append the step-wise cases to a validation report when the graph has a KV cache; returns the report."""
    if not is_cache_graph(runner.inputs):
        return report
    report["cases"].extend(step_cases(runner, reference, report["tolerance"]))
    report["passed"] = bool(report["cases"]) and all(c["passed"] for c in report["cases"])
    return report
