"""The parts of the tiny shrink that keep a config's internal relations: per-stage lists, tied widths, sub-configs.

Hierarchical vision models (swin, segformer, levit, poolformer, convnext…) describe their stages with lists
(`depths`, `hidden_sizes`, `num_heads`, `strides`, `sr_ratios`…) whose lengths must agree; speech models list
their feature extractor's convolutions (`conv_dim`, `conv_stride`); multimodal and detection models nest whole
configs (`text_config`, `vision_config`, `backbone_config`). These rules shrink all of them by what the fields
mean, read from their names and values, never from the model type:

- the number of stages (the length of `depths`) is cut to two, and every list of that length (or of one less:
  the transitions between stages), of numbers or of flags, is cut with it, as are stage-count scalars
  (`num_stages`, `num_layers`…); the stem's lists (`stem_channels`, `stem_strides`) are its own layers, not
  stages, and are kept whole (widths are then not scaled, since the stem feeds the first stage);
- depth lists (and `block_sizes`, funnel's layers per block) become 1 per stage; head lists become 2, 4, …
  (never more than before); width lists are all scaled by one common factor (so `in_channels[i+1] ==
  out_channels[i]` still holds) to a multiple of 8, which every stage's head count divides;
- scalars that equaled the hidden width (`embedding_size` in squeezebert, `pooler_output_size`, a depthwise
  convolution's `upsample_groups`) follow it;
- a group normalization's `num_groups` becomes a divisor of 8 (every shrunk width is a multiple of 8); a pair
  of ratios that describes the parts of a block (`assign_mlp_ratio`) is not a list of stage transitions;
- a head width the default states already multiplied by the width coefficient (`hidden_dim`) is divided by
  it when the coefficient is reset to 1;
- window sizes and the number of windows an image is cut into are capped, not raised, so the small image
  still covers every stage's window (a window given in pixels over merged patches, a multiple of the patch
  size, is kept); patch sizes are kept (levit's is the stride of its fixed convolution stem);
- nested configs are shrunk with the same rules; a timm backbone is replaced by the config's own
  Transformers default backbone (so no timm is needed, and it is shrunk too).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from tracefuse.exporters.tiny_rules import LAYER_COUNTS

logger = logging.getLogger(__name__)

STAGES = 2
FIRST_WIDTH = 16
HIDDEN_FIELDS = ("hidden_size", "d_model", "n_embd", "dim")
# Lists whose entries are stage sizes (the layout of the output), not structure (kernels, strides).
_WIDTH_WORDS = ("hidden_size", "hidden_dim", "embed_dim", "channels", "conv_dim", "tdnn_dim", "dims", "key_dim")
_NOT_STAGES = ("out_indices", "out_features", "stage_names", "id2label", "label2id")
_STAGE_COUNTS = ("num_stages", "num_encoder_blocks", "num_layers")
# Capped, never raised: a window of 7 over a 4x4 grid must stay valid, and a 32-letter CTC vocabulary
# (wav2vec2) stays 32. Patch sizes are kept: one can be the stride of a hard-coded stem (levit: 16). A
# detector's object queries are fewer than the anchors of a small image (rt_detr picks its top 300).
# A count of windows an image is cut into (lw_detr's 16, a square) must still fit the small image: 4 (2 x 2).
_CAPS = {"window_size": 4, "vocab_size": 1000, "num_queries": 32, "num_windows": 4}
GROUP_WIDTH = 8  # every shrunk stage width is a multiple of 8: a group-norm group count must divide it


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _stage_list(name: str, value: Any) -> bool:
    """A per-stage list: numbers or flags (`stage_downsample`), not the stem's own layers (`stem_channels`)."""
    flags = isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, bool) for v in value)
    return (_number_list(value) or flags) and name not in _NOT_STAGES and not name.startswith("stem")


