"""Shrink rules that keep a config's own validation satisfied once layers, width and heads are small.

Configs check relations between fields in their constructor; a generic shrink that sets only the standard
fields breaks them. These rules restore each relation from what the fields mean (never from the model type):

- per-layer lists (`layer_types`, and every list as long as the original layer count) are cut to the new
  layer count, keeping one layer of each distinct kind (a sliding and a full attention layer; the kinds come
  from `layer_types`, else from another per-layer list of kind names such as `layers_block_type`), with the
  same layers chosen in every list; a periodic kind's `*_offset` past the new count moves to the last layer,
  and a pattern of kinds shorter than the model (repeated over its layers) keeps enough layers to hold each;
- an explicit `head_dim` larger than the shrunk width allows becomes hidden / heads (doubled while a partial
  rotary part of it would not be a multiple of 4); a `head_dim` field left None gets hidden / heads too, since
  `getattr(config, "head_dim", default)` finds the None;
- multimodal rotary sections (`mrope_section`, in `rope_scaling` or `rope_parameters`) are rescaled so that
  they still sum to half the rotary size (the head, or its partial rotary factor, with a wider head where the
  rotary part would hold fewer pairs than sections);
- multi-head latent attention's head sizes shrink together; `head_dim` stays what the default made it: the
  rotary part (deepseek) or the whole query head of a partial-rotary config (mistral4);
- state-space head counts (`mamba_n_heads`, `ssm_num_heads`…, and a pure state-space config's `num_heads`)
  become a divisor of the shrunk inner width, an explicit state-space head size follows them, and head
  groups divide them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from tracefuse.exporters.tiny_layers import FIELD as PER_LAYER
from tracefuse.exporters.tiny_layers import layer_kinds, layer_overrides, renumbered, shrunk_overrides

logger = logging.getLogger(__name__)

LAYER_COUNTS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
_NOT_PER_LAYER = ("id2label", "label2id", "architectures", "out_indices", "out_features", "stage_names")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fields(config: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _pick_layers(kinds: list[Any], count: int) -> list[int]:
    """Indices of `count` layers: the first layer of each distinct kind, then the first layers in order."""
    picked: list[int] = []
    for i, kind in enumerate(kinds):
        if kind not in [kinds[j] for j in picked]:
            picked.append(i)
    for i in range(len(kinds)):
        if len(picked) >= count:
            break
        if i not in picked:
            picked.append(i)
    return sorted(picked[:max(count, len(picked))])


def _per_layer(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    fields = _fields(config)
    key = next((k for k in LAYER_COUNTS if k in kwargs and _is_int(fields.get(k))), None)
    if key is None:
        return {}
    before, after = fields[key], kwargs[key]
    kinds = fields.get("layer_types")
    lists = {k: v for k, v in fields.items() if isinstance(v, (list, tuple)) and len(v) == before and before > after
             and k not in _NOT_PER_LAYER and k not in kwargs}
    overrides = layer_overrides(config)
    if not lists and not overrides:
        return _cycled_kinds(fields, key, after)
    if not (isinstance(kinds, (list, tuple)) and len(kinds) == before):  # another per-layer list of kind names
        kinds = next((v for v in lists.values() if all(isinstance(x, str) for x in v) and len(set(v)) > 1), None)
    kinds = layer_kinds(list(kinds) if kinds is not None else [None] * before, overrides)
    picked = _pick_layers(kinds, after)
    changes: dict[str, Any] = {k: [v[i] for i in picked] for k, v in lists.items()}
    if overrides:  # renumbered here; their sizes shrink once the global ones are known (consistency_kwargs)
        changes[PER_LAYER] = renumbered(overrides, picked)
    for name, value in changes.items():  # per-layer head counts: at most the shrunk global count
        cap = kwargs.get("num_key_value_heads" if "key_value" in name else "num_attention_heads",
                         kwargs.get("num_attention_heads"))
        if "heads" in name and _is_int(cap) and all(_is_int(v) for v in value):
            changes[name] = [min(v, cap) for v in value]
    if len(picked) != after:
        changes[key] = len(picked)  # one layer of each kind needs more than the default count
    return changes


def _cycled_kinds(fields: dict[str, Any], key: str, after: int) -> dict[str, Any]:
    """A layer pattern shorter than the model, repeated over its layers (recurrent_gemma's `block_types`:
    recurrent, recurrent, attention): the layer count grows until every kind of the pattern is in it."""
    for name, value in fields.items():
        if (isinstance(value, (list, tuple)) and 1 < len(value) < fields[key] and name not in _NOT_PER_LAYER
                and all(isinstance(v, str) for v in value) and len(set(value)) > 1):
            needed = max(value.index(kind) for kind in set(value)) + 1
            if needed > after:
                logger.debug("tiny: %d layers so that the pattern %s keeps every kind", needed, name)
                return {key: needed}
    return {}


def _rotary_factors(config: Any) -> list[float]:
    """Every `partial_rotary_factor` of the config, at the top level or in its rope parameter dicts."""
    found: list[float] = []
    stack: list[Any] = [_fields(config)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            value = item.get("partial_rotary_factor")
            if isinstance(value, float) and 0 < value < 1:
                found.append(value)
            stack.extend(v for v in item.values() if isinstance(v, dict))
    return found


def _scaled_sections(sections: list[int], total: int) -> list[int]:
    """`sections` rescaled to integers >= 1 summing to `total` (largest remainders first)."""
    whole = sum(sections)
    raw = [s * total / whole for s in sections]
    out = [max(1, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(out) < total:
        out[order[i % len(out)]] += 1
        i += 1
    while sum(out) > total and max(out) > 1:
        out[out.index(max(out))] -= 1
    return out


def _has_mrope(config: Any) -> bool:
    uses = "mrope_section" in getattr(type(config), "ignore_keys_at_rope_validation", ())
    return uses or any(isinstance(getattr(config, name, None), dict) and "mrope_section" in getattr(config, name)
                       for name in ("rope_scaling", "rope_parameters"))


def _partial_mrope_head(config: Any, head_dim: int) -> int | None:
    """An explicit head size for an M-RoPE config with a partial rotary factor whose rotary part would hold
    fewer than three pairs (one per section) at `head_dim`: glm4v_moe's 0.5 of an 8-wide head; else None."""
    factors = _rotary_factors(config)
    if not factors or not _has_mrope(config) or int(head_dim * min(factors)) // 2 >= 3:
        return None
    size = head_dim
    while int(size * min(factors)) // 2 < 3 or int(size * min(factors)) % 4:
        size *= 2
    return size


