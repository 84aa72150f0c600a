"""The differentiable op: the forward saves band spectra only (the input band, and the filter band
unless recomputing it from the weight is cheaper than one contraction); the backward runs the
masked gradient paths of DESIGN §1.7. Registered with ``torch.library`` so ``torch.compile`` keeps it
whole.

The padding is applied outside (by ``F.pad`` under autograd, which folds the gradient back through
``padding_mode``), so this op computes a *valid* band-limited correlation of an already
padded input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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


def band_conv_forward(
    x_pad: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = crop(irfftn(band(rfftn(x_pad) · conj(rfftn(w)))))[::stride] + bias``.

    Returns ``(y, xb, wb)``: the output ``[B, O, *out]``, the input band ``[F, B, C]`` and the
    conjugate filter band ``[F, O, Cg]`` (see :mod:`bltriton.ops`), the only tensors the backward
    needs.
    """
    out_dtype = spec.out_dtype or x_pad.dtype
    cdt = _compute_dtype(x_pad.dtype)
    xb = ops.forward_transform(x_pad.to(cdt), spec.band)
    wb = ops.weight_transform(weight.to(cdt), spec.band, spec.dilation)
    yb = ops.mac("fwd", xb, wb, spec.groups, spec.backend, spec.precision)
    y = ops.inverse_transform(yb, spec.band, spec.full_out, spec.stride)
    if bias is not None:
        y = y + bias.to(cdt).reshape(-1, *([1] * spec.band.ndim))
    return y.to(out_dtype), xb, wb


