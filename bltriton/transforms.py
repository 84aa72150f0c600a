"""Band-pruned transforms of the torch path, as small cached plan objects.

A :class:`SignalPlan` serves one ``(band, length, step, offset, device, dtype)``: ``forward`` maps
a real signal ``[B, C, *length]`` placed at positions ``offset + t·step`` of the FFT grid (zeros
elsewhere: zero padding and zero-upsampling without building either) to its band ``[F, B, C]``;
``inverse`` maps a band back to the real signal sampled at those positions (crop, stride and the
removal of zero padding folded into the inverse). The same plan therefore serves the input
(``forward``) and its gradient (``inverse``), and the output (``inverse``) and its gradient
(``forward``).
A :class:`FilterPlan` serves one ``(band, kernel, dilation, device, dtype)``: ``forward`` gives the
conjugate filter band ``[F, O, Cg]`` and ``adjoint`` the filter gradient from its band.

*Conjugate domain* (docs/design.md §2): the filter band is kept as
``Wc = conj(rfftn(w))`` and the output-gradient band as ``Gc = conj(rfftn(up(dy)))``; ``forward(...,
conj=True)`` and ``inverse(..., conj=True)`` flip the sign of the DFT phase instead of conjugating
a tensor (a lazily conjugated ``bmm`` operand is cloned once per batch element on the CPU).

*Methods.* Every transform is a GEMM against DFT operands evaluated only at the kept frequencies
and at the positions that survive the crop and the stride; which GEMMs depends on the size:

* ``direct``: the whole spatial DFT as one real GEMM ``[2F, P] x [P, B·C]`` (``P`` positions).
  Most flops, fewest passes: it wins for small maps, where copies and calls cost more than flops.
* ``separable``: the last axis by a real GEMM against the kept DFT columns (or an ``rfft`` for long
  signals), then (2D) the first axis by a complex GEMM against the kept rows, whose output is
  already frequency-major.

The choice is a flop ratio per device class (:data:`RULES`), measured on a 2-core CPU; the CUDA
numbers are unmeasured defaults kept equal to the CPU's until a GPU run says otherwise.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

from bltriton import _cgemm, _gemm, _workspace
from bltriton._gemm import matmul_nt
from bltriton.spectral import Band, column_weights

__all__ = ["RULES", "FilterPlan", "Rule", "SignalPlan", "filter_plan", "signal_plan"]


@dataclass(frozen=True)
class Rule:
    """When to use which transform method, for one device class.

    Attributes:
        direct_ratio: use ``direct`` while its flops are at most this multiple of the separable
            path's (it saves two layout copies and a complex GEMM).
        column_gemm_ratio: in the separable path, transform the last axis by a DFT GEMM while
            ``2·L·cols <= column_gemm_ratio · n·log2(n)``, else by an FFT.
        blocked_ratio: where ``direct`` would be chosen for 2-D maps, use ``blocked`` (both
            separable stages per block of maps in the CPU kernel) while its work
            ``16·v·(P + 2·rows·H) + BLOCKED_MAP_COST`` (``v`` vectors per intermediate row)
            times this is at most the direct GEMM's ``2·F·P`` multiply-adds (0: never).
    """

    direct_ratio: float
    column_gemm_ratio: float
    blocked_ratio: float = 0.0


# 2-core CPU (2026-11-25). column_gemm_ratio: the k7 layer's input (N32 C64 38x38 -> n=40, 14
# kept columns) took 3.3 ms as a GEMM against 11 ms through pad + rfft + slice + permute; the FFT
# wins for long signals (1D k63: 2·L·cols / (n·log2 n) ≈ 170). direct_ratio: see bench/NOTES.md.
# "cpu-onednn": the same CPU with the real GEMMs on oneDNN (bltriton._gemm), which speeds up the
# direct transform's one large GEMM more than the separable path's GEMM + copy + complex GEMM:
# forward + inverse of a 16x16 map (B32 C128, n=18) took 3.7 ms direct against 5.1 ms separable
# at r=0.5 (flop ratio 4.95) and 1.5 against 2.4 ms at r=0.75 (4.2); a 32x32 map (n=36) 14.9
# against 7.6 ms (9.75) and 7.1 against 4.9 ms (8.2).
# blocked_ratio: the direct GEMM runs near the vector units' peak, the blocked kernel at ~0.44 of
# it (per-map loops, a gather of each band row), so blocked pays where it does 2.3x fewer vector
# multiply-adds: measured on 1024-4096 maps, forward / inverse against direct, 14x14 r=0.5 0.55
# / 0.70, 16x16 r=0.5 0.56 / 0.57, r=0.75 0.83 / 0.76, 20x20 r=0.5 0.38 / 0.50; 12x12 r=0.5 a
# tie (0.86 / 0.96), 14x14 r=0.75 0.85 / 1.01 and 8x8 1.8-2.6 (direct kept); bench/NOTES.md.
# The blocked transform's fixed work per map, in the same multiply-add units (~75 vector
# multiply-adds: loops, the band rows' gather): the 8x8 outputs of a stride-2 layer (18x18 grid,
# r=0.5, 13 kept rows) took 0.69 / 0.71 ms blocked against 0.52 / 0.51 ms direct for 8192 maps,
# where the vector work alone said blocked.
BLOCKED_MAP_COST = 1200
RULES: dict[str, Rule] = {
    "cpu": Rule(direct_ratio=4.0, column_gemm_ratio=16.0, blocked_ratio=2.3),
    "cpu-onednn": Rule(direct_ratio=6.0, column_gemm_ratio=16.0, blocked_ratio=2.3),
    "cuda": Rule(direct_ratio=4.0, column_gemm_ratio=16.0),
}
# Tests force one method: None (the rule), "direct", "gemm" (separable, column GEMM), "fft" or
# "blocked" (2-D: both separable stages per block of maps in the CPU kernel; elsewhere direct).
FORCE_METHOD: str | None = None

_PLANS: OrderedDict[tuple, object] = OrderedDict()
_MAX_PLANS = 512


def cached_plan(key: tuple, build):
    """The plan under ``key`` from the shared LRU of plans (signal, filter and the spatial
    algorithm's projections), built by ``build()`` on a miss."""
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = build()
        if len(_PLANS) > _MAX_PLANS:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


def clear_plans() -> None:
    """Drop every cached plan (and its DFT operands)."""
    _PLANS.clear()


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype the transforms compute in for signals or bands of ``dtype``: float64 for
    float64/complex128, else float32."""
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The band dtype for signals or bands of ``dtype``: complex128 for float64/complex128, else
    complex64."""
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


def _phase(band: Band, positions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``θ[f, p] = 2π·Σ_axis freq_axis(f)·pos_axis(p) / n_axis`` for the kept frequencies (frequency
    -major order of :mod:`bltriton.spectral`) and the positions given per axis, float64."""
    freqs = [torch.tensor(band.row_frequencies(), dtype=torch.float64)] if band.ndim == 2 else []
    freqs.append(torch.arange(band.cols, dtype=torch.float64))
    turns = None
    for axis, (fr, pos, n) in enumerate(zip(freqs, positions, band.n)):
        t = (fr[:, None] * pos[None, :]) % n / n  # [freqs_axis, P_axis], exact reduction first
        shape_f = [1] * (2 * band.ndim)
        shape_f[axis], shape_f[band.ndim + axis] = t.shape
        t = t.reshape(shape_f)
        turns = t if turns is None else turns + t
    return 2 * math.pi * turns.reshape(band.num_kept, -1)


@dataclass(eq=False)
class SignalPlan:
    """Transforms between real signals of one ``length`` (per axis, sampled every ``step`` on the
    FFT grid) and their band; see the module docstring. Build through :func:`signal_plan`."""

    band: Band
    length: tuple[int, ...]
    step: tuple[int, ...]
    offset: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype  # real dtype of the signal
    method: str

    def __post_init__(self) -> None:
        self._ops: dict[tuple, torch.Tensor] = {}

    def _operand(self, name: str, conj: bool, build, transpose: bool = False) -> torch.Tensor:
        """The real DFT operand ``build(conj)`` on the plan's device and dtype, contiguous, or its
        transpose (``transpose``: the ``[N, K]`` form of a right-hand GEMM operand that
        :func:`bltriton._gemm.matmul_nt` takes)."""
        key = (name, conj, transpose)
        if key not in self._ops:
            op = build(conj).to(device=self.device, dtype=self.dtype)
            self._ops[key] = (op.T if transpose else op).contiguous()
        return self._ops[key]

    def _positions(self, axis: int, length: int | None = None) -> torch.Tensor:
        n = self.length[axis] if length is None else length
        return torch.arange(n, dtype=torch.float64) * self.step[axis] + self.offset[axis]

    # ---- direct: one GEMM over all positions ----------------------------------------------
    def _direct_fwd(self, conj: bool) -> torch.Tensor:
        """``[2F, P]``: rows ``cos θ`` then ``∓sin θ`` (``+`` for the conjugate band)."""
        theta = _phase(self.band, tuple(self._positions(a) for a in range(self.band.ndim)))
        return torch.cat([torch.cos(theta), torch.sin(theta) if conj else -torch.sin(theta)])

    def _direct_inv(self, conj: bool) -> torch.Tensor:
        """``[2F, P]`` with rows interleaved ``(f, re/im)``: ``irfftn`` of the zero-filled band at the
        kept positions, ``c_m·(cos θ, ∓sin θ)/N`` (``c_m`` the half-spectrum column weight)."""
        b = self.band
        theta = _phase(b, tuple(self._positions(a) for a in range(b.ndim)))
        cw = column_weights(b.n[-1], b.cols).repeat(b.kept_rows)[:, None] / math.prod(b.n)
        sin = cw * torch.sin(theta)
        return torch.stack([cw * torch.cos(theta), sin if conj else -sin], dim=1).reshape(2 * b.num_kept, -1)

    def _direct_complex(self, conj: bool, inverse: bool) -> torch.Tensor:
        """The direct operands as complex ``[F, P]`` for the CPU kernel's real-operand products:
        forward ``band = E @ xᵀ`` (``E = cos θ ∓ i·sin θ``), inverse ``y = Re(bandᵀ @ D)``."""
        key = ("direct_complex", conj, inverse)
        if key not in self._ops:
            f = self.band.num_kept
            if inverse:  # rows (c·cos θ, ∓c·sin θ) per frequency: Re(Y·D) = Yr·Dr − Yi·Di
                rows = self._direct_inv(conj).view(f, 2, -1)
                op = torch.complex(rows[:, 0], -rows[:, 1])
            else:
                rows = self._direct_fwd(conj).view(2, f, -1)
                op = torch.complex(rows[0], rows[1])
            self._ops[key] = op.to(device=self.device, dtype=complex_dtype(self.dtype)).contiguous()
        return self._ops[key]

    def _kernel_operand(self, signal: torch.Tensor, conj: bool, inverse: bool) -> torch.Tensor | None:
        """The complex operand of this transform as one real-operand product of the CPU kernel,
        or ``None`` where the kernel does not take it. Serves the direct method, and the 1-D
        column GEMM, which is the same product: the band is then written frequency-major, or
        read in place, with no transposing copy (``signal``: the real signal or the band)."""
        if self.dtype != torch.float32 or not (
            self.method in ("direct", "blocked") or (self.band.ndim == 1 and self.method == "gemm")
        ):
            return None
        op = self._direct_complex(conj, inverse)
        return op if _cgemm.takes(*((signal, op) if inverse else (op, signal))) else None

    # ---- separable: last axis (GEMM or FFT), then rows -------------------------------------
    def _col_fwd(self, conj: bool) -> torch.Tensor:
        """Real ``[L, 2·cols]``, re/im interleaved columns: ``cos θ``, ``∓sin θ``."""
        n, m = self.band.n[-1], torch.arange(self.band.cols, dtype=torch.float64)
        theta = 2 * math.pi * ((self._positions(-1)[:, None] * m[None, :]) % n) / n
        sin = torch.sin(theta) if conj else -torch.sin(theta)
        return torch.stack([torch.cos(theta), sin], dim=-1).reshape(theta.shape[0], -1)

    def _col_inv(self, conj: bool) -> torch.Tensor:
        """Real ``[2·cols, L]``: ``irfft`` (length ``n``) of the zero-filled kept columns at the kept
        positions; the imaginary part of column 0 (and Nyquist) drops out as in ``irfft``."""
        n, cols = self.band.n[-1], self.band.cols
        m = torch.arange(cols, dtype=torch.float64)[:, None]
        theta = 2 * math.pi * ((m * self._positions(-1)[None, :]) % n) / n
        c = column_weights(n, cols)[:, None] / n
        sin = c * torch.sin(theta)
        return torch.stack([c * torch.cos(theta), sin if conj else -sin], dim=1).reshape(2 * cols, -1)

    def _rows(self, conj: bool, inverse: bool) -> torch.Tensor:
        """Complex row DFT at the kept rows: ``[rows, H]`` forward, ``[H, rows]`` inverse (``/nH``)."""
        nh = self.band.n[0]
        rows = self.band.kept_row_indices().to(torch.float64)
        phase = 2 * math.pi * ((rows[:, None] * self._positions(0)[None, :]) % nh) / nh
        sign = 1.0 if inverse != conj else -1.0
        e = torch.polar(torch.full_like(phase, 1.0 / nh if inverse else 1.0), sign * phase)
        return e.T if inverse else e

    def _row_operand(self, conj: bool, inverse: bool) -> torch.Tensor:
        key = ("rows", conj, inverse)
        if key not in self._ops:
            cdt = complex_dtype(self.dtype)
            self._ops[key] = self._rows(conj, inverse).to(device=self.device, dtype=cdt).contiguous()
        return self._ops[key]

    def forward(self, x: torch.Tensor, conj: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C, *length]`` real -> band ``[F, B, C]`` complex, contiguous: a fresh tensor, or
        ``out`` (contiguous, that shape) filled."""
        b, c = x.shape[:2]
        f = self.band.num_kept
        if self.method == "blocked" and x.stride(-1) == 1:
            rows = self._row_operand(conj, False)
            if _cgemm.takes_separable(rows, x, self.band.cols, x.shape[-1]):
                band = x.new_empty((f, b, c), dtype=rows.dtype) if out is None else out
                _cgemm.separable_forward(
                    x.reshape(b * c, *x.shape[2:]),
                    self._operand("col_fwd", conj, self._col_fwd),
                    rows,
                    band.view(self.band.kept_rows, self.band.cols, b * c),
                )
                return band
        # "blocked" where the kernel does not take the call: the direct transform.
        e = self._kernel_operand(x, conj, inverse=False)  # [F, P] complex
        if e is not None:
            band = x.new_empty((f, b, c), dtype=e.dtype) if out is None else out
            _cgemm.matmul(e, x.reshape(b * c, -1).T, out=band.view(f, b * c))  # x read as it lies
            return band
        if self.method in ("direct", "blocked"):
            e = self._operand("direct_fwd", conj, self._direct_fwd)
            planes = matmul_nt(e, x.reshape(b * c, -1)).view(2, f, b, c)  # re plane, im plane
            return torch.complex(planes[0], planes[1], out=out)
        if self.band.ndim == 1:
            return self._last_axis_fwd(x, conj, None if out is None else out.view(f, b * c)).view(f, b, c)
        h, w = x.shape[2:]
        rows = self._row_operand(conj, False)
        if self.method == "gemm":
            # Column GEMM on the NCHW input as it lies, then one copy to [H, cols, BC]: one
            # input-sized copy less than permuting first (32x32 C64 B32: 6.4 vs 7.7 ms).
            cols = self.band.cols
            s = matmul_nt(x.reshape(b * c * h, w), self._operand("col_fwd", conj, self._col_fwd, True))
            sc = torch.view_as_complex(s.view(b * c, h * cols, 2))  # [BC, H·cols]
            if _cgemm.takes(rows, sc):
                # The CPU kernel reads the spectrum in place, one kept column per batch entry,
                # and writes the band's rows straight: no transposing copy.
                shape = (rows.shape[0], cols, b * c)
                band = sc.new_empty(shape) if out is None else out.view(shape)
                _cgemm.matmul(
                    rows.expand(cols, *rows.shape),
                    sc.view(b * c, h, cols).permute(2, 1, 0),  # [cols, H, BC]
                    out=band.transpose(0, 1),  # [cols, kept rows, BC]
                )
                return band.view(f, b, c)
            spec = _contiguous("transform.spec", sc.T)  # [H·cols, BC]
        else:
            buf = _workspace.scratch(
                "transform.spec", (h, self.band.cols, b * c), complex_dtype(x.dtype), x.device
            )
            spec = self._last_axis_fwd(x.permute(2, 0, 1, 3), conj, out=buf)  # [H, cols, BC]
        band = _cgemm.matmul(rows, spec.view(h, -1), out=None if out is None else out.view(rows.shape[0], -1))
        return band.view(f, b, c)

    def _last_axis_fwd(self, x: torch.Tensor, conj: bool, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[*lead, B, C, L]`` real -> ``[*lead, cols, B·C]`` complex (kept columns): a fresh
        tensor, or ``out`` (contiguous, that shape) filled."""
        *lead, b, c, length = x.shape
        cols = self.band.cols
        if self.method == "gemm":
            s = matmul_nt(x.reshape(-1, length), self._operand("col_fwd", conj, self._col_fwd, True))
            s = torch.view_as_complex(s.view(*lead, b * c, cols, 2)).transpose(-1, -2)
            return s.contiguous() if out is None else out.copy_(s)
        n, step, start = self.band.n[-1], self.step[-1], self.offset[-1]
        if step == 1:
            padded = torch.nn.functional.pad(x, (start, n - length - start))
        else:
            padded = x.new_zeros(*lead, b, c, n)
            padded[..., start : start + length * step : step] = x
        # FFT along the contiguous last axis (6 ms vs 29 ms along a leading axis for the 1D k63
        # layer on this CPU), then one copy moves the kept columns in front of the channels.
        spec = torch.fft.rfft(padded, dim=-1).narrow(-1, 0, cols)
        if conj:
            spec = spec.conj()  # lazy; the copy below materialises it
        if out is not None:
            return out.view(*lead, cols, b, c).copy_(spec.movedim(-1, -3)).view(*lead, cols, b * c)
        # contiguous(), not reshape(): when every column is kept the reshape is a view whose
        # frequency stride is 1, and CPU bmm over such a batch ran 35× slower.
        return spec.movedim(-1, -3).contiguous().view(*lead, cols, b * c).resolve_conj()

    def inverse(self, yb: torch.Tensor, conj: bool = False) -> torch.Tensor:
        """Band ``[F, B, O]`` -> ``[B, O, *length]`` real, contiguous. ``conj``: ``yb`` holds the
        conjugate of the band to invert."""
        f, b, o = yb.shape
        if self.method == "blocked" and yb.is_contiguous():
            cols_op = self._operand("col_inv", conj, self._col_inv)
            if _cgemm.takes_separable(yb, cols_op, self.band.cols, self.length[-1]):
                y = yb.new_empty((b, o, *self.length), dtype=self.dtype)
                _cgemm.separable_inverse(
                    yb.view(self.band.kept_rows, self.band.cols, b * o),
                    self._row_operand(conj, True),
                    cols_op,
                    y.view(b * o, *self.length),
                )
                return y
        d = self._kernel_operand(yb, conj, inverse=True)  # [F, P] complex
        if d is not None:
            y = yb.new_empty((b, o, *self.length), dtype=self.dtype)
            _cgemm.matmul_re(yb.reshape(f, b * o).T, d, out=y.view(b * o, -1))  # any layout of yb
            return y
        if self.method in ("direct", "blocked"):
            e = self._operand("direct_inv", conj, self._direct_inv, True)  # [P, 2F]
            yr = torch.view_as_real(yb).permute(1, 2, 0, 3).reshape(b * o, -1)  # one copy: [BO, 2F]
            return matmul_nt(yr, e).view(b, o, *self.length)
        if self.band.ndim == 1:
            return self._last_axis_inv(yb, conj).contiguous()
        # conj(E)·conj(Z) = conj(E·Z): the row stage keeps the conjugate, the column stage undoes it.
        rows_out, cols = self.length[0], self.band.cols
        rows = self._row_operand(conj, True)  # [T, kept rows]
        if self.method == "gemm" and yb.is_contiguous() and _cgemm.takes(rows, yb):
            # The CPU kernel writes the row stage straight in the column GEMM's layout [B·O, T,
            # cols], one batch entry per (b, o), gathering its [kept rows, cols] block from the
            # band in place: no transposing copy.
            sr = _workspace.scratch("transform.cols", (b * o, rows_out, cols), yb.dtype, yb.device)
            sr = yb.new_empty((b * o, rows_out, cols)) if sr is None else sr
            _cgemm.matmul(
                rows.expand(b * o, *rows.shape),
                yb.view(self.band.kept_rows, cols, b * o).permute(2, 0, 1),  # [B·O, kept rows, cols]
                out=sr,
            )
            sr = torch.view_as_real(sr).view(b * o * rows_out, 2 * cols)
            y = matmul_nt(sr, self._operand("col_inv", conj, self._col_inv, True))
            return y.view(b, o, rows_out, self.length[1])
        spec = _mm("transform.spec", rows, yb.reshape(self.band.kept_rows, -1))  # [T, cols·B·O]
        if self.method == "gemm":
            # One copy into [B·O, T, 2·cols], then the column GEMM writes NCHW directly: no
            # output-sized permute (32x32 C64 B32: 7.3 vs 8.2 ms).
            sr = _contiguous("transform.cols", spec.view(rows_out * cols, b * o).T)
            sr = torch.view_as_real(sr).view(b * o * rows_out, 2 * cols)
            y = matmul_nt(sr, self._operand("col_inv", conj, self._col_inv, True))
            return y.view(b, o, rows_out, self.length[1])
        spec = spec.view(rows_out, cols, b, o)
        return self._last_axis_inv(spec, conj).permute(1, 2, 0, 3).contiguous()

    def _last_axis_inv(self, spec: torch.Tensor, conj: bool) -> torch.Tensor:
        """``[*lead, cols, B, O]`` complex -> ``[*lead, B, O, length[-1]]`` real."""
        *lead, cols, b, o = spec.shape
        if self.method == "gemm":
            sr = torch.view_as_real(_contiguous("transform.cols", spec.movedim(-3, -1))).view(-1, 2 * cols)
            y = matmul_nt(sr, self._operand("col_inv", conj, self._col_inv, True))
            return y.view(*lead, b, o, self.length[-1])
        y = torch.fft.irfft((spec.conj() if conj else spec).movedim(-3, -1), n=self.band.n[-1], dim=-1)
        start, step = self.offset[-1], self.step[-1]
        return y[..., start : start + self.length[-1] * step : step]


def _contiguous(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` made contiguous (one copy) in this thread's scratch buffer ``name`` where one is kept
    (:mod:`bltriton._workspace`), else in fresh memory: for an intermediate of one transform."""
    buf = _workspace.scratch(name, tuple(t.shape), t.dtype, t.device)
    return t.contiguous() if buf is None else buf.copy_(t)


def _mm(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` into this thread's scratch buffer ``name`` where one is kept, else fresh."""
    buf = _workspace.scratch(name, (a.shape[0], b.shape[1]), a.dtype, a.device)
    return _cgemm.matmul(a, b, out=buf)


def _choose_method(band: Band, length: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> str:
    if FORCE_METHOD is not None:
        return FORCE_METHOD
    kind = device.type
    if kind == "cpu" and _gemm.provider() == "onednn":
        kind = "cpu-onednn"
    rule = RULES.get(kind, RULES["cuda"])
    n = band.n[-1]
    column_gemm = 2 * length[-1] * band.cols <= rule.column_gemm_ratio * n * max(1.0, math.log2(n))
    positions = math.prod(length)
    direct = 2 * band.num_kept * positions  # real MACs per channel
    if band.ndim == 1:
        return "gemm" if column_gemm else "fft"
    column = 2 * positions * band.cols if column_gemm else 2.5 * length[0] * n * math.log2(n)
    separable = column + 4 * band.kept_rows * length[0] * band.cols
    if direct <= rule.direct_ratio * separable:
        return "blocked" if _blocked_pays(band, length, device, dtype, rule, direct) else "direct"
    return "gemm" if column_gemm else "fft"


def _blocked_pays(
    band: Band, length: tuple[int, ...], device: torch.device, dtype: torch.dtype, rule: Rule, direct: int
) -> bool:
    """Whether the CPU kernel's blocked separable transform beats the direct GEMM for these
    2-D maps (``direct``: the direct method's multiply-adds per map): its vector work, 16 lanes
    per vector of an intermediate row, plus a fixed cost per map."""
    if not rule.blocked_ratio or device.type != "cpu" or dtype != torch.float32:
        return False
    vectors = -(-2 * band.cols // 16)  # per intermediate row
    if band.cols > _cgemm.SEPARABLE_MAX_COLS or length[-1] > _cgemm.SEPARABLE_MAX_WIDTH:
        return False
    work = 16 * vectors * (math.prod(length) + 2 * band.kept_rows * length[0]) + BLOCKED_MAP_COST
    return rule.blocked_ratio * work <= direct and _cgemm.provider() == "kernel"


def signal_plan(
    band: Band,
    length: tuple[int, ...],
    step: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    offset: tuple[int, ...] | None = None,
) -> SignalPlan:
    """The cached :class:`SignalPlan` for signals of ``length`` at ``offset + t·step``."""
    rdt = real_dtype(dtype)
    length, step = tuple(length), tuple(step)
    offset = tuple(offset) if offset is not None else (0,) * len(length)
    key = ("signal", band, length, step, offset, device, rdt, FORCE_METHOD)
    return cached_plan(
        key,
        lambda: SignalPlan(
            band, length, step, offset, device, rdt, _choose_method(band, length, device, rdt)
        ),
    )


@dataclass(eq=False)
class FilterPlan:
    """The filter transform and its adjoint for one ``(band, kernel, dilation)``: a direct DFT at
    the taps, dilation folded into the phases (no zero-inserted filter).

    ``forward``: ``[O, Cg, *k]`` real -> ``Wc`` ``[F, O, Cg]`` complex, as one real GEMM
    ``[2F, taps] x [taps, O·Cg]`` and one interleaving pass. ``adjoint``: ``[F, O, Cg]`` complex ->
    ``[O, Cg, *k]`` real, ``irfftn`` of the zero-filled band at the dilated taps, as one complex
    GEMM with the half-spectrum column weights and ``1/N`` folded into its operand; ``adjoint_sum``
    and ``adjoint_result`` do it a chunk of frequencies at a time (``ops.weight_grad``).
    """

    band: Band
    kernel: tuple[int, ...]
    dilation: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype  # real dtype

    def __post_init__(self) -> None:
        pos = [torch.arange(k, dtype=torch.float64) * d for k, d in zip(self.kernel, self.dilation)]
        theta = _phase(self.band, tuple(pos))  # [F, taps]
        self.fwd = torch.cat([torch.cos(theta), torch.sin(theta)]).to(self.device, self.dtype)
        b = self.band
        cw = column_weights(b.n[-1], b.cols).repeat(b.kept_rows)[:, None] / math.prod(b.n)
        cdt = complex_dtype(self.dtype)
        # d/dWc of Re(sum ...) evaluated as irfftn: Re(Σ_f dW[f]·c_f·e^{+iθ}) / N.
        self.adj = torch.polar(cw.expand_as(theta).contiguous(), theta).to(self.device, cdt)
        self._chunk_rows: dict[tuple[int, int], torch.Tensor] = {}
        self._chunk_crows: dict[tuple[int, int], torch.Tensor] = {}

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        """``[2F', taps]``: the cos rows then the sin rows of frequencies ``start:stop``."""
        f = self.band.num_kept
        if (start, stop) == (0, f):
            return self.fwd
        rows = self._chunk_rows.get((start, stop))
        if rows is None:  # the same chunks come back every call
            rows = torch.cat([self.fwd[start:stop], self.fwd[f + start : f + stop]])
            self._chunk_rows[(start, stop)] = rows
        return rows

    def complex_rows(self, start: int, stop: int) -> torch.Tensor:
        """``[F', taps]`` complex: ``cos + i·sin`` of frequencies ``start:stop`` (the kernel's
        operand; :meth:`_rows` holds the same numbers as two real blocks)."""
        rows = self._chunk_crows.get((start, stop))
        if rows is None:
            f = self.band.num_kept
            rows = torch.complex(self.fwd[start:stop], self.fwd[f + start : f + stop])
            self._chunk_crows[(start, stop)] = rows
        return rows

    def forward(
        self,
        weight: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        out: torch.Tensor | None = None,
        work: str | None = None,
    ) -> torch.Tensor:
        """``Wc[start:stop]`` (default: the whole band) ``[F', O, Cg]``, into ``out`` when given (a
        contiguous complex tensor of that shape). Where the CPU kernel cannot build the band, a
        real GEMM writes cos and sin planes first: ``work`` names this thread's scratch buffer
        (:mod:`bltriton._workspace`) that then takes them (through ``torch.mm``) instead of fresh
        memory; it is requested only on that path."""
        o, cg = weight.shape[:2]
        stop = self.band.num_kept if stop is None else stop
        w2 = weight.reshape(o * cg, -1)
        crows = self.complex_rows(start, stop)
        if _cgemm.takes(crows, w2, *(() if out is None else (out,))):
            # The CPU kernel multiplies the complex rows by the real filter and writes the band
            # itself: no planes buffer, no interleaving pass.
            band = _cgemm.matmul(crows, w2.T, out=None if out is None else out.view(stop - start, o * cg))
            return band.view(stop - start, o, cg)
        e = self._rows(start, stop)
        buf = None if work is None else _workspace.scratch(work, (e.shape[0], o * cg), w2.dtype, w2.device)
        planes = matmul_nt(e, w2) if buf is None else torch.mm(e, w2.T, out=buf)  # [2F', O·Cg]
        n = stop - start
        if out is None:
            return torch.complex(planes[:n], planes[n:]).view(n, o, cg)
        return torch.complex(planes[:n].view(n, o, cg), planes[n:].view(n, o, cg), out=out)

    def adjoint(self, dwb: torch.Tensor) -> torch.Tensor:
        """The filter gradient ``[O, Cg, *k]`` from the whole band ``[F, O, Cg]``."""
        return self.adjoint_result(self.adjoint_sum(dwb, 0), *dwb.shape[1:])

    @property
    def tap_major(self) -> bool:
        """Whether the adjoint's sum is kept ``[taps, O·Cg]`` (else ``[O·Cg, taps]``), decided per
        call. With the CPU kernel (:mod:`bltriton._cgemm`) always: its panels span output
        columns, and with 9 columns the 512->512 layer's fold ran at 12 real GMAC/s against 46
        with 9 rows. On torch for kernels of fewer than 5 taps: MKL's complex GEMM with 3 output
        columns ran 2-3x slower than with 3 rows (FCN k3 layer, 40 frequencies x 32768 filter
        pairs: 1.56 vs 0.73 ms; equal at 5 taps, and at 9 the column form is faster, 1.58 vs 2.48
        ms)."""
        if math.prod(self.kernel) < 5:
            return True
        return self.device.type == "cpu" and self.dtype == torch.float32 and _cgemm.provider() == "kernel"

    def sum_shape(self, filters: int) -> tuple[int, int]:
        """Shape of :meth:`adjoint_sum`'s result for ``filters = O·Cg``."""
        taps = math.prod(self.kernel)
        return (taps, filters) if self.tap_major else (filters, taps)

    def adjoint_sum(
        self, dwb: torch.Tensor, start: int, acc: torch.Tensor | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``acc + Σ_f dW[f]ᵀ·adj[start + f]`` for the band chunk ``dwb`` ``[F', O, Cg]`` of
        frequencies ``start:start+F'``, complex, of :meth:`sum_shape`; without ``acc`` a new sum
        (into ``out`` when given)."""
        n = dwb.shape[0]
        d, adj = dwb.reshape(n, -1), self.adj[start : start + n]
        lhs, rhs = (adj.T, d) if self.tap_major else (d.T, adj)
        if acc is None:
            return _cgemm.matmul(lhs, rhs, out=out)
        return _cgemm.matmul(lhs, rhs, out=acc, accumulate=True)

    def adjoint_result(self, acc: torch.Tensor, o: int, cg: int) -> torch.Tensor:
        """The filter gradient ``[O, Cg, *k]`` (a fresh tensor) from a complete
        :meth:`adjoint_sum`."""
        acc = acc.T if self.tap_major else acc
        return acc.real.reshape(o, cg, *self.kernel).contiguous()


def filter_plan(
    band: Band, kernel: tuple[int, ...], dilation: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> FilterPlan:
    """The cached :class:`FilterPlan`."""
    rdt = real_dtype(dtype)
    key = ("filter", band, tuple(kernel), tuple(dilation), device, rdt)
    return cached_plan(key, lambda: FilterPlan(band, tuple(kernel), tuple(dilation), device, rdt))
