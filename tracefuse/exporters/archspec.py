"""ArchSpec: what an architecture and task need for export — inputs, named dynamic axes, shapes, tolerances.

Specs are resolved from the model's config and forward signature; a small override table, keyed by
(model_type, task), holds what introspection cannot know. There is no class per architecture.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters.audio_features import FEATURE_INPUTS, feature_fields
from tracefuse.exporters.decoder_spec import decoder_spec_fields
from tracefuse.exporters.embeds_spec import is_vector_input, vector_fields
from tracefuse.exporters.grid_spec import grid_fields, takes_grid
from tracefuse.exporters.layout_spec import with_boxes
from tracefuse.exporters.media_spec import (
    BATCH_SHAPES,
    BATCH_TRACE,
    CONSTANT_INPUTS,
    audio_fields,
    noise_input,
    pixel_spec,
    runnable_image_size,
    runs_at_other_image_size,
    vision_fields,
)
from tracefuse.exporters.naflex_spec import naflex_fields, takes_naflex
from tracefuse.exporters.packed_vlm_spec import packed_image_fields, takes_packed_image
from tracefuse.exporters.series_spec import SERIES_INPUT, series_fields
from tracefuse.exporters.sources import LoadedModel
from tracefuse.exporters.text_spec import (
    extra_axis,
    forward_params,
    random_ids,
    required_ids,
    text_inputs,
    text_positions,
    text_shapes,
    with_decoder_ids,
    with_side_ids,
    with_text_ids,
)
from tracefuse.exporters.video_spec import VIDEO_INPUT, video_input

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}


@dataclass(frozen=True)
class ArchSpec:
    """How to export one (model_type, task): inputs with named axes, the shapes to trace and validate at."""

    model_type: str
    task: str
    inputs: tuple[TensorSpec, ...]
    trace_shape: dict[str, int]
    validation_shapes: tuple[dict[str, int], ...]
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    dynamic_image_size: bool = False
    # inputs the model reads as Python numbers (`image_sizes`): not graph inputs, but constants the graph is
    # traced with (see constant_values); the batch is then fixed, since they hold one row per image
    constant_inputs: tuple[TensorSpec, ...] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the graph inputs, in order."""
        return tuple(t.name for t in self.inputs)


# (model_type, task or None for every task) -> fields to replace on the resolved spec.
_OVERRIDES: dict[tuple[str, str | None], dict[str, Any]] = {}


def register_override(model_type: str, task: str | None = None, **changes: Any) -> None:
    """Register spec changes for a model type (and optionally one task). A duplicate key raises."""
    key = (model_type, task)
    if key in _OVERRIDES:
        raise ValueError(f"an ArchSpec override for {key} is already registered")
    unknown = set(changes) - {f.name for f in dataclasses.fields(ArchSpec)}
    if unknown:
        raise ValueError(f"unknown ArchSpec fields in override {key}: {sorted(unknown)}")
    _OVERRIDES[key] = changes


# Whether a vision model takes any image size is probed (media_spec.runs_at_other_image_size); an override
# `dynamic_image_size=False` keeps one image size for a model that runs eagerly at other sizes but takes
# a different branch there, which the traced graph does not hold: swin and the models built on its blocks
# (maskformer, whose default backbone is swin) clamp the window (and drop the shift) on small stages; mobilevit
# interpolates feature maps that are not a multiple of its patch size (mobilevitv2 also folds its patches back
# with sizes computed in Python, which neither exporter keeps symbolic); mobilenet v1/v2 compute TensorFlow
# "SAME" padding from the size in Python, so the traced graph keeps the trace size's padding (a wrong output
# shape elsewhere).
for _type in ("swin", "swinv2", "donut-swin", "maskformer-swin", "maskformer", "mobilevit", "mobilevitv2",
              "mobilenet_v1", "mobilenet_v2"):
    register_override(_type, dynamic_image_size=False)


def _factory_spec(loaded: LoadedModel) -> ArchSpec:
    import torch

    inputs = []
    trace: dict[str, int] = {}
    for name, tensor in (loaded.example_inputs or {}).items():
        if not isinstance(tensor, torch.Tensor):
            raise ExportError(f"example input '{name}' is a {type(tensor).__name__}, not a tensor")
        axes = loaded.dynamic_axes.get(name, {})
        shape = tuple(axes.get(i, int(d)) for i, d in enumerate(tensor.shape))
        for i, axis in axes.items():
            trace[axis] = int(tensor.shape[i])
        if tensor.dtype == torch.bool:
            fill: dict[str, Any] = {"kind": "bool"}
        elif tensor.dtype.is_floating_point:
            fill = {"kind": "normal"}
        else:
            fill = {"kind": "int", "low": int(tensor.min()), "high": int(tensor.max()) + 1}
        inputs.append(TensorSpec(name, str(tensor.dtype).removeprefix("torch."), shape, fill))
    shapes = (dict(trace), {k: v + 3 for k, v in trace.items()}) if trace else ({},)
    return ArchSpec("custom", "custom", tuple(inputs), trace, shapes)


