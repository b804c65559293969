"""ONNX translations for the TorchScript exporter of ATen ops it has none for, registered once per process.

- `aten::diff` (Transformers' packed-sequence check in its masking utilities: `torch.diff(position_ids,
  prepend=...)`): the difference of neighbours along one axis, `n` times, after concatenating `prepend` and
  `append`; booleans differ by exclusive or, as in PyTorch.
- `aten::histc` (expert routing counts of mixture-of-experts layers): the count of values per equal-width bin
  between `min` and `max`, values outside left out, the maximum in the last bin, as in PyTorch.

- `aten::cumsum` of booleans (the same check counts sequence starts with `(diff != 1).cumsum(-1)`): PyTorch
  sums booleans and small integers as int64, and ONNX's CumSum takes no booleans, so the input is cast first.

The dynamo exporter has its own translations (torchlib); these only fill the TorchScript exporter's gaps.
"""

from __future__ import annotations

import torch

_INT_MAX = 2**62
_registered: set[int] = set()


def _diff(g, self, n, dim, prepend, append):
    from torch.onnx import symbolic_helper as sh

    steps, axis = sh._get_const(n, "i", "n"), sh._get_const(dim, "i", "dim")
    parts = [t for t in (prepend, self, append) if not sh._is_none(t)]
    x = g.op("Concat", *parts, axis_i=axis) if len(parts) > 1 else self
    is_bool = sh._type_utils.JitScalarType.from_value(self, sh._type_utils.JitScalarType.UNDEFINED) \
        == sh._type_utils.JitScalarType.BOOL
    for _ in range(steps):
        axes = g.op("Constant", value_t=torch.tensor([axis]))
        tail = g.op("Slice", x, g.op("Constant", value_t=torch.tensor([1])),
                    g.op("Constant", value_t=torch.tensor([_INT_MAX])), axes)
        head = g.op("Slice", x, g.op("Constant", value_t=torch.tensor([0])),
                    g.op("Constant", value_t=torch.tensor([-1])), axes)
        x = g.op("Xor", tail, head) if is_bool else g.op("Sub", tail, head)
    return x


def _histc(g, self, bins, low, high):
    from torch.onnx import symbolic_helper as sh

    count = sh._get_const(bins, "i", "bins")
    lo, hi = float(sh._get_const(low, "f", "min")), float(sh._get_const(high, "f", "max"))
    if hi <= lo:
        return sh._unimplemented("histc", "min >= max (bins from the data's own range)", self)
    x = g.op("Reshape", g.op("Cast", self, to_i=1), g.op("Constant", value_t=torch.tensor([-1])))  # float
    inside = g.op("And", g.op("GreaterOrEqual", x, g.op("Constant", value_t=torch.tensor(lo))),
                  g.op("LessOrEqual", x, g.op("Constant", value_t=torch.tensor(hi))))
    scaled = g.op("Floor", g.op("Mul", g.op("Sub", x, g.op("Constant", value_t=torch.tensor(lo))),
                                g.op("Constant", value_t=torch.tensor(count / (hi - lo)))))
    index = g.op("Cast", g.op("Clip", scaled, g.op("Constant", value_t=torch.tensor(0.0)),
                              g.op("Constant", value_t=torch.tensor(float(count - 1)))), to_i=7)
    onehot = g.op("OneHot", index, g.op("Constant", value_t=torch.tensor(count)),
                  g.op("Constant", value_t=torch.tensor([0.0, 1.0])), axis_i=-1)
    weights = g.op("Unsqueeze", g.op("Cast", inside, to_i=1), g.op("Constant", value_t=torch.tensor([1])))
    counts = g.op("ReduceSum", g.op("Mul", onehot, weights), g.op("Constant", value_t=torch.tensor([0])),
                  keepdims_i=0)
    return g.op("Cast", counts, to_i=sh._type_utils.JitScalarType.from_value(self).onnx_type())


def _cumsum(g, self, dim, dtype):
    from torch.onnx import symbolic_helper as sh
    from torch.onnx import symbolic_opset11

    types = sh._type_utils.JitScalarType
    if types.from_value(self, types.UNDEFINED) == types.BOOL:  # as PyTorch: summed as int64
        self = g.op("Cast", self, to_i=types.INT64.onnx_type())
    return symbolic_opset11.cumsum(g, self, dim, dtype)  # torch's own translation for everything else


def register_symbolics(opset: int) -> None:
    """Register the translations above for `opset` (once per process and opset)."""
    if opset in _registered:
        return
    torch.onnx.register_custom_op_symbolic("aten::diff", _diff, opset)
    torch.onnx.register_custom_op_symbolic("aten::histc", _histc, opset)
    torch.onnx.register_custom_op_symbolic("aten::cumsum", _cumsum, opset)
    _registered.add(opset)
