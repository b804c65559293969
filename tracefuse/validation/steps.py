"""Step-wise validation of decoders with a KV cache: prefill, then decode steps fed with each engine's cache.

The runtime and the reference each keep their own cache (the runtime's `present.*` outputs become its
next past, the reference's become the reference's), so an error that builds up through the cache shows.
Both are given the same tokens: the reference's greedy choice (random tokens for models without logits).
For an encoder-decoder, each engine's decoder also reads its own encoder's states (the `encoder` pair of
runners), and the encoder output is a case of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.generation import empty_past, is_cache_graph, next_past, step_feeds
from tracefuse.runtimes.seq2seq_generation import decoder_feeds, is_seq2seq_graph
from tracefuse.validation.inputs import generate_inputs
from tracefuse.validation.metrics import compare

logger = logging.getLogger(__name__)

STEP_BATCH = 2
STEP_PROMPT = 7
SOURCE_LENGTH = 9
DECODE_STEPS = 2


def _vocab(runner: Runner) -> int:
    spec = next(s for s in runner.inputs if s.name in ("input_ids", "decoder_input_ids"))
    return int(spec.fill.get("high", 2))


def _case(name: str, runner: Runner, reference: Runner, feeds: dict, actual: dict, expected: dict,
          ref_ms: float | None, atol: float, rtol: float) -> dict[str, Any]:
    outputs = [compare(o.name, actual[o.name], expected[o.name], atol, rtol) for o in reference.outputs]
    return {
        "name": name, "inputs": {k: list(np.shape(v)) for k, v in feeds.items()}, "outputs": outputs,
        "passed": all(o["passed"] for o in outputs),
        "latency_ms": {runner.name: runner.last_latency_ms, reference.name: ref_ms},
    }


def _encode(runner: Runner, reference: Runner, encoder: tuple[Runner, Runner] | None, rng, batch: int,
            atol: float, rtol: float, cases: list) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Source mask and (runtime, reference) encoder states; appends the encoder's case when it ran."""
    mask = np.ones((batch, SOURCE_LENGTH), dtype=np.int64)
    mask[1:, -2:] = 0
    if not any(s.name == "attention_mask" for s in runner.inputs):
        mask = None  # speech decoders attend to every frame
    if encoder is None:  # no encoder graph at hand: both decoders read the same random states
        spec = next(s for s in runner.inputs if s.name == "encoder_hidden_states")
        states = rng.standard_normal((batch, SOURCE_LENGTH, int(spec.shape[-1]))).astype(spec.dtype)
        return mask, states, states
    enc_runner, enc_reference = encoder
    feeds = generate_inputs(enc_runner.inputs, {"batch": batch, "encoder_sequence": SOURCE_LENGTH}, seed=7)
    if mask is not None and "attention_mask" in feeds:
        feeds["attention_mask"] = mask
    expected = enc_reference.infer(feeds)
    ref_ms = enc_reference.last_latency_ms
    actual = enc_runner.infer(feeds)
    cases.append(_case("encoder", enc_runner, enc_reference, feeds, actual, expected, ref_ms, atol, rtol))
    return mask, actual["last_hidden_state"], expected["last_hidden_state"]


def step_cases(
    runner: Runner,
    reference: Runner,
    tolerance: dict[str, float],
    *,
    encoder: tuple[Runner, Runner] | None = None,
    steps: int = DECODE_STEPS,
    batch: int = STEP_BATCH,
    prompt: int = STEP_PROMPT,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Report cases for a prefill of `prompt` tokens (2 for an encoder-decoder's decoder) and `steps`
    one-token decode steps; `encoder` is the (runtime, reference) pair of an encoder-decoder's encoder."""
    atol, rtol = float(tolerance.get("atol", 1e-4)), float(tolerance.get("rtol", 1e-3))
    rng = np.random.default_rng(seed)
    specs = runner.inputs
    cases: list[dict[str, Any]] = []
    seq2seq = is_seq2seq_graph(specs)
    if seq2seq:
        source_mask, states_run, states_ref = _encode(runner, reference, encoder, rng, batch, atol, rtol, cases)
        prompt = 2
    ids = rng.integers(0, _vocab(runner), size=(batch, prompt)).astype(np.int64)
    mask = np.ones_like(ids)
    past_run = past_ref = empty_past(specs, batch)
    for step in range(steps + 1):
        role = "prefill" if step == 0 else "decode"
        name = f"step {step}: {role} (past_sequence={mask.shape[1] - ids.shape[1]})"
        logger.info("validating %s", name)
        if seq2seq:
            feeds_ref = decoder_feeds(specs, ids, states_ref, source_mask, past_ref)
            feeds_run = decoder_feeds(specs, ids, states_run, source_mask, past_run)
        else:
            feeds_ref, feeds_run = step_feeds(specs, ids, mask, past_ref), step_feeds(specs, ids, mask, past_run)
        expected = reference.infer(feeds_ref)
        ref_ms = reference.last_latency_ms
        actual = runner.infer(feeds_run)
        cases.append(_case(name, runner, reference, feeds_run, actual, expected, ref_ms, atol, rtol))
        if "logits" in expected:
            ids = np.argmax(expected["logits"][:, -1, :], axis=-1).astype(np.int64)[:, None]
        else:
            ids = rng.integers(0, _vocab(runner), size=(batch, 1)).astype(np.int64)
        past_ref, past_run = next_past(expected, specs), next_past(actual, specs)
        mask = np.ones((batch, mask.shape[1] + 1), dtype=np.int64)
    return cases


def add_step_cases(report: dict[str, Any], runner: Runner, reference: Runner,
                   encoder: tuple[Runner, Runner] | None = None) -> dict[str, Any]:
    """Append the step-wise cases to a validation report when the graph has a KV cache; returns the report."""
    if not is_cache_graph(runner.inputs):
        return report
    report["cases"].extend(step_cases(runner, reference, report["tolerance"], encoder=encoder))
    report["passed"] = bool(report["cases"]) and all(c["passed"] for c in report["cases"])
    return report
