"""Text inputs of an ArchSpec: token ids, masks and their shapes, and the ids that media models need beside
their main input (image placeholders, a side tower's ids, decoder ids, text ids an image model requires).

Split from archspec.py (which resolves whole specs); these functions build and extend spec pieces.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import TYPE_CHECKING, Any

from tracefuse.artifact import TensorSpec
from tracefuse.exporters.media_rank import concrete, extra_axis_size, wants_extra_axis, with_extra_axis
from tracefuse.exporters.media_spec import AUDIO_TRACE, DECODER_LENGTHS, paired_image_inputs
from tracefuse.exporters.placeholders import image_placeholder_count, image_token_id, lowest_placeholder
from tracefuse.exporters.sources import LoadedModel

if TYPE_CHECKING:
    from tracefuse.exporters.archspec import ArchSpec

logger = logging.getLogger(__name__)

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TEXT_SHAPES = ({"batch": 1, "sequence": 16}, {"batch": 3, "sequence": 37})
TEXT_TRACE = {"batch": 2, "sequence": 9}
FALLBACK_VOCAB = 256  # token ids of a config with no vocab_size anywhere (byte-sized)


def forward_params(module: Any) -> list[str]:
    """The names of the module's forward parameters, in order."""
    return list(inspect.signature(module.forward).parameters)


def vocab_size(config: Any) -> int:
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


def text_inputs(loaded: LoadedModel) -> tuple[TensorSpec, ...]:
    """The text inputs the forward takes (ids, mask, token types), with the fixed-size image a text-first
    multimodal model also needs, its ids starting with that image's placeholders, or the fixed-length
    waveform a text-and-audio model requires."""
    config = getattr(loaded.config, "text_config", None) or loaded.config  # a multimodal model's text tower
    params = forward_params(loaded.module)
    specs = []
    for name in TEXT_INPUTS:
        if name not in params:
            continue
        if name == "input_ids":
            fill = {"kind": "int", "low": 0, "high": vocab_size(config)}
        elif name == "attention_mask":
            fill = {"kind": "mask"}
        else:
            type_vocab = int(getattr(config, "type_vocab_size", 0) or 0)
            if type_vocab < 1:
                continue
            fill = {"kind": "int", "low": 0, "high": type_vocab}
        specs.append(TensorSpec(name, "int64", ("batch", "sequence"), fill))
    specs += _side_inputs(loaded, config, params, specs)
    paired = paired_image_inputs(loaded.config, params) or _required_waveform(loaded, specs)
    if paired and specs and specs[0].name == "input_ids" and paired[0].name == "pixel_values":
        high = min(int(specs[0].fill["high"]), lowest_placeholder(loaded.config) or int(specs[0].fill["high"]))
        ids = random_ids(high)
        paired = (maybe_extra_axis(loaded, paired[0], {"input_ids": ids}), *paired[1:])
        specs[0] = with_image_placeholders(loaded, specs[0], paired[0], paired[1:])
    return tuple(specs) + paired


WAVEFORM = "input_values"


def _required_waveform(loaded: LoadedModel, specs: list[TensorSpec]) -> tuple[TensorSpec, ...]:
    """The audio a text-and-audio model requires beside its ids (pe_audio scores a caption against a sound:
    `input_values` has no default): a raw waveform of a fixed AUDIO_TRACE length, with the channel axis the
    model wants (asked of it, see extra_axis); () when the forward does not require one."""
    params = inspect.signature(loaded.module.forward).parameters
    if WAVEFORM not in params or params[WAVEFORM].default is not inspect.Parameter.empty \
            or not specs or specs[0].name != "input_ids":
        return ()
    wave = TensorSpec(WAVEFORM, "float32", ("batch", AUDIO_TRACE["samples"]), {"kind": "normal"})
    high = min(int(specs[0].fill["high"]), lowest_placeholder(loaded.config) or int(specs[0].fill["high"]))
    logger.info("%s requires a waveform beside its ids: %d samples", loaded.model_type, AUDIO_TRACE["samples"])
    return (maybe_extra_axis(loaded, wave, {"input_ids": random_ids(high)}),)


SIDE_OBJECTS = 8  # regions of a detector's features (lxmert's visual_feats), fixed


def _side_inputs(loaded: LoadedModel, config: Any, params: list[str], specs: list[TensorSpec]) -> list[TensorSpec]:
    """Inputs a text model needs beside its ids that its config sizes: a language index per row when it keeps
    one adapter per language (`lang_ids` below `len(config.languages)`: xmod), and each input P whose width
    the config declares as `P_dim` or, P plural, `P[:-1]_dim` (lxmert's `visual_feats` and `visual_pos`,
    optional in its signature but required by its forward: SIDE_OBJECTS regions of those widths)."""
    side: list[TensorSpec] = []
    languages = getattr(config, "languages", None)
    if "lang_ids" in params and isinstance(languages, (list, tuple)) and languages:
        side.append(TensorSpec("lang_ids", "int64", ("batch",), {"kind": "int", "low": 0, "high": len(languages)}))
    taken = {s.name for s in specs}
    for name in params:
        if name in taken:
            continue
        width = next((w for w in (getattr(config, f"{name}_dim", None), getattr(config, f"{name[:-1]}_dim", None))
                      if isinstance(w, int) and not isinstance(w, bool) and w > 0), None)
        if width is not None:
            side.append(TensorSpec(name, "float32", ("batch", SIDE_OBJECTS, width), {"kind": "normal"}))
    return side


