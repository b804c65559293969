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
from tracefuse.exporters.grid_spec import grid_fields, takes_grid
from tracefuse.exporters.media_rank import concrete, extra_axis_size, wants_extra_axis, with_extra_axis
from tracefuse.exporters.media_spec import (
    AUDIO_TRACE,
    BATCH_SHAPES,
    BATCH_TRACE,
    DECODER_LENGTHS,
    audio_fields,
    noise_input,
    paired_image_inputs,
    pixel_spec,
    runnable_image_size,
    runs_at_other_image_size,
    vision_fields,
)
from tracefuse.exporters.packed_vlm_spec import packed_image_fields, takes_packed_image
from tracefuse.exporters.placeholders import image_placeholder_count, image_token_id, lowest_placeholder
from tracefuse.exporters.series_spec import SERIES_INPUT, series_fields
from tracefuse.exporters.sources import LoadedModel
from tracefuse.exporters.video_spec import VIDEO_INPUT, video_input

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TEXT_SHAPES = ({"batch": 1, "sequence": 16}, {"batch": 3, "sequence": 37})
TEXT_TRACE = {"batch": 2, "sequence": 9}
FALLBACK_VOCAB = 256  # token ids of a config with no vocab_size anywhere (byte-sized)


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
# `dynamic_image_size=False` keeps the config's size for a model that runs eagerly at other sizes but takes
# a different branch there, which the traced graph does not hold: swin and the models built on its blocks
# clamp the window (and drop the shift) on small stages; mobilevit interpolates feature maps that are not a
# multiple of its patch size; mobilenet v1/v2 compute TensorFlow "SAME" padding from the size in Python, so
# the traced graph keeps the trace size's padding (a wrong output shape elsewhere).
for _type in ("swin", "swinv2", "donut-swin", "maskformer-swin", "mobilevit", "mobilenet_v1", "mobilenet_v2"):
    register_override(_type, dynamic_image_size=False)


def _forward_params(module: Any) -> list[str]:
    return list(inspect.signature(module.forward).parameters)


def _vocab_size(config: Any) -> int:
    """The token ids a text input may hold: the config's `vocab_size`, else the smallest of its sub-configs'
    (an encoder-decoder's encoder and decoder, a policy's language model), else FALLBACK_VOCAB (a model that
    embeds any id: canine hashes code points)."""
    own = getattr(config, "vocab_size", None)
    if isinstance(own, int) and own > 0:
        return own
    found = [sub.vocab_size for sub in getattr(config, "__dict__", {}).values()
             if hasattr(sub, "to_dict") and isinstance(getattr(sub, "vocab_size", None), int) and sub.vocab_size > 0]
    if found:
        return min(found)
    logger.info("the config declares no vocab_size: token ids below %d", FALLBACK_VOCAB)
    return FALLBACK_VOCAB


def _text_inputs(loaded: LoadedModel) -> tuple[TensorSpec, ...]:
    config = getattr(loaded.config, "text_config", None) or loaded.config  # a multimodal model's text tower
    params = _forward_params(loaded.module)
    specs = []
    for name in TEXT_INPUTS:
        if name not in params:
            continue
        if name == "input_ids":
            fill = {"kind": "int", "low": 0, "high": _vocab_size(config)}
        elif name == "attention_mask":
            fill = {"kind": "mask"}
        else:
            type_vocab = int(getattr(config, "type_vocab_size", 0) or 0)
            if type_vocab < 1:
                continue
            fill = {"kind": "int", "low": 0, "high": type_vocab}
        specs.append(TensorSpec(name, "int64", ("batch", "sequence"), fill))
    paired = paired_image_inputs(loaded.config, params)
    if paired and specs and specs[0].name == "input_ids":
        high = min(int(specs[0].fill["high"]), lowest_placeholder(loaded.config) or int(specs[0].fill["high"]))
        ids = _random_ids(high)
        paired = (_maybe_extra_axis(loaded, paired[0], {"input_ids": ids}),)
        specs[0] = _with_image_placeholders(loaded, specs[0], paired[0])
    return tuple(specs) + paired


def _random_ids(high: int) -> Any:
    import torch

    return torch.randint(0, max(1, high), (1, 8), generator=torch.Generator().manual_seed(0))


def _extra_axis(loaded: LoadedModel, spec: TensorSpec, other_feeds: dict[str, Any] | None = None) -> int:
    """The size of the axis after batch that the model wants on `spec` (video frames, an image stack, codec
    channels; asked of the model, see media_rank), else 0."""
    size = extra_axis_size(loaded.config)
    shape = concrete(spec.shape, {**AUDIO_TRACE, "batch": 1})
    return size if wants_extra_axis(loaded.module, spec.name, shape, size, other_feeds) else 0


def _maybe_extra_axis(loaded: LoadedModel, spec: TensorSpec, other_feeds: dict[str, Any]) -> TensorSpec:
    extra = _extra_axis(loaded, spec, other_feeds)
    return with_extra_axis(spec, extra) if extra else spec


