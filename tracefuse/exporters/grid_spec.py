"""ArchSpec fields for packed-patch vision encoders: flattened patches, an image grid, and grid-derived helpers.

A qwen2-VL style vision tower's forward takes `hidden_states` (or `pixel_values`) as `[patches, channels ×
temporal patch × patch²]` and `grid_thw`; it computes positions and attention segments from the grid with
Python loops, which torch.export cannot trace. Transformers' exporter precomputes those helpers outside the
graph (`precompute_export_inputs`) and the model takes them as keyword arguments. This module does the same
generically: it asks that function which helpers the model takes, describes each as a grid-derived input
(tracefuse.grid_fill computes it from the sizes `grid_h`, `grid_w`, with the parameters found on the model),
checks that description against Transformers' own values at every shape, and names the axes that vary with
the grid (`patches`, and e.g. the window count). One image per call; `patches` is the dynamic axis.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.grid_fill import derive

logger = logging.getLogger(__name__)

GRID_INPUT = "grid_thw"
PATCH_INPUTS = ("hidden_states", "pixel_values")
# (grid_h, grid_w) in patches: trace, then the two validation shapes; multiples of 4 cover merge sizes 1, 2, 4
GRIDS = ((4, 8), (4, 4), (8, 12))
# precompute_export_inputs key -> grid_fill kind
HELPER_KINDS = {"grid_thw": "grid_thw", "cu_seqlens": "grid_cu_seqlens", "position_ids": "grid_position_ids",
            "window_index": "grid_window_index", "cu_window_seqlens": "grid_cu_window_seqlens",
            "interp_indices": "grid_interp_indices", "interp_weights": "grid_interp_weights"}
HELPER_DTYPES = {"torch.int64": "int64", "torch.int32": "int32", "torch.float32": "float32"}


def required_params(module: Any) -> list[str]:
    """The forward parameters without a default (the inputs the module cannot run without)."""
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]


def takes_grid(module: Any) -> bool:
    """Whether `module` is a packed-patch vision encoder: its forward requires patches and `grid_thw` only."""
    required = required_params(module)
    return len(required) == 2 and required[0] in PATCH_INPUTS and required[1] == GRID_INPUT


def _find(model: Any, name: str) -> Any:
    """The first value of attribute `name` on the model or a submodule, else None (as Transformers looks)."""
    for module in model.modules():
        value = getattr(module, name, None)
        if value is not None and not callable(value):
            return value
    return None


def tower_params(model: Any) -> dict[str, Any]:
    """The parameters of the helpers' computation, found on the model the way precompute_export_inputs does."""
    import sys

    source = sys.modules[type(model).__module__]
    for helper in ("get_vision_frame_index", "get_vision_temporal_merge_index", "get_vision_pixel_shuffle_index"):
        if hasattr(source, helper):
            raise ExportError(f"this vision encoder computes a model-specific grid helper ({helper})",
                              fix="export it as module.path:factory with example inputs")
    params: dict[str, Any] = {"spatial_merge_size": int(_find(model, "spatial_merge_size") or 1),
                              "merge_temporal": bool(getattr(model, "merge_temporal", False)),
                              "include_temporal": bool(getattr(model, "include_temporal", False))}
    window, patch = _find(model, "window_size"), _find(model, "patch_size")
    if window is not None and patch is not None:
        params.update(window_size=int(window), patch_size=int(patch))
    side = _find(model, "num_grid_per_side")
    if side is not None:
        params.update(num_grid_per_side=int(side), mode=_find(model, "interpolation_mode") or "bilinear",
                      padding=_find(model, "interpolation_padding") or "border",
                      align_corners=_find(model, "interpolation_align_corners") is True)
    return params


def _sizes(grid: tuple[int, int]) -> dict[str, int]:
    return {"grid_h": grid[0], "grid_w": grid[1], "patches": grid[0] * grid[1]}


