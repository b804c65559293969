"""Encoder-decoder models (t5, bart, …): an encoder graph and a decoder graph with a self-attention cache.

The artifact's main graph is the decoder: `decoder_input_ids [batch, sequence]`, `encoder_hidden_states
[batch, encoder_sequence, hidden]`, `attention_mask [batch, encoder_sequence]` (the encoder's padding) and
`past_key_values.{i}.key/value [batch, heads, past_sequence, head_dim]` (the decoder's self-attention
cache; 0 positions for the first step) in; `logits` and `present.{i}.key/value` out. The cross-attention
keys and values are recomputed from `encoder_hidden_states` at every step (one graph for every step,
no data-dependent branch). The encoder graph (`input_ids`, `attention_mask` → `last_hidden_state`) lies in
`encoder/` inside the same artifact and is described in `manifest.export["encoder"]`.

Speech models (whisper) take `input_features [batch, mel_bins, frames]` (frames fixed by the model) in the
encoder instead of token ids, and their decoder graph has no `attention_mask` (they attend to every frame).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.exporters.decoder_spec import past_name

logger = logging.getLogger(__name__)

SEQ2SEQ_TASKS = ("text2text-generation", "automatic-speech-recognition")
ENCODER_DIR = "encoder"
SEQ2SEQ_SHAPES = (
    {"batch": 1, "sequence": 5, "past_sequence": 0, "total_sequence": 5, "encoder_sequence": 16},
    {"batch": 3, "sequence": 1, "past_sequence": 21, "total_sequence": 22, "encoder_sequence": 11},
)
SEQ2SEQ_TRACE = {"batch": 2, "sequence": 3, "past_sequence": 5, "total_sequence": 8, "encoder_sequence": 7}
ENCODER_SHAPES = ({"batch": 1, "encoder_sequence": 16}, {"batch": 3, "encoder_sequence": 11})


def is_seq2seq(loaded: Any) -> bool:
    """Whether a loaded Transformers model is an encoder-decoder text generator with a cache."""
    config = loaded.config
    return (config is not None and loaded.task in SEQ2SEQ_TASKS and bool(getattr(config, "is_encoder_decoder", False))
            and hasattr(loaded.module, "get_encoder"))


def is_audio(loaded: Any) -> bool:
    """Whether the encoder takes `input_features` (speech) rather than token ids."""
    return getattr(loaded.module, "main_input_name", "input_ids") == "input_features"


def _frames(config: Any) -> int:
    """The number of feature frames a speech encoder requires (whisper: twice its source positions)."""
    return 2 * int(getattr(config, "max_source_positions", 1500))


def _encoder_feeds(loaded: Any, batch: int, length: int, seed: int = 0) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    if is_audio(loaded):
        mel = int(getattr(loaded.config, "num_mel_bins", 80))
        return {"input_features": torch.randn(batch, mel, _frames(loaded.config), generator=generator)}
    ids = torch.randint(0, int(loaded.config.vocab_size), (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _self_cache_layout(loaded: Any) -> list[tuple[int, int]] | None:
    """(heads, head_dim) of each decoder layer's self-attention cache, from a one-token first step."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    try:
        with torch.no_grad():
            out = loaded.module(**_encoder_feeds(loaded, 1, 2), decoder_input_ids=torch.ones(1, 1, dtype=torch.long),
                                past_key_values=cache, use_cache=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: no cached export
        logger.info("no seq2seq cache export: the probe failed: %s: %s", type(exc).__name__, exc)
        return None
    present = getattr(out, "past_key_values", None)
    layers = getattr(getattr(present, "self_attention_cache", None), "layers", None)
    if not layers or not all(getattr(layer, "keys", None) is not None and layer.keys.dim() == 4 for layer in layers):
        return None
    return [(int(layer.keys.shape[1]), int(layer.keys.shape[3])) for layer in layers]


def seq2seq_spec_fields(loaded: Any) -> dict[str, Any] | None:
    """ArchSpec fields of the decoder graph of an encoder-decoder model, or None when it is not one."""
    if not is_seq2seq(loaded):
        return None
    layout = _self_cache_layout(loaded)
    if layout is None:
        return None
    config = loaded.config
    dtype = str(next(loaded.module.parameters()).dtype).removeprefix("torch.")
    hidden = int(getattr(config, "d_model", None) or config.hidden_size)
    vocab = {"kind": "int", "low": 0, "high": int(config.vocab_size)}
    inputs = [
        TensorSpec("decoder_input_ids", "int64", ("batch", "sequence"), vocab),
        TensorSpec("encoder_hidden_states", dtype, ("batch", "encoder_sequence", hidden), {"kind": "normal"}),
    ]
    if not is_audio(loaded):
        inputs.append(TensorSpec("attention_mask", "int64", ("batch", "encoder_sequence"), {"kind": "mask"}))
    for i, (heads, dim) in enumerate(layout):
        for kind in ("key", "value"):
            inputs.append(TensorSpec(past_name(i, kind), dtype, ("batch", heads, "past_sequence", dim),
                                     {"kind": "normal"}))
    return {"inputs": tuple(inputs), "trace_shape": dict(SEQ2SEQ_TRACE), "validation_shapes": SEQ2SEQ_SHAPES}


def encoder_specs(loaded: Any) -> tuple[TensorSpec, ...]:
    """The encoder graph's inputs."""
    if is_audio(loaded):
        mel = int(getattr(loaded.config, "num_mel_bins", 80))
        return (TensorSpec("input_features", "float32", ("batch", mel, _frames(loaded.config)), {"kind": "normal"}),)
    vocab = {"kind": "int", "low": 0, "high": int(loaded.config.vocab_size)}
    return (TensorSpec("input_ids", "int64", ("batch", "encoder_sequence"), vocab),
            TensorSpec("attention_mask", "int64", ("batch", "encoder_sequence"), {"kind": "mask"}))


def generation_info(loaded: Any) -> dict[str, Any]:
    """Token ids generation needs (start, eos, pad, forced eos), from the model's generation config."""
    gen = getattr(loaded.module, "generation_config", None)
    info = {}
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id", "forced_eos_token_id",
                "begin_suppress_tokens"):
        value = getattr(gen, key, None)
        if value is None:
            value = getattr(loaded.config, key, None)
        if value is not None:
            info[key] = value
    return info


