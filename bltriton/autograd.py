"""The autograd Function: the forward saves band spectra only; the backward runs the masked
gradient paths of DESIGN §1.7.

The padding is applied outside (by ``F.pad`` under autograd, which folds the gradient back through
``padding_mode``), so this Function computes a *valid* band-limited correlation of an already
padded input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from bltriton import ops
from bltriton.spectral import Band


@dataclass(frozen=True)
class ConvSpec:
    """Static description of one call (hashable).

    Attributes:
        band: kept frequency set.
        padded: padded input length per axis (``Lp``).
        kernel: filter taps per axis (``k``).
        stride, dilation: per axis.
        groups: channel groups.
        backend: resolved backend (``"torch"`` or ``"triton"``).
        precision: operand precision of the triton contractions (``None`` follows torch's tf32
            flag; ``"bf16"``/``"fp16"`` under autocast). The torch path computes in fp32/fp64.
        out_dtype: dtype of the output (the autocast dtype under autocast, else the input's).
    """

    band: Band
    padded: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    backend: str
    precision: str | None = None
    out_dtype: torch.dtype | None = None

    @property
    def full_out(self) -> tuple[int, ...]:
        """Stride-1 output length per axis."""
        return tuple(lp - d * (k - 1) for lp, k, d in zip(self.padded, self.kernel, self.dilation))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class BLConvFunction(torch.autograd.Function):
    """``y = crop(irfftn(band(rfftn(x_pad) · conj(rfftn(w))))) [::stride] + bias``."""

    @staticmethod
    def forward(ctx, x_pad, weight, bias, spec: ConvSpec):
        out_dtype = spec.out_dtype or x_pad.dtype
        cdt = _compute_dtype(x_pad.dtype)
        xb = ops.forward_transform(x_pad.to(cdt), spec.band)
        wb = ops.weight_transform(weight.to(cdt), spec.band, spec.dilation)
        yb = ops.mac("fwd", xb, wb, spec.groups, spec.backend, spec.precision)
        y = ops.inverse_transform(yb, spec.band, spec.full_out, spec.stride)
        if bias is not None:
            y = y + bias.to(cdt).reshape(-1, *([1] * spec.band.ndim))
        ctx.spec = spec
        ctx.dtypes = (x_pad.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(xb, wb)
        return y.to(out_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        spec: ConvSpec = ctx.spec
        xb, wb = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = dw = db = None
        dyc = dy.to(xb.real.dtype)
        if need_x or need_w:
            gb = ops.grad_transform(dyc, spec.band, spec.full_out, spec.stride)
            if need_x:
                dxb = ops.mac("dx", gb, wb, spec.groups, spec.backend, spec.precision)
                dx = ops.inverse_transform(dxb, spec.band, spec.padded, (1,) * spec.band.ndim)
                dx = dx.to(x_dtype)
            if need_w:
                dwb = ops.mac("dw", xb, gb, spec.groups, spec.backend, spec.precision)
                dw = ops.weight_from_band(dwb, spec.band, spec.kernel, spec.dilation).to(w_dtype)
        if need_b and ctx.has_bias:
            db = dy.sum(dim=(0, *range(2, dy.dim()))).to(b_dtype)
        return dx, dw, db, None
