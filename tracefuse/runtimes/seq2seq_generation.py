"""Encoder-decoder artifacts: the encoder graph beside the decoder graph, and greedy generation with both.

The encoder runs once; the decoder graph runs once per new token with the encoder's states, the source
mask and its own self-attention cache (`present.*` of one step are the `past_key_values.*` of the next).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact, TensorSpec
from tracefuse.errors import ArtifactError, FeedError
from tracefuse.runtimes.generation import PAST_PREFIX, empty_past, next_past

logger = logging.getLogger(__name__)


def is_seq2seq_graph(specs: Sequence[TensorSpec]) -> bool:
    """Whether graph inputs `specs` are those of an encoder-decoder's decoder graph."""
    names = {s.name for s in specs}
    return "encoder_hidden_states" in names and any(n.startswith(PAST_PREFIX) for n in names)


def encoder_artifact(artifact: Artifact) -> Artifact:
    """The encoder graph of an encoder-decoder artifact, as an Artifact a runner can open."""
    entry = artifact.manifest.export.get("encoder")
    if not isinstance(entry, dict) or "graph" not in entry:
        raise ArtifactError(f"the artifact at {artifact.path} has no encoder graph in its manifest",
                            fix="re-export it with --task text2text-generation")
    manifest = dataclasses.replace(
        artifact.manifest, graph=entry["graph"],
        inputs=tuple(TensorSpec.from_dict(t) for t in entry["inputs"]),
        outputs=tuple(TensorSpec.from_dict(t) for t in entry["outputs"]),
        validation_shapes=tuple(dict(s) for s in entry.get("validation_shapes", ())),
    )
    return Artifact(artifact.path, manifest)


def open_encoder(runner: Any) -> Any:
    """A runner of the same runtime on the encoder graph of `runner`'s artifact, opened."""
    artifact = getattr(runner, "artifact", None)
    if artifact is None:
        raise ArtifactError(f"runtime {runner.name} does not say which artifact it runs; cannot find the encoder")
    return type(runner)(encoder_artifact(artifact), threads=getattr(runner, "threads", None)).open()


def decoder_feeds(specs: Sequence[TensorSpec], decoder_ids: np.ndarray, hidden: np.ndarray,
                  source_mask: np.ndarray | None, past: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds for one decoder call: new decoder tokens, encoder states, source mask (text models), past."""
    feeds = {"decoder_input_ids": decoder_ids.astype(np.int64), "encoder_hidden_states": hidden, **past}
    if source_mask is not None and any(s.name == "attention_mask" for s in specs):
        feeds["attention_mask"] = source_mask.astype(np.int64)
    return feeds


def greedy_generate_seq2seq(
    runner: Any,
    source: Any,
    attention_mask: Any,
    max_new_tokens: int,
    *,
    decoder_start_token_id: int | None,
    eos: list[int],
    pad: int,
    forced_eos_token_id: int | None = None,
    begin_suppress_tokens: Sequence[int] = (),
) -> np.ndarray:
    """Greedy decoding of an encoder-decoder artifact; returns the decoder tokens (start token first).

    `source` is the encoder's main input: token ids [batch, length] (with `attention_mask` when padded), or
    a speech model's `input_features` [batch, mel_bins, frames]. `begin_suppress_tokens` are never chosen
    first (whisper). Transformers' whisper `generate()` returns these tokens without the start token.
    """
    if decoder_start_token_id is None:
        raise FeedError("generating from an encoder-decoder needs a decoder start token",
                        found="none given and none recorded in the manifest",
                        fix="pass decoder_start_token_id= (t5 uses its pad id, 0)")
    encoder = open_encoder(runner)
    main = encoder.inputs[0]
    source = np.asarray(source, dtype=np.dtype(main.dtype))
    if main.name == "input_ids":
        source = np.atleast_2d(source)
        attention_mask = np.ones_like(source) if attention_mask is None else np.asarray(attention_mask, np.int64)
    feeds = {main.name: source}
    if any(s.name == "attention_mask" for s in encoder.inputs):
        feeds["attention_mask"] = attention_mask
    try:
        hidden = encoder.infer(feeds)["last_hidden_state"]
    finally:
        encoder.close()
    batch = source.shape[0]
    tokens = np.full((batch, 1), int(decoder_start_token_id), dtype=np.int64)
    new, past = tokens, empty_past(runner.inputs, batch)
    unfinished = np.ones(batch, dtype=bool)
    for step in range(int(max_new_tokens)):
        outputs = runner.infer(decoder_feeds(runner.inputs, new, hidden, attention_mask, past))
        logits = outputs["logits"][:, -1, :]
        suppress = [t for t in begin_suppress_tokens if 0 <= int(t) < logits.shape[-1]] if step == 0 else []
        if suppress:
            logits = logits.copy()
            logits[:, suppress] = -np.inf
        chosen = np.argmax(logits, axis=-1).astype(np.int64)
        if forced_eos_token_id is not None and step == max_new_tokens - 1:
            chosen = np.full_like(chosen, int(forced_eos_token_id))
        if eos:
            chosen = np.where(unfinished, chosen, pad)
            unfinished &= ~np.isin(chosen, eos)
        tokens = np.concatenate([tokens, chosen[:, None]], axis=1)
        if eos and not unfinished.any():
            break
        new, past = chosen[:, None], next_past(outputs, runner.inputs)
    return tokens
