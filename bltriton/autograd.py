"""The differentiable op: the forward computes the band-limited correlation and keeps what the
backward needs (below); the backward runs the masked gradient paths of docs/design.md §3. Forward and
backward are two ``torch.library`` ops (fake implementations for shape propagation), so
``torch.compile`` and ``torch.export`` keep them whole; a ``torch.autograd.Function`` with
``setup_context`` ties them together, which also serves ``torch.func``. Their ``vmap`` rules are in
:mod:`bltriton.batching`.

Zero padding is folded into the transforms (the input is placed at an offset of the FFT grid, and
the input gradient is evaluated only at the input's positions): no padded copy exists, and the op's
input is the caller's tensor itself. Other padding modes are applied outside (by ``F.pad`` under
autograd, which folds the gradient back through ``padding_mode``) and reach the op padded.

What the backward keeps (``ConvSpec.save_input``; the functional API's ``save``, default
``'input'``): a reference to the input and the weight, from which it recomputes both bands (one
input transform and one filter transform more per backward). Both tensors are usually alive
anyway (the input is the preceding ReLU's or batch norm's saved output, the weight a parameter),
so the layer adds no saved bytes of its own. ``save_input=False`` saves the input band instead
(smaller than the input at any rate > 0, and no recomputation), and the filter band when
recomputing it would cost more than one contraction."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from bltriton import _workspace, ops, pipeline, spatial
from bltriton import plan as _plan
from bltriton.spectral import Band
from bltriton.transforms import complex_dtype, real_dtype


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
        save_filter_band: save the filter band for the backward (else the weight, and the band
            is recomputed); ``None`` lets :func:`band_conv` decide from the kernel and batch.
            Ignored when ``save_input``.
        pad: zero padding folded into the transforms, ``(lo, hi)`` per axis flattened; the op's
            input is then unpadded (``padded`` still counts the padding). ``()``: none.
        save_input: the backward keeps the input and the weight and recomputes their bands
            (see the module docstring); ``False`` saves the input band. The functional API's
            default (``save='input'``) sets it.
        algorithm: ``"spectral"`` (transforms and band contractions) or ``"spatial"`` (the
            band-projected input through the library convolution, :mod:`bltriton.spatial`;
            needs ``save_input``). Both compute the same function.
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
    save_filter_band: bool | None = None
    pad: tuple[int, ...] = ()
    save_input: bool = False
    algorithm: str = "spectral"

    @property
    def full_out(self) -> tuple[int, ...]:
        """Stride-1 output length per axis."""
        return tuple(lp - d * (k - 1) for lp, k, d in zip(self.padded, self.kernel, self.dilation))

    @property
    def pad_lo(self) -> tuple[int, ...]:
        """Leading zero padding per axis folded into the transforms (the input's offset)."""
        return tuple(self.pad[0::2]) if self.pad else (0,) * len(self.padded)

    @property
    def input_len(self) -> tuple[int, ...]:
        """Spatial length of the op's input (``padded`` minus the folded padding)."""
        if not self.pad:
            return self.padded
        return tuple(lp - lo - hi for lp, lo, hi in zip(self.padded, self.pad[0::2], self.pad[1::2]))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


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
    :func:`_filter_band_returned`.
    """
    out_dtype = spec.out_dtype or x_pad.dtype
    cdt = _compute_dtype(x_pad.dtype)
    if keep_input_band is None:
        keep_input_band = not spec.save_input
    scratch = None if keep_input_band else "band.x"
    xb = ops.forward_transform(x_pad.to(cdt), spec.band, offset=spec.pad_lo, scratch=scratch)
    wb = filter_band
    if wb is None and _filter_band_returned(spec):
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


# ------------------------------------------------------------------------------------------
# torch.library registration: torch.compile sees one opaque op per direction (no graph break,
# no tracing into torch.fft or Triton), with fake implementations for shape propagation.
#
# A ConvSpec crosses the op boundary as keyword arguments: ``_op_kwargs`` flattens it and
# ``_spec_from_op`` rebuilds it (the padded and kernel lengths travel as the tensors' shapes).
# Adding a field to ConvSpec means adding it to these two functions and, with its schema type,
# to the two op signatures below; nothing else is positional.
# ------------------------------------------------------------------------------------------


def _op_kwargs(spec: ConvSpec) -> dict[str, object]:
    """ConvSpec → the static keyword arguments of both ops (schema types: ``int[]``, ``int``,
    ``str``, ``ScalarType``, ``bool``)."""
    b = spec.band
    return {
        "n": list(b.n),
        "band": [b.rows_top, b.rows_bottom, b.cols],
        "stride": list(spec.stride),
        "dilation": list(spec.dilation),
        "groups": spec.groups,
        "backend": spec.backend,
        "precision": spec.precision,
        "out_dtype": spec.out_dtype,
        "save_filter_band": bool(spec.save_filter_band),
        "pad": list(spec.pad),
        "save_input": spec.save_input,
        "algorithm": spec.algorithm,
    }


def _spec_from_op(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
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
) -> ConvSpec:
    """The inverse of :func:`_op_kwargs`, given the op's input and weight shapes."""
    ndim = len(n)
    length = tuple(x_shape[-ndim:])
    if pad:
        length = tuple(x + lo + hi for x, lo, hi in zip(length, pad[0::2], pad[1::2]))
    return ConvSpec(
        band=Band(n=tuple(n), rows_top=band[0], rows_bottom=band[1], cols=band[2]),
        padded=length,
        kernel=tuple(w_shape[-ndim:]),
        stride=tuple(stride),
        dilation=tuple(dilation),
        groups=groups,
        backend=backend,
        precision=precision,
        out_dtype=out_dtype,
        save_filter_band=save_filter_band,
        pad=tuple(pad),
        save_input=save_input,
        algorithm=algorithm,
    )


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
    wb_shape = (f, weight.shape[0], weight.shape[1]) if _filter_band_returned(spec) else (0,)
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


# ------------------------------------------------------------------------------------------
# Autograd. A torch.autograd.Function with a separate setup_context (rather than the op's
# register_autograd, whose generated Function torch.func rejects) so that torch.func.grad,
# vmap, jacrev and per-sample gradients work; torch.compile and torch.export trace it into the
# two ops above. Batching rules for both ops live in bltriton.batching.
# ------------------------------------------------------------------------------------------


def _filter_band_returned(spec: ConvSpec) -> bool:
    """Whether the forward op returns the whole filter band (else an empty tensor): only when the
    backward may keep it (:func:`_filter_saved_as_band`); static, from the spec."""
    return bool(spec.save_filter_band) and not spec.save_input


def _filter_saved_as_band(spec: ConvSpec, need_x: bool) -> bool:
    """Whether the backward gets the filter band ``[F, O, Cg]`` (else the weight, from which it
    recomputes the band when dX is needed). Static: it depends on the spec only, never on sizes
    inside the traced op, so a graph with a dynamic batch has no branch on it."""
    return bool(spec.save_filter_band) and need_x and not spec.save_input


_NO_DOUBLE_BACKWARD = (
    "bltriton: double backward through a band-limited convolution (differentiating its gradient, "
    "e.g. a gradient penalty, torch.func.hessian or a Hessian-vector product) is not supported. "
    "First-order gradients (also with create_graph=True) and forward-mode derivatives are."
)


def _eager() -> bool:
    """Plain eager mode: no compiler, no functorch transform (vmap, grad, jvp), no dispatch mode
    (fake tensors, FX proxies, functionalization). There the Function calls the ops' bodies
    directly: the custom-op dispatch (schema binding, redispatch) cost about as much as a small
    layer's arithmetic (bench/NOTES.md). Everywhere else the registered ops run, so
    compiled graphs, export, opcheck and the vmap rules see them."""
    return (
        not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and _current_dispatch_mode() is None
    )


def _traced_plan(spec: ConvSpec, x, weight) -> bool:
    """Under ``torch.compile`` (no functorch transform), a CUDA call a plan takes runs as the
    plan's ``triton_op`` (:mod:`bltriton.pipeline`), whose Triton launches inductor sees;
    elsewhere the general ops (whose vmap rules :mod:`bltriton.batching` registers) call the
    plan inside. The interpreter's kernels cannot be traced (``wrap_triton`` hands them back
    unwrapped), so CPU tensors keep the general ops."""
    return (
        torch.compiler.is_compiling()
        and x.device.type == "cuda"
        and not torch._C._are_functorch_transforms_active()
        and _plan.takes(spec, x, weight)
    )


class _NoDoubleBackward(torch.autograd.Function):
    """Identity on a first-order gradient whose own backward raises: the backward op is not
    differentiable (it would need its own adjoint paths), and without this marker a second
    differentiation would silently see the gradient as a constant."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        return grad.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)

    @staticmethod
    def jvp(ctx, _g_t, _dy_t):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


class _BandConv(torch.autograd.Function):
    """``(y, xb, wb) = band_conv(x_pad, weight, bias)``; only ``y`` is differentiable. Saves the
    input (``spec.save_input``) or its band, and the filter band or the weight (see
    :func:`_filter_saved_as_band`)."""

    generate_vmap_rule = True  # runs forward under vmap: the ops' batching rules do the work

    @staticmethod
    def forward(x_pad, weight, bias, spec: ConvSpec):
        if _eager():
            return _forward_impl(x_pad, weight, bias, spec)
        if _traced_plan(spec, x_pad, weight):
            return pipeline.plan_conv_op(x_pad, weight, bias, **_op_kwargs(spec))
        return _band_conv_op(x_pad, weight, bias, **_op_kwargs(spec))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x_pad, weight, bias, spec = inputs
        _, xb, wb = output
        ctx.mark_non_differentiable(xb, wb)
        ctx.spec = spec
        ctx.shapes = (list(x_pad.shape), list(weight.shape))
        ctx.dtypes = (x_pad.dtype, weight.dtype, None if bias is None else bias.dtype)
        kept_x = x_pad if spec.save_input else xb
        saved = (kept_x, wb if _filter_saved_as_band(spec, ctx.needs_input_grad[0]) else weight)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)  # the same tensors: no memory beyond the backward's
        ctx.out_dtype = output[0].dtype

    @staticmethod
    def backward(ctx, dy, _dxb, _dwb):
        xb, filt = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_shape, w_shape = ctx.shapes
        # The op has no autograd formula of its own (torch.func would reject a generated one
        # under create_graph=True, which torch.func.grad always uses): run it without recording
        # and mark its results as not differentiable again.
        db = None
        # db from the gradient's band is not recorded: under create_graph it comes from dy.sum.
        band_db = bool(need_b) and not torch.is_grad_enabled()
        with torch.no_grad():
            if _eager():
                dx, dw, db = _backward_impl(dy, xb, filt, ctx.spec, bool(need_x), bool(need_w), band_db)
            else:
                traced = _traced_plan(ctx.spec, _plan.Described.input_of(xb, ctx.spec), filt)
                op = pipeline.plan_conv_backward_op if traced else _band_conv_backward_op
                dx, dw = op(
                    dy,
                    xb,
                    filt,
                    x_shape=x_shape,
                    w_shape=w_shape,
                    need_x=bool(need_x),
                    need_w=bool(need_w),
                    **_op_kwargs(ctx.spec),
                )
        if torch.is_grad_enabled():
            dx, dw = _NoDoubleBackward.apply(dx, dy), _NoDoubleBackward.apply(dw, dy)
        if need_b:
            db = (dy.sum(dim=(0, *range(2, dy.dim()))) if db is None else db).to(b_dtype)
        grads = (dx.to(x_dtype) if need_x else None, dw.to(w_dtype) if need_w else None, db)
        return grads + (None,) * (len(ctx.needs_input_grad) - len(grads))  # the spec


class _BandConvWithJvp(_BandConv):
    """:class:`_BandConv` plus forward mode (``torch.func.jvp``/``jacfwd``). Separate because
    dynamo refuses to trace a Function that defines ``jvp``: compiled code uses the parent."""

    @staticmethod
    def jvp(ctx, x_t, w_t, b_t, _spec_t):
        xb, filt = ctx.saved_tensors
        y_t = band_conv_jvp(xb, filt, x_t, w_t, b_t, ctx.spec, ctx.out_dtype)
        return y_t, None, None


def _filter_band_worth_saving(kernel: tuple[int, ...], batch: int | torch.SymInt) -> bool:
    """Recomputing the filter band from the weight (a tensor autograd keeps alive anyway) costs
    ``prod(kernel)/batch`` of one contraction; when that is at most one, saving the band would
    cost more memory than it saves time (for the demo's FCN at batch 16 the saved filter bands
    were 4× the input bands). A symbolic batch (``torch.compile(dynamic=True)``,
    ``torch.export`` with a dynamic batch) is not compared, which would add a guard on it: the
    band is recomputed."""
    return isinstance(batch, int) and math.prod(kernel) > batch


def band_conv(
    x_pad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    filter_cache: ops.FilterBandCache | None = None,
) -> torch.Tensor:
    """Band-limited valid correlation of a padded input (differentiable; see module docstring).

    Args:
        x_pad: ``[B, C, *Lp]``; weight: ``[O, C/groups, *k]``; bias: ``[O]`` or ``None``.
        spec: the call's description; ``spec.save_filter_band=None`` is decided here from the
            kernel taps and the batch (outside the op, so the op itself has no size branch).
        filter_cache: used only when no gradient is recorded (``no_grad``/``inference_mode``) and
            not under ``torch.compile``: the filter band comes from the cache (see
            :class:`bltriton.ops.FilterBandCache`) and the op's autograd plumbing is skipped.

    Returns:
        ``[B, O, *out]``.

    Raises:
        RuntimeError: under ``torch.jit.trace``, which cannot record the op.
    """
    if torch.jit.is_tracing():
        raise RuntimeError(
            "bltriton: torch.jit.trace cannot record a band-limited convolution (TorchScript does "
            "not support it); use torch.compile, or torch.export.export for a saved graph"
        )
    if _plan.takes(spec, x_pad, weight):
        if _eager() and not (_wrapped(x_pad) or _wrapped(weight)):
            return pipeline.apply(x_pad, weight, bias, spec)
        if spec.save_filter_band is not False:  # the registered ops' fakes read it
            spec = _with_save_filter_band(spec, False)  # the plan never keeps the filter band
    elif (
        filter_cache is not None
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()  # vmap & co. go through the ops
    ):
        if spec.algorithm == "spatial":  # no filter band to cache
            return _forward_impl(x_pad, weight, bias, spec)[0]
        wb = filter_cache.get(weight, spec.band, spec.dilation, _compute_dtype(x_pad.dtype))
        return band_conv_forward(x_pad, weight, bias, spec, filter_band=wb, keep_input_band=False)[0]
    if spec.save_filter_band is None:
        spec = _with_save_filter_band(spec, _filter_band_worth_saving(spec.kernel, x_pad.shape[0]))
    if _eager() and not (_wrapped(x_pad) or _wrapped(weight)):
        # Function.apply binds the arguments with inspect.signature on every call when a Function
        # has a separate setup_context (~20 us, a tenth of a small layer's fwd+bwd); outside
        # functorch transforms (and their leftover wrappers) it then calls the base class's
        # apply, as here.
        y, _, _ = super(torch.autograd.Function, _BandConvWithJvp).apply(x_pad, weight, bias, spec)
        return y
    function = _BandConv if torch.compiler.is_compiling() else _BandConvWithJvp
    y, _, _ = function.apply(x_pad, weight, bias, spec)
    return y


def _wrapped(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


@lru_cache(maxsize=256)
def _with_save_filter_band(spec: ConvSpec, save: bool) -> ConvSpec:
    return replace(spec, save_filter_band=save)


from bltriton import batching as _batching  # noqa: E402,F401  (registers the ops' vmap rules)
