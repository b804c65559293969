"""Inputs derived from an image grid, for packed-patch vision encoders (the qwen2-VL family's towers).

Such an encoder takes one image as its flattened patches (`[patches, channels * patch area]`) and the image's
grid `grid_thw = [[1, h, w]]` (h × w patches), and computes from the grid, in Python, per-patch positions and
attention segment bounds. torch.export cannot trace that loop, so the graph takes those helpers as inputs,
computed outside it the way Transformers' own exporter does (`transformers.vision_utils`). Each helper input's
`fill` names its kind and the parameters of its computation (the merge size, the window size…), so any feeds,
from any caller, are consistent with the grid: a shape's sizes give `grid_h` and `grid_w`, and every helper
follows from them.

Like the fills in artifact.TensorSpec, this is part of what an artifact's inputs mean, so it sits beside
artifact.py: exporters describe grid inputs with it, validation generates them with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracefuse.errors import FeedError

KINDS = ("grid_thw", "grid_cu_seqlens", "grid_position_ids", "grid_window_index", "grid_cu_window_seqlens",
         "grid_interp_indices", "grid_interp_weights", "grid_text_positions")


def grid_tensor(sizes: dict[str, int]) -> Any:
    """`grid_thw` of one image of `grid_h` × `grid_w` patches, as a torch tensor."""
    import torch

    try:
        return torch.tensor([[1, int(sizes["grid_h"]), int(sizes["grid_w"])]], dtype=torch.int64)
    except KeyError as exc:
        raise FeedError("a grid-derived input needs the sizes grid_h and grid_w", found=", ".join(sizes),
                        fix="give the image grid as grid_h and grid_w (in patches)") from exc


def derive(kind: str, params: dict[str, Any], sizes: dict[str, int]) -> np.ndarray:
    """The value of one grid-derived input of `kind` (one of KINDS) for the grid in `sizes`."""
    from transformers import vision_utils

    grid = grid_tensor(sizes)
    merge = int(params.get("spatial_merge_size", 1))
    if kind == "grid_thw":
        value = grid
    elif kind == "grid_cu_seqlens":
        value = vision_utils.get_vision_cu_seqlens(grid, merge_temporal=bool(params.get("merge_temporal", False)))
    elif kind == "grid_position_ids":
        value = vision_utils.get_vision_position_ids(grid, merge, include_temporal=bool(params.get("include_temporal")))
    elif kind in ("grid_window_index", "grid_cu_window_seqlens"):
        index, bounds = vision_utils.get_vision_window_index(grid, merge, int(params["window_size"]),
                                                             int(params["patch_size"]))
        value = index if kind == "grid_window_index" else bounds
    elif kind in ("grid_interp_indices", "grid_interp_weights"):
        indices, weights = vision_utils.get_vision_interpolation_indices_and_weights(
            grid, int(params["num_grid_per_side"]), mode=str(params.get("mode", "bilinear")),
            align_corners=bool(params.get("align_corners", False)), spatial_merge_size=merge,
            padding=str(params.get("padding", "border")))
        value = indices if kind == "grid_interp_indices" else weights
    elif kind == "grid_text_positions":
        return _text_positions(int(sizes["grid_h"]) // merge, int(sizes["grid_w"]) // merge, _sequence(sizes))
    else:
        raise FeedError(f"unknown grid-derived input kind '{kind}'", fix=f"use one of: {', '.join(KINDS)}")
    return np.asarray(value.detach().cpu().numpy())


def _sequence(sizes: dict[str, int]) -> int:
    if "sequence" not in sizes:
        raise FeedError("multimodal rotary positions need the size 'sequence'", found=", ".join(sizes),
                        fix="give the text length as sequence")
    return int(sizes["sequence"])


def _text_positions(rows: int, cols: int, sequence: int) -> np.ndarray:
    """Multimodal rotary positions (M-RoPE, `[3, 1, sequence]`: temporal, height, width) of a sequence that
    starts with one image's rows x cols merged tokens, then text: an image token at (0, row, col), and text
    counting on from max(rows, cols) on all three axes (qwen2-VL's rule)."""
    if rows * cols > sequence:
        raise FeedError(f"a sequence of {sequence} tokens cannot hold the image's {rows * cols} placeholders",
                        fix=f"give a sequence of at least {rows * cols}")
    positions = np.empty((3, 1, sequence), dtype=np.int64)
    positions[0, 0, : rows * cols] = 0
    positions[1, 0, : rows * cols] = np.repeat(np.arange(rows), cols)
    positions[2, 0, : rows * cols] = np.tile(np.arange(cols), rows)
    positions[:, 0, rows * cols:] = np.arange(sequence - rows * cols) + max(rows, cols)
    return positions
