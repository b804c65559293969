"""ONNX translations for the TorchScript exporter of ATen ops it has none for, registered once per process.

- `aten::diff` (Transformers' packed-sequence check in its masking utilities: `torch.diff(position_ids,
  prepend=...)`): the difference of neighbours along one axis, `n` times, after concatenating `prepend` and
  `append`; booleans differ by exclusive or, as in PyTorch.
- `aten::histc` (expert routing counts of mixture-of-experts layers): the count of values per equal-width bin
  between `min` and `max`, values outside left out, the maximum in the last bin, as in PyTorch.

- `aten::cumsum` of booleans (the same check counts sequence starts with `(diff != 1).cumsum(-1)`): PyTorch
  sums booleans and small integers as int64, and ONNX's CumSum takes no booleans, so the input is cast first.

- `aten::unfold` over an axis whose length is dynamic (sliding windows of a conformer's local attention: gemma3n's
  audio encoder; image patches of idefics): torch's translation needs the length, this one gathers the windows
  at indices `start * step + offset` and moves the window's own axis last; a static length keeps torch's own,
  given the axis counted from the front (torch's leaves the window axis in place for a negative one).

- `aten::movedim` and `aten::permute` with negative dimensions (mamba2-style scans: `permute(0, -2, -1, 1)`):
  torch's translations write them into the Transpose's permutation as they are (ONNX Runtime then refuses
  the graph); dimensions are taken modulo the rank first.

- `aten::_upsample_bilinear2d_aa` and `aten::_upsample_bicubic2d_aa` (anti-aliased resizes: siglip2's and
  dinov2's position tables, tipsv2): ONNX's Resize with `antialias`, `exclude_outside` and half-pixel
  coordinates computes PyTorch's filter (opset 18 and later); with `align_corners=True` it does not, and the
  translation refuses.

- `aten::scaled_dot_product_attention` with `enable_gqa=True` (grouped key/value heads passed to SDPA as they
  are: exaone4_5, lfm3_vl): the key and value heads repeated for their query groups, then torch's own.

- `aten::linalg_solve_triangular` of a unit triangular matrix (up to 4096 rows), solved on the left (the chunked
  gated-delta-rule attention of qwen3_5, olmo_hybrid, minicpm-v 4.x): the dynamo path's lowering
  (`triangular_solve.py`), ceil(log2 n) steps of MatMuls.

- `aten::bitwise_or` (and `|`, `|=`) of integers as ONNX's BitwiseOr (torch's takes booleans only),
  `aten::expm1` as exp(x) - 1, and `aten::rms_norm` as x / sqrt(mean(x²) + eps) · weight (eps the dtype's
  machine epsilon when unset, as in PyTorch). `aten::full` without a dtype takes the fill value's kind, as in
  PyTorch (torch's translation makes it float: `torch.full(..., fill_value=0)` position ids then fail as
  Gather indices: idefics3, smolvlm).

The dynamo exporter has its own translations (torchlib); these only fill the TorchScript exporter's gaps.
"""

from __future__ import annotations

import torch

from tracefuse.exporters.triangular_solve import apply_unit_inverse

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


def _const(g, value):
    return g.op("Constant", value_t=torch.tensor(value))


def _unfold(g, self, dimension, size, step):
    from torch.onnx import symbolic_helper as sh
    from torch.onnx import symbolic_opset12

    rank = sh._get_tensor_rank(self)
    if rank is None or sh._is_value(sh._maybe_get_const(size, "i")) or sh._is_value(sh._maybe_get_const(step, "i")):
        return symbolic_opset12.unfold(g, self, dimension, size, step)  # torch's own (it says what it lacks)
    axis = sh._get_const(dimension, "i", "dimension") % rank
    if sh._get_tensor_dim_size(self, axis) is not None:  # a static length: torch's own, given a non-negative
        return symbolic_opset12.unfold(g, self, axis, size, step)  # axis (it leaves the window axis misplaced
        # for -1)
    width, stride = sh._get_const(size, "i", "size"), sh._get_const(step, "i", "step")

    def const(value):
        return _const(g, value)

    length = g.op("Gather", g.op("Shape", self), const(axis), axis_i=0)
    windows = g.op("Add", g.op("Div", g.op("Sub", length, const(width)), const(stride)), const(1))
    starts = g.op("Mul", g.op("Range", const(0), windows, const(1)), const(stride))
    index = g.op("Add", g.op("Unsqueeze", starts, const([1])),
                 g.op("Constant", value_t=torch.arange(width).unsqueeze(0)))  # [windows, size]
    gathered = g.op("Gather", self, index, axis_i=axis)  # the window axis, then the size axis, at `axis`
    perm = [d for d in range(rank + 1) if d != axis + 1] + [axis + 1]  # the size axis last, as in PyTorch
    out = g.op("Transpose", gathered, perm_i=perm)
    sizes = sh._get_tensor_sizes(self)  # the rank and the known sizes, for the translations of the ops after it
    if sizes is not None and self.type().dtype() is not None:
        out.setType(self.type().with_sizes([*sizes[:axis], None, *sizes[axis + 1:], width]))
    return out