def random_ids(high: int) -> Any:
    """Seeded token ids below `high`, `[1, 8]`, for probing a model."""
    import torch

    return torch.randint(0, max(1, high), (1, 8), generator=torch.Generator().manual_seed(0))


def extra_axis(loaded: LoadedModel, spec: TensorSpec, other_feeds: dict[str, Any] | None = None) -> int:
    """The size of the axis after batch that the model wants on `spec` (video frames, an image stack, codec
    channels; asked of the model, see media_rank), else 0."""
    size = extra_axis_size(loaded.config)
    shape = concrete(spec.shape, {**AUDIO_TRACE, "batch": 1})
    return size if wants_extra_axis(loaded.module, spec.name, shape, size, other_feeds) else 0


def maybe_extra_axis(loaded: LoadedModel, spec: TensorSpec, other_feeds: dict[str, Any]) -> TensorSpec:
    """`spec` with the axis after batch that the model wants on it (see extra_axis), if any."""
    extra = extra_axis(loaded, spec, other_feeds)
    return with_extra_axis(spec, extra) if extra else spec


def with_image_placeholders(loaded: LoadedModel, ids: TensorSpec, pixels: TensorSpec,
                            sides: tuple[TensorSpec, ...] = ()) -> TensorSpec:
    """input_ids that start with the image placeholders a llava-style model needs (unchanged if it needs none);
    `sides` are the inputs that go with the image (`image_sizes`, a patch mask)."""
    import torch

    vocab = int(ids.fill["high"])
    shape = tuple(1 if d == "batch" else d for d in pixels.shape)
    from tracefuse.validation.inputs import generate_inputs

    extra = {name: torch.from_numpy(value) for name, value in generate_inputs(sides, {"batch": 1}).items()}
    count = image_placeholder_count(loaded.module, loaded.config, shape, vocab, extra)
    if not count:
        return ids
    high = min(vocab, lowest_placeholder(loaded.config) or vocab)
    fill = {**ids.fill, "high": high, "prefix": [image_token_id(loaded.config)] * count}
    return dataclasses.replace(ids, fill=fill)


def with_decoder_ids(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
    """The base model (feature-extraction) of an encoder-decoder runs its decoder too, and T5-style models have
    no default decoder input: give it decoder token ids, on an axis of its own (the two lengths are independent)."""
    config = loaded.config
    if not getattr(config, "is_encoder_decoder", False) or "decoder_input_ids" not in forward_params(loaded.module):
        return spec
    decoder = getattr(config, "decoder", None) or getattr(config, "text_config", None) or config
    vocab = int(getattr(decoder, "vocab_size", None) or getattr(config, "vocab_size", 2))
    ids = TensorSpec("decoder_input_ids", "int64", ("batch", "decoder_sequence"), {"kind": "int", "low": 0,
                                                                                     "high": vocab})
    trace = {**spec.trace_shape, "decoder_sequence": DECODER_LENGTHS[0]}
    shapes = tuple({**shape, "decoder_sequence": n} for shape, n in zip(spec.validation_shapes, DECODER_LENGTHS[1:]))
    return dataclasses.replace(spec, inputs=(*spec.inputs, ids), trace_shape=trace, validation_shapes=shapes)


def required_ids(loaded: LoadedModel) -> dict[str, Any]:
    """Text ids (batch 1) for probing a model whose forward requires `input_ids` beside its image; else {}."""
    param = inspect.signature(loaded.module.forward).parameters.get("input_ids")
    if param is None or param.default is not inspect.Parameter.empty:
        return {}
    config = getattr(loaded.config, "text_config", None) or loaded.config
    return {"input_ids": random_ids(min(vocab_size(config), 100))}


def text_positions(config: Any) -> int | None:
    """The length of the text tower's position table (its `max_position_embeddings`), or None."""
    text = getattr(config, "text_config", None) or config
    positions = getattr(text, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def with_side_ids(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
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
                                                             "high": min(vocab_size(side), 100)})]
        if f"{prefix}_attention_mask" in params:
            added.append(TensorSpec(f"{prefix}_attention_mask", "int64", ("batch", axis), {"kind": "mask"}))
        spec = dataclasses.replace(
            spec, inputs=(*spec.inputs, *added), trace_shape={**spec.trace_shape, axis: DECODER_LENGTHS[0]},
            validation_shapes=tuple({**shape, axis: n} for shape, n in zip(spec.validation_shapes,
                                                                           DECODER_LENGTHS[1:])))
        logger.info("%s requires %s: ids of its %s tower added", loaded.model_type, name, prefix)
    return spec


def with_text_ids(spec: ArchSpec, loaded: LoadedModel) -> ArchSpec:
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
    text = tuple(s for s in text_inputs(loaded) if s.name not in spec.input_names)
    trace, shapes = text_shapes(text, text_positions(loaded.config))
    return dataclasses.replace(spec, inputs=(*text, *spec.inputs), trace_shape={**spec.trace_shape, **trace},
                               validation_shapes=tuple({**a, **b} for a, b in zip(spec.validation_shapes, shapes)))


def text_shapes(inputs: tuple[TensorSpec, ...], positions: int | None = None,
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
