"""The video input of models whose main input is `pixel_values_videos` ([batch, frames, channels, height, width]).

Nothing here names a model type. The frame count and image size are found by running the PyTorch model on
candidates, the way media_spec probes image sizes: first a short clip (FRAMES) at the image size the config
declares (`image_size`, else `crop_size` capped at media_spec.DEFAULT_IMAGE: a crop size is what the
preprocessor cuts, not a limit of the model), then the config's own frame count (`num_frames`,
`frames_per_clip`), which a model with a position per frame needs. The first that runs is kept; height,
width and frames are then fixed and batch is the dynamic axis.
"""

from __future__ import annotations

import logging
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters.media_spec import DEFAULT_IMAGE, image_config

logger = logging.getLogger(__name__)

VIDEO_INPUT = "pixel_values_videos"
FRAMES = 4  # a short clip first: a multiple of the usual tubelet sizes (1, 2, 4)
_FRAME_FIELDS = ("num_frames", "frames_per_clip")


def _int(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _candidates(config: Any) -> list[tuple[int, int]]:
    vision = image_config(config)
    size = _int(vision, "image_size") or min(_int(vision, "crop_size") or DEFAULT_IMAGE, DEFAULT_IMAGE)
    own = next((n for name in _FRAME_FIELDS if (n := _int(vision, name) or _int(config, name))), None)
    frames = [FRAMES] + ([own] if own and own != FRAMES else [])
    return [(count, size) for count in frames]


def video_input(module: Any, config: Any, model_type: str, other_feeds: dict[str, Any] | None = None) -> TensorSpec:
    """The `pixel_values_videos` spec the model runs on (with `other_feeds`, e.g. text ids), fixed frames and size."""
    import torch

    channels = _int(image_config(config), "num_channels") or 3
    errors = []
    for frames, size in _candidates(config):
        clip = torch.randn(2, frames, channels, size, size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                module(**{VIDEO_INPUT: clip, **(other_feeds or {})})
        except Exception as exc:  # noqa: BLE001 - any failure means: not this clip
            errors.append(f"{frames} frames of {size}x{size}: {type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0][:160]}")
            continue
        logger.info("%s: %s of %d frames, %dx%d", model_type, VIDEO_INPUT, frames, size, size)
        return TensorSpec(VIDEO_INPUT, "float32", ("batch", frames, channels, size, size), {"kind": "normal"})
    raise ExportError(
        f"model type '{model_type}' fails on every generated video clip", found="; ".join(errors),
        fix="export it as module.path:factory with example inputs",
    )
