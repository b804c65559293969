"""Input generation: seeded arrays from an artifact's input specs at a given shape, or a user's `.npz`."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tracefuse.artifact import TensorSpec
from tracefuse.errors import FeedError, TracefuseError
from tracefuse.grid_fill import KINDS as GRID_KINDS
from tracefuse.grid_fill import derive

logger = logging.getLogger(__name__)


def concrete_shape(spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
    """Replace a spec's named axes by sizes; raises when an axis has no size."""
    shape = []
    for dim in spec.shape:
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in sizes:
            shape.append(int(sizes[dim]))
        else:
            raise TracefuseError(
                f"no size given for axis '{dim}' of input '{spec.name}'",
                fix=f"give sizes for all of: {', '.join(str(d) for d in spec.shape if isinstance(d, str))}",
            )
    return tuple(shape)


def generate_inputs(specs: Sequence[TensorSpec], sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every spec at `sizes`; each input gets values its `fill` says make sense.

    Masks keep the first row whole and pad the end of later rows, so the mask path is exercised; a padding
    mask ({"kind": "padding"}) is the same mask negated, True at the padded positions.
    Positions ({"kind": "positions", "offset_axis": "past_sequence"}) count on from the cached length.
    Token ids may start with a fixed `prefix` (media placeholder tokens), the same in every row.
    An image grid and its helpers (kinds in grid_fill.KINDS) follow from the sizes `grid_h` and `grid_w`.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = concrete_shape(spec, sizes)
        kind = spec.fill.get("kind", "normal")
        dtype = np.dtype(spec.dtype)
        if kind == "int":
            low, high = int(spec.fill.get("low", 0)), int(spec.fill.get("high", 2))
            arr = rng.integers(low, max(high, low + 1), size=shape).astype(dtype)
            prefix = spec.fill.get("prefix") or []  # fixed leading ids: a multimodal model's media placeholders
            if prefix and shape:
                arr[..., : len(prefix)] = np.asarray(prefix[: shape[-1]], dtype=dtype)
        elif kind in ("mask", "padding"):  # 1 where valid; "padding" is its negation (True at padded positions)
            arr = np.ones(shape, dtype=dtype)
            if len(shape) == 2:
                for row in range(1, shape[0]):
                    pad = min(shape[1] - 1, 3 * row)
                    if pad > 0:
                        arr[row, shape[1] - pad:] = 0
            if kind == "padding":
                arr = (arr == 0).astype(dtype)
        elif kind == "bool":
            arr = rng.random(size=shape) > 0.5
        elif kind == "positions":  # positions of the new tokens, after `offset_axis` cached ones
            offset = int(sizes.get(str(spec.fill.get("offset_axis", "")), 0))
            arr = np.tile(np.arange(offset, offset + shape[-1]).astype(dtype), (*shape[:-1], 1))
        elif kind == "zeros":
            arr = np.zeros(shape, dtype=dtype)
        elif kind == "boxes":  # layout boxes: x0 <= x1, y0 <= y1 within [0, scale]
            arr = boxes(rng, shape, float(spec.fill.get("scale", 1000))).astype(dtype)
        elif kind in GRID_KINDS:  # an image grid and what a packed-patch vision encoder computes from it
            arr = derive(kind, spec.fill.get("params") or {}, sizes).astype(dtype)
            if arr.shape != shape:
                raise TracefuseError(f"input '{spec.name}' derived from the grid has shape {list(arr.shape)}, "
                                     f"not {list(shape)}", fix="give sizes consistent with grid_h and grid_w")
        else:
            arr = rng.standard_normal(size=shape).astype(dtype)
        feeds[spec.name] = arr
    return feeds


def boxes(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Random boxes over a page of side `scale`, one per position of `shape[:-1]`: the last axis holds
    (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, or, when it has 8 entries, the four corners of the box
    clockwise from the top left (x0, y0, x1, y0, x1, y1, x0, y1)."""
    corner = rng.uniform(0, 0.5, size=(*shape[:-1], 2))
    extent = rng.uniform(0, 0.5, size=(*shape[:-1], 2))
    x0, y0 = corner[..., 0], corner[..., 1]
    x1, y1 = x0 + extent[..., 0], y0 + extent[..., 1]
    parts = (x0, y0, x1, y0, x1, y1, x0, y1) if shape[-1] == 8 else (x0, y0, x1, y1)[: shape[-1]]
    values = np.stack(parts, axis=-1) * scale
    return np.round(values) if scale >= 100 else values


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read an `.npz` of named arrays; raises FeedError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FeedError(f"inputs file {path} does not exist", fix="give an .npz written by numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FeedError(
            f"inputs file {path} is not a readable .npz",
            found=f"{type(exc).__name__}: {exc}",
            fix="write it with numpy.savez(path, name=array, ...)",
        ) from exc


def case_name(sizes: dict[str, int]) -> str:
    """A readable name for one input shape, e.g. 'batch=3,sequence=37'."""
    return ",".join(f"{k}={v}" for k, v in sizes.items()) or "fixed"