def _fields(config: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _is_width(name: str) -> bool:
    return any(word in name for word in _WIDTH_WORDS) and "kernel" not in name and "stride" not in name


def _ratio_pair(name: str, value: list[Any]) -> bool:
    """Two ratios that are not per stage but per part of a block (groupvit's `assign_mlp_ratio`: tokens and
    channels), even where the model has three stages and so two transitions."""
    return "ratio" in name and len(value) == 2 and any(isinstance(v, float) for v in value)


def _group_count(fields: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A group normalization's `num_groups` (bit's 32) must divide every channel width; the shrunk widths are
    multiples of 8 (bottlenecks a quarter of a stage's width are rounded up to 8), so the count becomes its
    largest divisor of 8."""
    groups = fields.get("num_groups")
    shrunk = any(_is_width(k) and isinstance(v, list) for k, v in kwargs.items())
    if not (_is_int(groups) and groups > 1 and shrunk and GROUP_WIDTH % groups):
        return {}
    return {"num_groups": math.gcd(groups, GROUP_WIDTH)}


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def _last_output_stage(config: Any) -> int:
    """The last stage a backbone outputs when it outputs several (a detector's feature levels), else 0: a single
    output can always be the last of the kept stages."""
    indices = getattr(config, "out_indices", None)
    if not isinstance(indices, (list, tuple)) or len(indices) < 2:
        return 0
    return max((i for i in indices if _is_int(i)), default=0)


def stage_kwargs(config: Any, hidden: int, keep_outputs: bool = False) -> dict[str, Any]:
    """Shrunk values for the config's list-valued sizes, stage counts, tied widths and capped window/patch
    sizes; `hidden` is the hidden width the scalar shrink chose. With `keep_outputs` (a backbone nested in a
    detector, which reads the feature maps of the stages its config names), the stages up to the last output
    are kept."""
    fields = _fields(config)
    kwargs: dict[str, Any] = {}
    depths = fields.get("depths")
    stages = len(depths) if _number_list(depths) else None
    floor = max(STAGES, _last_output_stage(config)) if keep_outputs else STAGES
    keep = min(stages, floor) if stages else None
    layers = next((fields[k] for k in LAYER_COUNTS if _is_int(fields.get(k))), None)
    # a list with one entry per layer (laguna's num_attention_heads_per_layer) of a model without stages is
    # tiny_rules' business: it is cut with the layers, not shrunk like stage sizes
    lists = {k: list(v) for k, v in fields.items()
             if _stage_list(k, v) and (stages or layers is None or len(v) != layers or layers < 3)}
    if stages and keep < stages:
        for name, value in list(lists.items()):
            if len(value) == stages or (len(value) == stages - 1 and not _ratio_pair(name, value)):
                lists[name] = value[: keep - (stages - len(value))]
        for name, value in fields.items():  # transitions between stages given as lists of lists (levit down_ops)
            if isinstance(value, list) and len(value) == stages - 1 and all(isinstance(v, list) for v in value):
                kwargs[name] = value[: keep - 1]
        for name in _STAGE_COUNTS:
            if fields.get(name) == stages:
                kwargs[name] = keep
    widths = {k: v for k, v in lists.items() if _is_width(k) and all(_is_int(x) and x > 0 for x in v)}
    anchor = min((v[0] for v in widths.values()), default=0)
    scale = FIRST_WIDTH / anchor if anchor > FIRST_WIDTH else 1.0
    if any(k.startswith("stem") and _is_width(k) and _number_list(v) for k, v in fields.items()):
        scale = 1.0  # a stem width list is kept whole and feeds the first stage at its width
    for name, value in lists.items():
        if name in widths:
            value = [_round8(v * scale) for v in value] if scale < 1 else value
        elif "depth" in name or "repeats" in name or name == "block_sizes":  # layers per stage (funnel's blocks)
            value = [1 for _ in value]
        elif "head" in name and all(_is_int(v) for v in value):
            value = [min(v, 2 ** (i + 1)) for i, v in enumerate(value)]
        if value != list(fields[name]):
            kwargs[name] = value
    old_hidden = next((fields[k] for k in HIDDEN_FIELDS if _is_int(fields.get(k))), None)
    for name, value in fields.items():
        if (_is_int(value) and value == old_hidden and name not in HIDDEN_FIELDS and name not in kwargs
                and ("size" in name or "dim" in name or name.endswith("groups"))):
            kwargs[name] = hidden  # tied to the hidden width (embedding_size, pooler_output_size, depthwise groups)
        elif isinstance(value, float) and name.endswith("_coefficient") and value > 1:
            kwargs[name] = 1.0  # width/depth multipliers (efficientnet) would re-grow what was shrunk
            head = fields.get("hidden_dim")
            if name == "width_coefficient" and _is_int(head) and head % value == 0:
                # the head width the default states already multiplied (efficientnet's 2560: the model builds
                # round(1280 x coefficient) channels and normalizes hidden_dim of them): the unmultiplied width
                kwargs["hidden_dim"] = int(head / value)
        elif name == "embed_dim" and _is_int(value) and stages:
            kwargs[name] = FIRST_WIDTH  # the first stage's width (swin)
    for name, cap in _CAPS.items():
        patch = fields.get("patch_size")
        if name == "window_size" and _is_int(patch) and patch > 1 and _is_int(fields.get(name)) and \
                fields[name] % patch == 0 and _is_int(fields.get("spatial_merge_size")):
            continue  # a window in pixels over merged patches (qwen2.5-VL's 112 = 8 × 14, merged 2 × 2): kept
        if _is_int(fields.get(name)):
            kwargs[name] = min(fields[name], cap)
    kwargs.update(_group_count(fields, kwargs))
    return kwargs


def backbone_output_kwargs(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A backbone made of layers (a ViT as a detector's backbone: one stage per layer, no `depths`) that
    outputs the feature maps of some layers: those become the last layers of the shrunk backbone, which keeps
    at least as many layers as it has outputs (a detector wants as many feature levels as it was built for)."""
    fields = _fields(config)
    features, indices = getattr(config, "out_features", None), getattr(config, "out_indices", None)
    key = next((k for k in LAYER_COUNTS if k in kwargs and _is_int(fields.get(k))), None)
    if key is None or "depths" in fields or not isinstance(features, (list, tuple)) or not features:
        return {}
    count = len(features)
    layers = max(int(kwargs[key]), count)
    if all(f"stage{i}" in features for i in range(layers - count + 1, layers + 1)) and layers == kwargs[key]:
        return {}
    changes: dict[str, Any] = {"out_features": [f"stage{i}" for i in range(layers - count + 1, layers + 1)]}
    if isinstance(indices, (list, tuple)):
        changes["out_indices"] = list(range(layers - count + 1, layers + 1))
    if layers != kwargs[key]:
        changes[key] = layers
    logger.debug("tiny: backbone outputs %s", changes)
    return changes


def _native_default(config: Any, name: str) -> Any | None:
    """The Transformers config a timm backbone falls back to: the class's declared default for that field."""
    spec = getattr(type(config), "sub_configs_defaults", {}).get(name)
    if spec is None or not getattr(spec, "model_type", None):
        return None
    from transformers import AutoConfig

    init = {k: v for k, v in (getattr(spec, "init_kwargs", None) or {}).items() if k not in _NOT_STAGES}
    return AutoConfig.for_model(spec.model_type, **init)


def sub_config_kwargs(config: Any, shrink: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Nested configs (text_config, vision_config, backbone_config…) shrunk with `shrink(config, nested=True)`, as
    dicts to pass."""
    from transformers import PretrainedConfig

    kwargs: dict[str, Any] = {}
    for name, value in _fields(config).items():
        if not isinstance(value, PretrainedConfig):
            continue
        if value.model_type == "timm_backbone":
            native = _native_default(config, name)
            if native is None:
                continue
            logger.debug("tiny: %s is a timm backbone; using its Transformers default %s", name, native.model_type)
            value = native
            if "use_timm_backbone" in _fields(config):
                kwargs["use_timm_backbone"] = False
        changes = shrink(value, nested=True)
        changes.update(backbone_output_kwargs(value, changes))  # explicit here, unlike a top-level default
        if changes or value is not getattr(config, name):
            full = value.to_dict()
            if "depths" in changes and _last_output_stage(value) <= len(changes["depths"]) and \
                    len(changes["depths"]) == len(value.depths):  # every stage kept: outputs stay valid
                pass
            elif "depths" in changes:  # let the backbone re-derive its stage names and outputs for the new depth
                full = {k: v for k, v in full.items() if k not in _NOT_STAGES}
            elif "out_features" in changes:  # stage names follow the new layer count
                full.pop("stage_names", None)
            kwargs[name] = {**full, **changes}
    return kwargs
