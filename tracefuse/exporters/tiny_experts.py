"""Mixture-of-experts shrink: a config with many experts keeps a few, routed to fewer per token.

A full-size MoE config keeps its expert count when only the standard widths shrink (64, 256, even 16384
experts): the exported graph then holds a branch per expert, and one tiny model takes minutes to export. The
rule reads the fields by what they mean, never by model type:

- expert counts (`num_experts`, `n_routed_experts`, `num_local_experts`, `moe_num_experts`, and the
  `zero_expert_num` of zero-computation experts) above EXPERTS become EXPERTS;
- experts per token (`num_experts_per_tok`, `moe_topk`, `moe_k`, …) above PER_TOKEN become PER_TOKEN;
- shared experts above one become one;
- expert groups (`n_group`, `num_expert_group`) become at most GROUPS, a divisor of EXPERTS with two experts
  per group (group-limited routing scores a group by its two best experts), and `topk_group` at most that;
- the experts' own widths (every `*intermediate_size` and `expert_ffn_hidden_size` of such a config) at most
  the shrunk feed-forward width;
- a config that leaves every expert count unset (None) gets those small values for its unset fields, unless
  a switch (`enable_moe_block=False`) says its layers are dense.
"""

from __future__ import annotations

from typing import Any

EXPERTS = 4
PER_TOKEN = 2
GROUPS = 2
_COUNTS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts", "zero_expert_num")
_PER_TOKEN = ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k", "top_k_experts")
_SHARED = ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts")
_GROUPS = ("n_group", "num_expert_group")
_WIDTHS = ("expert_ffn_hidden_size",)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expert_kwargs(fields: dict[str, Any], ffn: int) -> dict[str, Any]:
    """The changes for a config's `fields` (its attributes) when it has more than EXPERTS experts; `ffn` is the
    shrunk feed-forward width. Empty for a dense config or one that already has few experts."""
    if any(name in fields for name in _COUNTS[:-1]) and all(fields.get(name) is None for name in _COUNTS[:-1]):
        switched_off = any(value is False and "moe" in name for name, value in fields.items())
        return {} if switched_off else _unset_expert_kwargs(fields, ffn)  # enable_moe_block=False: dense
    if not any(_is_int(fields.get(name)) and fields[name] > EXPERTS for name in _COUNTS[:-1]):
        return {}
    changes: dict[str, Any] = {}
    for names, cap in ((_COUNTS, EXPERTS), (_PER_TOKEN, PER_TOKEN), (_SHARED, 1), (_GROUPS, GROUPS)):
        changes.update({name: cap for name in names if _is_int(fields.get(name)) and fields[name] > cap})
    groups = next((changes.get(name, fields[name]) for name in _GROUPS if _is_int(fields.get(name))), None)
    if groups is not None and _is_int(fields.get("topk_group")) and fields["topk_group"] > groups:
        changes["topk_group"] = groups
    changes.update({name: ffn for name, value in fields.items()
                    if (name.endswith("intermediate_size") and name != "intermediate_size" or name in _WIDTHS)
                    and _is_int(value) and value > ffn})
    return changes


def _unset_expert_kwargs(fields: dict[str, Any], ffn: int) -> dict[str, Any]:
    """A config whose expert fields are all unset (None: the default leaves them to the checkpoint, and the
    model builds its router all the same) gets EXPERTS experts, PER_TOKEN per token, one shared expert and
    expert widths of the feed-forward width, each for the unset fields it has."""
    changes: dict[str, Any] = {}
    for names, value in ((_COUNTS[:-1], EXPERTS), (_PER_TOKEN, PER_TOKEN), (_SHARED, 1)):
        changes.update({name: value for name in names if name in fields and fields[name] is None})
    changes.update({name: ffn for name, value in fields.items() if value is None and (
        name.endswith("intermediate_size") and name != "intermediate_size" or name in _WIDTHS)})
    return changes
