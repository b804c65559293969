"""The traceable wrapper of a decoder with a KV cache: flat past tensors in, logits and flat presents out.

`CacheWrapper` takes the graph inputs positionally (in the ArchSpec's order), rebuilds a Transformers
`DynamicCache` from the `past_key_values.{i}.key/value` tensors, runs the model with it, and returns the
model's tensors and the updated cache as `present.{i}.key/value`. The same wrapper is the PyTorch
reference during validation, so the reference and the graph see exactly the same inputs.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters.decoder_spec import PAST_PREFIX, has_cache_inputs, past_name, present_name
from tracefuse.exporters.wrapper import FlatWrapper, _name_dims, _named_tensors, probe_outputs

logger = logging.getLogger(__name__)


class CacheWrapper(torch.nn.Module):
    """Calls the model with a DynamicCache built from the flat past inputs; returns the selected outputs."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...] = ()):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.num_layers = sum(1 for n in self.input_names if n.startswith(PAST_PREFIX)) // 2
        self.model_inputs = tuple(n for n in self.input_names if not n.startswith(PAST_PREFIX))

    def _run(self, named: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        from transformers import DynamicCache, EncoderDecoderCache

        if "encoder_hidden_states" not in named:
            cache = DynamicCache(config=self.model.config)
            for i in range(self.num_layers):
                cache.update(named[past_name(i, "key")], named[past_name(i, "value")], i)
            out = self.model(**{n: named[n] for n in self.model_inputs}, past_key_values=cache, use_cache=True)
            return out, getattr(out, "past_key_values", None)
        # Encoder-decoder: the self-attention cache comes in; cross-attention is recomputed from the encoder
        # states (its cache starts empty, so the model computes it), and only the self-attention cache goes out.
        self_cache = DynamicCache()
        for i in range(self.num_layers):
            self_cache.update(named[past_name(i, "key")], named[past_name(i, "value")], i)
        out = self.model(encoder_outputs=(named["encoder_hidden_states"],), attention_mask=named.get("attention_mask"),
                         decoder_input_ids=named["decoder_input_ids"],
                         past_key_values=EncoderDecoderCache(self_cache, DynamicCache()), use_cache=True)
        return out, getattr(getattr(out, "past_key_values", None), "self_attention_cache", None)

    def named_outputs(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor the model returns (not the encoder's), then `present.{i}.key/value`, by name."""
        out, present = self._run(dict(zip(self.input_names, args, strict=True)))
        results = {k: v for k, v in _named_tensors(out) if not k.startswith("encoder_")}
        layers = getattr(present, "layers", None)
        if layers is None or len(layers) != self.num_layers:
            raise ExportError(
                "the model did not return the KV cache it was given",
                found=f"{type(present).__name__} with {len(layers or [])} layers, expected {self.num_layers}",
            )
        for i, layer in enumerate(layers):
            results[present_name(i, "key")] = layer.keys
            results[present_name(i, "value")] = layer.values
        return results

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the model on positional tensors; return the selected outputs in order."""
        results = self.named_outputs(*args)
        return tuple(results[name] for name in self.output_names)


def no_cache_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """`{"use_cache": False}` when the model's forward takes `use_cache`, else {}: a graph without past
    key/values must not build (and trace) a cache it never returns."""
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}


def make_wrapper(model: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...] = (),
                 use_cache: bool = True, constants: dict[str, Any] | None = None):
    """The wrapper that fits the graph inputs: CacheWrapper when they hold past key/values, else FlatWrapper
    (called with use_cache=False when `use_cache` is False: a decoder exported with --no-cache; and with the
    spec's `constants`, keyword arguments the graph fixes, such as `image_sizes`)."""
    if has_cache_inputs(input_names):
        return CacheWrapper(model, input_names, output_names)
    return FlatWrapper(model, input_names, output_names, _call_kwargs(model, use_cache, constants))


def _call_kwargs(model: torch.nn.Module, use_cache: bool, constants: dict[str, Any] | None) -> dict[str, Any]:
    """The wrapper's constant keyword arguments; `constants` (nested lists of ints, as the manifest records
    them) become int64 tensors, except those the models take as lists (media_spec.LIST_CONSTANTS)."""
    from tracefuse.exporters.media_spec import LIST_CONSTANTS

    fixed = {name: [tuple(row) for row in value] if name in LIST_CONSTANTS else torch.tensor(value, dtype=torch.int64)
             for name, value in (constants or {}).items()}
    return {**({} if use_cache else no_cache_kwargs(model)), **fixed}


@torch.no_grad()
def probe_model_outputs(
    model: torch.nn.Module,
    input_names: tuple[str, ...],
    feeds_a: dict[str, torch.Tensor],
    sizes_a: dict[str, int],
    feeds_b: dict[str, torch.Tensor],
    sizes_b: dict[str, int],
    use_cache: bool = True,
    constants: dict[str, Any] | None = None,
) -> tuple[TensorSpec, ...]:
    """Like wrapper.probe_outputs, for any model: outputs of a cache decoder are probed through CacheWrapper;
    otherwise the model is called as make_wrapper's FlatWrapper calls it (use_cache, constants)."""
    if not has_cache_inputs(input_names):
        return probe_outputs(model, input_names, feeds_a, sizes_a, feeds_b, sizes_b,
                             _call_kwargs(model, use_cache, constants))
    wrapper = CacheWrapper(model, input_names)
    out_a = wrapper.named_outputs(*(feeds_a[n] for n in input_names))
    out_b = wrapper.named_outputs(*(feeds_b[n] for n in input_names))
    specs = []
    for name, tensor in out_a.items():
        other = out_b[name]
        shape: Any = _name_dims(tensor, other, sizes_a, sizes_b, name) if other.dim() == tensor.dim() else tuple(
            f"{name}_dim{i}" for i in range(tensor.dim()))
        specs.append(TensorSpec(name, str(tensor.dtype).removeprefix("torch."), shape))
    return tuple(specs)
