"""Layer plans: one band-limited layer's launch sequence on the triton backend, built once.

Everything that depends only on a call's static description (the op's :class:`ConvSpec`, the
channel counts, dtypes, device and precision) is computed when the shape is first seen and kept
on a :class:`LayerPlan`: the band geometry, the DFT operands in the layout the kernels read, the
output and scratch shapes (per batch size: a few integer products), the kernel configs. A call
looks its plan up with one key (:func:`plan_for`) and launches; nothing is asked of the tuner, no
host tensor is made and nothing is copied to the device after the plan exists.

The launch sequence (docs/design.md §9), with the three kernels of ``bltriton.kernels``:

* forward, 3 launches: ``to_band`` (the input's band; with a filter of more than
  :data:`FUSED_MAX_TAPS` taps the filter band too, in the same launch), ``mac("fwd")`` (the
  filter band formed from the taps inside the contraction for small filters), ``from_band``
  (the output at the positions the crop and stride keep, the bias in its epilogue).
* backward, 4 launches: ``to_band`` (the output gradient's conjugate band, the input band again
  under ``save='input'``, the filter band for large filters), ``mac("dx")``, ``mac("dw")`` (the
  bias gradient from the DC frequency in its epilogue), one ``from_band`` for both the input
  gradient and the filter gradient (the band folded into the taps).

Every transform is one GEMM against a direct DFT operand evaluated only at the kept frequencies
and at the positions that exist: zero padding, zero-upsampling by the stride, crop and stride of
the output all live in the operands, so no padded, upsampled or transposed copy is ever made.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from types import ModuleType

import torch

from bltriton.launch import Launches
from bltriton.spectral import Band, column_weights
from bltriton.transforms import _phase

__all__ = [
    "FUSED_MAX_TAPS",
    "KERNELS",
    "PROJECTION_MAX_ENTRIES",
    "Described",
    "LayerPlan",
    "ProjectionPlan",
    "clear_plans",
    "lookup",
    "plan_for",
    "takes",
]

#: Filters of at most this many taps have their band formed inside the contractions (no filter
#: band in memory); larger ones are transformed by ``to_band`` in the launch that transforms the
#: input. Forming costs ``taps / (2·BLOCK_M)`` of a contraction's multiply-adds on the FMA units.
FUSED_MAX_TAPS = 25

#: Which kernels run the launches: ``"triton"`` (``bltriton.kernels.transform``/``tap_mac``) or
#: ``"naive"`` (the pure-torch references of ``bltriton.kernels.naive``, for tests of the plan).
KERNELS = "triton"

_PLANS: OrderedDict[tuple, LayerPlan] = OrderedDict()
#: Plans kept (LRU). A plan holds its DFT operands on the device (a few MB for a 32x32 layer); an
#: evicted plan is rebuilt on its next call, which makes host tensors: keep it above the number
#: of layer shapes a CUDA graph captures.
MAX_PLANS = 1024


def clear_plans() -> None:
    """Drop every plan and its device operands."""
    _PLANS.clear()


def _kernel_modules(name: str) -> tuple[ModuleType, ModuleType]:
    if name == "naive":
        from bltriton.kernels import naive

        return naive, naive
    from bltriton.kernels import tap_mac, transform

    return transform, tap_mac


def takes(spec, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a call runs through a plan: the spectral algorithm on the triton backend (a
    :class:`LayerPlan`), or the spatial algorithm on small CPU maps (a :class:`ProjectionPlan`);
    1-D or 2-D, real floating tensors. Everything else keeps the general path of
    ``bltriton.ops`` and ``bltriton.spatial``."""
    if spec.band.ndim not in (1, 2) or x.dtype not in _FLOATS or weight.dtype not in _FLOATS:
        return False
    if spec.algorithm == "spectral":
        return spec.backend == "triton"
    return (
        spec.algorithm == "spatial"
        and x.device.type == "cpu"
        and spec.out_dtype is None
        and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype
        and math.prod(spec.input_len) * math.prod(spec.padded) <= PROJECTION_MAX_ENTRIES
    )