def _dims(value, rank: int) -> list[int]:
    from torch.onnx import symbolic_helper as sh

    dims = sh._maybe_get_const(value, "t")  # an int (movedim.int) or a list (movedim.intlist), as a tensor
    flat = dims.reshape(-1).tolist() if isinstance(dims, torch.Tensor) else [dims] if isinstance(dims, int) else dims
    return [int(d) % rank for d in flat]


def _movedim(g, self, source, destination):
    from torch.onnx import symbolic_helper as sh

    rank = sh._get_tensor_rank(self)
    if rank is None:
        return sh._unimplemented("movedim", "an input of unknown rank", self)
    src, dst = _dims(source, rank), _dims(destination, rank)
    perm: list[int | None] = [None] * rank
    for a, b in zip(src, dst, strict=True):
        perm[b] = a
    rest = iter(d for d in range(rank) if d not in src)
    perm = [next(rest) if p is None else p for p in perm]
    return self if perm == list(range(rank)) else g.op("Transpose", self, perm_i=perm)


def _permute(g, self, dims):
    from torch.onnx import symbolic_helper as sh

    order = [int(d) for d in sh._get_const(dims, "is", "dims")]
    order = [d % len(order) for d in order]  # a negative dimension counted from the end, as in PyTorch
    return self if order == list(range(len(order))) else g.op("Transpose", self, perm_i=order)


def _antialiased(name: str, mode: str, cubic_a: float | None = None):
    """An anti-aliased resize (`F.interpolate(..., antialias=True)`): torch's plain Resize with ONNX's
    `antialias` (the filter stretched by the downscale factor), taps outside the image left out and the
    weights renormalized (`exclude_outside`), half-pixel coordinates, and for bicubic PyTorch's a = -0.5."""

    def symbolic(g, *args):
        from torch.onnx import symbolic_helper as sh

        out = sh._interpolate_helper(name, 4, mode)(g, *args)
        node = out.node()
        if node.kind() != "onnx::Resize":
            return sh._unimplemented(f"{name}_aa", "a resize torch does not express as one Resize", args[0])
        if node.s("coordinate_transformation_mode") not in ("pytorch_half_pixel", "half_pixel"):
            return sh._unimplemented(f"{name}_aa", "align_corners=True (ONNX Runtime's filter differs)", args[0])
        node.i_("antialias", 1)
        node.i_("exclude_outside", 1)
        node.s_("coordinate_transformation_mode", "half_pixel")
        if cubic_a is not None:
            node.f_("cubic_coeff_a", cubic_a)
        return out

    return symbolic


def _repeat_heads(g, query, states):
    """`states` [batch, kv_heads, length, dim] with each head repeated for its group of query heads
    (Transformers' repeat_kv), so that it has as many heads as `query`."""
    def const(values):
        return _const(g, values)

    shape, heads = g.op("Shape", states), g.op("Gather", g.op("Shape", query), const([1]), axis_i=0)
    group = g.op("Div", heads, g.op("Gather", shape, const([1]), axis_i=0))
    lead, tail = g.op("Gather", shape, const([0, 1]), axis_i=0), g.op("Gather", shape, const([2, 3]), axis_i=0)
    expanded = g.op("Expand", g.op("Unsqueeze", states, const([2])), g.op("Concat", lead, group, tail, axis_i=0))
    return g.op("Reshape", expanded, g.op("Concat", g.op("Gather", shape, const([0]), axis_i=0), heads, tail,
                                          axis_i=0))


def _sdpa(g, query, key, value, attn_mask=None, dropout_p=None, is_causal=None, scale=None, enable_gqa=None):
    from torch.onnx import symbolic_helper as sh
    from torch.onnx import symbolic_opset14

    grouped = enable_gqa is not None and not sh._is_none(enable_gqa) and bool(sh._maybe_get_const(enable_gqa, "b"))
    if grouped:
        if any(sh._get_tensor_rank(t) != 4 for t in (query, key, value)):
            return sh._unimplemented("scaled_dot_product_attention", "enable_gqa with inputs not of rank 4", query)
        key, value = _repeat_heads(g, query, key), _repeat_heads(g, query, value)
    return symbolic_opset14.scaled_dot_product_attention(g, query, key, value, attn_mask, dropout_p, is_causal,
                                                         scale, False)


MAX_SOLVE_ROWS = 4096  # rows a triangular solve of unknown size is lowered for (12 steps; N^4096 = 0 below it)