def export_extras(loaded: Any, spec: Any, staging: Path, fmt: str, options: dict[str, Any]) -> dict[str, Any]:
    """Manifest `export` entries beyond the main graph: for encoder-decoders, the encoder graph (written to
    `encoder/` in the artifact) and the generation token ids; for cache decoders the token ids; else {}."""
    from tracefuse.exporters import export_graph
    from tracefuse.exporters.wrapper import FlatWrapper, probe_outputs

    names = spec.input_names
    if not any(n.startswith("past_key_values.") for n in names):
        return {}
    if "encoder_hidden_states" not in names:
        return {"generation": generation_info(loaded)}
    encoder = loaded.module.get_encoder()
    inputs = encoder_specs(loaded)
    in_names = tuple(s.name for s in inputs)
    sizes = [(s["batch"], s["encoder_sequence"]) for s in ENCODER_SHAPES]
    outputs = probe_outputs(encoder, in_names, _encoder_feeds(loaded, *sizes[0], seed=1), ENCODER_SHAPES[0],
                            _encoder_feeds(loaded, *sizes[1], seed=2), ENCODER_SHAPES[1])
    outputs = tuple(o for o in outputs if o.name == "last_hidden_state")
    wrapper = FlatWrapper(encoder, in_names, tuple(o.name for o in outputs))
    example = _encoder_feeds(loaded, 2, 7, seed=3)
    dest = staging / ENCODER_DIR
    dest.mkdir()
    graph = export_graph(fmt, wrapper, example, inputs, outputs, dest, options)
    return {
        "encoder": {
            "graph": f"{ENCODER_DIR}/{graph.files[0]}",
            "inputs": [s.to_dict() for s in graph.inputs],
            "outputs": [s.to_dict() for s in graph.outputs],
            "validation_shapes": [{k: v for k, v in s.items() if not is_audio(loaded) or k == "batch"}
                                  for s in ENCODER_SHAPES],
        },
        "generation": generation_info(loaded),
    }
