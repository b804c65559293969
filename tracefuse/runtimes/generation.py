"""Greedy generation with the KV cache on any Runner whose graph takes `past_key_values.{i}.key/value`.

One graph serves prefill and decode: the first call gets the whole prompt and a past of length 0, each
later call gets the one token chosen last and the `present.*` outputs of the call before as its past.
Positions follow Transformers' rule for generation (`cumsum(attention_mask) - 1`, 1 on padding), and
finished rows are padded after `eos_token_id` the way `transformers`' `generate()` pads them, so the
tokens are the ones `model.generate(do_sample=False)` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tracefuse.artifact import TensorSpec
from tracefuse.errors import FeedError

logger = logging.getLogger(__name__)

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."


def is_cache_graph(specs: Sequence[TensorSpec]) -> bool:
    """Whether graph inputs `specs` include past key/value tensors."""
    return any(s.name.startswith(PAST_PREFIX) for s in specs)


def present_for(past: str) -> str:
    """The output name that feeds the past input `past` at the next step."""
    return PRESENT_PREFIX + past[len(PAST_PREFIX):]


def empty_past(specs: Sequence[TensorSpec], batch: int) -> dict[str, np.ndarray]:
    """Zero-length past tensors for the prefill: `batch` rows, 0 cached positions."""
    past = {}
    for spec in specs:
        if spec.name.startswith(PAST_PREFIX):
            shape = [batch if d == "batch" else d if isinstance(d, int) else 0 for d in spec.shape]
            past[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return past


def positions(attention_mask: np.ndarray, length: int) -> np.ndarray:
    """Position ids of the last `length` tokens: count of attended tokens before each, 1 on padding."""
    pos = np.cumsum(attention_mask, axis=-1) - 1
    pos = np.where(attention_mask == 0, 1, pos)
    return pos[:, -length:].astype(np.int64)


def step_feeds(specs: Sequence[TensorSpec], input_ids: np.ndarray, attention_mask: np.ndarray,
               past: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds for one call: the new tokens, the mask over past and new tokens, their positions, the past."""
    names = {s.name for s in specs}
    feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64), **past}
    if "position_ids" in names:
        feeds["position_ids"] = positions(attention_mask, input_ids.shape[1])
    return {k: v for k, v in feeds.items() if k in names}


def next_past(outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The past inputs of the next call: this call's `present.*` outputs under the `past_key_values.*` names."""
    return {s.name: outputs[present_for(s.name)] for s in specs if s.name.startswith(PAST_PREFIX)}


def greedy_generate(
    runner: Any,
    input_ids: Any,
    max_new_tokens: int = 32,
    *,
    attention_mask: Any = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    forced_eos_token_id: int | None = None,
) -> np.ndarray:
    """Greedy decoding with the KV cache; returns the prompt followed by the new tokens, [batch, length]
    (for an encoder-decoder: the decoder's tokens, its start token first).

    Left-padded batches need their `attention_mask`. With `eos_token_id`, a row that produced it is padded
    with `pad_token_id` (the first eos id when None) and generation stops once every row has;
    `forced_eos_token_id` is chosen at the last step. Token ids not given default to those the manifest
    recorded from the model's generation config at export.
    """
    specs = runner.inputs
    manifest = getattr(getattr(runner, "artifact", None), "manifest", None)
    recorded = dict(getattr(manifest, "export", {}).get("generation") or {}) if manifest is not None else {}
    eos_token_id = eos_token_id if eos_token_id is not None else recorded.get("eos_token_id")
    pad_token_id = pad_token_id if pad_token_id is not None else recorded.get("pad_token_id")
    if forced_eos_token_id is None:
        forced_eos_token_id = recorded.get("forced_eos_token_id")
    if not is_cache_graph(specs) or "logits" not in {o.name for o in runner.outputs}:
        raise FeedError(
            "generate needs a decoder artifact with a KV cache and logits",
            found=", ".join(s.name for s in specs)[:200],
            fix="export a decoder with --task text-generation (e.g. tracefuse export tiny:gpt2 --task "
            "text-generation -o out/gpt2)",
        )
    eos = [] if eos_token_id is None else [int(e) for e in np.atleast_1d(eos_token_id)]
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    if "encoder_hidden_states" in {s.name for s in specs}:
        from tracefuse.runtimes.seq2seq_generation import greedy_generate_seq2seq

        start = decoder_start_token_id if decoder_start_token_id is not None else recorded.get("decoder_start_token_id")
        return greedy_generate_seq2seq(runner, input_ids, attention_mask, max_new_tokens, decoder_start_token_id=start,
                                       eos=eos, pad=pad, forced_eos_token_id=forced_eos_token_id,
                                       begin_suppress_tokens=recorded.get("begin_suppress_tokens") or ())
    ids = np.atleast_2d(np.asarray(input_ids, dtype=np.int64))
    if ids.shape[1] == 0:
        raise FeedError("generate needs a prompt of at least one token", found=f"shape {list(ids.shape)}")
    mask = np.ones_like(ids) if attention_mask is None else np.atleast_2d(np.asarray(attention_mask, np.int64))
    if mask.shape != ids.shape:
        raise FeedError("attention_mask must have the shape of input_ids",
                        found=f"{list(mask.shape)} vs {list(ids.shape)}")
    unfinished = np.ones(ids.shape[0], dtype=bool)
    past = empty_past(specs, ids.shape[0])
    tokens, new = ids, ids
    for step in range(int(max_new_tokens)):
        outputs = runner.infer(step_feeds(specs, new, mask, past))
        chosen = np.argmax(outputs["logits"][:, -1, :], axis=-1).astype(np.int64)
        if forced_eos_token_id is not None and step == max_new_tokens - 1:
            chosen = np.full_like(chosen, int(forced_eos_token_id))
        if eos:
            chosen = np.where(unfinished, chosen, pad)
            unfinished &= ~np.isin(chosen, eos)
        tokens = np.concatenate([tokens, chosen[:, None]], axis=1)
        logger.debug("step %d: %s", step, chosen.tolist())
        if eos and not unfinished.any():
            break
        past = next_past(outputs, specs)
        new = chosen[:, None]
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)
    return tokens