def transformers_grid_inputs(model: Any, patches_name: str, width: int, grid: tuple[int, int]) -> dict[str, Any]:
    """Zero patches of one image of `grid` (h, w) patches, its grid_thw, and the helpers Transformers' exporter
    precomputes from them (precompute_export_inputs), None values dropped."""
    import torch
    from transformers.exporters.utils import precompute_export_inputs

    h, w = grid
    inputs: dict[str, Any] = {patches_name: torch.zeros(h * w, width),
                              GRID_INPUT: torch.tensor([[1, h, w]], dtype=torch.int64)}
    precompute_export_inputs(model, inputs)
    return {k: v for k, v in inputs.items() if v is not None}


def patch_width(model: Any, config: Any, patches_name: str) -> int:
    """The flattened patch width the encoder embeds, tried from the config's channels, temporal patch and patch
    size with one eager forward each."""
    import torch

    vision = getattr(config, "vision_config", None) or config
    channels = getattr(vision, "in_channels", None) or getattr(vision, "num_channels", None) or 3
    patch = getattr(vision, "patch_size", None) or 14
    temporal = getattr(vision, "temporal_patch_size", None) or 1
    tried = []
    # with the config's temporal patch, without one, and with the usual two frames when the config leaves it
    # implicit (a tower whose patch embedding hard-codes it)
    for width in dict.fromkeys((channels * temporal * patch * patch, channels * patch * patch,
                                channels * 2 * patch * patch)):
        try:
            feeds = transformers_grid_inputs(model, patches_name, width, GRIDS[1])
            with torch.no_grad():
                model(**feeds)
            return width
        except Exception as exc:  # noqa: BLE001 - the next layout is tried
            tried.append(f"{width}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
    raise ExportError(f"no flattened patch width runs this vision encoder ({patches_name} [patches, width])",
                      found="; ".join(tried), fix="export it as module.path:factory with example inputs")


def grid_fields(module: Any, config: Any) -> dict[str, Any]:
    """ArchSpec fields (inputs, trace_shape, validation_shapes) of a packed-patch vision encoder."""
    import numpy as np

    patches_name = required_params(module)[0]
    width = patch_width(module, config, patches_name)
    params = tower_params(module)
    by_grid = {grid: transformers_grid_inputs(module, patches_name, width, grid) for grid in GRIDS}
    shapes = [_sizes(grid) for grid in GRIDS]
    inputs = [TensorSpec(patches_name, "float32", ("patches", width), {"kind": "normal"})]
    for name, value in by_grid[GRIDS[0]].items():
        if name == patches_name:
            continue
        kind = HELPER_KINDS.get(name)
        if kind is None or not hasattr(value, "shape"):
            raise ExportError(f"this vision encoder takes a grid helper '{name}' tracefuse cannot compute",
                              fix="export it as module.path:factory with example inputs")
        dims: list[int | str] = []
        for axis, size in enumerate(value.shape):
            per_grid = [by_grid[g][name].shape[axis] for g in GRIDS]
            if all(n == s["patches"] for n, s in zip(per_grid, shapes)):
                dims.append("patches")
            elif len(set(per_grid)) == 1:
                dims.append(int(size))
            else:  # varies with the grid another way (windows): an axis of its own, sized per shape
                dims.append(f"{name}_{axis}")
                for n, sizes in zip(per_grid, shapes):
                    sizes[f"{name}_{axis}"] = int(n)
        dtype = HELPER_DTYPES.get(str(value.dtype))
        if dtype is None:
            raise ExportError(f"grid helper '{name}' has dtype {value.dtype}, which tracefuse does not generate")
        inputs.append(TensorSpec(name, dtype, tuple(dims), {"kind": kind, "params": dict(params)}))
        for grid, sizes in zip(GRIDS, shapes):  # the description must give Transformers' own values
            ours = derive(kind, params, sizes)
            if not np.array_equal(ours, by_grid[grid][name].numpy()):
                raise ExportError(f"grid helper '{name}' computed from the model's parameters {params} differs "
                                  f"from Transformers' at grid {grid}",
                                  fix="export it as module.path:factory with example inputs")
    logger.info("packed-patch vision encoder: %s, helpers %s", patches_name, [s.name for s in inputs[1:]])
    return {"inputs": tuple(inputs), "trace_shape": shapes[0], "validation_shapes": tuple(shapes[1:])}
