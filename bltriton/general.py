"""The general spectral path: the band-limited correlation and its masked gradient paths
(docs/design.md §3) through the transforms and contractions of :mod:`bltriton.ops`, for every
call a layer plan (:mod:`bltriton.plan`) does not take: the CPU torch backend, and forward mode.

Zero padding is folded into the transforms (the input is placed at an offset of the FFT grid, and
the input gradient is evaluated only at the input's positions): no padded copy exists, and the
op's input is the caller's tensor itself. Other padding modes are applied outside (by ``F.pad``
under autograd, which folds the gradient back through ``padding_mode``) and reach the op padded.
"""

from __future__ import annotations

import torch

from bltriton import _workspace, ops
from bltriton.spec import ConvSpec, filter_band_returned
from bltriton.spec import compute_dtype as _compute_dtype
from bltriton.transforms import real_dtype

__all__ = ["band_conv_backward", "band_conv_forward", "band_conv_jvp"]


def band_conv_forward(
    x_pad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    filter_band: torch.Tensor | None = None,
    keep_input_band: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = crop(irfftn(band(rfftn(x_pad) · conj(rfftn(w)))))[::stride] + bias``.

    Returns ``(y, xb, wb)``: the output ``[B, O, *out]``, the input band ``[F, B, C]`` and the
    conjugate filter band ``[F, O, Cg]`` (see :mod:`bltriton.ops`), the only tensors the backward
    needs. ``xb`` is empty (``[0, B, C]``; the band lived in scratch) unless
    ``keep_input_band`` (default: not ``spec.save_input``, where the backward keeps the input
    instead), and ``wb`` is empty (the band never built whole) unless
    :func:`bltriton.spec.filter_band_returned`.
    """
    out_dtype = spec.out_dtype or x_pad.dtype
    cdt = _compute_dtype(x_pad.dtype)
    if keep_input_band is None:
        keep_input_band = not spec.save_input
    scratch = None if keep_input_band else "band.x"
    xb = ops.forward_transform(x_pad.to(cdt), spec.band, offset=spec.pad_lo, scratch=scratch)
    wb = filter_band
    if wb is None and filter_band_returned(spec):
        wb = ops.weight_transform(weight.to(cdt), spec.band, spec.dilation)
    # Without a filter band nobody keeps it: it is built chunk by chunk inside the contraction.
    yb = _filter_contraction("fwd", xb, weight.to(cdt) if wb is None else wb, spec)
    wb = xb.new_empty(0) if wb is None else wb
    y = ops.inverse_transform(yb, spec.band, spec.full_out, spec.stride)
    if bias is not None:
        y.add_(bias.to(cdt).reshape(-1, *([1] * spec.band.ndim)))  # y is fresh: no second output
    if not keep_input_band:
        xb = xb.new_empty((0, *xb.shape[1:]))
    return y.to(out_dtype), xb, wb


def _filter_contraction(mode: str, a: torch.Tensor, filt: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """``mac(mode, a, Wc)`` for ``"fwd"``/``"dx"``, written into this thread's scratch buffer
    ``band.y`` (the result is consumed before the op returns: :mod:`bltriton._workspace`).
    ``filt`` is the conjugate filter band ``[F, O, Cg]``, or the weight, whose band is then built
    chunk by chunk inside the contraction (:func:`bltriton.ops.filter_mac`)."""
    if not filt.is_complex():
        return ops.filter_mac(
            mode,
            a,
            filt,
            spec.band,
            spec.dilation,
            spec.groups,
            spec.backend,
            spec.precision,
            scratch="band.y",
        )
    width = filt.shape[1] if mode == "fwd" else filt.shape[2] * spec.groups
    out = _workspace.scratch("band.y", (a.shape[0], a.shape[1], width), a.dtype, a.device)
    return ops.mac(mode, a, filt, spec.groups, spec.backend, spec.precision, out=out)


def band_conv_backward(
    dy: torch.Tensor,
    xb: torch.Tensor,
    wb: torch.Tensor,
    spec: ConvSpec,
    need_x: bool,
    need_w: bool,
    need_b: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The masked gradient paths: ``(dx_pad, dw, db)`` (``None`` where not needed), in the compute
    dtype. ``db = Σ dy`` is read off the gradient's band when it is built anyway (its first
    frequency is the DC term, ``Σ dy``; a separate reduction over ``dy`` cost 0.02-0.14 ms per FCN
    layer call), else ``None`` (the caller sums ``dy``). ``G = band(rfftn(up(dy)))``;
    ``dX = Σ_o G·W``; ``dW = Σ_b conj(G)·X``, computed in the conjugate domain of
    :mod:`bltriton.ops`. ``wb`` is the conjugate filter band ``[F, O, Cg]``
    or the weight ``[O, Cg, *k]`` (then its band is built chunk by chunk inside dX's contraction,
    :func:`bltriton.ops.filter_mac`); dW's band is folded into the filter gradient chunk by chunk
    (:func:`bltriton.ops.weight_grad`)."""
    dx = dw = db = None
    if need_x or need_w:
        rdt = real_dtype(wb.dtype) if wb.is_complex() else _compute_dtype(wb.dtype)
        gcb = ops.grad_transform(dy.to(rdt), spec.band, spec.full_out, spec.stride, scratch="band.g")
        if need_b:  # frequency 0 is the DC term of every band (§1): Re Gc[0] = Σ over space of dy
            db = gcb[0].real.sum(0)
        if need_x:
            dxcb = _filter_contraction("dx", gcb, wb if wb.is_complex() else wb.to(rdt), spec)
            ones = (1,) * spec.band.ndim
            dx = ops.inverse_transform(
                dxcb, spec.band, spec.input_len, ones, conj_input=True, offset=spec.pad_lo
            )
        if need_w:
            dw = ops.weight_grad(
                xb, gcb, spec.band, spec.kernel, spec.dilation, spec.groups, spec.backend, spec.precision
            )
    return dx, dw, db


def band_conv_jvp(
    xb: torch.Tensor,
    filt: torch.Tensor,
    x_t: torch.Tensor | None,
    w_t: torch.Tensor | None,
    b_t: torch.Tensor | None,
    spec: ConvSpec,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Forward-mode derivative from the saved bands: ``y`` is bilinear in ``(x, w)``, so
    ``y_t = conv(x_t, w) + conv(x, w_t) + b_t``, summed in the band before one inverse transform.
    ``filt`` is the saved filter band ``[F, O, Cg]`` or the weight; ``xb`` the saved input band
    or, under ``spec.save_input``, the input itself; ``None`` tangents are zero."""
    batch = xb.shape[1] if xb.is_complex() else xb.shape[0]
    cdt = xb.real.dtype if xb.is_complex() else _compute_dtype(xb.dtype)
    if not xb.is_complex() and w_t is not None:
        xb = ops.forward_transform(xb.to(cdt), spec.band, offset=spec.pad_lo)
    yb = None
    if x_t is not None:
        wb = filt if filt.is_complex() else ops.weight_transform(filt.to(cdt), spec.band, spec.dilation)
        xtb = ops.forward_transform(x_t.to(cdt), spec.band, offset=spec.pad_lo)
        yb = ops.mac("fwd", xtb, wb, spec.groups, spec.backend, spec.precision)
    if w_t is not None:
        wtb = ops.weight_transform(w_t.to(cdt), spec.band, spec.dilation)
        part = ops.mac("fwd", xb, wtb, spec.groups, spec.backend, spec.precision)
        yb = part if yb is None else yb + part
    if yb is None:
        o = b_t.shape[0]
        y_t = b_t.new_zeros((batch, o, *(-(-f // s) for f, s in zip(spec.full_out, spec.stride))), dtype=cdt)
    else:
        y_t = ops.inverse_transform(yb, spec.band, spec.full_out, spec.stride)
    if b_t is not None:
        y_t = y_t + b_t.to(cdt).reshape(-1, *([1] * spec.band.ndim))
    return y_t.to(out_dtype)
