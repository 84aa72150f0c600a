"""The autograd op of a layer plan (:mod:`bltriton.plan`) in plain eager mode.

A call on the plan path (the spectral algorithm on the triton backend) runs here outside
``torch.compile``, functorch transforms and dispatch modes: one ``torch.autograd.Function`` whose
forward and backward are the plan's launches, with nothing else on the host between them. The
general path of :mod:`bltriton.autograd` (registered ops, vmap rules, forward mode) routes its op
bodies to the same plans, so both compute the same function.
"""

from __future__ import annotations

import torch

from bltriton import plan as _plan
from bltriton.spec import spec_from_op

__all__ = ["apply"]


class _PlanConv(torch.autograd.Function):
    """``y = conv(x, w) + b`` by the plan; saves the input (``save='input'``) or its band, and the
    weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, out_dtype):
        y, xb = plan.forward(x, weight, bias, out_dtype)
        ctx.plan = plan
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(x if xb is None else xb, weight)
        return y

    @staticmethod
    def backward(ctx, dy):
        kept, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        if torch.is_grad_enabled():  # create_graph: the gradients must refuse a second backward
            return _first_order(ctx.plan, dy, kept, weight, (need_x, need_w, need_b), ctx.dtypes)
        dx, dw, db = ctx.plan.backward(dy, kept, weight, need_x, need_w, need_b, x_dtype, w_dtype)
        if db is not None and db.dtype != b_dtype:
            db = db.to(b_dtype)
        return dx, dw, db, None, None


_APPLY = super(torch.autograd.Function, _PlanConv).apply


def _first_order(plan, dy, kept, weight, needs, dtypes):
    """The gradients under ``create_graph=True``: computed without recording and marked so that
    differentiating them again raises (the plan has no adjoint of its backward)."""
    from bltriton.autograd import _NoDoubleBackward

    with torch.no_grad():
        dx, dw, db = plan.backward(dy, kept, weight, *needs, dtypes[0], dtypes[1])
    if db is not None:
        db = db.to(dtypes[2])
    dx, dw, db = (None if t is None else _NoDoubleBackward.apply(t, dy) for t in (dx, dw, db))
    return dx, dw, db, None, None


def apply(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec, plan=None) -> torch.Tensor:
    """The band-limited convolution of one call by its plan (``plan``, or
    :func:`bltriton.plan.plan_for`'s)."""
    if plan is None:
        plan = _plan.plan_for(spec, x, weight)
    # The C++ apply directly: Function.apply's Python wrapper unwraps functorch's dead wrappers
    # first (~5 µs of a small layer's call), and this path runs only outside functorch.
    return _APPLY(x, weight, bias, plan, spec.out_dtype or x.dtype)


# --------------------------------------------------------------------------------------------
# torch.compile: the plan's launches as torch.library.triton_ops, whose bodies inductor traces
# (every Triton launch through wrap_triton), so it sees the kernels, can capture them in CUDA
# graphs and fuse around them. Same schemas as the general path's custom ops
# (bltriton.registered._band_conv_op / _band_conv_backward_op), which stay for everything a plan
# does not take (the CPU torch path, the spatial algorithm) and for vmap (their batching rules).
# --------------------------------------------------------------------------------------------


def _build_plan(spec, x, weight):
    """The plan, built outside any fake-tensor mode: its DFT operands are real device tensors,
    cached for later eager and traced calls alike (a plan built from fake tensors would keep
    fake operands)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        plan = _plan.plan_for(spec, _plan.Described(x), _plan.Described(weight))
        plan.prepare_backward()  # its backward operands real too (they are built lazily)
        return plan


@torch.library.triton_op("bltriton::plan_conv", mutates_args=())
def plan_conv_op(
    x_pad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    n: list[int],
    band: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
    precision: str | None,
    out_dtype: torch.dtype | None,
    save_filter_band: bool,
    pad: list[int],
    save_input: bool,
    algorithm: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, xb, wb)`` as ``bltriton::band_conv`` (``wb`` always empty: plans keep no filter
    band), by the layer's plan."""
    spec = spec_from_op(
        x_pad.shape, weight.shape, n=n, band=band, stride=stride, dilation=dilation, groups=groups,
        backend=backend, precision=precision, out_dtype=out_dtype, save_filter_band=save_filter_band,
        pad=pad, save_input=save_input, algorithm=algorithm,
    )  # fmt: skip
    plan = _build_plan(spec, x_pad, weight)
    y, xb = plan.forward(x_pad, weight, bias, out_dtype or x_pad.dtype, wrap=torch.library.wrap_triton)
    cdt = plan.ccdt
    if xb is None:
        xb = x_pad.new_empty((0, x_pad.shape[0], x_pad.shape[1]), dtype=cdt)
    return y, xb, x_pad.new_empty(0, dtype=cdt)


@torch.library.triton_op("bltriton::plan_conv_backward", mutates_args=())
def plan_conv_backward_op(
    dy: torch.Tensor,
    xb: torch.Tensor,
    filt: torch.Tensor,
    *,
    x_shape: list[int],
    w_shape: list[int],
    need_x: bool,
    need_w: bool,
    n: list[int],
    band: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
    precision: str | None,
    out_dtype: torch.dtype | None,
    save_filter_band: bool,
    pad: list[int],
    save_input: bool,
    algorithm: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dx, dw)`` as ``bltriton::band_conv_backward`` (compute dtype; empty where not asked
    for), by the layer's plan; ``filt`` is the weight."""
    spec = spec_from_op(
        x_shape, w_shape, n=n, band=band, stride=stride, dilation=dilation, groups=groups,
        backend=backend, precision=precision, out_dtype=out_dtype, save_filter_band=save_filter_band,
        pad=pad, save_input=save_input, algorithm=algorithm,
    )  # fmt: skip
    plan = _build_plan(spec, _plan.Described.input_of(xb, spec), filt)
    cdt = plan.cdt
    dx, dw, _ = plan.backward(dy, xb, filt, need_x, need_w, False, cdt, cdt, wrap=torch.library.wrap_triton)
    dx = dy.new_empty(0, dtype=cdt) if dx is None else dx
    dw = dy.new_empty(0, dtype=cdt) if dw is None else dw
    return dx, dw
