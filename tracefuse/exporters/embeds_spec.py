"""Inputs of models whose main input is a float tensor of vectors rather than ids or media: `inputs_embeds`,
a Q-Former's `query_embeds`, a drafter's `noise_embeds`, a codec decoder's `latents`, a Perceiver's `inputs`.

Nothing here names a model type. Such an input is `[batch, sequence, width]` or channels first
`[batch, width, sequence]`; the width is one of the config's declared widths (hidden_size, d_model,
latent_dim…). The layout, width and length are found by running the PyTorch model on candidates, the way
audio_features finds a spectrogram's layout: the first that runs is kept, and the sequence axis is dynamic
when the model also runs at a longer length. Other required vector inputs of the forward (a drafter's
`context_hidden_states`, a Q-Former's `encoder_hidden_states`) get their own length axis and the same search
for their width.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters.media_rank import eager_error

logger = logging.getLogger(__name__)

VECTOR_NAMES = ("inputs_embeds", "hidden_states", "latents", "inputs")
_WIDTH_FIELDS = ("hidden_size", "d_model", "latent_dim", "codebook_dim", "hidden_dim", "embed_dim", "dim",
                 "encoder_hidden_size", "input_dim", "n_embd", "d_latents")
LENGTHS = (16, 32)  # tried in turn; the second validation length is LENGTH_STEP longer
LENGTH_STEP = 8
CROSS_INPUT = "encoder_hidden_states"
MULTIPLES = (1, 2, 3, 4)  # a width may be a multiple of one declared (hidden states of several layers, concatenated)


def is_vector_input(name: str | None) -> bool:
    """Whether an input name says it holds vectors (embeddings, hidden states, latents)."""
    return bool(name) and (name in VECTOR_NAMES or name.endswith("_embeds") or name.endswith("_hidden_states"))


def _companion_sets(module: Any, main: str) -> list[list[str]]:
    """The other vector inputs to feed: the required ones, then those plus what a cross-attending model
    attends to (`encoder_hidden_states`, optional in a Q-Former's signature but needed by its layers)."""
    params = inspect.signature(module.forward).parameters
    required = [n for n, p in params.items()
                if n != main and p.default is inspect.Parameter.empty and is_vector_input(n)]
    sets = [required]
    if CROSS_INPUT in params and CROSS_INPUT not in required and CROSS_INPUT != main:
        sets.append([*required, CROSS_INPUT])
    return sets


def declared_widths(config: Any) -> list[int]:
    """The positive integer widths a config (or its sub-configs) declares, in field order, each once."""
    found: list[int] = []
    configs = [config] + [v for v in getattr(config, "__dict__", {}).values() if hasattr(v, "to_dict")]
    for cfg in configs:
        for name in _WIDTH_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0 and value not in found:
                found.append(value)
    return found


def _tensor(batch: int, width: int, length: int, channels_first: bool, seed: int) -> Any:
    import torch

    shape = (batch, width, length) if channels_first else (batch, length, width)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def vector_fields(module: Any, config: Any, name: str, model_type: str) -> dict[str, Any]:
    """ArchSpec fields for a model whose main input `name` holds vectors (see the module docstring)."""
    widths = declared_widths(config)
    if not widths:
        raise ExportError(f"model type '{model_type}' takes '{name}' (vectors), and its config declares no width",
                          found=f"none of {', '.join(_WIDTH_FIELDS)} in the config",
                          fix="export it as module.path:factory with example inputs")
    other_widths = [w * k for k in MULTIPLES for w in widths]
    errors: dict[str, str] = {}
    for length, channels_first, width, others in itertools.product(LENGTHS, (False, True), widths,
                                                                   _companion_sets(module, name)):
        layout = "channels first" if channels_first else "channels last"
        feeds = {name: _tensor(2, width, length, channels_first, 0)}
        if others:  # the other vector inputs: the first width (shared) that lets the forward run
            for candidate in other_widths:
                trial = {**feeds, **{o: _tensor(2, candidate, length // 2, channels_first, 1) for o in others}}
                if eager_error(module, trial) is None:
                    feeds = trial
                    break
        error = eager_error(module, feeds)
        if error is not None:
            errors.setdefault(layout, error)
            continue
        longer = {k: _tensor(2, v.shape[1] if channels_first else v.shape[2],
                             (v.shape[2] if channels_first else v.shape[1]) + LENGTH_STEP, channels_first, 2)
                  for k, v in feeds.items()}
        dynamic = eager_error(module, longer) is None
        return _fields(name, feeds, channels_first, dynamic, model_type)
    raise ExportError(
        f"model type '{model_type}' fails on generated '{name}' vectors of widths {widths} in both layouts",
        found="; ".join(f"{layout}: {error}" for layout, error in errors.items()),
        fix="export it as module.path:factory with example inputs",
    )


def _fields(main: str, feeds: dict[str, Any], channels_first: bool, dynamic: bool,
            model_type: str) -> dict[str, Any]:
    inputs, trace, short = [], {"batch": 2}, {"batch": 1}
    for name, tensor in feeds.items():
        axis = "sequence" if name == main else f"{name}_length"
        width = int(tensor.shape[1] if channels_first else tensor.shape[2])
        length = int(tensor.shape[2] if channels_first else tensor.shape[1])
        dim: int | str = axis if dynamic else length
        dims = ("batch", width, dim) if channels_first else ("batch", dim, width)
        inputs.append(TensorSpec(name, "float32", dims, {"kind": "normal"}))
        if dynamic:
            short[axis], trace[axis] = length, length + LENGTH_STEP // 2
    long = {k: v + LENGTH_STEP if k != "batch" else 3 for k, v in short.items()}
    logger.info("%s: %s", model_type, ", ".join(f"{t.name} {t.shape}" for t in inputs))
    return {"inputs": tuple(inputs), "validation_shapes": (short, long), "trace_shape": trace}
