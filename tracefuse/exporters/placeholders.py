"""Media placeholder tokens of text-first multimodal models (llava-style: `image_token_id` in input_ids).

Such a model swaps each placeholder token in input_ids for one image feature, and refuses inputs whose
placeholder count differs from the feature count. How many features one generated image yields is asked of
the model itself: a forward with no placeholders fails with Transformers' shared placeholder check, whose
message carries the count ("Image features and image tokens do not match, tokens: 0, features: N"; some
models report rows × width there, so the count is checked with one more forward). The text
spec then starts every row with N placeholders and grows its sequence lengths by N. Nothing here names a
model type.
"""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

_TOKEN_FIELDS = ("image_token_id", "image_token_index")
_CHECK = "image tokens do not match"
_COUNT = re.compile(_CHECK + r", tokens: 0, features: (\d+)")


def image_token_id(config: Any) -> int | None:
    """The image placeholder token id a multimodal config declares, or None."""
    for name in _TOKEN_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# Placeholder tokens a multimodal model puts in input_ids (image, video, audio, their start/end markers).
_MEDIA_WORDS = ("image", "video", "audio", "vision", "boi", "eoi", "boa", "eoa", "img")


def placeholder_ids(config: Any) -> dict[str, int]:
    """The media placeholder / marker token ids a config declares, by field name (`image_token_id`: 32000…)."""
    return {name: value for name, value in vars(config).items()
            if name.endswith(("_token_id", "_token_index")) and any(w in name for w in _MEDIA_WORDS)
            and isinstance(value, int) and not isinstance(value, bool) and value > 0}


def lowest_placeholder(config: Any) -> int | None:
    """The lowest media placeholder token id of a config (random text ids stay below it), or None."""
    ids = placeholder_ids(config)
    return min(ids.values()) if ids else None


def image_placeholder_count(module: Any, config: Any, pixel_shape: tuple[int, ...], vocab: int,
                            extra: dict[str, Any] | None = None) -> int:
    """How many image placeholders one image of `pixel_shape` (batch 1) needs in input_ids; 0 when the model
    runs without any (it needs none, or fails for another reason, which the export then reports). `extra`:
    other feeds that go with the image (`image_sizes`)."""
    import torch

    token = image_token_id(config)
    if token is None:
        return 0
    extra = extra or {}
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, max(1, min(vocab, token)), (1, 8), generator=generator)
    pixels = torch.randn(*pixel_shape, generator=generator)
    try:
        with torch.no_grad():
            module(input_ids=ids, pixel_values=pixels, **extra)
    except Exception as exc:  # noqa: BLE001 - only the placeholder check's message is read
        match = _COUNT.search(str(exc))
        if match:
            count = _checked_count(module, config, int(match.group(1)), ids, pixels, token, extra)
            logger.info("%d image placeholder tokens per image", count)
            return count
        return 0
    return _query_count(module, config, ids, pixels, token, extra)


def _query_count(module: Any, config: Any, ids: Any, pixels: Any, token: int, extra: dict[str, Any]) -> int:
    """A Q-Former model (blip-2) scatters its `num_query_tokens` query outputs over as many placeholders and
    runs without any, unchecked: that count, when the model runs with it; else 0."""
    import torch

    count = getattr(config, "num_query_tokens", None)
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return 0
    trial = torch.cat([torch.full((1, count), token, dtype=ids.dtype), ids], dim=1)
    try:
        with torch.no_grad():
            module(input_ids=trial, pixel_values=pixels, **extra)
    except Exception:  # noqa: BLE001 - not a query-token model after all
        return 0
    logger.info("%d image placeholder tokens per image (num_query_tokens)", count)
    return count


def _checked_count(module: Any, config: Any, reported: int, ids: Any, pixels: Any, token: int,
                   extra: dict[str, Any]) -> int:
    """The placeholder count that the model accepts: the one its message reports, or that divided by the text
    width (some models report the feature tensor's size, rows × width, as the feature count)."""
    import torch

    width = getattr(getattr(config, "text_config", None) or config, "hidden_size", None)
    candidates = [reported] + ([reported // width] if isinstance(width, int) and width > 1
                               and reported % width == 0 else [])
    for count in candidates:
        trial = torch.cat([torch.full((1, count), token, dtype=ids.dtype), ids], dim=1)
        try:
            with torch.no_grad():
                module(input_ids=trial, pixel_values=pixels, **extra)
        except Exception as exc:  # noqa: BLE001 - the next candidate is tried
            if _CHECK not in str(exc):
                return count  # past the placeholder check: a later failure is the export's to report
            continue
        return count
    return reported