def _refuse_no_cache_encoder_decoder(loaded: LoadedModel) -> None:
    if getattr(loaded.config, "is_encoder_decoder", False):
        raise ExportError(
            "use_cache=False (--no-cache) exports decoder-only models as one plain graph; "
            f"'{loaded.model_type}' is an encoder-decoder, whose decoder graph always carries its KV cache",
            found=f"model type {loaded.model_type}, task {loaded.task}",
            fix="export it without --no-cache",
        )


def spec_axes(spec: ArchSpec) -> list[str]:
    """The named (dynamic) axes of a spec's inputs, in order of first use."""
    names: list[str] = []
    for tensor in spec.inputs:
        names += [d for d in tensor.shape if isinstance(d, str) and d not in names]
    return names


def fix_axes(spec: ArchSpec, axes: Sequence[str]) -> ArchSpec:
    """The spec with `axes` fixed at their trace size ("*": every axis but batch): those leave the graph's
    dynamic axes, and every validation shape takes the trace size for them. For a model that torch.export
    specializes on an axis (it "inferred a static shape": mamba's sequence). It does not help a forward that
    reads sizes from tensor values (`.item()`: data-dependent guards), which stay unbacked at any size."""
    named = spec_axes(spec)
    wanted = [a for a in named if a != "batch"] if list(axes) == ["*"] else list(axes)
    unknown = [a for a in wanted if a not in named]
    if unknown:
        raise ExportError(f"cannot fix axis {', '.join(map(repr, unknown))}: the inputs have no such axis",
                          found=f"dynamic axes of {spec.model_type}: {', '.join(named) or 'none'}",
                          fix="name one of those axes, or '*' for every axis but batch")
    if not wanted:
        return spec
    sizes = {a: spec.trace_shape[a] for a in wanted}
    inputs = tuple(dataclasses.replace(t, shape=tuple(sizes.get(d, d) if isinstance(d, str) else d
                                                      for d in t.shape)) for t in spec.inputs)
    shapes: list[dict[str, int]] = []
    for shape in spec.validation_shapes:  # the fixed sizes stay named, so fills that read them still work
        if {**shape, **sizes} not in shapes:
            shapes.append({**shape, **sizes})
    logger.info("%s: axes fixed at their trace size: %s", spec.model_type, sizes)
    return dataclasses.replace(spec, inputs=inputs, validation_shapes=tuple(shapes),
                               dynamic_image_size=spec.dynamic_image_size and not {"height", "width"} & set(sizes))


def _video_spec(loaded: LoadedModel) -> ArchSpec:
    """A video model's spec: the clip (fixed frames and size, video_spec), after the text inputs of a
    video-text model whose forward requires `input_ids` (their batch and sequence axes dynamic)."""
    params = inspect.signature(loaded.module.forward).parameters
    if params.get("input_ids") is None or params["input_ids"].default is not inspect.Parameter.empty:
        clip = video_input(loaded.module, loaded.config, loaded.model_type)
        return ArchSpec(loaded.model_type, loaded.task, (clip,), trace_shape=dict(BATCH_TRACE),
                        validation_shapes=BATCH_SHAPES)
    text = text_inputs(loaded)
    ids = random_ids(int(text[0].fill["high"])).repeat(2, 1)  # the probe's clips come in a batch of 2
    clip = video_input(loaded.module, loaded.config, loaded.model_type, {"input_ids": ids})
    trace, shapes = text_shapes(text)
    return ArchSpec(loaded.model_type, loaded.task, (*text, clip), trace_shape=trace, validation_shapes=shapes)


def _main_input(loaded: LoadedModel) -> str | None:
    """The module's `main_input_name` when its forward takes it; else the first forward parameter that is an
    input this module can generate (a vision tower that inherits the default "input_ids" but takes only
    pixel_values), else its first required vector input."""
    name = getattr(loaded.module, "main_input_name", None)
    params = forward_params(loaded.module)
    if name in params:
        return name
    known = [p for p in params if p in ("input_ids", "pixel_values", "input_values", *FEATURE_INPUTS, SERIES_INPUT,
                                           VIDEO_INPUT)]
    if not known:  # a required vector input (a Q-Former's query_embeds)
        required = inspect.signature(loaded.module.forward).parameters
        known = [p for p in params if is_vector_input(p) and required[p].default is inspect.Parameter.empty]
    if known:
        logger.info("main input %s: the forward takes no %s", known[0], name)
    return known[0] if known else name


