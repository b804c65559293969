"""The pass contract: a named pass takes an onnx-ir model and returns `PassResult(model, stats)`.

A pass never imports torch. Statistics say what the pass did: how many blocks it found, how many it
rewrote, and (with `explain`) why the rest were not rewritten. Passes are registered by name so a
pipeline can be spelled `cleanup,fuse-norm,fuse-gelu` on the command line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import onnx_ir as ir

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the (possibly new) model and a JSON-able dict of statistics."""

    model: ir.Model
    stats: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Pass(Protocol):
    """A graph-to-graph rewrite with a name. `explain` asks for reasons why blocks were not rewritten."""

    name: str

    def __call__(self, model: ir.Model, *, explain: bool = False) -> PassResult:
        """Rewrite `model` (it may be modified in place) and return the result with statistics."""
        ...


@dataclass(frozen=True)
class FunctionPass:
    """Adapts a plain function `fn(model, explain) -> PassResult | dict` to the Pass contract.

    A function that returns only a stats dict is taken to have rewritten the model in place.
    """

    name: str
    fn: Callable[..., PassResult | dict[str, Any]]
    description: str = ""

    def __call__(self, model: ir.Model, *, explain: bool = False) -> PassResult:
        """Run the wrapped function and normalise its return value to a PassResult."""
        result = self.fn(model, explain=explain)
        if isinstance(result, PassResult):
            return result
        return PassResult(model, dict(result or {}))


class PassError(TracefuseError):
    """A pass name is unknown, or a pass cannot run on this graph."""


class PassCheckFailed(TracefuseError):
    """A pipeline run in check mode saw a pass move the outputs past the tolerance (exit code 1)."""

    exit_code = 1

    def __init__(self, problem: str, *, pass_name: str, found: str | None = None, fix: str | None = None,
                 steps: list[dict[str, Any]] | None = None) -> None:
        super().__init__(problem, found=found, fix=fix)
        self.pass_name = pass_name
        self.steps = steps or []


PassFactory = Callable[[], Pass]
PASSES: dict[str, tuple[PassFactory, str]] = {}


def register_pass(name: str, factory: PassFactory, description: str) -> None:
    """Register a pass factory under `name`; a duplicate name raises."""
    if name in PASSES:
        raise PassError(f"a pass named '{name}' is already registered", fix="choose another name")
    PASSES[name] = (factory, description)


def unregister_pass(name: str) -> None:
    """Remove a registered pass (tests register throw-away passes)."""
    PASSES.pop(name, None)


def get_pass(name: str) -> Pass:
    """A fresh instance of the registered pass `name`; raises PassError listing the known names."""
    _load_builtin_passes()
    if name not in PASSES:
        raise PassError(f"unknown pass '{name}'", fix=f"use one of: {', '.join(sorted(PASSES))}")
    return PASSES[name][0]()


def available_passes() -> dict[str, str]:
    """Every registered pass name with its one-line description."""
    _load_builtin_passes()
    return {name: desc for name, (_, desc) in sorted(PASSES.items())}


def _load_builtin_passes() -> None:
    # The built-in passes register themselves on import; importing here keeps the registry lazy.
    from tracefuse.passes import cleanup, fusions, precision, standard  # noqa: F401


def count_ops(model: ir.Model, *op_types: str) -> int:
    """How many nodes (subgraphs included) have one of `op_types` (any domain)."""
    wanted = set(op_types)
    return sum(1 for node in ir.traversal.RecursiveGraphIterator(model.graph) if node.op_type in wanted)
