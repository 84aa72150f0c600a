"""Backend dispatch and the torch path: band-pruned transforms and the three band contractions.

Band tensors are *frequency-major* and compact: ``[F, B, C]`` for inputs/gradients and
``[F, O, C // groups]`` for filters, ``F = band.num_kept`` numbered as in :mod:`bltriton.spectral`.
Only these are saved for backward. The transforms never materialise the full spectrum product:

* forward (:func:`forward_transform`): the last axis by a DFT GEMM against the kept columns (or an
  ``rfft`` for long signals), the first axis (2D) by a GEMM against the kept rows of the DFT whose
  output is already frequency-major;
* filters (:func:`weight_transform`): a direct DFT of the small filter at the kept frequencies,
  dilation folded into the phases (no zero-inserted filter);
* inverse (:func:`inverse_transform`): GEMMs against the inverse DFT evaluated only at the output
  positions that survive the crop and the stride (or an ``irfft`` for long signals).

*Conjugate domain.* The filter band is kept as ``Wc = conj(W)`` and the output-gradient band as
``Gc = conj(G)`` (the transforms produce them directly by flipping the DFT phase: no extra pass),
so the three contractions of DESIGN §3 carry no conjugation at all:

* ``fwd``: ``Y[f, b, o]   = sum_c X[f, b, c] · Wc[f, o, c]``   (= ``sum_c X · conj(W)``)
* ``dx``:  ``dXc[f, b, c] = sum_o Gc[f, b, o] · Wc[f, o, c]``  (= ``conj(sum_o G · W)``)
* ``dw``:  ``dW[f, o, c]  = sum_b Gc[f, b, o] · X[f, b, c]``   (= ``sum_b conj(G) · X``)

each within a group (``C = groups·Cg``, ``O = groups·Og``); ``dXc`` is inverted with
``conj_input=True``. On the CPU this matters: a lazily conjugated ``bmm`` operand is cloned once per
batch element, and a physical conjugate of the filter band of the 1D k63 layer (35 MB) took as
long as the contraction itself (16.8 ms vs 16.1 ms).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from bltriton import _env
from bltriton.spectral import Band

__all__ = [
    "BACKENDS",
    "forward_transform",
    "grad_transform",
    "inverse_transform",
    "mac",
    "resolve_backend",
    "weight_from_band",
    "weight_transform",
]

BACKENDS = _env.BACKENDS


# --------------------------------------------------------------------------------------------
# Backend choice
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401

        from bltriton.kernels import band_mac  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Turn ``None``/``"auto"``/``"torch"``/``"triton"`` into the backend that will run.

    ``None`` takes ``BLTRITON_BACKEND`` (default ``"auto"``). ``"auto"`` is triton on CUDA when it
    imports, torch otherwise. ``"triton"`` on a CPU tensor needs ``TRITON_INTERPRET=1``.
    """
    choice = _env.backend() if backend is None else backend
    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None; got {backend!r}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and _triton_importable() else "torch"
    if choice == "triton":
        if device.type != "cuda" and not _env.triton_interpret():
            raise ValueError(
                f"backend='triton' needs a CUDA tensor (got device {device}); on the CPU set "
                "TRITON_INTERPRET=1 before importing triton, or use backend='torch'"
            )
        if not _triton_importable():
            raise RuntimeError("backend='triton' was asked for but triton does not import here")
    return choice


# --------------------------------------------------------------------------------------------
# Transforms (shared by both backends: they are torch.fft calls)
# --------------------------------------------------------------------------------------------


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


@lru_cache(maxsize=256)
def _row_dft(
    band: Band,
    length: int,
    step: int,
    inverse: bool,
    device: torch.device,
    dtype: torch.dtype,
    conj: bool = False,
) -> torch.Tensor:
    """DFT along the first spatial axis restricted to the kept rows (a small GEMM operand).

    Forward (``inverse=False``): ``[kept_rows, length]``, ``E[r, t] = exp(-2πi·row_r·t·step/nH)``
    (``step`` > 1 evaluates the spectrum of a signal zero-upsampled by ``step`` without building it).
    Inverse: ``[length, kept_rows]``, ``exp(+2πi·row_r·t·step/nH) / nH`` — the rows ``t·step`` of
    the inverse FFT of the zero-filled column, i.e. crop and stride folded into the GEMM.
    ``conj=True`` returns the complex conjugate (for conjugate-domain operands).
    """
    nh = band.n[0]
    rows = torch.tensor(band.kept_row_indices().tolist(), dtype=torch.float64)
    t = torch.arange(length, dtype=torch.float64) * step
    phase = 2 * math.pi * ((rows[:, None] * t[None, :]) % nh) / nh
    sign = 1.0 if inverse != conj else -1.0
    scale = 1.0 / nh if inverse else 1.0
    e = torch.polar(torch.full_like(phase, scale), sign * phase)
    if inverse:
        e = e.T
    return e.to(device=device, dtype=dtype).contiguous()


