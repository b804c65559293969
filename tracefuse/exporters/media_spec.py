"""Inputs of vision, audio and multimodal models: pixel_values, raw waveforms, spectrograms, image+text pairs.

Which inputs a model takes is read from its forward signature and main input name; their sizes from its config
(or, for a multimodal model, from its `vision_config`). Nothing here names a model type.

- `pixel_values [batch, channels, height, width]`: height and width are dynamic when the PyTorch model runs
  at a second, non-square size (CNNs, swin, segformer, detr…); models with position embeddings fixed to the
  config's `image_size` (vit, deit, clip) raise there, and keep that size, with batch as the dynamic axis.
- `input_values [batch, samples]`: a raw waveform (wav2vec2, hubert…), batch and length dynamic.
- `input_values [batch, frames, mel_bins]`: a spectrogram (audio-spectrogram-transformer: the config has
  `num_mel_bins`); its frame count is fixed by the position embeddings (`max_length`), batch is dynamic.
- a video, an image stack or a codec's multi-channel waveform has one more axis after batch (`extra`), which
  `media_rank` finds by asking the model.
"""

from __future__ import annotations

import logging
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.exporters.media_rank import with_extra_axis
from tracefuse.exporters.naflex_spec import SPATIAL_SHAPES, naflex_inputs, takes_naflex

logger = logging.getLogger(__name__)

DEFAULT_IMAGE = 64
LARGER_IMAGES = (DEFAULT_IMAGE, 128, 256, 512)  # tried in turn when the config declares no image size
# Raw waveforms: a tiny feature extractor strides by 320 samples, so these give 14 and 24 frames.
AUDIO_SHAPES = ({"batch": 1, "samples": 4800}, {"batch": 3, "samples": 8000})
AUDIO_TRACE = {"batch": 2, "samples": 6400}
BATCH_SHAPES = ({"batch": 1}, {"batch": 3})
BATCH_TRACE = {"batch": 2}
DECODER_LENGTHS = (5, 7, 12)  # decoder_input_ids of a base encoder-decoder: trace, then the two shapes


def image_config(config: Any) -> Any:
    """The config that describes the images: the `vision_config` of a multimodal model, else the config."""
    return getattr(config, "vision_config", None) or config


