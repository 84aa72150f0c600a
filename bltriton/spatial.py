"""The spatial algorithm: a band-limited convolution as a band-limited input and a plain one.

The band of docs/design.md §1 is a product of one mask per axis (kept rows times kept columns),
and it is real and even. So the band-limited correlation of §1 factors exactly:

    y = crop(irfftn(M · rfftn(x_pad) · conj(rfftn(w))))[::s]
      = conv(x_bl, w, stride=s),      x_bl = irfftn(M · rfftn(x_pad))[:Lp]

where ``conv`` is the ordinary valid correlation (``F.conv*d`` with no padding) and ``x_bl`` is
the input projected onto the band, evaluated at the ``Lp`` positions of the padded grid: the
output positions ``t·s`` read ``x_bl`` only at ``t·s + τ·d <= Lp − 1 < n`` (no wrap-around).
``M·X·conj(W)`` equals the spectrum of ``x_bl ⊛ w`` because ``M² = M``; the product is then
band-limited already, so no second projection is needed. The projection is one small real
matrix per axis (:class:`Limiter`, ``P[t_out, t_in] = (1/n) Σ_k c_k cos(2πk(t_out − t_in −
offset)/n)`` over the axis's kept frequencies ``k`` with the half-spectrum weights ``c_k``), it is
self-adjoint on the grid, and the exact gradients follow: ``dx = Pᵀ · dgrad(dy, w)`` and ``dw =
wgrad(x_bl, dy)``. The three convolutions are the library's own (oneDNN on the CPU, cuDNN on
CUDA) and cost what ``nn.Conv*d``'s do; the projections are GEMMs over one axis at a time.

Which algorithm a call takes is measured on its first call (:mod:`bltriton.choice`); the
estimate of :func:`choose_algorithm` is the prior (docs/design.md §3, docs/tuner.md): the
spectral algorithm does fewer multiply-adds where the band is small against ``kernel ×
output positions`` (large kernels, small maps at stride 1), the spatial one runs at the
convolution's rate and needs no filter band (strided layers, 3×3 kernels on large maps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bltriton import _cgemm, _workspace
from bltriton._gemm import matmul_nt
from bltriton.spectral import Band, column_weights, kept_mask
from bltriton.transforms import cached_plan

__all__ = [
    "RULES",
    "TERMS",
    "AlgorithmRule",
    "Limiter",
    "choose_algorithm",
    "cost_terms",
    "estimate",
    "limiter",
    "rule_key",
]


def _axis_matrix(
    freqs: torch.Tensor, weights: torch.Tensor, n: int, length_in: int, offset: int, length_out: int
):
    """``[length_out, length_in]`` float64: the band projection along one axis, input sample
    ``t`` placed at grid position ``offset + t``, output read at positions ``0 .. length_out−1``."""
    # The entry depends on d = t_out − t_in − offset only: one kernel over every d, then gathered.
    lo = -(length_in - 1 + offset)
    d = torch.arange(lo, length_out - offset, dtype=torch.int64)
    phase = (freqs.to(torch.int64)[:, None] * d[None, :]) % n  # exact integer phases
    kernel = (weights[:, None] * torch.cos(2 * math.pi * phase.to(torch.float64) / n)).sum(0) / n
    t_in = torch.arange(length_in, dtype=torch.int64) + offset
    t_out = torch.arange(length_out, dtype=torch.int64)
    return kernel[t_out[:, None] - t_in[None, :] - lo]


@dataclass(eq=False)
class Limiter:
    """The band projection of signals ``[B, C, *length_in]`` (placed at ``offset`` on the FFT
    grid) to ``[B, C, *length_out]`` (grid positions from 0), and its adjoint. ``method``:
    ``"direct"`` (one GEMM against the Kronecker product of the axis matrices),
    ``"separable"`` (one GEMM per axis) or ``"fft"`` (``rfftn``, mask, ``irfftn``: long signals,
    where the matrices would be large)."""

    band: Band
    length_in: tuple[int, ...]
    offset: tuple[int, ...]
    length_out: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype
    method: str

    def __post_init__(self) -> None:
        b = self.band
        if self.method == "fft":
            self._mask = kept_mask(b, self.device).to(self.dtype)
            return
        if b.ndim == 1:
            specs = [(torch.arange(b.cols), column_weights(b.n[0], b.cols), b.n[0])]
        else:
            rows = b.kept_row_indices()
            specs = [
                (rows, torch.ones(rows.shape[0], dtype=torch.float64), b.n[0]),
                (torch.arange(b.cols), column_weights(b.n[1], b.cols), b.n[1]),
            ]
        mats = [
            _axis_matrix(f, w, n, li, o, lo)
            for (f, w, n), li, o, lo in zip(specs, self.length_in, self.offset, self.length_out)
        ]
        if len(mats) == 1 or self.method == "direct":
            full = mats[0] if len(mats) == 1 else torch.kron(mats[0], mats[1])  # [P_out, P_in]
            self._fwd = self._put(full)  # matmul_nt(x, full): x @ fullᵀ
            self._adj = self._put(full.T)
        else:
            ph, pw = mats
            self._pw, self._pw_t = self._put(pw), self._put(pw.T)
            self._ph, self._ph_t = self._put(ph), self._put(ph.T)

    def _put(self, m: torch.Tensor) -> torch.Tensor:
        return m.to(device=self.device, dtype=self.dtype).contiguous()

    def apply(self, x: torch.Tensor, scratch: str | None = None) -> torch.Tensor:
        """``[B, C, *length_in]`` -> ``[B, C, *length_out]``, contiguous: a fresh tensor, or with
        ``scratch`` this thread's kept buffer of that name where it fits (a temporary the caller
        consumes at once, see :mod:`bltriton._workspace`)."""
        return self._run(x, self.length_in, self.length_out, adjoint=False, scratch=scratch)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """``[B, C, *length_out]`` -> ``[B, C, *length_in]``: the transpose of :meth:`apply`."""
        return self._run(g, self.length_out, self.length_in, adjoint=True)

    def _run(
        self,
        x: torch.Tensor,
        src: tuple[int, ...],
        dst: tuple[int, ...],
        adjoint: bool,
        scratch: str | None = None,
    ):
        b, c = x.shape[:2]
        x = x.contiguous()
        if self.method == "fft":
            return self._run_fft(x, adjoint)
        if len(src) == 1 or self.method == "direct":
            m = self._adj if adjoint else self._fwd
            return matmul_nt(x.reshape(b * c, -1), m).view(b, c, *dst)
        # Last axis by one GEMM over all rows, then the first axis by a batched product with the
        # (broadcast) row matrix: no transposed copy of the signal.
        pw, ph = (self._pw_t, self._ph_t) if adjoint else (self._pw, self._ph)
        t = matmul_nt(x.reshape(-1, src[1]), pw).view(b * c, src[0], dst[1])
        out = (
            None
            if scratch is None
            else _workspace.scratch(scratch, (b * c, dst[0], dst[1]), x.dtype, x.device)
        )
        return torch.bmm(ph.expand(b * c, dst[0], src[0]), t, out=out).view(b, c, *dst)

    def _run_fft(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        n = self.band.n
        src_off = (0,) * len(n) if adjoint else self.offset
        dst_off = self.offset if adjoint else (0,) * len(n)
        dst = self.length_in if adjoint else self.length_out
        pads = []
        for o, length, size in reversed(list(zip(src_off, x.shape[2:], n))):
            pads += [o, size - o - length]
        dims = tuple(range(-len(n), 0))
        spec = torch.fft.rfftn(F.pad(x, pads), s=n, dim=dims) * self._mask
        y = torch.fft.irfftn(spec, s=n, dim=dims)
        return y[(..., *(slice(o, o + length) for o, length in zip(dst_off, dst)))].contiguous()


def limiter(
    band: Band,
    length_in: tuple[int, ...],
    offset: tuple[int, ...],
    length_out: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> Limiter:
    """The cached :class:`Limiter` for one geometry (in the transforms' plan cache:
    ``bltriton.transforms.clear_plans`` drops it too)."""
    length_in, offset, length_out = tuple(length_in), tuple(offset), tuple(length_out)
    key = ("limiter", band, length_in, offset, length_out, device, dtype)

    def build() -> Limiter:
        rule = RULES[rule_key(device)]
        method = _limiter_method(band, list(length_in), list(length_out), rule)
        return Limiter(band, length_in, offset, length_out, device, dtype, method)

    return cached_plan(key, build)


# ------------------------------------------------------------------------------------------------
# The op bodies
# ------------------------------------------------------------------------------------------------

_CONV = {1: F.conv1d, 2: F.conv2d}


def _limiter_for(spec, x: torch.Tensor) -> Limiter:
    return limiter(spec.band, tuple(x.shape[2:]), spec.pad_lo, spec.padded, x.device, x.dtype)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec) -> torch.Tensor:
    """The band-limited correlation of ``x`` (``[B, C, *input_len]``, zero padding ``spec.pad``
    folded) by the spatial algorithm, in ``x``'s dtype."""
    x_bl = _limiter_for(spec, x).apply(x, scratch="spatial.x_bl")  # consumed by the convolution
    return _CONV[spec.band.ndim](x_bl, weight, bias, spec.stride, 0, spec.dilation, spec.groups)


