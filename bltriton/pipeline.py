"""The autograd op of a layer plan (:mod:`bltriton.plan`) in plain eager mode.

A call on the plan path (the spectral algorithm on the triton backend) runs here outside
``torch.compile``, functorch transforms and dispatch modes: one ``torch.autograd.Function`` whose
forward and backward are the plan's launches, with nothing else on the host between them. The
general path of :mod:`bltriton.autograd` (registered ops, vmap rules, forward mode) routes its op
bodies to the same plans, so both compute the same function.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from bltriton import plan as _plan

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
    @once_differentiable
    def backward(ctx, dy):
        kept, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        dx, dw, db = ctx.plan.backward(dy, kept, weight, need_x, need_w, need_b, x_dtype, w_dtype)
        if db is not None and db.dtype != b_dtype:
            db = db.to(b_dtype)
        return dx, dw, db, None, None


def apply(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec) -> torch.Tensor:
    """The band-limited convolution of one call by its plan (see :func:`bltriton.plan.plan_for`)."""
    plan = _plan.plan_for(spec, x, weight)
    return _PlanConv.apply(x, weight, bias, plan, spec.out_dtype or x.dtype)