def _with_image_placeholders(loaded: LoadedModel, ids: TensorSpec, pixels: TensorSpec) -> TensorSpec:
    """input_ids that start with the image placeholders a llava-style model needs (unchanged if it needs none)."""
    vocab = int(ids.fill["high"])
    shape = tuple(1 if d == "batch" else d for d in pixels.shape)
    count = image_placeholder_count(loaded.module, loaded.config, shape, vocab)
    if not count:
        return ids
    high = min(vocab, lowest_placeholder(loaded.config) or vocab)
    fill = {**ids.fill, "high": high, "prefix": [image_token_id(loaded.config)] * count}
    return dataclasses.replace(ids, fill=fill)


def _with_decoder_ids(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
    """The base model (feature-extraction) of an encoder-decoder runs its decoder too, and T5-style models have
    no default decoder input: give it decoder token ids, on an axis of its own (the two lengths are independent)."""
    config = loaded.config
    if not getattr(config, "is_encoder_decoder", False) or "decoder_input_ids" not in _forward_params(loaded.module):
        return spec
    decoder = getattr(config, "decoder", None) or getattr(config, "text_config", None) or config
    vocab = int(getattr(decoder, "vocab_size", None) or getattr(config, "vocab_size", 2))
    ids = TensorSpec("decoder_input_ids", "int64", ("batch", "decoder_sequence"), {"kind": "int", "low": 0,
                                                                                     "high": vocab})
    trace = {**spec.trace_shape, "decoder_sequence": DECODER_LENGTHS[0]}
    shapes = tuple({**shape, "decoder_sequence": n} for shape, n in zip(spec.validation_shapes, DECODER_LENGTHS[1:]))
    return dataclasses.replace(spec, inputs=(*spec.inputs, ids), trace_shape=trace, validation_shapes=shapes)


def _required_ids(loaded: LoadedModel) -> dict[str, Any]:
    """Text ids (batch 1) for probing a model whose forward requires `input_ids` beside its image; else {}."""
    param = inspect.signature(loaded.module.forward).parameters.get("input_ids")
    if param is None or param.default is not inspect.Parameter.empty:
        return {}
    config = getattr(loaded.config, "text_config", None) or loaded.config
    return {"input_ids": _random_ids(min(_vocab_size(config), 100))}


def _text_positions(config: Any) -> int | None:
    """The length of the text tower's position table (its `max_position_embeddings`), or None."""
    text = getattr(config, "text_config", None) or config
    positions = getattr(text, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def _with_side_ids(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
    """Token ids of a side text tower that the forward requires (`qformer_input_ids`: instructblip's
    instruction for its Q-Former), with their mask, on an axis of their own (`qformer_sequence`); the
    vocabulary is the side config's (`qformer_config`)."""
    params = inspect.signature(loaded.module.forward).parameters
    for name, param in params.items():
        if not name.endswith("_input_ids") or name == "decoder_input_ids" or name in spec.input_names \
                or param.default is not inspect.Parameter.empty:
            continue
        prefix = name[: -len("_input_ids")]
        side = getattr(loaded.config, f"{prefix}_config", None) or loaded.config
        axis = f"{prefix}_sequence"
        added = [TensorSpec(name, "int64", ("batch", axis), {"kind": "int", "low": 0,
                                                             "high": min(_vocab_size(side), 100)})]
        if f"{prefix}_attention_mask" in params:
            added.append(TensorSpec(f"{prefix}_attention_mask", "int64", ("batch", axis), {"kind": "mask"}))
        spec = dataclasses.replace(
            spec, inputs=(*spec.inputs, *added), trace_shape={**spec.trace_shape, axis: DECODER_LENGTHS[0]},
            validation_shapes=tuple({**shape, axis: n} for shape, n in zip(spec.validation_shapes,
                                                                           DECODER_LENGTHS[1:])))
        logger.info("%s requires %s: ids of its %s tower added", loaded.model_type, name, prefix)
    return spec


def _with_text_ids(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
    """An image model whose forward needs text ids too (grounding-dino's phrases, sam3's prompt: it requires
    `input_ids`, or fails on the image alone) gets the text inputs, with their batch and sequence axes."""
    params = inspect.signature(loaded.module.forward).parameters
    if "input_ids" not in params or "input_ids" in spec.input_names:
        return spec
    if params["input_ids"].default is not inspect.Parameter.empty:
        import torch

        from tracefuse.validation.inputs import generate_inputs

        feeds = generate_inputs(spec.inputs, spec.trace_shape)
        try:
            with torch.no_grad():
                loaded.module(**{name: torch.from_numpy(value) for name, value in feeds.items()})
            return spec  # it runs on the image alone
        except Exception as exc:  # noqa: BLE001 - a model's forward can raise anything
            logger.info("%s fails on the image alone (%s: %s): adding text ids", loaded.model_type,
                        type(exc).__name__, (str(exc).splitlines() or [""])[0][:160])
    text = tuple(s for s in _text_inputs(loaded) if s.name not in spec.input_names)
    trace, shapes = _text_shapes(text, _text_positions(loaded.config))
    return dataclasses.replace(spec, inputs=(*text, *spec.inputs), trace_shape={**spec.trace_shape, **trace},
                               validation_shapes=tuple({**a, **b} for a, b in zip(spec.validation_shapes, shapes)))


def _text_shapes(inputs: tuple[TensorSpec, ...], positions: int | None = None,
                 ) -> tuple[dict[str, int], tuple[dict[str, int], ...]]:
    """Trace sizes and validation shapes of the text spec, longer by the media placeholders ids start with.
    A position table shorter than the usual lengths (`positions`: owlvit's text tower has 16) bounds them:
    validation at half of it and all of it, tracing just past the half."""
    extra = max((len(spec.fill.get("prefix") or []) for spec in inputs), default=0)
    trace = {**TEXT_TRACE, "sequence": TEXT_TRACE["sequence"] + extra}
    shapes = tuple({**shape, "sequence": shape["sequence"] + extra} for shape in TEXT_SHAPES)
    if positions and positions >= extra + 8 and max(s["sequence"] for s in shapes) > positions:
        short = extra + (positions - extra) // 2
        shapes = ({**shapes[0], "sequence": short}, {**shapes[-1], "sequence": positions})
        trace = {**trace, "sequence": short + 1}
        logger.info("text lengths %d and %d: the position table has %d entries", short, positions, positions)
    return trace, shapes


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
    text = _text_inputs(loaded)
    ids = _random_ids(int(text[0].fill["high"])).repeat(2, 1)  # the probe's clips come in a batch of 2
    clip = video_input(loaded.module, loaded.config, loaded.model_type, {"input_ids": ids})
    trace, shapes = _text_shapes(text)
    return ArchSpec(loaded.model_type, loaded.task, (*text, clip), trace_shape=trace, validation_shapes=shapes)


def _main_input(loaded: LoadedModel) -> str | None:
    """The module's `main_input_name` when its forward takes it; else the first forward parameter that is an
    input this module can generate (a vision tower that inherits the default "input_ids" but takes only
    pixel_values)."""
    name = getattr(loaded.module, "main_input_name", None)
    params = _forward_params(loaded.module)
    if name in params:
        return name
    known = [p for p in params if p in ("input_ids", "pixel_values", "input_values", *FEATURE_INPUTS, SERIES_INPUT,
                                           VIDEO_INPUT)]
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
        inputs = _text_inputs(loaded)
        shapes = _text_shapes(inputs, _text_positions(loaded.config))
        spec = _with_decoder_ids(ArchSpec(loaded.model_type, loaded.task, inputs, *shapes), loaded)
    elif main_input == "pixel_values":
        size = runnable_image_size(loaded.module, loaded.config, _required_ids(loaded))
        extra = _extra_axis(loaded, pixel_spec(loaded.config, dynamic=False, size=size))
        dynamic = overrides.get("dynamic_image_size")
        if dynamic is None:
            dynamic = runs_at_other_image_size(loaded.module, loaded.config, extra, size)
        spec = ArchSpec(loaded.model_type, loaded.task, dynamic_image_size=dynamic,
                        **vision_fields(loaded.config, dynamic, extra, size))
        noise = None if dynamic or extra else noise_input(loaded.module, loaded.config, size)
        if noise is not None:  # random patch masking drawn from an input: the same in both runtimes
            spec = dataclasses.replace(spec, inputs=(*spec.inputs, noise))
        spec = _with_decoder_ids(_with_text_ids(_with_side_ids(spec, loaded), loaded), loaded)
    elif main_input == "input_values":
        fields = audio_fields(loaded.config)
        if len(fields["inputs"][0].shape) == 2:  # a raw waveform: a codec may want [batch, channels, samples]
            fields = audio_fields(loaded.config, _extra_axis(loaded, fields["inputs"][0]))
        spec = _with_decoder_ids(ArchSpec(loaded.model_type, loaded.task, **fields), loaded)
    elif main_input in FEATURE_INPUTS:
        fields = feature_fields(loaded.module, loaded.config, main_input, loaded.model_type)
        spec = _with_decoder_ids(ArchSpec(loaded.model_type, loaded.task, **fields), loaded)
    elif main_input == VIDEO_INPUT:
        spec = _video_spec(loaded)
    elif main_input == SERIES_INPUT:
        spec = ArchSpec(loaded.model_type, loaded.task, **series_fields(loaded.module, loaded.config,
                                                                         loaded.model_type))
    else:
        raise ExportError(
            f"model type '{loaded.model_type}' takes '{main_input}' as its main input, which this version "
            "cannot generate inputs for",
            fix="export it as module.path:factory with example inputs",
        )
    return dataclasses.replace(spec, **overrides) if overrides else spec