def band_conv_backward(
    dy: torch.Tensor,
    xb: torch.Tensor,
    wb: torch.Tensor,
    spec: ConvSpec,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The masked gradient paths: ``(dx_pad, dw)`` (``None`` where not needed), in the compute
    dtype. ``G = band(rfftn(up(dy)))``; ``dX = Σ_o G·W``; ``dW = Σ_b conj(G)·X``, computed in the
    conjugate domain of :mod:`bltriton.ops`."""
    dx = dw = None
    if need_x or need_w:
        gcb = ops.grad_transform(dy.to(xb.real.dtype), spec.band, spec.full_out, spec.stride)
        if need_x:
            dxcb = ops.mac("dx", gcb, wb, spec.groups, spec.backend, spec.precision)
            ones = (1,) * spec.band.ndim
            dx = ops.inverse_transform(dxcb, spec.band, spec.padded, ones, conj_input=True)
        if need_w:
            dwb = ops.mac("dw", xb, gcb, spec.groups, spec.backend, spec.precision)
            dw = ops.weight_from_band(dwb, spec.band, spec.kernel, spec.dilation)
    return dx, dw


# ------------------------------------------------------------------------------------------
# torch.library registration: torch.compile sees one opaque op per direction (no graph break,
# no tracing into torch.fft or Triton), with fake implementations for shape propagation.
# ------------------------------------------------------------------------------------------


def _spec_args(spec: ConvSpec) -> tuple:
    b = spec.band
    return (
        list(b.n),
        [b.rows_top, b.rows_bottom, b.cols],
        list(spec.stride),
        list(spec.dilation),
        spec.groups,
        spec.backend,
        spec.precision,
        spec.out_dtype,
    )


def _spec_from_args(x_shape, w_shape, n, band, stride, dilation, groups, backend, precision, out_dtype):
    ndim = len(n)
    return ConvSpec(
        band=Band(n=tuple(n), rows_top=band[0], rows_bottom=band[1], cols=band[2]),
        padded=tuple(x_shape[-ndim:]),
        kernel=tuple(w_shape[-ndim:]),
        stride=tuple(stride),
        dilation=tuple(dilation),
        groups=groups,
        backend=backend,
        precision=precision,
        out_dtype=out_dtype,
    )


@torch.library.custom_op("bltriton::band_conv", mutates_args=())
def _band_conv_op(
    x_pad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    n: list[int],
    band: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
    precision: str | None,
    out_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = _spec_from_args(
        x_pad.shape, weight.shape, n, band, stride, dilation, groups, backend, precision, out_dtype
    )
    return band_conv_forward(x_pad, weight, bias, spec)


@_band_conv_op.register_fake
def _(x_pad, weight, bias, n, band, stride, dilation, groups, backend, precision, out_dtype):
    spec = _spec_from_args(
        x_pad.shape, weight.shape, n, band, stride, dilation, groups, backend, precision, out_dtype
    )
    cdt = torch.complex128 if x_pad.dtype == torch.float64 else torch.complex64
    out = tuple(-(-f // s) for f, s in zip(spec.full_out, spec.stride))
    f = spec.band.num_kept
    y = x_pad.new_empty((x_pad.shape[0], weight.shape[0], *out), dtype=out_dtype or x_pad.dtype)
    xb = x_pad.new_empty((f, x_pad.shape[0], x_pad.shape[1]), dtype=cdt)
    wb = x_pad.new_empty((f, weight.shape[0], weight.shape[1]), dtype=cdt)
    return y, xb, wb


@torch.library.custom_op("bltriton::band_conv_backward", mutates_args=())
def _band_conv_backward_op(
    dy: torch.Tensor,
    xb: torch.Tensor,
    filt: torch.Tensor,
    filt_is_weight: bool,
    x_shape: list[int],
    w_shape: list[int],
    n: list[int],
    band: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
    precision: str | None,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    spec = _spec_from_args(x_shape, w_shape, n, band, stride, dilation, groups, backend, precision, None)
    wb = filt
    if filt_is_weight and need_x:  # recompute the (conjugate) filter band from the weight
        wb = ops.weight_transform(filt.to(xb.real.dtype), spec.band, spec.dilation)
    dx, dw = band_conv_backward(dy, xb, wb, spec, need_x, need_w)
    empty = dy.new_empty(0, dtype=xb.real.dtype)
    return (empty if dx is None else dx), (empty if dw is None else dw)


@_band_conv_backward_op.register_fake
def _(dy, xb, filt, filt_is_weight, x_shape, w_shape, n, band, stride, dilation, groups, backend, precision,
      need_x, need_w):  # fmt: skip
    rdt = torch.float64 if xb.dtype == torch.complex128 else torch.float32
    dx = dy.new_empty(tuple(x_shape) if need_x else (0,), dtype=rdt)
    dw = dy.new_empty(tuple(w_shape) if need_w else (0,), dtype=rdt)
    return dx, dw


def _setup_context(ctx, inputs, output):
    x_pad, weight, bias, n, band, stride, dilation, groups, backend, precision, _ = inputs
    _, xb, wb = output
    # What the backward needs of the filter: its band only for dX. Recomputing the band from the
    # weight (a tensor autograd keeps alive anyway) costs prod(kernel)/batch of one contraction;
    # when that is at most one, saving the band would cost more memory than it saves time (for
    # the demo's FCN at batch 16 the saved filter bands were 4× the input bands).
    need_x = ctx.needs_input_grad[0]
    recompute = math.prod(weight.shape[2:]) <= x_pad.shape[0] or not need_x
    ctx.filt_is_weight = recompute
    ctx.save_for_backward(xb, weight if recompute else wb)
    ctx.geometry = (
        list(x_pad.shape),
        list(weight.shape),
        n,
        band,
        stride,
        dilation,
        groups,
        backend,
        precision,
    )
    ctx.dtypes = (x_pad.dtype, weight.dtype, None if bias is None else bias.dtype)


def _backward(ctx, dy, _dxb, _dwb):
    xb, filt = ctx.saved_tensors
    x_dtype, w_dtype, b_dtype = ctx.dtypes
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx, dw = _band_conv_backward_op(
        dy, xb, filt, ctx.filt_is_weight, *ctx.geometry, bool(need_x), bool(need_w)
    )
    db = dy.sum(dim=(0, *range(2, dy.dim()))).to(b_dtype) if need_b else None
    return (
        dx.to(x_dtype) if need_x else None,
        dw.to(w_dtype) if need_w else None,
        db,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_band_conv_op.register_autograd(_backward, setup_context=_setup_context)


def band_conv(
    x_pad: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec
) -> torch.Tensor:
    """Band-limited valid correlation of a padded input (differentiable; see module docstring).

    Args:
        x_pad: ``[B, C, *Lp]``; weight: ``[O, C/groups, *k]``; bias: ``[O]`` or ``None``.

    Returns:
        ``[B, O, *out]``.
    """
    y, _, _ = _band_conv_op(x_pad, weight, bias, *_spec_args(spec))
    return y
