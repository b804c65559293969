"""Tiny random-weight configs: any Transformers model type shrunk to a few layers and a small width."""

from __future__ import annotations

import logging
from typing import Any

from tracefuse.errors import SourceError
from tracefuse.exporters.placeholders import image_token_id, placeholder_ids
from tracefuse.exporters.tiny_experts import expert_kwargs
from tracefuse.exporters.tiny_layers import read_field
from tracefuse.exporters.tiny_rules import consistency_kwargs
from tracefuse.exporters.tiny_stages import stage_kwargs, sub_config_kwargs
from tracefuse.exporters.tiny_ties import list_end_ties, width_list_ties, width_tie_kwargs

logger = logging.getLogger(__name__)

HIDDEN = 32
HEADS = 4
LAYERS = 2
FFN = 64
VOCAB = 1000
IMAGE = 32
HORIZON = 4  # forecast steps of a time-series config that leaves its horizon unset

# Standard config fields and the small value each gets. Only fields the config already has are set.
_SCALARS: dict[str, int] = {
    "num_hidden_layers": LAYERS, "num_layers": LAYERS, "n_layer": LAYERS, "n_layers": LAYERS,
    "encoder_layers": LAYERS, "decoder_layers": LAYERS,
    "hidden_size": HIDDEN, "d_model": HIDDEN, "n_embd": HIDDEN, "dim": HIDDEN,
    "num_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS,
    "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS,
    "intermediate_size": FFN, "hidden_dim": FFN, "d_ff": FFN, "ffn_dim": FFN,
    "encoder_ffn_dim": FFN, "decoder_ffn_dim": FFN,
    "vocab_size": VOCAB,
    "embedding_size": 16,
    "image_size": IMAGE,
    "projection_dim": HIDDEN,
    "num_latents": 16, "d_latents": HIDDEN,  # a Perceiver's latent array
}


def tiny_config_kwargs(config: Any, nested: bool = False) -> dict[str, Any]:
    """The shrink for one default config: small scalars, and list-valued stage sizes cut to two stages (or, for
    a `nested` backbone whose outputs its parent set, to as many as its last output needs)."""
    kwargs: dict[str, Any] = {}
    for key, value in _SCALARS.items():
        if isinstance(read_field(config, key), int) and not isinstance(read_field(config, key), bool) \
                and _settable(config, key, value):
            kwargs[key] = value
    if isinstance(read_field(config, "num_key_value_heads"), int) or _unset(config, "num_key_value_heads"):
        kwargs["num_key_value_heads"] = _kv_heads(config, kwargs)
    if _unset(config, "vocab_size"):  # left to the checkpoint (esm), with its special tokens: ids inside it
        kwargs["vocab_size"] = VOCAB
        kwargs.update({key: i for i, key in enumerate(("pad_token_id", "mask_token_id"), 1) if _unset(config, key)})
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int) and "vocab_size" in kwargs and pad >= VOCAB:
        kwargs["pad_token_id"] = VOCAB - 1  # an embedding's padding_idx must lie inside the shrunk vocabulary
    rotary = getattr(config, "rotary_dim", None)
    if isinstance(rotary, int) and not isinstance(rotary, bool) and rotary > HIDDEN // HEADS:
        kwargs["rotary_dim"] = HIDDEN // HEADS  # rotary embeddings cover at most one head (gptj, codegen)
    if "prediction_length" in vars(config) and config.prediction_length is None:
        kwargs["prediction_length"] = HORIZON  # a forecaster's config requires its horizon (context follows it)
    blank = getattr(config, "blank_token_id", None)
    if isinstance(blank, int) and "vocab_size" in kwargs and blank >= VOCAB:
        kwargs["blank_token_id"] = VOCAB - 3  # a CTC blank is a class of the (shrunk) vocabulary
    start = getattr(config, "decoder_start_token_id", None)
    if isinstance(start, int) and "vocab_size" in kwargs and start >= VOCAB:
        kwargs["decoder_start_token_id"] = VOCAB - 2  # it is embedded at the first decoder step
    kwargs.update(special_token_kwargs(config))  # the vocabulary may be the text_config's: shrunk all the same
    # per-stage lists, tied widths, window/patch caps, nested configs (tiny_stages explains the rules)
    kwargs.update(stage_kwargs(config, kwargs.get("hidden_size", HIDDEN), keep_outputs=nested))
    kwargs.update(list_end_ties(config, kwargs))  # a hidden width equal to a width list's first entry
    kwargs.update(width_list_ties(config, kwargs))  # width lists ending at, or summing to, the hidden width
    kwargs.update(consistency_kwargs(config, kwargs, HIDDEN, HEADS))  # layer_types, head_dim, mrope, ssm heads
    kwargs.update(expert_kwargs({k: v for k, v in vars(config).items() if not k.startswith("_")}, FFN))
    kwargs.update(sub_config_kwargs(config, tiny_config_kwargs))
    kwargs.update(_shuffle_room(config, kwargs))
    kwargs.update(_grid_pinpoints(config, kwargs))
    kwargs.update(_feature_layers(config, kwargs))
    return kwargs


