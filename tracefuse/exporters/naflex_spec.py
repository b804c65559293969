"""Inputs of NaFlex vision encoders (siglip2 and the models built on its tower): patches flattened per image.

Such a forward takes `pixel_values [batch, patches, channels · patch²]`, a `pixel_attention_mask [batch,
patches]` over them, and `spatial_shapes [batch, 2]`, the grid (rows, columns) of each image's real patches,
which the model reads as Python numbers to resize its position table. Nothing here names a model type.

Here every image is a GRID × GRID grid of patches; `spatial_shapes` is a constant of the graph (archspec's
constant inputs: traced as a tensor of plain numbers, recorded in the manifest), so the batch is fixed. The
patch axis is dynamic for a vision encoder (NaFlex pads every image to a common patch count: the patches after
the grid are padding), and fixed at the grid for a text-first model, whose image placeholders follow the grid.
"""

from __future__ import annotations

from typing import Any

from tracefuse.artifact import TensorSpec

SPATIAL_SHAPES = "spatial_shapes"
PATCH_MASK = "pixel_attention_mask"
GRID = 4  # patches a side: 16 real patches per image
PADDING = 8  # the second validation shape pads every image with this many patches more
NAFLEX_SHAPES = ({"batch": 1, "patches": GRID * GRID}, {"batch": 3, "patches": GRID * GRID + PADDING})
NAFLEX_TRACE = {"batch": 2, "patches": GRID * GRID + PADDING // 2}


def takes_naflex(params: list[str]) -> bool:
    """Whether a forward takes NaFlex image inputs (flattened patches with their grid shapes)."""
    return SPATIAL_SHAPES in params and PATCH_MASK in params and "pixel_values" in params


def naflex_inputs(config: Any, dynamic: bool) -> tuple[TensorSpec, ...]:
    """pixel_values, pixel_attention_mask and spatial_shapes for GRID × GRID images (see the module doc);
    the patch axis named `patches` when `dynamic`, else fixed at the grid."""
    vision = getattr(config, "vision_config", None) or config
    patch = getattr(vision, "patch_size", 16)
    patch = patch[0] if isinstance(patch, (list, tuple)) else int(patch)
    channels = int(getattr(vision, "num_channels", 3) or 3)
    patches: int | str = "patches" if dynamic else GRID * GRID
    return (
        TensorSpec("pixel_values", "float32", ("batch", patches, channels * patch * patch), {"kind": "normal"}),
        TensorSpec(PATCH_MASK, "int64", ("batch", patches), {"kind": "mask"}),
        TensorSpec(SPATIAL_SHAPES, "int64", ("batch", 2), {"kind": "int", "low": GRID, "high": GRID + 1}),
    )


def naflex_fields(config: Any) -> dict[str, Any]:
    """ArchSpec fields of a NaFlex vision encoder: its image inputs with a dynamic patch axis."""
    return {"inputs": naflex_inputs(config, dynamic=True), "validation_shapes": NAFLEX_SHAPES,
            "trace_shape": dict(NAFLEX_TRACE)}
