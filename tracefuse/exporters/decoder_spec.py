"""Decoder-only models with a KV cache: which models qualify, and the inputs of their one graph.

One ONNX graph serves both the prefill and the decode steps. Its inputs are `input_ids [batch, sequence]`,
`attention_mask [batch, total_sequence]` (total_sequence = past_sequence + sequence), `position_ids
[batch, sequence]` when the model takes them, and `past_key_values.{i}.key/value [batch, kv_heads,
past_sequence, head_dim]`; a past length of 0 is the prefill. Its outputs are the model's main output
(`logits` or `last_hidden_state`) and `present.{i}.key/value` with `total_sequence` positions.

The cache layout (layers, kv heads and head size of each layer) is read from the cache the model itself
returns for a two-token prefill, so models whose layers differ need no table.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from tracefuse.artifact import TensorSpec

logger = logging.getLogger(__name__)

CACHE_TASKS = ("text-generation", "feature-extraction")
PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."
# Prefill with no past, then a one-token decode step on a long past: both graph roles are validated.
DECODER_SHAPES = (
    {"batch": 1, "sequence": 16, "past_sequence": 0, "total_sequence": 16},
    {"batch": 3, "sequence": 1, "past_sequence": 37, "total_sequence": 38},
)
# Traced at sizes > 1 everywhere so that torch.export does not specialize an axis to 0 or 1.
DECODER_TRACE = {"batch": 2, "sequence": 3, "past_sequence": 5, "total_sequence": 8}


def past_name(layer: int, kind: str) -> str:
    """The graph input holding layer `layer`'s past `kind` ("key" or "value")."""
    return f"{PAST_PREFIX}{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    """The graph output holding layer `layer`'s updated `kind` ("key" or "value")."""
    return f"{PRESENT_PREFIX}{layer}.{kind}"


def has_cache_inputs(input_names: Any) -> bool:
    """Whether a graph's input names include past key/value tensors."""
    return any(str(n).startswith(PAST_PREFIX) for n in input_names)


def is_cache_decoder(loaded: Any) -> bool:
    """Whether a loaded Transformers model is a decoder-only model to export with its KV cache."""
    config = loaded.config
    if config is None or loaded.task not in CACHE_TASKS or getattr(config, "is_encoder_decoder", False):
        return False
    from transformers.models.auto import modeling_auto

    # Encoders that can also run as decoders (bert, roberta…) are masked LMs first: export them as encoders.
    if loaded.model_type not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    if loaded.model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False
    params = inspect.signature(loaded.module.forward).parameters
    return all(p in params for p in ("input_ids", "attention_mask", "past_key_values"))


_NO_ATTENTION = "can only be called on Attention layers"  # Transformers' cache, asked a length it has not


def runs_only_without_cache(loaded: Any) -> bool:
    """Whether a decoder-only model fails on its own default cache and runs with `use_cache=False`: a model
    whose (default) layers are all linear attention or state space keeps no attention cache, and its forward
    asks the cache for a length it cannot give (bamba, granitemoehybrid). Such a model is exported without a
    cache, as with --no-cache."""
    import torch

    if not is_cache_decoder(loaded):
        return False
    ids = torch.ones(1, 2, dtype=torch.long)
    try:
        with torch.no_grad():
            loaded.module(input_ids=ids, attention_mask=torch.ones_like(ids))
        return False
    except Exception as exc:  # noqa: BLE001 - only the cache's own complaint counts
        if _NO_ATTENTION not in str(exc):
            return False
    try:
        with torch.no_grad():
            loaded.module(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    except Exception:  # noqa: BLE001 - it fails either way: the export reports it
        return False
    logger.info("%s keeps no attention cache: exported without one", loaded.model_type)
    return True


def cache_layout(module: Any) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """((kv_heads, key_dim), (kv_heads, value_dim)) per layer, from a two-token prefill; None when the
    model does not return a DynamicCache of plain key/value tensors."""
    import torch
    from transformers import DynamicCache

    ids = torch.ones(1, 2, dtype=torch.long)
    try:
        with torch.no_grad():
            out = module(input_ids=ids, attention_mask=torch.ones_like(ids),
                         past_key_values=DynamicCache(config=module.config), use_cache=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: export without the cache
        logger.info("no KV cache export: the prefill probe failed: %s: %s", type(exc).__name__, exc)
        return None
    cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers:
        logger.info("no KV cache export: the model returned %s", type(cache).__name__)
        return None
    layout = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)) or keys.dim() != 4:
            logger.info("no KV cache export: a cache layer of type %s holds no 4-d tensors", type(layer).__name__)
            return None
        layout.append(((int(keys.shape[1]), int(keys.shape[3])), (int(values.shape[1]), int(values.shape[3]))))
    return layout


def decoder_spec_fields(loaded: Any) -> dict[str, Any] | None:
    """ArchSpec fields (inputs, trace_shape, validation_shapes) of a decoder with a KV cache (decoder-only,
    or the decoder graph of an encoder-decoder), or None when the model is neither (no cache is exported)."""
    from tracefuse.exporters.seq2seq_spec import seq2seq_spec_fields

    if (seq2seq := seq2seq_spec_fields(loaded)) is not None:
        return seq2seq
    if not is_cache_decoder(loaded):
        return None
    layout = cache_layout(loaded.module)
    if layout is None:
        return None
    module, config = loaded.module, loaded.config.get_text_config()  # a multimodal model's text tower
    dtype = str(next(module.parameters()).dtype).removeprefix("torch.")
    params = inspect.signature(module.forward).parameters
    inputs = [
        TensorSpec("input_ids", "int64", ("batch", "sequence"),
                   {"kind": "int", "low": 0, "high": int(config.vocab_size)}),
        TensorSpec("attention_mask", "int64", ("batch", "total_sequence"), {"kind": "mask"}),
    ]
    if "position_ids" in params:
        inputs.append(TensorSpec("position_ids", "int64", ("batch", "sequence"),
                                 {"kind": "positions", "offset_axis": "past_sequence"}))
    for i, layer in enumerate(layout):
        for kind, (heads, dim) in zip(("key", "value"), layer, strict=True):
            inputs.append(TensorSpec(past_name(i, kind), dtype, ("batch", heads, "past_sequence", dim),
                                     {"kind": "normal"}))
    logger.info("%s: decoder with a %d-layer KV cache", loaded.model_type, len(layout))
    return {"inputs": tuple(inputs), "trace_shape": dict(DECODER_TRACE), "validation_shapes": DECODER_SHAPES}