def _solve_triangular(g, a, b, upper, left, unitriangular):
    """The same lowering as the dynamo exporter's (triangular_solve.py): for a unit triangular a = I - N of n
    rows, a^-1 b = (I + N)(I + N^2)(I + N^4)… b, ceil(log2 n) steps; where the trace lost n (a chunk reshaped
    from dynamic sizes), the steps for MAX_SOLVE_ROWS rows, exact for any system up to that size (the extra
    powers of N are zero)."""
    from torch.onnx import symbolic_helper as sh

    rank = sh._get_tensor_rank(a)
    size = sh._get_tensor_dim_size(a, rank - 1) if rank else None
    is_upper, on_left = sh._get_const(upper, "b", "upper"), sh._get_const(left, "b", "left")
    if not (sh._get_const(unitriangular, "b", "unitriangular") and on_left):
        return sh._unimplemented("linalg_solve_triangular", "only a unit triangular matrix solved on the left", a)
    if not isinstance(size, int):  # the trace lost the (chunk) size: enough steps for MAX_SOLVE_ROWS rows
        size = MAX_SOLVE_ROWS
    strict = g.op("Trilu", a, _const(g, 1 if is_upper else -1), upper_i=int(is_upper))
    return apply_unit_inverse(g.op("Neg", strict), b, size, lambda x, y: g.op("MatMul", x, y),
                              lambda x, y: g.op("Add", x, y))


def _bitwise_or(g, self, other):
    from torch.onnx import symbolic_helper as sh

    types = sh._type_utils.JitScalarType
    if sh._is_bool(self) and sh._is_bool(other):
        return g.op("Or", self, other)
    kind = types.from_value(self, types.UNDEFINED)
    if kind in (types.FLOAT, types.DOUBLE, types.HALF, types.BFLOAT16, types.UNDEFINED):
        return sh._unimplemented("bitwise_or", "inputs that are not integers or booleans", self)
    if types.from_value(other, types.UNDEFINED) != kind:  # a Python int, or a narrower integer: as PyTorch
        other = g.op("Cast", other, to_i=kind.onnx_type())
    return g.op("BitwiseOr", self, other)  # integers (a pixel-shuffle index built with |=, cpmant's masks)


def _expm1(g, self):
    from torch.onnx import symbolic_helper as sh

    one = g.op("Constant", value_t=torch.tensor(1, dtype=sh._type_utils.JitScalarType.from_value(self).dtype()))
    return g.op("Sub", g.op("Exp", self), one)


def _rms_norm(g, self, normalized_shape, weight, eps):
    from torch.onnx import symbolic_helper as sh

    shape = sh._unpack_list(normalized_shape) if sh._is_packed_list(normalized_shape) else \
        sh._get_const(normalized_shape, "is", "normalized_shape")
    count = len(shape)  # only how many trailing axes are normalized matters (their sizes are the input's)
    dtype = sh._type_utils.JitScalarType.from_value(self).dtype()
    epsilon = torch.finfo(dtype).eps if sh._is_none(eps) else sh._get_const(eps, "f", "eps")
    axes = g.op("Constant", value_t=torch.tensor(list(range(-count, 0))))
    mean = g.op("ReduceMean", g.op("Mul", self, self), axes, keepdims_i=1)
    scale = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(epsilon,
                                                                                                    dtype=dtype)))))
    out = g.op("Mul", self, scale)
    return out if sh._is_none(weight) else g.op("Mul", out, weight)


def _full(g, sizes, value, dtype, layout, device, pin_memory=False):
    from torch.onnx import symbolic_helper as sh
    from torch.onnx import symbolic_opset9

    if dtype is None or sh._is_none(dtype):  # as PyTorch: the fill value's kind (torch's falls back to float)
        fill = sh._maybe_get_const(value, "t")
        kind = fill.dtype if isinstance(fill, torch.Tensor) else None
        types = sh._type_utils.JitScalarType
        dtype = types.BOOL if kind == torch.bool else types.INT64 if kind is not None and not kind.is_floating_point \
            else types.FLOAT
    return symbolic_opset9.full(g, sizes, value, dtype, layout, device, pin_memory)


def register_symbolics(opset: int) -> None:
    """Register the translations above for `opset` (once per process and opset)."""
    if opset in _registered:
        return
    torch.onnx.register_custom_op_symbolic("aten::diff", _diff, opset)
    torch.onnx.register_custom_op_symbolic("aten::histc", _histc, opset)
    torch.onnx.register_custom_op_symbolic("aten::cumsum", _cumsum, opset)
    torch.onnx.register_custom_op_symbolic("aten::unfold", _unfold, opset)
    torch.onnx.register_custom_op_symbolic("aten::movedim", _movedim, opset)
    torch.onnx.register_custom_op_symbolic("aten::permute", _permute, opset)
    torch.onnx.register_custom_op_symbolic("aten::scaled_dot_product_attention", _sdpa, opset)
    torch.onnx.register_custom_op_symbolic("aten::linalg_solve_triangular", _solve_triangular, opset)
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, opset)
    torch.onnx.register_custom_op_symbolic("aten::full", _full, opset)
    torch.onnx.register_custom_op_symbolic("aten::rms_norm", _rms_norm, opset)
    for name in ("aten::bitwise_or", "aten::__or_", "aten::__ior_"):
        torch.onnx.register_custom_op_symbolic(name, _bitwise_or, opset)
    if opset >= 18:  # Resize's antialias attribute
        torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa",
                                               _antialiased("upsample_bilinear2d", "linear"), opset)
        torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa",
                                               _antialiased("upsample_bicubic2d", "cubic", -0.5), opset)
    _registered.add(opset)
