"""A dynamo export of tracefuse's wrapper with transformers' own export patches, FX fixes and ONNX fixes.

transformers 5's exporter (`transformers.exporters`) keeps a registry of reversible patches for what
torch.export or torch.onnx cannot take (`torch.histc` in MoE routers, `searchsorted`, data-dependent
reshapes, …), fixes of the exported FX graph (in-place ops, `index_put` forms, scalar promotion) and fixes
of the ONNX IR. Its `OnnxExporter` only takes a model's own keyword inputs, so it cannot export tracefuse's
flat KV-cache wrapper; this module applies the same three registries around torch.export of that wrapper.
The dynamo exporter falls back to it when a plain export fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import onnx_ir as ir
import torch


def available() -> bool:
    """Whether this transformers ships the exporter registries this module uses."""
    try:
        from transformers.exporters.exporter_onnx import apply_onnx_ir_fixes  # noqa: F401
        from transformers.exporters.utils import apply_fx_node_fixes, apply_patches  # noqa: F401
    except ImportError:
        return False
    return True


def _dims(shapes):
    """torch.onnx's named axes ({0: "batch"}) as torch.export's Dim.DYNAMIC (ranges inferred, as transformers
    does; the graph's axes are renamed to the spec afterwards)."""
    if isinstance(shapes, dict):
        return {axis: torch.export.Dim.DYNAMIC if isinstance(name, str) else name for axis, name in shapes.items()}
    if isinstance(shapes, (tuple, list)):
        return type(shapes)(_dims(item) for item in shapes)
    return shapes


def export_with_patches(wrapper: torch.nn.Module, args: tuple, dynamic_shapes, input_names: Sequence[str],
                        output_names: Sequence[str], opset: int, table: dict,
                        context=contextlib.nullcontext) -> ir.Model:
    """torch.export `wrapper` under transformers' "dynamo" and "onnx" patches, apply its FX node fixes,
    translate with `table` and apply its ONNX IR fixes. `context()` is entered around the export as well."""
    import transformers.exporters.exporter_onnx  # noqa: F401 - registers the "onnx" patches and fixes
    from transformers.exporters.exporter_onnx import apply_onnx_ir_fixes
    from transformers.exporters.utils import apply_fx_node_fixes, apply_patches

    with torch.no_grad(), apply_patches("dynamo"), apply_patches("onnx"), context():
        program = torch.export.export(wrapper, args, dynamic_shapes=_dims(dynamic_shapes), strict=False)
        apply_fx_node_fixes("onnx", program.graph_module)
        onnx_program = torch.onnx.export(
            program, args, input_names=list(input_names), output_names=list(output_names),
            opset_version=opset, optimize=True, verbose=False, custom_translation_table=table)
    apply_onnx_ir_fixes(onnx_program)
    return onnx_program.model
