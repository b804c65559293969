"""Media inputs with one more axis than the usual layout: video clips, image stacks, multi-channel waveforms.

A video model (videomae, vivit, timesformer…) takes pixel_values [batch, frames, channels, height, width], an
image-stack model (idefics2-style) [batch, images, channels, height, width], and a neural audio codec (encodec,
mimi…) input_values [batch, channels, samples]. Which layout a model wants is asked of the model itself: its
forward runs once with the usual layout (batch 1) and, when that fails, once with one more axis after batch;
the extra axis is kept if the second run works, or if the first failed on the tensor's rank ("not enough values
to unpack (expected 5, got 4)") and the second gets past that (a multimodal model then still asks for its
image placeholders, which `placeholders` counts). Its size is the config's frame count (`num_frames`) or
audio channel count (`audio_channels`), else 1. Nothing here names a model type.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from tracefuse.artifact import TensorSpec

logger = logging.getLogger(__name__)

_SIZE_FIELDS = ("num_frames", "audio_channels")
_RANK = re.compile(r"not enough values to unpack \(expected (\d+), got (\d+)\)")


def _is_rank_error(error: str | None, rank: int) -> bool:
    match = _RANK.search(error or "")
    return bool(match) and int(match.group(2)) == rank and int(match.group(1)) == rank + 1


def extra_axis_size(config: Any) -> int:
    """The size of the axis after batch: the config's (or its vision config's) frame or channel count, else 1."""
    for source in (getattr(config, "vision_config", None), config):
        for name in _SIZE_FIELDS:
            value = getattr(source, name, None) if source is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return 1


def eager_error(module: Any, feeds: dict[str, Any]) -> str | None:
    """None when the eager forward runs on `feeds`, else its error in one line (the probes that ask the model
    which inputs it takes share this)."""
    import torch

    try:
        with torch.no_grad():
            module(**feeds)
    except Exception as exc:  # noqa: BLE001 - any failure is a "no" to this layout
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def wants_extra_axis(module: Any, name: str, shape: tuple[int, ...], size: int,
                     other_feeds: dict[str, Any] | None = None) -> bool:
    """Whether the model fails on a float `name` of `shape` (batch first) but takes it with an axis of `size`
    inserted after batch (see the module docstring for what counts as taking it)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    usual = torch.randn(*shape, generator=generator)
    error = eager_error(module, {**(other_feeds or {}), name: usual})
    if error is None:
        return False
    longer = torch.randn(shape[0], size, *shape[1:], generator=generator)
    second = eager_error(module, {**(other_feeds or {}), name: longer})
    if second is not None and not (_is_rank_error(error, len(shape)) and not _is_rank_error(second, len(shape) + 1)):
        return False
    logger.info("%s: %d-d input fails (%s); with an axis of %d after batch it runs", name, len(shape), error, size)
    return True


def with_extra_axis(spec: TensorSpec, size: int) -> TensorSpec:
    """The same tensor spec with a fixed axis of `size` after its batch axis."""
    return dataclasses.replace(spec, shape=(spec.shape[0], size, *spec.shape[1:]))


def concrete(shape: tuple[int | str, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    """A spec shape with its named axes replaced by `sizes` (1 for batch when unnamed there)."""
    return tuple(d if isinstance(d, int) else sizes.get(d, 1) for d in shape)
