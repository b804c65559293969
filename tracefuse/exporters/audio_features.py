"""Inputs of speech models that take spectrogram features (`input_features`, `audio_mel`…) as their main input.

Nothing here names a model type. The mel-bin count is read from the config (or its audio/encoder sub-config);
the layout ([batch, mel, frames] or [batch, frames, mel]) and the frame count are found by running the PyTorch
model on candidates, the way media_spec probes image sizes: the first layout and length the model accepts is
kept, and the frame axis is dynamic when the model also runs at another length (a model whose positions are
fixed, like Whisper's 3000 frames, keeps its length and gets batch as its only dynamic axis).
"""

from __future__ import annotations

import logging
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters.media_spec import DECODER_LENGTHS

logger = logging.getLogger(__name__)

FEATURE_INPUTS = ("input_features", "audio_mel", "input_speech_features", "features")
_MEL_FIELDS = ("num_mel_bins", "feature_size", "n_mels", "mel_bins", "num_mels", "input_feat_per_channel",
               "input_dim", "num_input_features", "n_mel_channels", "input_feat_size", "feature_projection_input_dim")
_SUB_CONFIGS = ("audio_config", "encoder_config", "audio_encoder_config", "speech_config", "encoder")
FRAMES = (64, 96, 128)  # tried in turn; a model with fixed positions also gets its own length
FRAME_STEP = 32  # the second validation length is this many frames longer (a multiple of common subsamplings)
MASK_INPUTS = ("input_features_mask", "feature_attention_mask", "audio_attention_mask", "attention_mask")
# boolean masks that are True at the padded frames (gemma3n's audio encoder masks with masked_fill(mask, 0))
PADDING_MASK_INPUTS = ("audio_mel_mask",)


def _configs(config: Any) -> list[Any]:
    found = [config]
    for name in _SUB_CONFIGS:
        sub = getattr(config, name, None)
        if sub is not None and not isinstance(sub, (int, float, str, list, dict)):
            found.append(sub)
    return found


def mel_bins(config: Any) -> int | None:
    """The mel-bin (feature) count a speech config declares, or None."""
    for cfg in _configs(config):
        for name in _MEL_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _fixed_lengths(config: Any) -> list[int]:
    lengths = []
    for cfg in _configs(config):
        positions = getattr(cfg, "max_source_positions", None)
        if isinstance(positions, int) and positions > 0:
            lengths += [positions * 2, positions]  # two stride-2 convs before the positions (Whisper-style)
    return lengths


def _mask_specs(module: Any) -> tuple[TensorSpec, ...]:
    """The frame mask the forward takes, if it takes one (a padding mask, True at padded frames, first)."""
    import inspect

    params = inspect.signature(module.forward).parameters
    padding = next((n for n in PADDING_MASK_INPUTS if n in params), None)
    if padding is not None:
        return (TensorSpec(padding, "bool", ("batch", "frames"), {"kind": "padding"}),)
    name = next((n for n in MASK_INPUTS if n in params), None)
    return () if name is None else (TensorSpec(name, "int64", ("batch", "frames"), {"kind": "mask"}),)


def _runs(module: Any, config: Any, name: str, shape: tuple[int, ...], extras: tuple[TensorSpec, ...] = (),
          frames_axis: int = 2) -> str | None:
    """None when the model runs on random features of `shape` (plus `extras`), else the error's first line.
    An encoder-decoder also gets decoder token ids (the spec adds them later, text_spec.with_decoder_ids)."""
    import inspect

    import torch

    features = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    feeds = {name: features}
    for spec in extras:  # masks: every frame valid (all ones, or a padding mask all False)
        valid = torch.ones(shape[0], shape[frames_axis], dtype=torch.long)
        feeds[spec.name] = (valid == 0) if spec.fill.get("kind") == "padding" else valid
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in inspect.signature(
            module.forward).parameters:
        feeds["decoder_input_ids"] = torch.zeros(shape[0], DECODER_LENGTHS[0], dtype=torch.long)
    try:
        with torch.no_grad():
            module(**feeds)
    except Exception as exc:  # noqa: BLE001 - any failure means: not this layout or length
        return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    return None


def feature_fields(module: Any, config: Any, name: str, model_type: str) -> dict[str, Any]:
    """ArchSpec fields for a model whose main input is a spectrogram named `name`."""
    mel = mel_bins(config)
    if mel is None:
        raise ExportError(
            f"model type '{model_type}' takes '{name}' (spectrogram features), and its config declares no "
            "mel-bin count",
            found=f"none of {', '.join(_MEL_FIELDS)} in the config",
            fix="export it as module.path:factory with example inputs",
        )
    errors: dict[str, str] = {}
    masks = _mask_specs(module)
    attempts: list[tuple[TensorSpec, ...]] = [(), masks] if masks else [()]  # without a frame mask, then with
    for frames in (*FRAMES, *_fixed_lengths(config)):
        for mel_first in (True, False):
            axis_at = 2 if mel_first else 1
            for extras in attempts:
                shape = (2, mel, frames) if mel_first else (2, frames, mel)
                error = _runs(module, config, name, shape, extras, axis_at)
                if error is not None:
                    errors.setdefault("mel first" if mel_first else "frames first", error)
                    continue
                longer = (2, mel, frames + FRAME_STEP) if mel_first else (2, frames + FRAME_STEP, mel)
                dynamic = _runs(module, config, name, longer, extras, axis_at) is None
                return _fields(name, mel, frames, mel_first, dynamic, extras, model_type)
    raise ExportError(
        f"model type '{model_type}' fails on generated '{name}' of {mel} mel bins in both layouts",
        found="; ".join(f"{layout}: {error}" for layout, error in errors.items()),
        fix="export it as module.path:factory with example inputs",
    )


def _fields(name: str, mel: int, frames: int, mel_first: bool, dynamic: bool, extras: tuple[TensorSpec, ...],
            model_type: str) -> dict[str, Any]:
    axis: int | str = "frames" if dynamic else frames
    dims = ("batch", mel, axis) if mel_first else ("batch", axis, mel)
    if not dynamic:  # a fixed length: a mask over the frames gets that length too
        extras = tuple(TensorSpec(s.name, s.dtype, tuple(frames if d == "frames" else d for d in s.shape), s.fill)
                       for s in extras)
    inputs = (TensorSpec(name, "float32", dims, {"kind": "normal"}), *extras)
    shapes: tuple[dict[str, int], ...]
    if dynamic:
        shapes = ({"batch": 1, "frames": frames}, {"batch": 3, "frames": frames + FRAME_STEP})
        trace = {"batch": 2, "frames": frames + FRAME_STEP // 2}
    else:
        shapes, trace = ({"batch": 1}, {"batch": 3}), {"batch": 2}
    logger.info("%s: %s %s (%s)", model_type, name, dims, "dynamic frames" if dynamic else "fixed frames")
    return {"inputs": inputs, "validation_shapes": shapes, "trace_shape": trace}
