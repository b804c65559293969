"""Intermediate values of an ONNX graph: which PyTorch module each node came from, and a copy of the model
with chosen values added as graph outputs (the model passed in is left as it was).

The dynamo exporter records, on every node, the stack of modules the node was traced in: the metadata key
`pkg.torch.onnx.name_scopes` holds it as a Python list of dotted module paths, the root module first
(`''`) and the FX node's own name last, e.g. `['', 'model', 'model.encoder', 'model.encoder.layer.0',
..., 'linear_4']`; the `namespace` key holds the same path as `path: class/path: class/...`. A module
called more than once shows as `name@1`, `name@2` for the second and third calls.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from tracefuse.graphs.onnx_file import save_onnx

logger = logging.getLogger(__name__)

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
NAMESPACE = "namespace"
_FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})


@dataclass(frozen=True)
class ModuleValue:
    """The value a module's scope hands to the rest of the graph: its output.

    `module` is the dotted path from the exported root module (as `named_modules` spells it), `call` the
    0-based call index for a module called more than once, `value` the ONNX value name, `order` the index
    of the node that produces it (the graph is topologically sorted), `depth` how many modules enclose it.
    """

    module: str
    call: int
    value: str
    order: int
    depth: int


def node_scopes(node: ir.Node) -> tuple[list[str], str] | None:
    """The module paths a node was traced in, outermost first (the root `''` dropped), and the name of the
    FX node it computes; None for a node without module metadata."""
    props = node.metadata_props
    raw = props.get(NAME_SCOPES)
    if raw:
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            scopes = None
        if isinstance(scopes, list) and len(scopes) >= 2 and scopes[0] == "":
            return [str(s) for s in scopes[1:-1]], str(scopes[-1])  # the last entry is the FX node's own name
        if isinstance(scopes, list):
            return None  # nodes from export-time hooks, outside any module
    raw = props.get(NAMESPACE)
    if raw:
        parts = [p.split(": ", 1)[0] for p in raw.split("/")]
        if len(parts) >= 2 and parts[0] == "":
            return [p for p in parts[1:-1] if p], parts[-1]
    return None


def _split_call(scope: str) -> tuple[str, int]:
    name, sep, call = scope.rpartition("@")
    if sep and call.isdigit():
        return name, int(call)
    return scope, 0


def module_values(model: ir.Model) -> list[ModuleValue]:
    """Each module's output value, in execution order (the producing node's position; inner modules first
    on a tie, as a module ends after the modules it calls).

    A module's output is the float value, produced by the last node inside its scope, that is read by a
    node outside the scope or is a graph output. It must be a whole FX value: the exporter names the ONNX
    value that completes an FX node after it (`linear_4`), and a value still named `val_…` is a part of
    one (a MatMul whose bias Add a fusion took into the next node), which would not match PyTorch. Modules
    whose output is not a whole FX value (fused away, or only computing shapes and masks) are left out.
    Nodes without module metadata (added by passes) belong to no module.
    """
    nodes = list(model.graph)
    scoped = {id(n): node_scopes(n) for n in nodes}
    members: dict[str, set[int]] = {}
    for node in nodes:
        for scope in (scoped[id(node)] or ((), ""))[0]:
            members.setdefault(scope, set()).add(id(node))
    graph_outputs = {id(v) for v in model.graph.outputs}
    found: dict[str, tuple[int, str, bool]] = {}
    for order, node in enumerate(nodes):
        scopes, fx_name = scoped[id(node)] or ((), "")
        for scope in scopes:
            inside = members[scope]
            for value in node.outputs:
                if value.dtype not in _FLOAT_TYPES or not value.name:
                    continue
                is_output = id(value) in graph_outputs
                if is_output or any(id(user) not in inside for user, _ in value.uses()):
                    found[scope] = (order, value.name, is_output or value.name == fx_name)
    result = []
    for scope, (order, value, whole) in found.items():
        if not whole:
            logger.info("module %s: its output %s is part of a fused computation; left out", scope, value)
            continue
        name, call = _split_call(scope)
        result.append(ModuleValue(name, call, value, order, scope.count(".") + 1))
    result.sort(key=lambda m: (m.order, -m.depth))
    return result


def with_outputs(model: ir.Model, value_names: Sequence[str], path: str | Path | None = None) -> bytes | str:
    """A copy of `model` whose graph outputs also include the named values: serialized bytes (outputs and
    nodes pruned to what the named values need, so a chunk of early layers does not run the whole graph),
    or, with `path`, the whole graph written there (weights in `<name>.data` beside it when they would not
    fit in one protobuf; see save_onnx) whose path is returned. `model` itself is restored before returning: its
    outputs list is the only thing touched, and only for the duration.

    Raises KeyError for a name that is not a value produced by a node of the top-level graph.
    """
    by_name = {v.name: v for n in model.graph for v in n.outputs if v.name}
    missing = [n for n in value_names if n not in by_name]
    if missing:
        raise KeyError(f"values not produced by the graph: {', '.join(missing)}")
    original = list(model.graph.outputs)
    present = {v.name for v in original}
    try:
        model.graph.outputs.extend(by_name[n] for n in dict.fromkeys(value_names) if n not in present)
        if path is not None:
            save_onnx(model, path)
            return str(path)
        proto = ir.serde.serialize_model(model)
        _prune(proto.graph, set(value_names))
        return proto.SerializeToString()
    finally:
        model.graph.outputs.clear()
        model.graph.outputs.extend(original)


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Every value name the subgraphs of a control-flow node read (outer-scope values included)."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in graph.node:
                names.update(inner.input)
                names.update(_subgraph_names(inner))
    return names


def _prune(graph: onnx.GraphProto, wanted: set[str]) -> None:
    """Keep only the named outputs, and only the nodes they depend on (in place; the order is kept)."""
    needed = set(wanted)
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_subgraph_names(node))
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in reversed(keep)]
    outputs = [o for o in graph.output if o.name in wanted]
    del graph.node[:]
    graph.node.extend(nodes)
    kept_outputs = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in outputs]
    del graph.output[:]
    graph.output.extend(kept_outputs)