# The last spatial axis is transformed either by an FFT or, when the band is narrow and the
# signal short, by a GEMM against the kept columns of the DFT (real input, so a real GEMM with
# re/im interleaved columns). On this 2-core CPU the GEMM took 3.3 ms against 11 ms for the FFT
# path on the 7x7 layer (N=32, C=64, 38x38 -> n=40, 14 kept columns), and 3.6 ms against 5.4 ms
# for the inverse; the FFT wins for long signals (the 1D k63 layer: 2·L·cols / (n·log2 n) ≈ 170).
_DFT_GEMM_MAX_RATIO = 16.0


def _use_column_dft(length: int, band: Band) -> bool:
    n = band.n[-1]
    return 2 * length * band.cols <= _DFT_GEMM_MAX_RATIO * n * max(1.0, math.log2(n))


@lru_cache(maxsize=256)
def _col_dft(
    band: Band, length: int, step: int, device: torch.device, dtype: torch.dtype, conj: bool = False
) -> torch.Tensor:
    """Real ``[length, 2·cols]``: ``x @ E`` is the kept half spectrum of a real signal (zero-upsampled
    by ``step``) along the last axis, re/im interleaved: ``E[t, 2m] = cos θ``, ``E[t, 2m+1] = −sin θ``,
    ``θ = 2π·m·t·step/n`` (``+sin θ`` for the conjugate spectrum)."""
    n = band.n[-1]
    t = torch.arange(length, dtype=torch.float64)[:, None] * step
    m = torch.arange(band.cols, dtype=torch.float64)[None, :]
    theta = 2 * math.pi * ((t * m) % n) / n
    sin = torch.sin(theta) if conj else -torch.sin(theta)
    e = torch.stack([torch.cos(theta), sin], dim=-1).reshape(length, 2 * band.cols)
    return e.to(device=device, dtype=dtype).contiguous()


