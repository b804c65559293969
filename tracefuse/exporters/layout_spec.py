"""Layout boxes of document models (layoutlm, layoutlmv3, lilt, bros, udop): one box per token, `bbox`.

Nothing here names a model type. A forward that takes `bbox` gets boxes `[batch, sequence, K]` beside its
token ids, K the config's `dim_bbox` (bros: the four corners, 8 numbers) or 4 (x0, y0, x1, y1), with
x0 <= x1 and y0 <= y1 (the input generator's `boxes` fill). Whether the model wants integer coordinates on a
0-1000 page (layoutlm's position tables) or fractions of the page (bros' sinusoids, udop's relative bias) is
asked of the model: the first that its eager forward runs on is kept.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from tracefuse.artifact import TensorSpec
from tracefuse.exporters.media_rank import eager_error
from tracefuse.exporters.media_spec import DECODER_LENGTHS

if TYPE_CHECKING:
    from tracefuse.exporters.archspec import ArchSpec
    from tracefuse.exporters.sources import LoadedModel

logger = logging.getLogger(__name__)

BOXES = "bbox"
_CANDIDATES = (("int64", 1000.0), ("float32", 1.0))  # a 0-1000 page of integers, then fractions of the page


def _box_spec(dtype: str, scale: float, width: int) -> TensorSpec:
    return TensorSpec(BOXES, dtype, ("batch", "sequence", width), {"kind": "boxes", "scale": scale})


def with_boxes(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
    """`spec` with layout boxes when the forward takes `bbox` and runs on one of the candidates (else as is,
    and the export reports the model's own error)."""
    import inspect

    import torch

    from tracefuse.validation.inputs import generate_inputs

    params = inspect.signature(loaded.module.forward).parameters
    if BOXES not in params or BOXES in spec.input_names:
        return spec
    width = getattr(loaded.config, "dim_bbox", None)
    width = width if isinstance(width, int) and not isinstance(width, bool) and width > 0 else 4
    sizes = {**spec.trace_shape, "batch": 1}
    feeds: dict[str, Any] = {k: torch.from_numpy(v) for k, v in generate_inputs(spec.inputs, sizes).items()}
    if getattr(loaded.config, "is_encoder_decoder", False) and "decoder_input_ids" in params \
            and "decoder_input_ids" not in feeds:
        feeds["decoder_input_ids"] = torch.zeros(1, DECODER_LENGTHS[0], dtype=torch.long)
    errors = []
    for dtype, scale in _CANDIDATES:
        boxes = _box_spec(dtype, scale, width)
        trial = {**feeds, BOXES: torch.from_numpy(generate_inputs((boxes,), sizes)[BOXES])}
        error = eager_error(loaded.module, trial)
        if error is not None:  # try the next kind of coordinates
            errors.append(f"{dtype}: {error}")
            continue
        logger.info("%s: layout boxes %s on a page of %g", loaded.model_type, dtype, scale)
        return dataclasses.replace(spec, inputs=(*spec.inputs, boxes))
    logger.info("%s: no layout boxes run: %s", loaded.model_type, "; ".join(errors))
    return spec