def backward(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, spec, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dw)`` of :func:`forward` (``None`` where not needed); ``x`` is the op's input."""
    lim = _limiter_for(spec, x)
    nd = spec.band.ndim
    # The weight gradient needs the projected input, recomputed (the backward keeps the input);
    # the input gradient reads only its shape.
    if need_w:
        x_bl = lim.apply(x, scratch="spatial.x_bl")
    else:
        x_bl = dy.new_empty(1).expand(x.shape[0], x.shape[1], *spec.padded)
    dx_bl, dw, _ = torch.ops.aten.convolution_backward(
        dy.contiguous(),
        x_bl,
        weight,
        None,
        list(spec.stride),
        [0] * nd,
        list(spec.dilation),
        False,
        [0] * nd,
        spec.groups,
        [need_x, need_w, False],
    )
    return (lim.adjoint(dx_bl) if need_x else None), (dw if need_w else None)


# ------------------------------------------------------------------------------------------------
# The choice
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlgorithmRule:
    """Throughputs that :func:`estimate` weighs: real multiply-adds (or bytes, or elements) per
    second, and a fixed cost per call.

    Attributes:
        conv: the library convolution (forward, input and weight gradients).
        contraction: the spectral contractions (complex products counted as 4 real MACs).
        transform: the spectral signal transforms (GEMMs with their layout copies).
        filter: the filter transform and the filter gradient's fold (small-K GEMMs).
        filter_bytes: the filter band's traffic (taps and band, per pass).
        limiter: a projection done as one GEMM (1D, or the Kronecker form of a small 2D map).
        limiter_separable: a 2D projection done axis by axis (the batched first-axis product).
        grid: signal elements on the padded grid (the projected input, its gradient, the
            unpadded convolution over them), per pass.
        spectral_call, spatial_call: seconds per call besides the above.
        direct_ratio: a projection is one Kronecker GEMM while its MACs are at most this multiple
            of the separable form's.
        fused_filter: the filter band is formed and folded inside the contractions where
            :func:`bltriton._cgemm.fuses_filter` says so (no band traffic; the CPU kernel).
    """

    conv: float
    contraction: float
    transform: float
    filter: float
    filter_bytes: float
    limiter: float
    limiter_separable: float
    grid: float
    spectral_call: float
    spatial_call: float
    direct_ratio: float
    fused_filter: bool = False


