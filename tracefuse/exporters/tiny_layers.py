"""Heterogeneous layers: a config's `per_layer_config` (layer index -> the fields that layer overrides), shrunk.

Transformers 5 lets a config give some layers their own head size or head counts (gemma4's full-attention
layers have a head size twice the sliding ones'; dots3_note's later layers have half the heads). The config
checks that every key is a layer index below `num_hidden_layers`, so a shrink to two layers must renumber
them, and the overridden sizes must shrink with the global ones they vary from. The rules, from what the
fields mean and never from the model type:

- a layer's overridden fields are part of its kind: the layers kept by the shrink include the first layer of
  each distinct (layer type, overridden field names) pair, so a heterogeneous layer stays in the tiny model;
- the kept layers' overrides are renumbered to their new positions; the others are dropped;
- an overridden integer that the shrink changed globally keeps its ratio to the global value when that gives a
  whole number (gemma4: 512 against 256 becomes 16 against 8), else takes the new global value; other
  overrides (a sliding window, a flag) are kept.

A per-layer attribute cannot be read from the global config (`AmbiguousGlobalPerLayerAttributeError`):
`read_field` reads the global value stored on the config instead.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

FIELD = "per_layer_config"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_field(config: Any, name: str) -> Any:
    """`config.<name>`, or None; for a field that varies per layer, the global value the config stores."""
    try:
        return getattr(config, name, None)
    except RuntimeError:  # AmbiguousGlobalPerLayerAttributeError: a per-layer attribute read globally
        return vars(config).get(name)


def layer_overrides(config: Any) -> dict[int, dict[str, Any]]:
    """{layer index: overridden fields} of a heterogeneous config; {} for any other config."""
    try:
        raw = config.to_dict().get(FIELD)
    except Exception:  # noqa: BLE001 - a config that cannot serialize has no overrides we can read
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[int, dict[str, Any]] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and str(key).isdigit():
            out[int(key)] = dict(value)
    return out


def layer_kinds(kinds: list[Any], overrides: dict[int, dict[str, Any]]) -> list[Any]:
    """Each layer's kind with the names of the fields it overrides folded in (not their values: a field that
    every layer sets differently would keep every layer), so an overriding layer is a kind of its own."""
    if not overrides:
        return kinds
    return [(kind, tuple(sorted(overrides.get(i, {})))) for i, kind in enumerate(kinds)]


def renumbered(overrides: dict[int, dict[str, Any]], picked: list[int]) -> dict[int, dict[str, Any]]:
    """The overrides of the kept layers `picked`, keyed by their new positions."""
    return {new: dict(overrides[old]) for new, old in enumerate(picked) if old in overrides}


def shrunk_overrides(config: Any, overrides: dict[int, dict[str, Any]], merged: dict[str, Any]) -> dict[str, Any]:
    """`per_layer_config` for the constructor: each overridden integer the shrink changed globally (`merged`
    holds the new global values) follows it, by ratio where whole (see the module doc)."""
    out: dict[str, Any] = {}
    for layer, fields in sorted(overrides.items()):
        shrunk = {}
        for name, value in fields.items():
            old, new = vars(config).get(name), merged.get(name)
            if _is_int(value) and _is_int(old) and _is_int(new) and old > 0 and new != old:
                scaled = new * value / old
                value = int(scaled) if scaled >= 1 and scaled == int(scaled) else new
            shrunk[name] = value
        out[str(layer)] = shrunk
    logger.debug("tiny: per-layer overrides %s", out)
    return out