_FEATURE_LAYERS = ("vision_feature_layer", "vision_feature_layers")


def _feature_layers(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Indices of the vision tower's hidden states a multimodal model reads (`vision_feature_layers`:
    vipllava's [-2, -5, -8, -11, 6]) clamped into the shrunk tower's (embeddings plus its layers), the list
    keeping its length (the projector is sized by it)."""
    vision = kwargs.get("vision_config")
    layers = vision.get("num_hidden_layers") if isinstance(vision, dict) else None
    if not isinstance(layers, int) or isinstance(layers, bool):
        return {}

    def clamp(index: Any) -> Any:
        if not isinstance(index, int) or isinstance(index, bool):
            return index
        return max(index, -(layers + 1)) if index < 0 else min(index, layers)

    changes: dict[str, Any] = {}
    for name in _FEATURE_LAYERS:
        value = read_field(config, name)
        new = [clamp(v) for v in value] if isinstance(value, (list, tuple)) else clamp(value)
        if new != (list(value) if isinstance(value, (list, tuple)) else value):
            changes[name] = new
    return changes


def _grid_pinpoints(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The resolutions an any-resolution model tiles images into (`image_grid_pinpoints`, multiples of the
    tower's image size: llava-next's 336 × 672…) scaled to the shrunk tower's image size."""
    points, vision = read_field(config, "image_grid_pinpoints"), kwargs.get("vision_config")
    old = getattr(getattr(config, "vision_config", None), "image_size", None)
    new = vision.get("image_size") if isinstance(vision, dict) else None
    if not (isinstance(points, list) and points and isinstance(old, int) and isinstance(new, int)) or old == new:
        return {}
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in points):
        return {}
    return {"image_grid_pinpoints": [[max(1, round(v / old)) * new for v in p] for p in points]}


# a multimodal config's pixel-shuffle factor: its connector merges factor x factor vision patches into one token
_SHUFFLE_FIELDS = ("scale_factor", "pixel_shuffle_factor")


