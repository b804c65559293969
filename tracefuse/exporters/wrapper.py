"""The traceable wrapper: flat tensors in (in the ArchSpec's order), a flat tuple of named tensors out."""

from __future__ import annotations

import logging
from typing import Any

import torch

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError

logger = logging.getLogger(__name__)


def _named_tensors(output: Any, taken: tuple[str, ...] = ()) -> list[tuple[str, torch.Tensor]]:
    """`_output_tensors`, with an output named like an input (`taken`: qwen2_audio returns its
    `attention_mask`) renamed `NAME_output`, since a graph cannot define one name twice."""
    return [(f"{name}_output" if name in taken else name, t) for name, t in _output_tensors(output)]


def _output_tensors(output: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors of a model output: ModelOutput/dict entries, or a tensor / tuple of tensors. An output whose
    entries are all tuples of tensors (a backbone's `feature_maps`) gives them one by one (`feature_maps_0`…);
    one whose entries are the towers' own outputs gives theirs (`qformer_outputs.last_hidden_state`…)."""
    if isinstance(output, torch.Tensor):
        return [("output", output)]
    if isinstance(output, dict):  # transformers' ModelOutput is an OrderedDict of its non-None fields
        direct = [(k, v) for k, v in output.items() if isinstance(v, torch.Tensor)]
        if direct:
            return direct
        listed = [(f"{k}_{i}", t) for k, v in output.items() if isinstance(v, (tuple, list))
                  for i, t in enumerate(v) if isinstance(t, torch.Tensor)]
        if listed:
            return listed
        # outputs of the towers, each a ModelOutput (instructblip: vision_outputs, qformer_outputs, …)
        return [(f"{k}.{name}", t) for k, v in output.items() if isinstance(v, dict)
                for name, t in v.items() if isinstance(t, torch.Tensor)]
    if isinstance(output, (tuple, list)):
        return [(f"output_{i}", v) for i, v in enumerate(output) if isinstance(v, torch.Tensor)]
    raise ExportError(f"the model returned a {type(output).__name__}; expected tensors, a tuple or a dict of them")


class FlatWrapper(torch.nn.Module):
    """Calls `model(**dict(zip(input_names, args)), **call_kwargs)` and returns the named outputs as a tuple.

    `call_kwargs` holds constant keyword arguments, such as `use_cache=False` for a decoder exported without
    its KV cache.
    """

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...] = (),
                 call_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.call_kwargs = dict(call_kwargs or {})

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the model on positional tensors; return the selected outputs."""
        named = dict(_named_tensors(self.model(**dict(zip(self.input_names, args)), **self.call_kwargs),
                                    self.input_names))
        return tuple(named[name] for name in self.output_names)


def _name_dims(a: torch.Tensor, b: torch.Tensor, sizes_a: dict[str, int], sizes_b: dict[str, int], out: str):
    dims: list[int | str] = []
    for i, (da, db) in enumerate(zip(a.shape, b.shape)):
        if da == db:
            dims.append(int(da))
            continue
        matches = [axis for axis in sizes_a if sizes_a[axis] == da and sizes_b.get(axis) == db]
        dims.append(matches[0] if len(matches) == 1 else f"{out}_dim{i}")
    return tuple(dims)


def _run(model: torch.nn.Module, names: tuple[str, ...], feeds: dict[str, torch.Tensor], sizes: dict[str, int],
         call_kwargs: dict[str, Any] | None = None):
    try:
        return model(**{n: feeds[n] for n in names}, **(call_kwargs or {}))
    except Exception as exc:  # noqa: BLE001 - a model's forward can raise anything
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ExportError(
            "the PyTorch model itself fails on the generated inputs "
            f"({', '.join(f'{k}={v}' for k, v in sizes.items())})",
            found=f"{type(exc).__name__}: {first}",
            fix="check the task and input shapes, or export it as module.path:factory with working example inputs",
        ) from exc


@torch.no_grad()
def probe_outputs(
    model: torch.nn.Module,
    input_names: tuple[str, ...],
    feeds_a: dict[str, torch.Tensor],
    sizes_a: dict[str, int],
    feeds_b: dict[str, torch.Tensor],
    sizes_b: dict[str, int],
    call_kwargs: dict[str, Any] | None = None,
) -> tuple[TensorSpec, ...]:
    """Run the model at two shapes (with the wrapper's constant `call_kwargs`, e.g. use_cache=False); name each
    output and each of its axes that changes with an input axis."""
    out_a = _named_tensors(_run(model, input_names, feeds_a, sizes_a, call_kwargs), tuple(input_names))
    out_b = dict(_named_tensors(_run(model, input_names, feeds_b, sizes_b, call_kwargs), tuple(input_names)))
    if not out_a:
        raise ExportError("the model returned no tensors for the example inputs")
    specs = []
    for name, tensor in out_a:
        other = out_b.get(name)
        if other is None or other.dim() != tensor.dim():
            shape = tuple(f"{name}_dim{i}" for i in range(tensor.dim()))
        else:
            shape = _name_dims(tensor, other, sizes_a, sizes_b, name)
        specs.append(TensorSpec(name, str(tensor.dtype).removeprefix("torch."), shape))
    return tuple(specs)