# 2-core CPU (AMD EPYC, oneDNN convolutions and transform GEMMs, MKL complex bmm): a
# non-negative least-squares fit of the relative error to 52 layer shapes of ResNet-18 (batch 8,
# 32 and 128, r = 0.5 and 0.75) and the FCN (batch 16 and 64, r = 0.5 and 0.75), fwd+bwd of each
# algorithm measured by ``python -m bench.algorithms`` with the transforms' scratch (bench/NOTES.md,
# "Page faults, scratch"); the rows are bench/results/2026-11-26-cpu-algorithms-scratch.json and
# ``python -m bench.fit_rule`` on them gives these numbers (worst configuration 2.2% over the best
# picks; the previous rule, fitted before the scratch, 4.0%). CUDA (H200): cuDNN's
# fwd+bwd of the benchmark layers ran at 30-50 TMAC/s (TF32); a spectral layer call took 2-3 ms
# whatever its size and a spatial one 1.2-1.7 ms (the step is host-bound: 27 launches per
# spectral fwd+bwd); with these rates the rule picked the faster algorithm for every layer of
# ResNet-18 b128 and the FCN b64 there.
RULES: dict[str, AlgorithmRule] = {
    "cpu": AlgorithmRule(
        conv=191e9,
        contraction=100e9,
        transform=37.9e9,
        filter=1e15,  # the fit gave the filter GEMMs' arithmetic no weight: their traffic rules
        filter_bytes=9.24e9,
        limiter=148e9,
        limiter_separable=42.1e9,
        grid=1.52e9,
        spectral_call=0.356e-3,
        spatial_call=0.893e-3,
        direct_ratio=6.0,
    ),
    # The same CPU with the complex GEMMs on bltriton's own kernel (bltriton/_cgemm.py), the
    # filter band formed and folded inside its fused contractions where _cgemm.fuses_filter: 60
    # layer shapes of the same models, bench/results/2026-11-26-cpu-algorithms-fused.json, fitted
    # by ``python -m bench.fit_rule ... --device cpu-kernel`` (worst configuration 14.7% over the
    # best picks, ResNet-18 b8 r=0.75, one 4x4 layer whose spatial time read 14 ms against 6-9
    # estimated; the previous fit on these rows: the same 14.7%, FCN b16 r=0.5 3.3% -> 0%,
    # ResNet-18 b128 r=0.5 8.6% -> 1.5%).
    "cpu-kernel": AlgorithmRule(
        conv=197e9,
        contraction=167e9,
        transform=50.1e9,
        filter=177e9,
        filter_bytes=10.2e9,
        limiter=146e9,
        limiter_separable=76.2e9,
        grid=0.904e9,
        spectral_call=0.759e-3,
        spatial_call=1.01e-3,
        direct_ratio=6.0,
        fused_filter=True,
    ),
    "cuda": AlgorithmRule(
        conv=35e12,
        contraction=20e12,
        transform=10e12,
        filter=10e12,
        filter_bytes=1e12,
        limiter=10e12,
        limiter_separable=5e12,
        grid=1e12,
        spectral_call=2.0e-3,
        spatial_call=1.0e-3,
        direct_ratio=8.0,
    ),
}


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _static(value, nominal: int) -> int:
    # A symbolic size (torch.compile(dynamic=True), export with a dynamic batch) is not compared,
    # which would guard on it: the estimate takes a nominal value instead.
    return value if isinstance(value, int) else nominal


