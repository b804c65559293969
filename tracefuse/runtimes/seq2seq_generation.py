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


def decoder_feeds(specs: Sequence[TensorSpec], decoder_ids: np.ndarray, hidden: np.ndarray, source_mask: np.ndarray,
                  past: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds for one decoder call: new decoder tokens, encoder states, source mask, self-attention past."""
    return {"decoder_input_ids": decoder_ids.astype(np.int64), "encoder_hidden_states": hidden,
            "attention_mask": source_mask.astype(np.int64), **past}


def greedy_generate_seq2seq(
    runner: Any,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    max_new_tokens: int,
    *,
    decoder_start_token_id: int | None,
    eos: list[int],
    pad: int,
    forced_eos_token_id: int | None = None,
) -> np.ndarray:
    """Greedy decoding of an encoder-decoder artifact; returns the decoder tokens (start token first)."""
    if decoder_start_token_id is None:
        raise FeedError("generating from an encoder-decoder needs a decoder start token",
                        found="none given and none recorded in the manifest",
                        fix="pass decoder_start_token_id= (t5 uses its pad id, 0)")
    encoder = open_encoder(runner)
    try:
        hidden = encoder.infer({"input_ids": input_ids, "attention_mask": attention_mask})["last_hidden_state"]
    finally:
        encoder.close()
    batch = input_ids.shape[0]
    tokens = np.full((batch, 1), int(decoder_start_token_id), dtype=np.int64)
    new, past = tokens, empty_past(runner.inputs, batch)
    unfinished = np.ones(batch, dtype=bool)
    for step in range(int(max_new_tokens)):
        outputs = runner.infer(decoder_feeds(runner.inputs, new, hidden, attention_mask, past))
        chosen = np.argmax(outputs["logits"][:, -1, :], axis=-1).astype(np.int64)
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
