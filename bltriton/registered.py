"""The two ``torch.library`` ops of a band-limited convolution (forward and backward, with fake
implementations for shape propagation): ``torch.compile`` and ``torch.export`` keep each whole
(no graph break, no tracing into torch.fft or the CPU kernel), ``opcheck`` and the vmap rules of
:mod:`bltriton.batching` see them. Their bodies route a call to its layer plan
(:mod:`bltriton.plan`), the spatial algorithm (:mod:`bltriton.spatial`) or the general spectral
path (:mod:`bltriton.general`); plain eager mode calls the bodies directly
(:mod:`bltriton.autograd`)."""

from __future__ import annotations

import contextlib

import torch

from bltriton import ops, spatial
from bltriton import plan as _plan
from bltriton.general import band_conv_backward, band_conv_forward
from bltriton.spec import ConvSpec, filter_band_returned
from bltriton.spec import compute_dtype as _compute_dtype
from bltriton.spec import spec_from_op as _spec_from_op
from bltriton.transforms import complex_dtype, real_dtype

__all__ = ["_backward_impl", "_band_conv_backward_op", "_band_conv_op", "_forward_impl"]


@torch.library.custom_op("bltriton::band_conv", mutates_args=())
def _band_conv_op(
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
    """``(y, xb, wb)`` of :func:`band_conv_forward`."""
    spec = _spec_from_op(
        x_pad.shape,
        weight.shape,
        n=n,
        band=band,
        stride=stride,
        dilation=dilation,
        groups=groups,
        backend=backend,
        precision=precision,
        out_dtype=out_dtype,
        save_filter_band=save_filter_band,
        pad=pad,
        save_input=save_input,
        algorithm=algorithm,
    )
    return _forward_impl(x_pad, weight, bias, spec)


def _autocast_off(device_type: str):
    """``torch.autocast(device_type, enabled=False)`` where autocast exists for the device type;
    elsewhere (``meta``, where ``torch.autocast`` raises ``unsupported scalarType``) nothing."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _forward_impl(x_pad, weight, bias, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward op's body (also called directly in plain eager mode, see :func:`_eager`)."""
    # Precision is the spec's (fp32 transforms, spec.precision for the contractions): autocast
    # must not recast the transforms' matmuls inside the op (bf16 complex ops do not exist).
    with _autocast_off(x_pad.device.type):
        if _plan.takes(spec, x_pad, weight):
            return _plan_forward(x_pad, weight, bias, spec)
        if spec.algorithm == "spatial":
            return _spatial_forward(x_pad, weight, bias, spec)
        return band_conv_forward(x_pad, weight, bias, spec)


def _plan_forward(x_pad, weight, bias, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward op's outputs by the layer's plan (:mod:`bltriton.plan`): the filter band is
    never returned (the plan forms it inside the contractions or again in the backward)."""
    y, xb = _plan.plan_for(spec, x_pad, weight).forward(x_pad, weight, bias, spec.out_dtype or x_pad.dtype)
    cdt = complex_dtype(x_pad.dtype)
    if xb is None:
        xb = x_pad.new_empty((0, x_pad.shape[0], x_pad.shape[1]), dtype=cdt)
    return y, xb, x_pad.new_empty(0, dtype=cdt)


def _spatial_forward(x_pad, weight, bias, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward op's outputs by the spatial algorithm: no bands exist, so both come back
    empty (``[0, B, C]`` and ``[0]``, the shapes the fake and the vmap rule give)."""
    cdt = _compute_dtype(x_pad.dtype)
    b = None if bias is None else bias.to(cdt)
    y = spatial.forward(x_pad.to(cdt), weight.to(cdt), b, spec)
    empty = x_pad.new_empty((0, x_pad.shape[0], x_pad.shape[1]), dtype=complex_dtype(x_pad.dtype))
    return y.to(spec.out_dtype or x_pad.dtype), empty, x_pad.new_empty(0, dtype=complex_dtype(x_pad.dtype))


@_band_conv_op.register_fake
def _(x_pad, weight, bias, **kwargs):
    spec = _spec_from_op(x_pad.shape, weight.shape, **kwargs)
    cdt = complex_dtype(x_pad.dtype)
    out = tuple(-(-f // s) for f, s in zip(spec.full_out, spec.stride))
    f = 0 if spec.algorithm == "spatial" else spec.band.num_kept
    y = x_pad.new_empty((x_pad.shape[0], weight.shape[0], *out), dtype=spec.out_dtype or x_pad.dtype)
    xb = x_pad.new_empty((0 if spec.save_input else f, x_pad.shape[0], x_pad.shape[1]), dtype=cdt)
    returned = filter_band_returned(spec) and not _plan.takes(spec, x_pad, weight)  # plans keep none
    wb_shape = (f, weight.shape[0], weight.shape[1]) if returned else (0,)
    wb = x_pad.new_empty(wb_shape, dtype=cdt)
    return y, xb, wb


@torch.library.custom_op("bltriton::band_conv_backward", mutates_args=())
def _band_conv_backward_op(
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
    """``(dx_pad, dw)`` in the compute dtype, contiguous; a gradient that is not needed comes back
    as its own empty tensor (two outputs may not share one). ``filt`` is the saved filter band
    ``[F, O, Cg]`` or, when :func:`_filter_saved_as_band` says so, the weight."""
    spec = _spec_from_op(
        x_shape,
        w_shape,
        n=n,
        band=band,
        stride=stride,
        dilation=dilation,
        groups=groups,
        backend=backend,
        precision=precision,
        out_dtype=out_dtype,
        save_filter_band=save_filter_band,
        pad=pad,
        save_input=save_input,
        algorithm=algorithm,
    )
    return _backward_impl(dy, xb, filt, spec, need_x, need_w)[:2]


def _backward_impl(dy, xb, filt, spec: ConvSpec, need_x: bool, need_w: bool, need_b: bool = False):
    """The backward op's body (also called directly in plain eager mode, see :func:`_eager`):
    ``(dx, dw, db)``; ``db`` is ``None`` unless ``need_b`` and the gradient's band gave it (the
    op returns only ``(dx, dw)``)."""
    with _autocast_off(dy.device.type):  # as in the forward op
        if _plan.takes(spec, _plan.Described.input_of(xb, spec), filt):  # ``filt`` is the weight
            cdt = _compute_dtype(xb.dtype) if spec.save_input else real_dtype(xb.dtype)
            plan = _plan.plan_for(spec, _plan.Described.input_of(xb, spec), filt)
            dx, dw, db = plan.backward(dy, xb, filt, need_x, need_w, need_b, cdt, cdt)
        elif spec.algorithm == "spatial":  # ``xb`` is the input, ``filt`` the weight
            cdt = _compute_dtype(xb.dtype)
            dx, dw = spatial.backward(dy.to(cdt), xb.to(cdt), filt.to(cdt), spec, need_x, need_w)
            db = None
        else:
            if spec.save_input:  # ``xb`` is the input itself: recompute its band when dW needs it
                cdt = _compute_dtype(xb.dtype)
                xb = (
                    ops.forward_transform(xb.to(cdt), spec.band, offset=spec.pad_lo, scratch="band.x")
                    if need_w
                    else None
                )
            else:
                cdt = real_dtype(xb.dtype)
            # ``filt``: the saved filter band, or the weight (its band is rebuilt inside dX's
            # contraction).
            dx, dw, db = band_conv_backward(dy, xb, filt, spec, need_x, need_w, need_b)
    # weight_from_band gives the real part of a complex tensor (a strided view): the fake says
    # contiguous, and compiled graphs rely on the real op's strides matching it.
    dx = dy.new_empty(0, dtype=cdt) if dx is None else dx.contiguous()
    dw = dy.new_empty(0, dtype=cdt) if dw is None else dw.contiguous()
    return dx, dw, db


@_band_conv_backward_op.register_fake
def _(dy, xb, filt, *, x_shape, w_shape, need_x, need_w, save_input, **kwargs):
    rdt = _compute_dtype(xb.dtype) if save_input else real_dtype(xb.dtype)
    dx = dy.new_empty(tuple(x_shape) if need_x else (0,), dtype=rdt)
    dw = dy.new_empty(tuple(w_shape) if need_w else (0,), dtype=rdt)
    return dx, dw