#: The terms of :func:`cost_terms` per algorithm. Each is named after its :class:`AlgorithmRule`
#: field: a rate (work per second) the term is divided by, or, for ``*_call``, seconds per call.
TERMS = {
    "spectral": ("contraction", "transform", "filter", "filter_bytes", "spectral_call"),
    "spatial": ("conv", "limiter", "limiter_separable", "grid", "spatial_call"),
}


def term_seconds(name: str, amount: float, rule: AlgorithmRule) -> float:
    """Seconds of ``amount`` of term ``name`` under ``rule``."""
    value = getattr(rule, name)
    return amount * value if name.endswith("_call") else amount / value


def cost_terms(
    spec, x_shape: tuple[int, ...], w_shape: tuple[int, ...], training: bool, rule: AlgorithmRule
) -> tuple[dict[str, float], dict[str, float]]:
    """The work of one call by each algorithm, term by term (multiply-adds, bytes or elements;
    1 for the per-call term); :func:`estimate` divides each by its rate in ``rule``
    (``bench/fit_rule.py`` fits the rates to measured times from the same terms)."""
    b, c = _static(x_shape[0], 32), _static(x_shape[1], 64)
    o, cg = w_shape[0], w_shape[1]
    taps = _prod(spec.kernel)
    out_len = [-(-f // s) for f, s in zip(spec.full_out, spec.stride)]
    out = _prod(out_len)
    grid = _prod(spec.padded)
    f = spec.band.num_kept
    passes = 3 if training else 1
    # The per-call terms were fitted to fwd+bwd calls: a forward alone is one of three passes.
    calls = passes / 3
    fused = rule.fused_filter and spec.groups == 1 and _cgemm.fuses_filter(taps, o * cg * taps)
    length_in = [_static(v, 32) for v in x_shape[2:]]
    # training: project the input, recompute it in the backward, project the input gradient
    method = _limiter_method(spec.band, length_in, list(spec.padded), rule)
    lim = passes * b * c * _limiter_macs(spec.band, length_in, list(spec.padded), method)
    spatial_terms = {
        "conv": passes * b * o * cg * taps * out,
        "limiter": lim if method == "direct" else 0.0,
        "limiter_separable": 0.0 if method == "direct" else lim,
        "grid": passes * b * c * grid,
        "spatial_call": calls,
    }
    # transforms: the input (and its recomputation) and the input gradient on the padded grid,
    # the output and the output gradient at the output positions only (stride folded in); per
    # channel a direct DFT (2·F MACs per position) or the separable form (a real GEMM over the
    # last axis, a complex one over the first, and a layout copy: weighted 1.5), or an FFT.

    def per_channel(lengths: list[int]) -> float:
        positions = _prod(lengths)
        work = 2 * f * positions
        if spec.band.ndim == 2:
            separable = 2 * positions * spec.band.cols + 4 * spec.band.kept_rows * lengths[0] * spec.band.cols
            work = min(work, int(1.5 * separable))
        return min(work, _fft_macs(spec.band.n))

    c_signals, o_signals = (3 * c, 2 * o) if training else (c, o)
    transform = b * (c_signals * per_channel(list(spec.padded)) + o_signals * per_channel(out_len))
    spectral_terms = {
        "contraction": passes * 4 * f * b * cg * o,
        "transform": transform,
        # the filter band: built for the forward and again for dX, folded back for dW (inside
        # the contractions where fused: then only the filter itself is read)
        "filter": passes * o * cg * 2 * f * taps,
        "filter_bytes": passes * o * cg * 4 * (taps if fused else taps + 2 * f),
        "spectral_call": calls,
    }
    return spectral_terms, spatial_terms


def rule_key(device: torch.device) -> str:
    """The :data:`RULES` entry for calls on ``device``: ``"cpu-kernel"`` on the CPU when the
    complex GEMMs run on bltriton's kernel (:func:`bltriton._cgemm.provider`), else the device
    type's (the CUDA rule for types without one)."""
    if device.type == "cpu":
        return "cpu-kernel" if _cgemm.provider() == "kernel" else "cpu"
    return device.type if device.type in RULES else "cuda"


def estimate(spec, x_shape: tuple[int, ...], w_shape: tuple[int, ...], device: torch.device, training: bool):
    """``(spectral_s, spatial_s)``: estimated seconds of one call (forward, plus both gradients
    when ``training``) by each algorithm: the :func:`cost_terms` over their rates."""
    rule = RULES[rule_key(device)]
    spectral_terms, spatial_terms = cost_terms(spec, x_shape, w_shape, training, rule)

    def seconds(terms: dict[str, float]) -> float:
        total = 0.0
        for name, amount in terms.items():
            total += term_seconds(name, amount, rule)
        return total

    return seconds(spectral_terms), seconds(spatial_terms)


def _fft_macs(n: tuple[int, ...]) -> float:
    """Work of one ``rfftn``/``irfftn`` pair over the grid, in MAC-equivalents."""
    total = _prod(n)
    return 5.0 * total * max(1.0, math.log2(total))


#: A projection takes the FFT once its matrix form needs this many times the FFT's work.
FFT_RATIO = 32.0


def _separable_macs(length_in: list[int], length_out: list[int]) -> int:
    """MACs per channel of a projection done axis by axis (last axis first)."""
    total = 0
    for i in range(len(length_in)):
        total += _prod(length_out[: i + 1]) * _prod(length_in[i:])
    return total


def _limiter_method(band: Band, length_in: list[int], length_out: list[int], rule: AlgorithmRule) -> str:
    direct = _prod(length_in) * _prod(length_out)
    separable = _separable_macs(length_in, length_out)
    if len(length_in) == 1 or direct <= rule.direct_ratio * separable:
        method, macs = "direct", direct
    else:
        method, macs = "separable", separable
    return "fft" if macs > FFT_RATIO * _fft_macs(band.n) else method


def _limiter_macs(band: Band, length_in: list[int], length_out: list[int], method: str) -> float:
    """MACs per channel of one projection by ``method``."""
    if method == "fft":
        return _fft_macs(band.n)
    if method == "direct":
        return _prod(length_in) * _prod(length_out)
    return _separable_macs(length_in, length_out)


def choose_algorithm(
    requested: str,
    spec,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    device: torch.device,
    training: bool,
    *,
    call: tuple | None = None,
) -> str:
    """``"spectral"`` or ``"spatial"`` for one call: ``requested`` unless ``"auto"``, then the
    cheaper by :func:`estimate` (the prior), or, with ``call``, the measured choice of
    :func:`bltriton.choice.choose_algorithm`, which times the candidates on the call's tensors
    (the estimate stays its answer where nothing may be timed). The spatial algorithm needs the
    input kept for the backward (``spec.save_input``); with ``save='band'`` the spectral one
    runs.

    Args:
        call: ``(x_pad, weight, bias, filter_cache, measure)`` of the call being decided (see
            :func:`bltriton.choice.choose_algorithm`); ``None``: the estimate alone.
    """
    if requested == "spectral" or not spec.save_input:
        return "spectral"
    if requested == "spatial":
        return "spatial"
    spectral_s, spatial_s = estimate(spec, x_shape, w_shape, device, training)
    prior = "spatial" if spatial_s < spectral_s else "spectral"
    if call is None or torch.compiler.is_compiling():  # dynamo traces this: no timing, no lock
        return prior
    from bltriton import choice  # choice imports this module

    x_pad, weight, bias, filter_cache, measure = call
    return choice.measured(prior, spec, x_pad, weight, bias, training, filter_cache, measure=measure)
