"""Widths tied across nested configs: a field that must equal another config's hidden size follows its shrink.

A multimodal or composite config often repeats a tower's width under another name in another config: an
audio encoder's `out_hidden_size` equals the text model's `hidden_size` (its output is scattered onto the
text embeddings), a head's `audio_hidden_size` equals the audio encoder's width, a flow head's
`condition_dim` equals the backbone's. The configs check these relations in their constructors, so a shrink
that sets only the standard width fields breaks them ("`audio_config.out_hidden_size` (8192) must match
`text_config.hidden_size` (32)").

The rule, from what the fields mean and never from the model type: a width-like field (its name ends in
`hidden_size` or `_dim`, and it is not a head, feed-forward, state, kernel or latent size) that the shrink
left alone, whose default value equals the default of a width the shrink changed, takes that width's new
value. Only the values are compared, across the whole config tree.

A tower's `out_hidden_size` (what it projects onto the text embeddings) takes the text model's new width even
where the defaults disagree.

A detector's own lists of channel widths are made of its backbone's stage widths (`encoder_in_channels` are
the widths of the stages it reads) or of its hidden width (`decoder_in_channels`): such a list, when every
entry is the default of a shrunk width, takes the new values (the hidden width first, then the stage widths
of the nested configs, position by position).

A width list the shrink left alone that the default builds from the hidden width (it ends at it: a matcher's
`out_features` of integer widths; or its entries sum to it: reformer's `axial_pos_embds_dim`) is scaled in
proportion to the new hidden width (`width_list_ties`).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

WIDTHS = ("hidden_size", "d_model", "n_embd")
_WIDTH_LISTS = ("channels", "channel_list", "hidden_sizes", "hidden_dims", "embed_dim")
_NOT_WIDTH = ("head", "intermediate", "ffn", "state", "kernel", "conv", "latent", "vocab", "embedding_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_width_like(name: Any) -> bool:
    if not isinstance(name, str):  # id2label's keys
        return False
    return (name.endswith("hidden_size") or name.endswith("_dim")) and not any(w in name for w in _NOT_WIDTH)


def _shrunk_widths(default: dict[str, Any], changed: dict[str, Any], found: dict[int, int]) -> None:
    """Collect {default width: new width} from every level of the tree where the shrink changed a width."""
    for name, value in default.items():
        new = changed.get(name)
        if isinstance(value, dict) and isinstance(new, dict):
            _shrunk_widths(value, new, found)
        elif name in WIDTHS and _is_int(value) and _is_int(new) and new != value:
            found.setdefault(value, new)


def _tie(default: dict[str, Any], changed: dict[str, Any], widths: dict[int, int], path: str) -> dict[str, Any]:
    ties: dict[str, Any] = {}
    for name, value in default.items():
        if isinstance(value, dict) and isinstance(changed.get(name), dict):
            sub = _tie(value, changed[name], widths, f"{path}{name}.")
            if sub:
                ties[name] = {**changed[name], **sub}
        elif (_is_width_like(name) and name not in WIDTHS and _is_int(value) and value in widths
              and changed.get(name, value) == value):
            ties[name] = widths[value]
            logger.debug("tiny: %s%s %d follows a width shrunk to %d", path, name, value, widths[value])
    return ties


def _int_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_int(v) for v in value)


def _is_width_list(name: Any) -> bool:
    return isinstance(name, str) and any(w in name for w in _WIDTH_LISTS) and not any(
        w in name for w in ("kernel", "stride", "head", "layers", "blocks"))


def _shrunk_width_lists(default: dict[str, Any], changed: dict[str, Any], found: dict[int, int]) -> None:
    """Collect {default stage width: new stage width}, position by position, from the width lists the shrink
    changed in nested configs (a backbone's `hidden_sizes`)."""
    for name, value in default.items():
        new = changed.get(name)
        if isinstance(value, dict) and isinstance(new, dict):
            _shrunk_width_lists(value, new, found)
            for inner, old in value.items():
                if _is_width_list(inner) and _int_list(old) and _int_list(new.get(inner)):
                    for before, after in zip(old, new[inner]):
                        found.setdefault(before, after)


def _tie_lists(default: dict[str, Any], changed: dict[str, Any], widths: dict[int, int],
               stages: dict[int, int]) -> dict[str, Any]:
    """Top-level width lists of a detector made of a backbone's stage widths (`encoder_in_channels`) or of its
    own hidden width (`decoder_in_channels`): they take the new values of what they were made of."""
    ties: dict[str, Any] = {}
    for name, value in default.items():
        if not (_is_width_list(name) and _int_list(value)):
            continue
        table = widths if all(v in widths for v in value) else stages if all(v in stages for v in value) else None
        if table is not None and list(changed.get(name, value)) != [table[v] for v in value]:
            ties[name] = [table[v] for v in value]
            logger.debug("tiny: %s %s follows the widths it was made of: %s", name, list(value), ties[name])
    return ties


def _tie_lists_tree(default: dict[str, Any], changed: dict[str, Any], widths: dict[int, int],
                    stages: dict[int, int]) -> dict[str, Any]:
    """`_tie_lists` at every level of the tree: a vision config nested in a segmenter holds the neck's list
    of its backbone's stage widths (sam2's `backbone_channel_list`)."""
    ties = _tie_lists(default, changed, widths, stages)
    for name, value in default.items():
        new = changed.get(name)
        if isinstance(value, dict) and isinstance(new, dict):
            inner = _tie_lists_tree(value, new, widths, stages)
            if inner:
                ties[name] = {**new, **inner}
    return ties


def width_tie_kwargs(default: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Changes to the shrink `kwargs` of config `default` that keep widths tied across its nested configs
    (see the module doc); nested configs come back as whole dicts, like `kwargs` holds them."""
    tree = default.to_dict()
    widths: dict[int, int] = {}
    _shrunk_widths(tree, kwargs, widths)
    if not widths:
        return {}
    full = {**tree, **kwargs}
    ties = _tie(tree, full, widths, "")
    stages: dict[int, int] = {}
    _shrunk_width_lists(tree, full, stages)
    ties.update(_tie_lists_tree(tree, {**full, **ties}, widths, stages))
    ties.update(_projection_ties({**full, **ties}))
    return ties


def _projection_ties(full: dict[str, Any]) -> dict[str, Any]:
    """A tower's `out_hidden_size` is the width it projects onto the text model's embeddings: where it is not
    the text model's new width (Transformers' default configs do not always agree: qwen3-VL's vision tower
    projects to 3584, its text model is 4096 wide), it takes that width."""
    text = full.get("text_config")
    width = text.get("hidden_size") if isinstance(text, dict) else None
    if not _is_int(width):
        return {}
    ties: dict[str, Any] = {}
    for name, sub in full.items():
        if name != "text_config" and isinstance(sub, dict) and _is_int(sub.get("out_hidden_size")) \
                and sub["out_hidden_size"] != width:
            ties[name] = {**sub, "out_hidden_size": width}
            logger.debug("tiny: %s.out_hidden_size %d follows the text width %d", name, sub["out_hidden_size"], width)
    return ties


def list_end_ties(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A hidden width that the default config sets equal to the first entry of one of its own staged width
    lists (hiera's `hidden_size` is its first stage's `embed_dim_per_stage`) takes that entry's shrunk value,
    so that the tie the model relies on holds. A list of one repeated width (a detector's
    `decoder_in_channels`, made of the hidden width) is the other direction and is left to `_tie_lists`."""
    from tracefuse.exporters.tiny_layers import read_field

    changes: dict[str, Any] = {}
    for width in WIDTHS:
        old = read_field(config, width)
        if not _is_int(old) or width not in kwargs:
            continue
        for name, new in kwargs.items():
            value = read_field(config, name)
            if name == width or not _is_width_list(name) or not _int_list(value) or not _int_list(new):
                continue
            if value[0] == old and len(set(value)) > 1 and new[0] != value[0]:
                changes[width] = new[0]
                logger.info("%s follows the first entry of %s: %d", width, name, new[0])
                break
    return changes


def _scaled_to(values: list[int], total: int, last: bool) -> list[int]:
    """`values` scaled so that their last entry (`last`) or their sum becomes `total`, each at least 1."""
    whole = values[-1] if last else sum(values)
    out = [max(1, round(v * total / whole)) for v in values]
    if last:
        out[-1] = total
    else:
        out[-1] += total - sum(out)
    return out


def width_list_ties(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Lists of widths the shrink left alone that the default config builds from its hidden width: one that
    ends at it (efficientloftr's `out_features` of integer channel widths: the last stage is the hidden
    width) or one whose entries sum to it (reformer's `axial_pos_embds_dim`: the position embedding is the
    concatenation of its axes' parts). Each is scaled, in proportion, to the shrunk hidden width."""
    from tracefuse.exporters.tiny_layers import read_field

    changes: dict[str, Any] = {}
    for width in WIDTHS:
        old, new = read_field(config, width), kwargs.get(width)
        if not (_is_int(old) and _is_int(new)) or old == new:
            continue
        for name, value in vars(config).items():
            if name.startswith("_") or name in kwargs or not _int_list(value) or len(value) < 2:
                continue
            if not (name == "out_features" or _is_width_list(name) or name.endswith(("_dim", "_dims"))):
                continue
            if value[-1] == old and value[-1] >= max(value):
                changes[name] = _scaled_to(list(value), new, last=True)
            elif sum(value) == old:
                changes[name] = _scaled_to(list(value), new, last=False)
            else:
                continue
            logger.info("tiny: %s %s follows %s %d -> %d: %s", name, list(value), width, old, new, changes[name])
        break
    return changes