@lru_cache(maxsize=256)
def _col_idft(
    band: Band, length: int, step: int, device: torch.device, dtype: torch.dtype, conj: bool = False
) -> torch.Tensor:
    """Real ``[2·cols, length]``: the ``irfft`` (length ``n``) of the zero-filled kept columns,
    evaluated only at the outputs ``w·step`` for ``w < length``. Columns with an implied
    conjugate count twice; the imaginary part of column 0 (and of the Nyquist column) drops out
    because ``sin θ = 0`` there, exactly as ``irfft`` ignores it. ``conj=True`` inverts the
    conjugate of the given spectrum (the imaginary rows change sign)."""
    n = band.n[-1]
    m = torch.arange(band.cols, dtype=torch.float64)[:, None]
    w = torch.arange(length, dtype=torch.float64)[None, :] * step
    theta = 2 * math.pi * ((m * w) % n) / n
    c = torch.full((band.cols, 1), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if n % 2 == 0 and band.cols == n // 2 + 1:
        c[-1] = 1.0
    sin = c * torch.sin(theta) / n
    e = torch.stack([c * torch.cos(theta) / n, sin if conj else -sin], dim=1)
    return e.reshape(2 * band.cols, length).to(device=device, dtype=dtype).contiguous()


def _last_axis_spectrum(x: torch.Tensor, band: Band, step: int, conj: bool) -> torch.Tensor:
    """``[*lead, B, C, L]`` real -> ``[*lead, cols, B·C]`` complex: kept columns of the
    spectrum (its conjugate if ``conj``) of the zero-upsampled (by ``step``) signal along the last
    axis, zero-padded to ``n``."""
    *lead, b, c, length = x.shape
    if _use_column_dft(length, band):
        e = _col_dft(band, length, step, x.device, x.dtype, conj)
        s = torch.matmul(x.reshape(*lead, b * c, length), e)  # [*lead, BC, 2·cols]
        s = torch.view_as_complex(s.view(*lead, b * c, band.cols, 2))
        return s.transpose(-1, -2).contiguous()  # [*lead, cols, BC]
    n = band.n[-1]
    if step == 1:
        padded = torch.nn.functional.pad(x, (0, n - length))
    else:
        padded = x.new_zeros(*lead, b, c, n)
        padded[..., : length * step : step] = x
    # FFT along the contiguous last axis (6 ms vs 29 ms along a leading axis for the 1D k63
    # layer on this CPU), then one copy moves the kept columns in front of the channels.
    spec = torch.fft.rfft(padded, dim=-1).narrow(-1, 0, band.cols)
    if conj:
        spec = spec.conj()  # lazy; the copy below materialises it
    # contiguous(), not reshape(): when every column is kept the reshape is a view whose
    # frequency stride is 1, and CPU bmm over such a batch ran 35× slower (0.56 s vs 16 ms, FCN
    # k5 layer at rate 0).
    return spec.movedim(-1, -3).contiguous().view(*lead, band.cols, b * c).resolve_conj()


def forward_transform(
    x: torch.Tensor, band: Band, stride: tuple[int, ...] | None = None, conj: bool = False
) -> torch.Tensor:
    """Band of ``rfftn(up(x), s=band.n)``, frequency-major, where ``up`` zero-upsamples by
    ``stride`` (1 for the input; the output stride for the gradient of a strided layer).

    The last axis goes through :func:`_last_axis_spectrum` (a DFT GEMM or an FFT) into
    ``[*L_lead, cols, B·C]``; in 2D the first axis is then a GEMM against the kept-row DFT
    (:func:`_row_dft`) whose output is already ``[rows, cols, B, C]``: no gather, no scatter.

    Args:
        x: ``[B, C, *L]`` real with ``L·stride <= band.n`` per axis.
        conj: return the conjugate band (same cost).

    Returns:
        ``[F, B, C]`` complex, contiguous (a fresh tensor: safe to save for backward).
    """
    b, c = x.shape[:2]
    stride = stride or (1,) * band.ndim
    if band.ndim == 1:
        spec = _last_axis_spectrum(x, band, stride[0], conj)
        return spec.view(band.num_kept, b, c)
    h = x.shape[2]
    spec = _last_axis_spectrum(x.permute(2, 0, 1, 3), band, stride[1], conj)  # [H, cols, BC]
    e = _row_dft(band, h, stride[0], False, x.device, spec.dtype, conj)
    out = e @ spec.reshape(h, band.cols * b * c)
    return out.view(band.num_kept, b, c)


def grad_transform(
    dy: torch.Tensor, band: Band, full_len: tuple[int, ...], stride: tuple[int, ...]
) -> torch.Tensor:
    """``Gc``: the *conjugate* band of the spectrum of the output gradient, zero-upsampled by
    the stride.

    Args:
        dy: ``[B, O, *out]`` with ``out = ceil(full_len / stride)``.
        full_len: stride-1 output length per axis (``Lp - ke + 1``).

    Returns:
        ``[F, B, O]`` complex.
    """
    expected = tuple(-(-f // s) for f, s in zip(full_len, stride))
    if tuple(dy.shape[2:]) != expected:
        raise ValueError(f"grad_transform: dy has spatial shape {tuple(dy.shape[2:])}, expected {expected}")
    return forward_transform(dy, band, stride, conj=True)


def _last_axis_inverse(spec: torch.Tensor, band: Band, crop: int, step: int, conj: bool) -> torch.Tensor:
    """``[*lead, cols, B, O]`` complex (kept columns) -> ``[*lead, B, O, ceil(crop/step)]`` real:
    the ``irfft`` of length ``n`` of the zero-filled columns, cropped and subsampled."""
    *lead, cols, b, o = spec.shape
    out_len = -(-crop // step)
    if _use_column_dft(out_len, band):
        e = _col_idft(band, out_len, step, spec.device, spec.real.dtype, conj)
        sr = torch.view_as_real(spec).movedim(-4, -2)  # [*lead, B, O, cols, 2]
        sr = sr.reshape(*lead, b * o, 2 * cols)  # one copy
        return torch.matmul(sr, e).view(*lead, b, o, out_len)
    y = torch.fft.irfft((spec.conj() if conj else spec).movedim(-3, -1), n=band.n[-1], dim=-1)
    return y[..., :crop:step]


def inverse_transform(
    yb: torch.Tensor,
    band: Band,
    crop: tuple[int, ...],
    stride: tuple[int, ...],
    conj_input: bool = False,
) -> torch.Tensor:
    """Zero-filled band -> ``irfftn(·, s=band.n)`` cropped to ``crop`` and subsampled by ``stride``.

    2D: a GEMM against the inverse kept-row DFT computes only the output rows that survive the
    crop and the stride, then :func:`_last_axis_inverse` (a DFT GEMM, or an ``irfft`` that
    zero-pads the dropped columns).

    Args:
        yb: ``[F, B, O]`` complex band.
        crop: length per axis kept from the start of the circular result (before ``stride``).
        conj_input: ``yb`` holds the conjugate of the band to invert (the ``dx`` contraction's
            output); conjugated DFT matrices absorb it.

    Returns:
        ``[B, O, *out]`` real and contiguous, ``out = ceil(crop / stride)``.
    """
    _, b, o = yb.shape
    if band.ndim == 1:
        y = _last_axis_inverse(yb, band, crop[0], stride[0], conj_input)  # [B, O, L]
        return y.contiguous()
    rows_out = -(-crop[0] // stride[0])
    # conj(E)·conj(Z) = conj(E·Z): the row stage keeps the conjugate, the column stage undoes it.
    e = _row_dft(band, rows_out, stride[0], True, yb.device, yb.dtype, conj_input)
    spec = (e @ yb.reshape(band.kept_rows, band.cols * b * o)).view(rows_out, band.cols, b, o)
    y = _last_axis_inverse(spec, band, crop[1], stride[1], conj_input)  # [T, B, O, W]
    return y.permute(1, 2, 0, 3).contiguous()


@lru_cache(maxsize=256)
def _dft_factors(
    band: Band,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """Per-axis *conjugate* DFT matrices ``E⁺[f_axis, j] = exp(+2πi · freq · j · d / n)`` at the
    kept frequencies: ``[kept_rows, kh]`` (2D) and ``[cols, kw]``. Computed in float64, then cast.
    ``E⁺`` gives the conjugate filter band directly and is the adjoint the weight gradient needs."""

    def factor(freqs: list[int], k: int, d: int, n: int) -> torch.Tensor:
        fr = torch.tensor(freqs, dtype=torch.float64)[:, None]
        taps = torch.arange(k, dtype=torch.float64)[None, :] * d
        return torch.polar(torch.ones((), dtype=torch.float64), 2 * math.pi * (fr * taps % n) / n).to(
            device=device, dtype=dtype
        )

    cols = list(range(band.cols))
    if band.ndim == 2:
        return (
            factor(band.row_frequencies(), kernel[0], dilation[0], band.n[0]),
            factor(cols, kernel[1], dilation[1], band.n[1]),
        )
    return (factor(cols, kernel[0], dilation[0], band.n[0]),)


def _dft_factors_for(w: torch.Tensor, band: Band, dilation: tuple[int, ...]):
    kernel = tuple(w.shape[2:])
    return _dft_factors(band, kernel, tuple(dilation), w.device, _complex_dtype(w.dtype))


def weight_transform(weight: torch.Tensor, band: Band, dilation: tuple[int, ...]) -> torch.Tensor:
    """``Wc``: the *conjugate* band of ``rfftn(dilated weight, s=band.n)``, by direct DFT,
    frequency-major.

    Args:
        weight: ``[O, Cg, *k]`` real.

    Returns:
        ``[F, O, Cg]`` complex, contiguous.
    """
    o, cg = weight.shape[:2]
    factors = _dft_factors_for(weight, band, dilation)
    wc = weight.to(factors[0].dtype)
    if band.ndim == 2:
        e_h, e_w = factors
        t = wc @ e_w.T  # [O, Cg, kh, cols]
        wb = torch.einsum("ocjm,rj->rmoc", t, e_h)  # [rows, cols, O, Cg]
        return wb.reshape(band.num_kept, o, cg)
    (e,) = factors
    return torch.einsum("ocl,ml->moc", wc, e).contiguous()


def weight_from_band(
    dwb: torch.Tensor, band: Band, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Adjoint of :func:`weight_transform` as ``irfftn`` sees it: ``irfftn(zero-filled band)``
    cropped to the dilated taps and un-dilated, evaluated directly at the taps.

    Args:
        dwb: ``[F, O, Cg]`` complex.

    Returns:
        ``[O, Cg, *kernel]`` real.
    """
    _, o, cg = dwb.shape
    factors = _weight_grad_factors(band, tuple(kernel), tuple(dilation), dwb.device, dwb.dtype)
    if band.ndim == 2:
        e_h, e_w = factors
        t = torch.einsum("rmoc,rj->ocjm", dwb.reshape(band.kept_rows, band.cols, o, cg), e_h)
        return (t @ e_w).real  # [O, Cg, kh, kw]
    (e,) = factors
    return torch.einsum("moc,ml->ocl", dwb, e).real


@lru_cache(maxsize=256)
def _weight_grad_factors(
    band: Band,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """:func:`_dft_factors` with ``irfftn``'s weights folded into the column factor: columns whose
    conjugate is implied by the half layout count twice, and ``1 / prod(n)``. Folding them here
    saves a pass over the filter-gradient band (35 MB for the 1D k63 layer)."""
    *rest, e_cols = _dft_factors(band, kernel, dilation, device, dtype)
    cw = torch.full((band.cols, 1), 2.0, dtype=torch.float64)
    cw[0] = 1.0
    if band.n[-1] % 2 == 0 and band.cols == band.n_half:
        cw[-1] = 1.0
    cw = (cw / math.prod(band.n)).to(device=device, dtype=e_cols.real.dtype)
    return (*rest, (e_cols * cw).contiguous())


# --------------------------------------------------------------------------------------------
# Contractions: torch path
# --------------------------------------------------------------------------------------------


def _torch_mac_fwd(xb: torch.Tensor, wcb: torch.Tensor, groups: int) -> torch.Tensor:
    """``Y[f, b, o] = sum_c X[f, b, c] · Wc[f, o, c]``."""
    f, b, _ = xb.shape
    o, cg = wcb.shape[1], wcb.shape[2]
    if groups == 1:
        return torch.matmul(xb, wcb.transpose(1, 2))
    og = o // groups
    if cg == 1:  # depthwise-style: an element-wise product per channel
        y = xb.reshape(f, b, groups, 1) * wcb.reshape(f, 1, groups, og)
        return y.reshape(f, b, o)
    xg = xb.reshape(f, b, groups, cg).transpose(1, 2)  # [F, g, B, Cg]
    wg = wcb.reshape(f, groups, og, cg).transpose(-1, -2)  # [F, g, Cg, Og]
    return torch.matmul(xg, wg).transpose(1, 2).reshape(f, b, o)


def _torch_mac_dx(gcb: torch.Tensor, wcb: torch.Tensor, groups: int) -> torch.Tensor:
    """``dXc[f, b, c] = sum_o Gc[f, b, o] · Wc[f, o, c]``."""
    f, b, o = gcb.shape
    cg = wcb.shape[2]
    if groups == 1:
        return torch.matmul(gcb, wcb)
    og = o // groups
    if cg == 1:
        return (gcb.reshape(f, b, groups, og) * wcb.reshape(f, 1, groups, og)).sum(-1)
    gg = gcb.reshape(f, b, groups, og).transpose(1, 2)  # [F, g, B, Og]
    wg = wcb.reshape(f, groups, og, cg)  # [F, g, Og, Cg]
    return torch.matmul(gg, wg).transpose(1, 2).reshape(f, b, groups * cg)


def _torch_mac_dw(xb: torch.Tensor, gcb: torch.Tensor, groups: int) -> torch.Tensor:
    """``dW[f, o, c] = sum_b Gc[f, b, o] · X[f, b, c]``."""
    f, b, c = xb.shape
    o = gcb.shape[2]
    cg, og = c // groups, o // groups
    if groups == 1:
        return torch.matmul(gcb.transpose(1, 2), xb)
    if cg == 1:
        dw = (gcb.reshape(f, b, groups, og) * xb.reshape(f, b, groups, 1)).sum(1)
        return dw.reshape(f, o, 1)
    gg = gcb.reshape(f, b, groups, og).permute(0, 2, 3, 1)  # [F, g, Og, B]
    xg = xb.reshape(f, b, groups, cg).transpose(1, 2)  # [F, g, B, Cg]
    return torch.matmul(gg, xg).reshape(f, o, cg)


_TORCH_MACS = {"fwd": _torch_mac_fwd, "dx": _torch_mac_dx, "dw": _torch_mac_dw}


def mac(
    mode: str,
    a: torch.Tensor,
    b: torch.Tensor,
    groups: int,
    backend: str,
    precision: str | None = None,
) -> torch.Tensor:
    """One of the three band contractions on the chosen backend.

    Args:
        mode: ``"fwd"`` (``a=X [F,B,C]``, ``b=Wc [F,O,Cg]`` -> ``Y [F,B,O]``), ``"dx"``
            (``a=Gc [F,B,O]``, ``b=Wc [F,O,Cg]`` -> ``dXc [F,B,C]``) or ``"dw"``
            (``a=X [F,B,C]``, ``b=Gc [F,B,O]`` -> ``dW [F,O,Cg]``); see the module docstring.
        backend: ``"torch"`` or ``"triton"`` (already resolved).
        precision: triton operand precision (see :func:`bltriton.kernels.band_mac.band_mac`).
    """
    if backend == "triton":
        from bltriton.kernels import band_mac

        return band_mac.band_mac(mode, a, b, groups, precision=precision)
    return _TORCH_MACS[mode](a, b, groups)