def _rope(config: Any, head_dim: int) -> dict[str, Any]:
    """M-RoPE sections that sum to half the rotary part of `head_dim` (all of it, or its partial factor)."""
    factors = _rotary_factors(config)
    if factors and _has_mrope(config):
        head_dim = int(head_dim * min(factors))
    changes: dict[str, Any] = {}
    # A model with M-RoPE whose default config omits the sections falls back to a built-in default sized for
    # a full-size head (e.g. [8, 12, 12] or [16, 24, 24]): state them, in those proportions, for the tiny head.
    uses_mrope = "mrope_section" in getattr(type(config), "ignore_keys_at_rope_validation", ())
    for name in ("rope_scaling", "rope_parameters"):
        value = getattr(config, name, None)
        if not isinstance(value, dict):
            continue
        if uses_mrope and "rope_type" in value and "mrope_section" not in value and head_dim // 2 >= 3:
            changes[name] = {**value, "mrope_section": _scaled_sections([2, 3, 3], head_dim // 2)}
            continue
        section = value.get("mrope_section")
        if isinstance(section, (list, tuple)) and section and sum(section) != head_dim // 2 >= len(section):
            changes[name] = {**value, "mrope_section": _scaled_sections(list(section), head_dim // 2)}
    return changes


def _state_space(config: Any, kwargs: dict[str, Any], hidden: int) -> dict[str, Any]:
    fields = _fields(config)
    changes: dict[str, Any] = {}
    expand = fields.get("mamba_expand", fields.get("expand", 2))
    inner = int(expand * hidden) if isinstance(expand, (int, float)) else 2 * hidden
    if _is_int(fields.get("mamba_d_ssm")) and "mamba_d_ssm" not in kwargs:
        inner = fields["mamba_d_ssm"]  # an explicit inner width (falcon_h1) keeps its own heads
    # a pure state-space config (mamba2) names its heads num_heads / head_dim
    plain = ("num_heads", "head_dim") if _is_int(fields.get("state_size")) and _is_int(fields.get("expand")) else ()
    for name in ("mamba_n_heads", "ssm_num_heads", "mamba_num_heads", *plain[:1]):
        if _is_int(fields.get(name)) and name not in kwargs and inner % fields[name]:
            changes[name] = 4
            for head in ("mamba_d_head", "ssm_head_dim", "mamba_head_dim", *plain[1:]):
                if _is_int(fields.get(head)):
                    changes[head] = inner // 4
            if _is_int(fields.get("n_groups")) and 4 % fields["n_groups"]:
                changes["n_groups"] = math.gcd(4, fields["n_groups"])  # the heads split into whole groups
    return changes


_LATENT_HEAD_DIMS = ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_LATENT_RANKS = ("kv_lora_rank", "q_lora_rank")


def _latent_attention(config: Any, kwargs: dict[str, Any], head_dim: int) -> dict[str, Any]:
    """Multi-head latent attention (DeepSeek-V2 style: `kv_lora_rank`, `qk_rope_head_dim`…): its own head sizes,
    shrunk to the new head size together (the rotary part is `head_dim`), and one KV head per query head."""
    fields = _fields(config)
    if not _is_int(fields.get("kv_lora_rank")) or not _is_int(fields.get("qk_rope_head_dim")):
        return {}
    # A part the default leaves at 0 (no rotary part: glm5_next) stays 0.
    changes: dict[str, Any] = {name: head_dim if fields[name] > 0 else 0 for name in _LATENT_HEAD_DIMS
                               if _is_int(fields.get(name))}
    changes.update({name: 2 * head_dim for name in _LATENT_RANKS if _is_int(fields.get(name))})
    if _is_int(fields.get("qk_head_dim")):
        changes["qk_head_dim"] = changes.get("qk_nope_head_dim", 0) + changes["qk_rope_head_dim"]
    if "head_dim" in fields:  # the rotary embedding is sized by head_dim: the rotary part, or (with a partial
        # rotary factor, mistral4) the whole query head, whichever the default config made it
        whole = fields.get("qk_nope_head_dim", 0) + fields["qk_rope_head_dim"]
        changes["head_dim"] = changes["qk_rope_head_dim"] + (
            changes.get("qk_nope_head_dim", 0) if fields["head_dim"] == whole != fields["qk_rope_head_dim"] else 0)
    if _is_int(fields.get("num_key_value_heads")) and "num_attention_heads" in kwargs:
        changes["num_key_value_heads"] = kwargs["num_attention_heads"]
    if "num_experts_per_tok" in fields and fields["num_experts_per_tok"] is None and _is_int(
            fields.get("n_routed_experts")):
        changes["num_experts_per_tok"] = min(2, fields["n_routed_experts"])  # a default left unset (deepseek_v2)
    return changes


def _layer_offsets(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Periodic layer kinds (`attn_layer_period` / `attn_layer_offset`: layer i is attention when
    i % period == offset): an offset past the shrunk layer count moves to the last layer, so that kind stays."""
    fields = _fields(config)
    count = next((kwargs[k] for k in LAYER_COUNTS if k in kwargs and _is_int(fields.get(k))), None)
    if count is None:
        return {}
    return {name: count - 1 for name, value in fields.items()
            if name.endswith("_offset") and _is_int(value) and value >= count
            and _is_int(fields.get(name[: -len("_offset")] + "_period"))}


def _shared_and_pooled(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Counts of layers or stages that must stay below the shrunk total: layers reusing an earlier layer's
    KV cache (`num_kv_shared_layers`: at most the layers beyond one producer per layer kind, gemma3n) and
    query-pooling stages (`num_query_pool`: fewer than the stages, hiera)."""
    fields = _fields(config)
    changes: dict[str, Any] = {}
    count = next((kwargs[k] for k in LAYER_COUNTS if k in kwargs and _is_int(fields.get(k))), None)
    shared = fields.get("num_kv_shared_layers")
    if count is not None and _is_int(shared) and shared > 0:
        kinds = kwargs.get("layer_types", fields.get("layer_types"))
        room = max(0, count - (len(set(kinds)) if isinstance(kinds, (list, tuple)) and kinds else 1))
        if shared > room:
            changes["num_kv_shared_layers"] = room
    depths = kwargs.get("depths", fields.get("depths"))
    pool = fields.get("num_query_pool")
    if _is_int(pool) and isinstance(depths, (list, tuple)) and pool >= len(depths):
        changes["num_query_pool"] = max(0, len(depths) - 1)
    return changes


def consistency_kwargs(config: Any, kwargs: dict[str, Any], hidden: int, heads: int) -> dict[str, Any]:
    """Changes that keep `config`'s own validation satisfied after the shrink `kwargs` (see the module doc)."""
    changes = _per_layer(config, kwargs)
    changes.update(_layer_offsets(config, kwargs))
    changes.update(_shared_and_pooled(config, {**kwargs, **changes}))
    width, n_heads = kwargs.get("hidden_size", hidden), kwargs.get("num_attention_heads", heads)
    if not (_is_int(width) and _is_int(n_heads)):
        return changes  # per-stage widths and heads (hierarchical vision models): tiny_stages' business
    head_dim = _fields(config).get("head_dim")  # a field, not a property derived from the width
    if _is_int(head_dim) and "hidden_size" in kwargs and head_dim > width // n_heads:
        small = width // n_heads
        while any((small * f) % 4 for f in _rotary_factors(config)) and small < head_dim:
            small *= 2  # a partial rotary part must stay a multiple of 4 (two M-RoPE axes of pairs)
        head_dim = changes["head_dim"] = small
    if not _is_int(head_dim) or head_dim <= 0:  # None, or 0 for "no per-head size of its own" (glm5_next)
        if not _is_int(head_dim) and "head_dim" in _fields(config) and "hidden_size" in kwargs:
            changes["head_dim"] = width // n_heads  # a field left None reads as None, not as hidden / heads (ministral)
        head_dim = width // n_heads
    wider = _partial_mrope_head(config, head_dim)
    if wider is not None:
        head_dim = changes["head_dim"] = wider
    changes.update(_rope(config, head_dim))
    changes.update(_state_space(config, kwargs, width))
    changes.update(_latent_attention(config, kwargs, head_dim))
    if PER_LAYER in changes:
        changes[PER_LAYER] = shrunk_overrides(config, changes[PER_LAYER], {**kwargs, **changes})
    if changes:
        logger.debug("tiny: consistency changes %s", changes)
    return changes