def _shuffle_room(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A shrunk vision_config (or a vision tower's own config) whose image holds fewer patches a side than the
    pixel-shuffle factor (idefics3's 2, granite-docling's 4; the default image is 32 px) gets an image of that
    many patches a side."""
    factor = next((v for f in _SHUFFLE_FIELDS if isinstance(v := read_field(config, f), int)
                   and not isinstance(v, bool) and v > 1), None)
    if factor is None:
        return {}
    vision = kwargs.get("vision_config")
    if isinstance(vision, dict):
        size, patch = vision.get("image_size"), vision.get("patch_size")
        if isinstance(size, int) and isinstance(patch, int) and size // patch < factor:
            return {"vision_config": {**vision, "image_size": patch * factor}}
        return {}
    size, patch = kwargs.get("image_size"), read_field(config, "patch_size")  # a vision tower's own config
    if isinstance(size, int) and isinstance(patch, int) and size // patch < factor:
        return {"image_size": patch * factor}
    return {}


def _kv_heads(config: Any, kwargs: dict[str, Any]) -> int:
    """Grouped KV heads (half the query heads). A text decoder always gets them (most of its checkpoints group
    heads, and the cache and attention-fusion code for grouping is what its tests need); any other config
    whose default has one KV head per query head stays multi-head (some of those models project values with
    the query head count, which only agrees when the two are equal)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    kv, heads = read_field(config, "num_key_value_heads"), read_field(config, "num_attention_heads")
    if isinstance(kv, int) and kv == heads and isinstance(kwargs.get("num_attention_heads"), int) \
            and type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return kwargs["num_attention_heads"]
    return HEADS // 2


def _unset(config: Any, key: str) -> bool:
    """Whether the config declares `key` and leaves it None (a default that the checkpoint fills)."""
    return key in vars(config) and vars(config)[key] is None


def _settable(config: Any, key: str, value: Any) -> bool:
    """False for a field the config derives and will not take: a property with no setter (a codec's
    `hidden_size` computed from its sub-models) or whose setter refuses (funnel's `num_hidden_layers`, set
    through `block_sizes`); the shrink then leaves it to the fields it derives from."""
    import copy
    import inspect

    attr = inspect.getattr_static(type(config), key, None)
    if not isinstance(attr, property):
        return True
    if attr.fset is None:
        return False
    try:
        attr.fset(copy.deepcopy(config), value)
    except NotImplementedError:
        return False
    return True


SPECIAL_BAND = 32  # placeholder ids are moved into the top SPECIAL_BAND ids of the shrunk vocabulary


def special_token_kwargs(config: Any) -> dict[str, Any]:
    """Placeholder token ids (`image_token_id`, `video_token_index`…) beyond the shrunk vocabulary, moved to
    distinct ids at its top: the model embeds them like any token before it swaps in the media features."""
    kwargs: dict[str, Any] = {}
    slot = VOCAB - 1
    for name, value in sorted(placeholder_ids(config).items()):
        if value >= VOCAB - SPECIAL_BAND:
            slot -= 1  # VOCAB - 1 stays free for pad_token_id
            kwargs[name] = slot
    unset = [name for name in ("image_token_id", "image_token_index") if _unset(config, name)]
    queries = getattr(config, "num_query_tokens", None)
    if unset and image_token_id(config) is None and isinstance(queries, int) and queries > 0:
        kwargs[unset[0]] = slot - 1  # a Q-Former model's, left to the processor (blip-2): a free id at the top
    return kwargs


WIDER_TRIES = 3  # a vanished derived size doubles the hidden width at most this many times (32 -> 256)


def vanished_sizes(default: Any, config: Any, kwargs: dict[str, Any]) -> list[str]:
    """Sizes the config derives from its width (not set by the shrink) that were at least 2 by default and are
    below 2 in the shrunk config: bros' per-coordinate sinusoid width, hidden / 4 / 8, is 1 at width 32 and
    its embedding then has no frequencies at all."""
    gone = []
    for name, value in vars(config).items():
        before = vars(default).get(name)
        if name.startswith("_") or name in kwargs or not (isinstance(value, int) and isinstance(before, int)) \
                or isinstance(value, bool) or isinstance(before, bool):
            continue
        if before >= 2 > value >= 0 and ("dim" in name or "size" in name):
            gone.append(name)
    return gone


def tiny_config(model_type: str):
    """A small Transformers config for `model_type`; raises SourceError for an unknown type."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        known = sorted(CONFIG_MAPPING.keys())
        close = [k for k in known if model_type.replace("_", "-") in k or k in model_type][:5]
        raise SourceError(
            f"unknown model type '{model_type}' for tiny:",
            found=f"not one of Transformers' {len(known)} model types",
            fix="use a Transformers model type such as bert, vit, gpt2"
            + (f"; close: {', '.join(close)}" if close else ""),
        )
    default = AutoConfig.for_model(model_type)
    kwargs = tiny_config_kwargs(default)
    kwargs.update(width_tie_kwargs(default, kwargs))  # widths repeated in other nested configs (tiny_ties)
    logger.debug("tiny %s: %s", model_type, kwargs)
    try:
        config = AutoConfig.for_model(model_type, **kwargs)
        for _ in range(WIDER_TRIES):  # a size the config derives from the width vanished: a wider width
            gone = vanished_sizes(default, config, kwargs)
            if not gone or not isinstance(kwargs.get("hidden_size"), int):
                break
            kwargs["hidden_size"] *= 2
            logger.info("tiny %s: %s fell below 2 at this width; hidden_size %d", model_type, ", ".join(gone),
                        kwargs["hidden_size"])
            config = AutoConfig.for_model(model_type, **kwargs)
        return config
    except Exception as exc:  # noqa: BLE001 - a config's validator raises ValueError or a wrapper of it
        heads = kwargs.get("num_attention_heads", HEADS)
        if "num_key_value_heads" not in str(exc) or kwargs.get("num_key_value_heads") in (None, heads):
            raise
        # the config refuses grouped-query attention (esmc): as many key/value heads as query heads
        logger.info("tiny %s: the config refuses %d key/value heads; using %d", model_type,
                    kwargs["num_key_value_heads"], heads)
        return AutoConfig.for_model(model_type, **{**kwargs, "num_key_value_heads": heads})