#: The spatial algorithm's calls on the CPU whose band projection, as one dense matrix
#: ``[input positions, padded positions]``, has at most this many entries (maps up to about
#: 11x11) run through a :class:`ProjectionPlan`: one GEMM projects the input onto the band and
#: the library convolution does the rest, 5 aten calls per fwd+bwd against the separable
#: projection's 9 and their Python. The dense projection does ``P_padded`` multiply-adds per
#: input element (at most ~128 here), which at these sizes costs less than one host step.
PROJECTION_MAX_ENTRIES = 16384


_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class Described:
    """What :func:`plan_for` reads of a tensor (shape, dtype, device), apart from the tensor: a
    fake tensor's description builds the same plan as the real one's."""

    __slots__ = ("device", "dtype", "shape")

    def __init__(self, t, shape=None, dtype=None) -> None:
        self.shape = tuple(t.shape) if shape is None else shape
        self.dtype = t.dtype if dtype is None else dtype
        self.device = t.device

    @classmethod
    def input_of(cls, kept: torch.Tensor, spec) -> Described:
        """The forward's input as the backward sees it: the kept input itself, or (under
        ``save='band'``) its band ``[F, B, C]``, whose real dtype stands for the input's."""
        if spec.save_input:
            return cls(kept)
        real = torch.float64 if kept.dtype == torch.complex128 else torch.float32
        return cls(kept, shape=(kept.shape[1], kept.shape[2]), dtype=real)


def lookup(spec, x: torch.Tensor, weight: torch.Tensor) -> LayerPlan | ProjectionPlan | None:
    """The call's plan where a plan takes it (:func:`takes`), else ``None``: one dict hit per
    call either way (the decision is cached with the plan, under :func:`plan_for`'s key)."""
    key = (
        spec,
        x.shape[1],
        tuple(weight.shape),
        x.dtype,
        weight.dtype,
        x.device,
        torch.backends.cudnn.allow_tf32,
        KERNELS,
    )
    plan = _PLANS.get(key, _UNSEEN)
    if plan is _UNSEEN:
        plan = plan_for(spec, x, weight) if takes(spec, x, weight) else None
        _PLANS[key] = plan
        if len(_PLANS) > MAX_PLANS:
            _PLANS.popitem(last=False)
    return plan


_UNSEEN = object()


def plan_for(spec, x: torch.Tensor, weight: torch.Tensor) -> LayerPlan:
    """The cached plan of one call (built on the first call of its shape). The key holds the
    spec, the channel counts and taps, the dtypes, the device and torch's tf32 flag for
    convolutions (which decides the contractions' precision); not the batch size."""
    key = (
        spec,
        x.shape[1],
        tuple(weight.shape),
        x.dtype,
        weight.dtype,
        x.device,
        torch.backends.cudnn.allow_tf32,
        KERNELS,
    )
    plan = _PLANS.get(key)
    if plan is None:  # (also where lookup cached that no plan takes the call: plan_for builds one)
        kind = ProjectionPlan if spec.algorithm == "spatial" else LayerPlan
        plan = _PLANS[key] = kind(spec, x.shape[1], tuple(weight.shape), x.dtype, weight.device)
        if len(_PLANS) > MAX_PLANS:
            _PLANS.popitem(last=False)
    return plan


# --------------------------------------------------------------------------------------------
# DFT operands (float64 on the host, then cast once to the plan's device and dtype)
# --------------------------------------------------------------------------------------------


def _positions(length, step, offset) -> tuple[torch.Tensor, ...]:
    return tuple(torch.arange(n, dtype=torch.float64) * s + o for n, s, o in zip(length, step, offset))


def forward_operand(band: Band, positions, conj: bool) -> torch.Tensor:
    """``[2, F, P]``: real and imaginary parts of ``E[f, p] = exp(∓iθ)`` (``+`` for the
    conjugate band): ``to_band``'s operand for signals at ``positions``."""
    theta = _phase(band, positions)
    return torch.stack([torch.cos(theta), torch.sin(theta) if conj else -torch.sin(theta)])