def image_size(config: Any) -> int:
    """The square image size a config declares (the first of a pair), or DEFAULT_IMAGE when it has none."""
    size = getattr(image_config(config), "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else DEFAULT_IMAGE


def _height_width(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def pixel_spec(config: Any, dynamic: bool, extra: int = 0, size: int | tuple[int, int] | None = None) -> TensorSpec:
    """pixel_values [batch, channels, height, width] (height and width named when dynamic, else `size`, by
    default the config's: a side, or a (height, width) pair); with `extra`, an axis of that size after batch
    (frames of a video, images of a stack)."""
    channels = int(getattr(image_config(config), "num_channels", 3))
    size = size or image_size(config)
    shape: tuple[int | str, ...] = ("batch", channels) + (("height", "width") if dynamic else _height_width(size))
    if extra:
        shape = (shape[0], extra, *shape[1:])
    return TensorSpec("pixel_values", "float32", shape, {"kind": "normal"})


def runnable_image_size(module: Any, config: Any, other_feeds: dict[str, Any] | None = None,
                        ) -> int | tuple[int, int]:
    """The image size to use: the config's `image_size` when it declares one and the PyTorch model runs on it
    (one image, with `other_feeds`, e.g. text ids of batch 1); else the first larger size of LARGER_IMAGES the
    model runs on: a detector whose last feature map falls to one pixel at DEFAULT_IMAGE (a group norm over it
    fails), or a network whose downsampling outgrows the shrunk image (mobilevitv2 at 32 px), needs a larger
    image. A model that runs at no square image but at the (height, width) pair its config declares (mgp-str's
    32 x 128 text line) gets that pair. When none runs, the config's size (or DEFAULT_IMAGE), so the export
    reports the model's error."""
    declared = getattr(image_config(config), "image_size", None)
    start = image_size(config) if declared else 0
    if declared and _runs_at(module, config, start, other_feeds):
        return start
    for size in LARGER_IMAGES:
        if size > start and _runs_at(module, config, size, other_feeds):
            return size
    if isinstance(declared, (list, tuple)) and len(declared) == 2 and declared[0] != declared[1] \
            and _runs_at(module, config, _height_width(declared), other_feeds):
        return _height_width(declared)
    return start or DEFAULT_IMAGE


def _runs_at(module: Any, config: Any, size: int | tuple[int, int], other_feeds: dict[str, Any] | None) -> bool:
    import torch

    channels = int(getattr(image_config(config), "num_channels", 3))
    pixels = torch.randn(1, channels, *_height_width(size), generator=torch.Generator().manual_seed(0))  # batch 1:
    # a norm over a one-pixel map fails only with a single image
    try:
        with torch.no_grad():
            module(pixel_values=pixels, **(other_feeds or {}))
    except Exception as exc:  # noqa: BLE001 - any failure: try a larger image
        logger.info("the model fails at %s: %s: %s", _height_width(size), type(exc).__name__,
                    (str(exc).splitlines() or [""])[0][:160])
        return False
    return True


def runs_at_other_image_size(module: Any, config: Any, extra: int = 0, size: int | None = None) -> bool:
    """Whether the PyTorch model accepts a non-square image larger than `size` (by default its config's; one
    eager forward); `extra` as in `pixel_spec`."""
    import torch

    size = size or image_size(config)
    channels = int(getattr(image_config(config), "num_channels", 3))
    shape = (1, *((extra,) if extra else ()), channels, size + 32, size + 16)
    pixels = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            module(pixel_values=pixels)
    except Exception as exc:  # noqa: BLE001 - any failure means: the image size is fixed
        logger.info("image size fixed at %d: the model fails at %dx%d: %s: %s", size, size + 32, size + 16,
                    type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return False
    return True


def vision_fields(config: Any, dynamic: bool, extra: int = 0, size: int | tuple[int, int] | None = None,
                  ) -> dict[str, Any]:
    """ArchSpec fields for a model whose main input is pixel_values (`extra` and `size` as in `pixel_spec`; a
    (height, width) pair only with fixed sizes)."""
    size = size or image_size(config)
    if dynamic:
        shapes = ({"batch": 1, "height": size, "width": size}, {"batch": 3, "height": size + 32, "width": size + 16})
        trace = {"batch": 2, "height": size, "width": size + 32}
    else:
        shapes, trace = BATCH_SHAPES, BATCH_TRACE
    return {"inputs": (pixel_spec(config, dynamic, extra, size),), "validation_shapes": shapes,
            "trace_shape": dict(trace)}


def audio_fields(config: Any, extra: int = 0) -> dict[str, Any]:
    """ArchSpec fields for a model whose main input is input_values: a spectrogram when the config has
    `num_mel_bins` (fixed frames), else a raw waveform (dynamic length; with `extra`, [batch, extra, samples]:
    the channels of a codec's waveform)."""
    mel = getattr(config, "num_mel_bins", None)
    if isinstance(mel, int):
        frames = int(getattr(config, "max_length", 1024))
        spec = TensorSpec("input_values", "float32", ("batch", frames, mel), {"kind": "normal"})
        return {"inputs": (spec,), "validation_shapes": BATCH_SHAPES, "trace_shape": dict(BATCH_TRACE)}
    shape = ("batch", extra, "samples") if extra else ("batch", "samples")
    spec = TensorSpec("input_values", "float32", shape, {"kind": "normal"})
    return {"inputs": (spec,), "validation_shapes": AUDIO_SHAPES, "trace_shape": dict(AUDIO_TRACE)}


def paired_image_inputs(config: Any, params: list[str]) -> tuple[TensorSpec, ...]:
    """The pixel_values a text-first multimodal model (clip, siglip…) also needs: fixed size, from its
    vision_config; () for a text model. A model that merges patches (`spatial_merge_size`) and takes
    `image_sizes` (pixtral-based: mistral3) gets them, and an image whose side splits into whole merged patches
    (see merged_patch_size)."""
    if "pixel_values" not in params or getattr(config, "vision_config", None) is None:
        return ()
    if takes_naflex(params):  # flattened patches with their grid (siglip2)
        return naflex_inputs(config, dynamic=False)
    if IMAGE_SIZES in params and anyres_patches(config):  # llava-next: the image tiled into crops
        pixels = with_extra_axis(pixel_spec(config, dynamic=False), anyres_patches(config))
        return pixels, image_sizes_input(pixels)
    if IMAGE_SIZES not in params or _merge_size(config) is None:  # llava also takes (and needs no) image_sizes
        return (pixel_spec(config, dynamic=False),)
    pixels = pixel_spec(config, dynamic=False, size=merged_patch_size(config))
    return pixels, image_sizes_input(pixels)


def anyres_patches(config: Any) -> int:
    """For an any-resolution model (`image_grid_pinpoints`), the crops (the resized whole image first) one
    image of the tower's size is tiled into, by Transformers' own rule; else 0."""
    points = getattr(config, "image_grid_pinpoints", None)
    if not isinstance(points, list) or not points:
        return 0
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    size = image_size(config)
    return int(image_size_to_num_patches((size, size), points, size))


def _merge_size(config: Any) -> int | None:
    merge = getattr(config, "spatial_merge_size", None) or getattr(image_config(config), "spatial_merge_size", None)
    return merge if isinstance(merge, int) and not isinstance(merge, bool) else None


IMAGE_SIZES = "image_sizes"
# inputs the models that take them read as Python numbers (archspec.constant_values)
CONSTANT_INPUTS = (IMAGE_SIZES, SPATIAL_SHAPES)
# constants passed as plain lists of (height, width) pairs, which the models that take them accept beside tensors
# (llava-next's any-resolution tiling rounds them in Python); the others are passed as int64 tensors
LIST_CONSTANTS = (IMAGE_SIZES,)


def merged_patch_size(config: Any) -> int:
    """For a config that merges patches (`spatial_merge_size`: pixtral-based models), its image size rounded
    down to whole merged patches, at least two per side (one merged patch is a degenerate image: its feature
    rows get squeezed away with the batch); else the config's image size (a fixed position table needs it)."""
    merge, patch = _merge_size(config), getattr(image_config(config), "patch_size", None)
    if merge is None or not isinstance(patch, int):
        return image_size(config)
    unit = patch * merge
    return max(2 * unit, image_size(config) // unit * unit)


def image_sizes_input(pixels: TensorSpec) -> TensorSpec:
    """`image_sizes` [batch, 2]: every row the (height, width) of the fixed-size images in `pixels`."""
    height, width = pixels.shape[-2:]
    if not isinstance(height, int) or height != width:
        raise ValueError(f"image_sizes needs a fixed square image, not {pixels.shape}")
    return TensorSpec(IMAGE_SIZES, "int64", ("batch", 2), {"kind": "int", "low": height, "high": height + 1})


def noise_input(module: Any, config: Any, size: int | tuple[int, int] | None = None) -> TensorSpec | None:
    """The `noise` a masked-image model draws per patch to choose the patches it keeps (vit_mae), as an input:
    `[batch, patches]` at the config's fixed image size, so ONNX Runtime and PyTorch mask the same patches
    instead of each drawing its own. None when the forward takes no `noise` or the config has no patch size."""
    import inspect

    if "noise" not in inspect.signature(module.forward).parameters:
        return None
    patch = getattr(image_config(config), "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    if not isinstance(patch, int) or patch <= 0:
        return None
    height, width = _height_width(size or image_size(config))
    return TensorSpec("noise", "float32", ("batch", (height // patch) * (width // patch)), {"kind": "normal"})