def resolve_spec(loaded: LoadedModel, use_cache: bool = True) -> ArchSpec:
    """The ArchSpec for a loaded model: introspected, then the override table applied.

    With `use_cache=False` a decoder-only model gets the plain text spec (input_ids, attention_mask; no
    past key/values) instead of its KV-cache spec; an encoder-decoder is refused.
    """
    if loaded.example_inputs is not None:
        return _factory_spec(loaded)
    main_input = _main_input(loaded)
    overrides = {**_OVERRIDES.get((loaded.model_type, None), {}),
                 **_OVERRIDES.get((loaded.model_type, loaded.task), {})}
    if not use_cache:
        _refuse_no_cache_encoder_decoder(loaded)
    if use_cache and (decoder := decoder_spec_fields(loaded)) is not None:  # decoders, encoder-decoders: KV cache
        spec = ArchSpec(loaded.model_type, loaded.task, **decoder)
    elif takes_grid(loaded.module):  # a packed-patch vision encoder: patches, grid_thw and grid helpers
        spec = ArchSpec(loaded.model_type, loaded.task, **grid_fields(loaded.module, loaded.config))
    elif takes_packed_image(loaded.module):  # qwen2-VL style: one image's patches, text, precomputed M-RoPE
        spec = ArchSpec(loaded.model_type, loaded.task, **packed_image_fields(loaded.module, loaded.config))
    elif main_input == "input_ids":
        inputs = text_inputs(loaded)
        shapes = text_shapes(inputs, text_positions(loaded.config))
        spec = with_boxes(with_decoder_ids(ArchSpec(loaded.model_type, loaded.task, inputs, *shapes), loaded), loaded)
    elif main_input == "pixel_values" and takes_naflex(forward_params(loaded.module)):
        spec = ArchSpec(loaded.model_type, loaded.task, **naflex_fields(loaded.config))
    elif main_input == "pixel_values":
        size = runnable_image_size(loaded.module, loaded.config, required_ids(loaded))
        extra = extra_axis(loaded, pixel_spec(loaded.config, dynamic=False, size=size))
        dynamic = overrides.get("dynamic_image_size")
        if dynamic is None:  # a (height, width) pair is the one size the model runs at: fixed
            dynamic = isinstance(size, int) and runs_at_other_image_size(loaded.module, loaded.config, extra, size)
        spec = ArchSpec(loaded.model_type, loaded.task, dynamic_image_size=dynamic,
                        **vision_fields(loaded.config, dynamic, extra, size))
        noise = None if dynamic or extra else noise_input(loaded.module, loaded.config, size)
        if noise is not None:  # random patch masking drawn from an input: the same in both runtimes
            spec = dataclasses.replace(spec, inputs=(*spec.inputs, noise))
        spec = with_decoder_ids(with_text_ids(with_side_ids(spec, loaded), loaded), loaded)
    elif main_input == "input_values":
        fields = audio_fields(loaded.config)
        if len(fields["inputs"][0].shape) == 2:  # a raw waveform: a codec may want [batch, channels, samples]
            fields = audio_fields(loaded.config, extra_axis(loaded, fields["inputs"][0]))
        spec = with_decoder_ids(ArchSpec(loaded.model_type, loaded.task, **fields), loaded)
    elif main_input in FEATURE_INPUTS:
        fields = feature_fields(loaded.module, loaded.config, main_input, loaded.model_type)
        spec = with_decoder_ids(ArchSpec(loaded.model_type, loaded.task, **fields), loaded)
    elif main_input == VIDEO_INPUT:
        spec = _video_spec(loaded)
    elif main_input == SERIES_INPUT:
        spec = ArchSpec(loaded.model_type, loaded.task, **series_fields(loaded.module, loaded.config,
                                                                         loaded.model_type))
    elif is_vector_input(main_input):
        spec = ArchSpec(loaded.model_type, loaded.task, **vector_fields(loaded.module, loaded.config, main_input,
                                                                         loaded.model_type))
    else:
        raise ExportError(
            f"model type '{loaded.model_type}' takes '{main_input}' as its main input, which this version "
            "cannot generate inputs for",
            fix="export it as module.path:factory with example inputs",
        )
    spec = _split_constants(spec)
    return dataclasses.replace(spec, **overrides) if overrides else spec


def _split_constants(spec: ArchSpec) -> ArchSpec:
    """Move the inputs a model reads as Python numbers (CONSTANT_INPUTS) out of the graph inputs, fixing the
    batch axis they share with the images."""
    constant = tuple(t for t in spec.inputs if t.name in CONSTANT_INPUTS)
    if not constant:
        return spec
    spec = dataclasses.replace(spec, inputs=tuple(t for t in spec.inputs if t.name not in CONSTANT_INPUTS),
                               constant_inputs=constant)
    return fix_axes(spec, ["batch"]) if "batch" in spec_axes(spec) else spec


def constant_values(spec: ArchSpec) -> dict[str, Any]:
    """The values of `spec.constant_inputs` at the trace shape, as nested Python lists
    (`image_sizes=[[56, 56], [56, 56]]`), as the manifest records them. The wrapper passes them as constant
    int64 tensors, or as plain lists where the models take lists (cache_wrapper.make_wrapper): not graph
    inputs, so a model that reads them as Python numbers traces with those numbers instead of data-dependent
    sizes."""
    from tracefuse.validation.inputs import generate_inputs

    if not spec.constant_inputs:
        return {}
    return {name: value.tolist() for name, value in generate_inputs(spec.constant_inputs, spec.trace_shape).items()}