def inverse_operand(band: Band, positions, conj: bool) -> torch.Tensor:
    """``[2F, P]``, rows ``(c·cos θ, ∓c·sin θ)/N`` per frequency (``c`` the half-spectrum column
    weight): ``from_band``'s operand evaluating ``irfftn`` of the zero-filled band at
    ``positions``; ``conj``: the band given is the conjugate of the one to invert."""
    theta = _phase(band, positions)
    cw = column_weights(band.n[-1], band.cols).repeat(band.kept_rows)[:, None] / math.prod(band.n)
    sin = cw * torch.sin(theta)
    return torch.stack([cw * torch.cos(theta), sin if conj else -sin], dim=1).reshape(2 * band.num_kept, -1)


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    """A 1-D signal ``[B, C, L]`` as ``[B, C, 1, L]`` (a view); 2-D as it is."""
    return t.unsqueeze(2) if t.dim() == 3 else t


class LayerPlan:
    """One layer's launches; see the module docstring. Build through :func:`plan_for`.

    Args:
        spec: the op's :class:`~bltriton.autograd.ConvSpec` (spectral, triton backend).
        channels: input channels ``C``.
        w_shape: ``[O, C/groups, *k]``.
        dtype: the input's dtype (the compute dtype is float64 for float64, else float32).
        device: where the operands live.
    """

    def __init__(self, spec, channels: int, w_shape: tuple[int, ...], dtype: torch.dtype, device) -> None:
        from bltriton.kernels.band_mac import resolve_precision

        band = spec.band
        self.spec = spec
        self.channels = channels
        self.out_channels, self.cg = w_shape[:2]
        self.kernel = tuple(w_shape[2:])
        self.taps = math.prod(self.kernel)
        self.f = band.num_kept
        self.cdt = torch.float64 if dtype == torch.float64 else torch.float32
        self.ccdt = torch.complex128 if self.cdt == torch.float64 else torch.complex64
        self.device = torch.device(device)
        self.out_len = tuple(-(-f // s) for f, s in zip(spec.full_out, spec.stride))
        self.in_len = spec.input_len
        self.fused_filter = self.taps <= FUSED_MAX_TAPS
        self.save_input = spec.save_input
        self.mac_precision = resolve_precision(self.ccdt, self.device, spec.precision)
        # The transforms never take half operands (a DFT operand in bf16 keeps ~3 digits); tf32
        # where the contractions run below fp32, as cuDNN's convolutions do under allow_tf32.
        self.transform_precision = "ieee" if self.mac_precision == "ieee" else "tf32"
        self.transform, self.tap_mac = _kernel_modules(KERNELS)
        self.launches = Launches(self.transform, self.tap_mac, self.device)
        ones = (1,) * band.ndim
        inputs = _positions(self.in_len, ones, spec.pad_lo)
        outputs = _positions(self.out_len, spec.stride, (0,) * band.ndim)
        taps = _positions(self.kernel, spec.dilation, (0,) * band.ndim)
        self.e_in = self._put(forward_operand(band, inputs, conj=False))  # X from x
        self.d_out = self._put(inverse_operand(band, outputs, conj=False))  # y from Y
        self.taps_op = self._put(forward_operand(band, taps, conj=True))  # Wc from w
        # The backward's operands, built with the first backward (a warm-up step before a CUDA
        # graph capture builds them).
        self._backward_ops: tuple[torch.Tensor, ...] | None = None
        self._positions = (inputs, outputs, taps)

    def _put(self, op: torch.Tensor) -> torch.Tensor:
        return op.to(device=self.device, dtype=self.cdt).contiguous()

    def prepare_backward(self) -> None:
        """Build the backward's operands now (else at the first backward)."""
        self._backward_operands()

    def _backward_operands(self) -> tuple[torch.Tensor, ...]:
        if self._backward_ops is None:
            inputs, outputs, taps = self._positions
            band = self.spec.band
            self._backward_ops = (
                self._put(forward_operand(band, outputs, conj=True)),  # Gc from dy
                self._put(inverse_operand(band, inputs, conj=True)),  # dx from dXc
                self._put(inverse_operand(band, taps, conj=False)),  # dw from its band
            )
        return self._backward_ops

    # ---- launches ------------------------------------------------------------------------
    def _band(self, rows: int, cols: int) -> torch.Tensor:
        return torch.empty((self.f, rows, cols), dtype=self.ccdt, device=self.device)

    def _weight(self, w: torch.Tensor) -> torch.Tensor:
        return w if w.dtype == self.cdt and w.is_contiguous() else w.to(self.cdt).contiguous()

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
        wrap=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(y, X)``: the output ``[B, O, *out]`` in ``out_dtype`` and, unless the plan's
        backward keeps the input, the input band ``[F, B, C]`` (else ``None``).

        Args:
            x: ``[B, C, *in_len]`` (unpadded where zero padding is folded), any strides.
            w: ``[O, C/groups, *k]``.
            bias: ``[O]`` or ``None``.
            wrap: ``torch.library.wrap_triton`` inside a ``triton_op`` (every launch through
                it), else ``None``.
        """
        tr, run, f = self.transform, self.launches, self.f
        batch, o = x.shape[0], self.out_channels
        if bias is not None and not bias.is_contiguous():
            bias = bias.contiguous()
        key = None if wrap is not None else ("fwd", batch, x.stride(), bias is None, out_dtype)
        xb = self._band(batch, self.channels)
        jobs = [tr.ToBand(_as_4d(x), self.e_in, xb.view(f, -1))]
        w = self._weight(w)
        if not self.fused_filter:
            filt = self._band(o, self.cg)
            jobs.append(tr.ToBand(_as_4d(w), self.taps_op, filt.view(f, -1)))
        run.to_band(key, jobs, self.transform_precision, wrap=wrap)
        yb = self._band(batch, o)
        self._filter_mac(key, "fwd", xb, w if self.fused_filter else filt, yb, wrap)
        y = torch.empty((batch, o, *self.out_len), dtype=out_dtype, device=self.device)
        job = tr.FromBand(yb.view(f, -1), self.d_out, _as_4d(y), bias)
        run.from_band(key, [job], self.transform_precision, wrap=wrap)
        return y, (None if self.save_input else xb)

    def _filter_mac(
        self, key, mode: str, a: torch.Tensor, filt: torch.Tensor, out: torch.Tensor, wrap
    ) -> None:
        """``mac(mode)`` against the weight (its band formed from the taps) or the filter band."""
        taps_op = self.taps_op if self.fused_filter else None
        groups, prec = self.spec.groups, self.mac_precision
        self.launches.mac(key, mode, a, filt, out, taps_op=taps_op, groups=groups, precision=prec, wrap=wrap)

    def backward(
        self,
        dy: torch.Tensor,
        kept: torch.Tensor,
        w: torch.Tensor,
        need_x: bool,
        need_w: bool,
        need_b: bool,
        dx_dtype: torch.dtype,
        dw_dtype: torch.dtype,
        wrap=None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(dx, dw, db)`` (``None`` where not asked for) in ``dx_dtype``/``dw_dtype`` (``db`` in
        the compute dtype).

        Args:
            dy: ``[B, O, *out]``, any strides.
            kept: the input ``[B, C, *in_len]`` (``save='input'``) or its band ``[F, B, C]``.
            w: ``[O, C/groups, *k]``.
            wrap: as in :meth:`forward`.
        """
        tr, run, f = self.transform, self.launches, self.f
        g_op, dx_op, dw_op = self._backward_operands()
        batch, o, groups, prec = dy.shape[0], self.out_channels, self.spec.groups, self.mac_precision
        dx = dw = db = None
        if not (need_x or need_w):
            return dx, dw, self._bias_grad(dy) if need_b else None
        key = None
        if wrap is None:
            key = ("bwd", batch, dy.stride(), kept.stride(), need_x, need_w, need_b, dx_dtype, dw_dtype)
        gb = self._band(batch, o)
        jobs = [tr.ToBand(_as_4d(dy), g_op, gb.view(f, -1))]
        xb = kept
        if need_w and self.save_input:
            xb = self._band(batch, self.channels)
            jobs.append(tr.ToBand(_as_4d(kept), self.e_in, xb.view(f, -1)))
        w = self._weight(w)
        if need_x and not self.fused_filter:
            filt = self._band(o, self.cg)
            jobs.append(tr.ToBand(_as_4d(w), self.taps_op, filt.view(f, -1)))
        run.to_band(key, jobs, self.transform_precision, wrap=wrap)
        inverse = []
        if need_x:
            dxb = self._band(batch, self.channels)
            self._filter_mac(key, "dx", gb, w if self.fused_filter else filt, dxb, wrap)
            dx = torch.empty((batch, self.channels, *self.in_len), dtype=dx_dtype, device=self.device)
            inverse.append(tr.FromBand(dxb.view(f, -1), dx_op, _as_4d(dx), None))
        if need_w:
            dwb = self._band(o, self.cg)
            db = torch.empty(o, dtype=self.cdt, device=self.device) if need_b else None
            run.mac(key, "dw", xb, gb, dwb, taps_op=None, groups=groups, precision=prec, db=db, wrap=wrap)
            dw = torch.empty((o, self.cg, *self.kernel), dtype=dw_dtype, device=self.device)
            inverse.append(tr.FromBand(dwb.view(f, -1), dw_op, _as_4d(dw), None))
        elif need_b:
            db = self._bias_grad(dy)
        run.from_band(key, inverse, self.transform_precision, wrap=wrap)
        return dx, dw, db

    def _bias_grad(self, dy: torch.Tensor) -> torch.Tensor:
        return dy.sum(dim=(0, *range(2, dy.dim())), dtype=self.cdt)


class ProjectionPlan:
    """The spatial algorithm of one small CPU layer: the input projected onto the band by one
    GEMM against a dense ``[input positions, padded positions]`` operator (zero padding folded
    in), then the library convolution and its backward; the input gradient is projected back by
    the transpose. Built through :func:`plan_for` (see :data:`PROJECTION_MAX_ENTRIES`). The
    backward keeps the input (the spatial algorithm's ``save='input'``) and projects it again.
    """

    def __init__(self, spec, channels: int, w_shape: tuple[int, ...], dtype: torch.dtype, device) -> None:
        band = spec.band
        self.spec = spec
        self.channels = channels
        self.out_channels = w_shape[0]
        self.cdt = dtype
        self.device = torch.device(device)
        ones, zeros = (1,) * band.ndim, (0,) * band.ndim
        e = forward_operand(band, _positions(spec.input_len, ones, spec.pad_lo), conj=False)
        d = inverse_operand(band, _positions(spec.padded, ones, zeros), conj=False)
        proj = e[0].T @ d[0::2] + e[1].T @ d[1::2]  # [P_in, P_pad]: irfftn(band(rfftn(x)))
        self.proj = proj.to(self.device, dtype).contiguous()
        self.proj_t = proj.T.to(self.device, dtype).contiguous()
        nd = band.ndim
        self.zeros = [0] * nd
        self.stride, self.dilation = list(spec.stride), list(spec.dilation)
        self.conv = torch.nn.functional.conv2d if nd == 2 else torch.nn.functional.conv1d

    def prepare_backward(self) -> None:
        """Nothing to build: the backward uses the forward's operators."""

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return torch.mm(x.reshape(b * c, -1), self.proj).view(b, c, *self.spec.padded)

    def forward(self, x, w, bias, out_dtype, wrap=None) -> tuple[torch.Tensor, None]:
        """``(y, None)``: the output ``[B, O, *out]`` (nothing extra kept: the backward keeps the
        input)."""
        s = self.spec
        return self.conv(self._project(x), w, bias, s.stride, 0, s.dilation, s.groups), None

    def backward(self, dy, kept, w, need_x, need_w, need_b, dx_dtype, dw_dtype, wrap=None):
        """``(dx, dw, db)`` (``None`` where not asked for); ``kept`` is the input."""
        if dy.dtype != self.cdt:
            dy = dy.to(self.cdt)
        dxp, dw, db = _CONV_BACKWARD(
            dy, self._project(kept), w, [self.out_channels] if need_b else None, self.stride,
            self.zeros, self.dilation, False, self.zeros, self.spec.groups, [need_x, need_w, need_b],
        )  # fmt: skip
        dx = None
        if need_x:
            b, c = kept.shape[:2]
            dx = torch.mm(dxp.reshape(b * c, -1), self.proj_t).view(kept.shape)
            if dx.dtype != dx_dtype:
                dx = dx.to(dx_dtype)
        if dw is not None and dw.dtype != dw_dtype:
            dw = dw.to(dw_dtype)
        return dx, dw, db


_CONV_BACKWARD = torch.ops.aten.convolution_backward.default
