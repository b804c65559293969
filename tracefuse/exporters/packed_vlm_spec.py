"""ArchSpec fields for qwen2-VL style vision-language models: text after one image's placeholders, the image as
packed patches, and the multimodal rotary positions computed outside the graph.

Such a model's forward takes `pixel_values` as flattened patches with `image_grid_thw`, runs a packed-patch
vision tower (grid_spec), scatters its merged tokens over the image placeholders in `input_ids`, and computes
3-D rotary positions (M-RoPE) from the token types and the grid with a Python loop (`get_rope_index`), which
no exporter can trace. As for the tower alone, the graph takes what that loop computes as inputs: the
`position_ids` of the whole sequence, and the tower's grid helpers under the `image_` prefix Transformers
routes to the tower (`image_cu_seqlens`…). Each is described by a grid fill (tracefuse.grid_fill) and checked
against Transformers' own values at every shape; the model's output with them is checked against its output
without them. One image of a fixed grid in a batch of one; the text length is the dynamic axis.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters.grid_spec import (
    HELPER_DTYPES,
    HELPER_KINDS,
    patch_width,
    required_params,
    takes_grid,
    tower_params,
    transformers_grid_inputs,
)
from tracefuse.exporters.placeholders import image_token_id, lowest_placeholder
from tracefuse.exporters.text_spec import forward_params
from tracefuse.grid_fill import derive

logger = logging.getLogger(__name__)

GRID = (4, 8)  # (grid_h, grid_w) in patches of the one image: 2 x 4 merged tokens at merge size 2
TEXT = (9, 16, 37)  # text tokens after the placeholders: trace, then the two validation shapes
PREFIX = "image_"  # Transformers strips it and passes the rest to the vision tower (accepts_precomputed_kwargs)


def _tower(module: Any) -> Any | None:
    return next((m for m in module.modules() if m is not module and takes_grid(m)), None)


def takes_packed_image(module: Any) -> bool:
    """Whether `module` is a qwen2-VL style model: its forward takes `input_ids`, `pixel_values` and
    `image_grid_thw`, and its vision tower is a packed-patch encoder. (Most compute multimodal rotary positions,
    `get_rope_index`; the others count text positions as usual.)"""
    params = set(forward_params(module))
    return {"pixel_values", "image_grid_thw", "input_ids"} <= params and _tower(module) is not None


def _rope_index(module: Any, ids: Any, grid: Any, mask: Any, count: int) -> Any:
    """Transformers' own M-RoPE positions for `ids` (the image's `count` placeholders first)."""
    import torch

    wanted = inspect.signature(module.get_rope_index).parameters
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[:, :count] = 1
    given = {"input_ids": ids, "image_grid_thw": grid, "attention_mask": mask, "mm_token_type_ids": types}
    return module.get_rope_index(**{k: v for k, v in given.items() if k in wanted})[0]


def packed_image_fields(module: Any, config: Any) -> dict[str, Any]:
    """ArchSpec fields (inputs, trace_shape, validation_shapes) of a qwen2-VL style model; raises ExportError
    where the model's helpers or positions follow another rule than the ones tracefuse computes."""
    import numpy as np

    tower = _tower(module)
    patches_name = required_params(tower)[0]
    width = patch_width(tower, tower.config, patches_name)
    params = tower_params(tower)
    merge = int(params.get("spatial_merge_size", 1))
    count = (GRID[0] // merge) * (GRID[1] // merge)
    token = image_token_id(config)
    text_config = getattr(config, "text_config", None) or config
    vocab = int(getattr(text_config, "vocab_size", None) or getattr(config, "vocab_size", 0) or 0)
    if token is None or not vocab:
        raise ExportError("this vision-language model declares no image token id or vocabulary",
                          fix="export it as module.path:factory with example inputs")
    high = min(vocab, lowest_placeholder(config) or vocab)
    shapes = [{"sequence": count + n, "grid_h": GRID[0], "grid_w": GRID[1]} for n in TEXT]
    helpers = transformers_grid_inputs(tower, patches_name, width, GRID)
    inputs = [TensorSpec("input_ids", "int64", (1, "sequence"),
                         {"kind": "int", "low": 0, "high": high, "prefix": [token] * count}),
              TensorSpec("attention_mask", "int64", (1, "sequence"), {"kind": "mask"}),
              TensorSpec("pixel_values", "float32", (GRID[0] * GRID[1], width), {"kind": "normal"}),
              TensorSpec("image_grid_thw", "int64", (1, 3), {"kind": "grid_thw", "params": dict(params)})]
    mrope = hasattr(module, "get_rope_index") and "position_ids" in set(forward_params(module))
    if mrope:
        inputs.append(TensorSpec("position_ids", "int64", (3, 1, "sequence"),
                                 {"kind": "grid_text_positions", "params": {"spatial_merge_size": merge}}))
    for name, value in helpers.items():
        if name in (patches_name, "grid_thw"):
            continue
        kind, dtype = HELPER_KINDS.get(name), HELPER_DTYPES.get(str(getattr(value, "dtype", "")))
        if kind is None or dtype is None:
            raise ExportError(f"this vision tower takes a grid helper '{name}' tracefuse cannot compute",
                              fix="export it as module.path:factory with example inputs")
        if not np.array_equal(derive(kind, params, shapes[0]), value.numpy()):
            raise ExportError(f"grid helper '{name}' computed from the tower's parameters {params} differs from "
                              "Transformers'", fix="export it as module.path:factory with example inputs")
        inputs.append(TensorSpec(PREFIX + name, dtype, tuple(int(d) for d in value.shape),
                                 {"kind": kind, "params": dict(params)}))
    _check(module, inputs, shapes, count, mrope)
    logger.info("qwen2-VL style model: one image of %s patches (%d placeholders), helpers %s", GRID, count,
                [s.name for s in inputs if s.name.startswith(PREFIX)])
    return {"inputs": tuple(inputs), "trace_shape": shapes[0], "validation_shapes": tuple(shapes[1:])}


def _check(module: Any, inputs: list[TensorSpec], shapes: list[dict[str, int]], count: int, mrope: bool) -> None:
    """The positions fill gives Transformers' M-RoPE at every shape, and the model with the precomputed inputs
    gives what it gives computing them itself."""
    import numpy as np
    import torch

    from tracefuse.validation.inputs import generate_inputs

    for sizes in shapes:
        feeds = {k: torch.from_numpy(v) for k, v in generate_inputs(inputs, sizes).items()}
        if not mrope:
            continue
        theirs = _rope_index(module, feeds["input_ids"], feeds["image_grid_thw"], feeds["attention_mask"], count)
        if not np.array_equal(theirs.numpy(), feeds["position_ids"].numpy()):
            raise ExportError("this model's multimodal rotary positions follow another rule than qwen2-VL's "
                              "(text counting on from the image's larger side)",
                              fix="export it as module.path:factory with example inputs")
    types = torch.zeros_like(feeds["input_ids"], dtype=torch.int32)
    types[:, :count] = 1
    own = {k: feeds[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
    extra = {"mm_token_type_ids": types} if "mm_token_type_ids" in set(forward_params(module)) else {}
    try:
        with torch.no_grad():
            want = module(**own, **extra).last_hidden_state
            got = module(**feeds).last_hidden_state
    except Exception as exc:  # noqa: BLE001 - a model's forward can raise anything
        raise ExportError("the PyTorch model fails on one image with its placeholders",
                          found=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                          fix="export it as module.path:factory with example inputs") from exc
    if not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
        raise ExportError("the model with precomputed positions and grid helpers differs from its own computation",
                          found=f"max abs difference {(want - got).abs().max().item():.3g}",
                          fix="export it as module.path:factory with example inputs")
