"""Capture the outputs of chosen submodules of a PyTorch module with forward hooks, for one forward call."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)


def flat_tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a module output, depth first: a tensor, or tuples, lists and dicts (ModelOutput) of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in flat_tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat_tensors(v)]
    return []


class _Captured(Exception):
    """Raised by the last hook that is needed: the rest of the forward call would be computed for nothing."""


@torch.no_grad()
def capture_outputs(module: torch.nn.Module, wanted: Mapping[str, set[int]], args: Sequence[np.ndarray],
                    ) -> dict[tuple[str, int], list[np.ndarray]]:
    """Run `module(*args)` once with forward hooks on the submodules named in `wanted` (dotted paths, as
    `named_modules` spells them, each with the 0-based calls to keep); returns {(path, call): the output's
    tensors as arrays}. Only the wanted calls are copied, so memory grows with `wanted`, not the model.
    Paths that name no submodule are left out of the result. The forward call stops as soon as every wanted
    call has been captured; the hooks are removed before returning.
    """
    modules = dict(module.named_modules(remove_duplicate=False))
    captured: dict[tuple[str, int], list[np.ndarray]] = {}
    calls: dict[str, int] = {}
    handles = []

    def make_hook(path: str, keep: set[int]):
        def hook(_mod, _inputs, output) -> None:
            call = calls.get(path, 0)
            calls[path] = call + 1
            if call in keep:
                captured[path, call] = [t.detach().cpu().numpy().copy() for t in flat_tensors(output)]
                if len(captured) == needed:
                    raise _Captured
        return hook

    needed = 0
    for path, keep in wanted.items():
        sub = modules.get(path)
        if sub is None:
            logger.info("no submodule %s in the reference", path)
            continue
        needed += len(keep)
        handles.append(sub.register_forward_hook(make_hook(path, set(keep))))
    module.eval()
    try:
        module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in args])
    except _Captured:
        pass
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported the same way
        if len(captured) == needed:  # a model that wrapped our stop signal in its own exception
            return captured
        raise TracefuseError(
            "the reference model failed on the artifact's inputs",
            found=f"{type(exc).__name__}: {str(exc).strip()[:300]}",
            fix="pass the model this artifact was exported from as --reference",
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return captured
