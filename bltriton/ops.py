"""Backend dispatch and the torch path: band-pruned transforms and the three band contractions.

Band tensors are *frequency-major* and compact: ``[F, B, C]`` for inputs/gradients and
``[F, O, C // groups]`` for filters, ``F = band.num_kept`` numbered as in :mod:`bltriton.spectral`.
Only these are saved for backward. The transforms never materialise the full product:

* forward: ``rfft`` along the last axis, keep ``cols`` columns, ``fft`` along the first axis on those
  columns only, keep the band rows (2D);
* filters: a direct DFT of the (small) filter evaluated at the kept frequencies only, two small
  complex matmuls, dilation folded into the DFT phases (no zero-inserted filter);
* inverse: zero-fill the dropped rows, ``ifft`` along the first axis on ``cols`` columns, crop and
  subsample rows, then ``irfft`` along the last axis (it zero-pads the dropped columns), crop and
  subsample.

The contractions (one signature per backend, DESIGN §3):

* ``mac_fwd``: ``Y[f, b, o] = sum_c X[f, b, c] · conj(W[f, o, c])``
* ``mac_dx``:  ``dX[f, b, c] = sum_o G[f, b, o] · W[f, o, c]``
* ``mac_dw``:  ``dW[f, o, c] = sum_b conj(G[f, b, o]) · X[f, b, c]``

each within a group (``C = groups·Cg``, ``O = groups·Og``).
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

BACKENDS = ("auto", "torch", "triton")


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


def _gather_rows(spec: torch.Tensor, band: Band) -> torch.Tensor:
    """``[..., nH, cols] -> [..., kept_rows, cols]`` (2D only)."""
    if band.rows_bottom == band.n_rows:
        return spec[..., : band.rows_top, :]
    if band.rows_top == band.rows_bottom:
        return spec
    return torch.cat([spec[..., : band.rows_top, :], spec[..., band.rows_bottom :, :]], dim=-2)


def forward_transform(x: torch.Tensor, band: Band) -> torch.Tensor:
    """Band of ``rfftn(x, s=band.n)``, frequency-major.

    Args:
        x: ``[B, C, *Lp]`` real, ``Lp <= band.n`` per axis (zero-padded at the end by the FFT).

    Returns:
        ``[F, B, C]`` complex, contiguous.
    """
    b, c = x.shape[:2]
    spec = torch.fft.rfft(x, n=band.n[-1], dim=-1)[..., : band.cols]
    if band.ndim == 2:
        spec = torch.fft.fft(spec, n=band.n[0], dim=-2)
        spec = _gather_rows(spec, band)
        return spec.permute(2, 3, 0, 1).reshape(band.num_kept, b, c)
    return spec.permute(2, 0, 1).contiguous()


def grad_transform(
    dy: torch.Tensor, band: Band, full_len: tuple[int, ...], stride: tuple[int, ...]
) -> torch.Tensor:
    """Band of the spectrum of the output gradient, zero-upsampled by the stride.

    Args:
        dy: ``[B, O, *out]``.
        full_len: stride-1 output length per axis (``Lp - ke + 1``).

    Returns:
        ``[F, B, O]`` complex.
    """
    if any(s != 1 for s in stride):
        up = dy.new_zeros(*dy.shape[:2], *full_len)
        up[(Ellipsis, *(slice(0, None, s) for s in stride))] = dy
        dy = up
    return forward_transform(dy, band)


def inverse_transform(
    yb: torch.Tensor, band: Band, crop: tuple[int, ...], stride: tuple[int, ...]
) -> torch.Tensor:
    """Zero-filled band -> ``irfftn(·, s=band.n)`` cropped to ``crop`` and subsampled by ``stride``.

    Args:
        yb: ``[F, B, O]`` complex band.
        crop: length per axis kept from the start of the circular result (before ``stride``).

    Returns:
        ``[B, O, *out]`` real, ``out = ceil(crop / stride)``.
    """
    _, b, o = yb.shape
    if band.ndim == 2:
        rows, cols = band.kept_rows, band.cols
        spec = yb.reshape(rows, cols, b, o).permute(2, 3, 0, 1)
        if rows != band.n_rows:
            full = spec.new_zeros(b, o, band.n_rows, cols)
            full[..., : band.rows_top, :] = spec[..., : band.rows_top, :]
            full[..., band.rows_bottom :, :] = spec[..., band.rows_top :, :]
            spec = full
        spec = torch.fft.ifft(spec, dim=-2)[..., : crop[0] : stride[0], :]
        y = torch.fft.irfft(spec, n=band.n[1], dim=-1)
        return y[..., : crop[1] : stride[1]]
    spec = yb.permute(1, 2, 0)
    y = torch.fft.irfft(spec, n=band.n[0], dim=-1)
    return y[..., : crop[0] : stride[0]]


@lru_cache(maxsize=256)
def _dft_factors(
    band: Band,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """Per-axis DFT matrices ``E[f_axis, j] = exp(-2πi · freq · j · d / n)`` at the kept
    frequencies: ``[kept_rows, kh]`` (2D) and ``[cols, kw]``. Computed in float64, then cast."""

    def factor(freqs: list[int], k: int, d: int, n: int) -> torch.Tensor:
        fr = torch.tensor(freqs, dtype=torch.float64)[:, None]
        taps = torch.arange(k, dtype=torch.float64)[None, :] * d
        return torch.polar(torch.ones((), dtype=torch.float64), -2 * math.pi * (fr * taps % n) / n).to(
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
    """Band of ``rfftn(dilated weight, s=band.n)`` by direct DFT, frequency-major.

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
    factors = _dft_factors(band, tuple(kernel), tuple(dilation), dwb.device, dwb.dtype)
    # Columns whose conjugate is implied by the half layout count twice in irfft.
    cw = torch.full((band.cols,), 2.0, dtype=dwb.real.dtype, device=dwb.device)
    cw[0] = 1.0
    if band.n[-1] % 2 == 0 and band.cols == band.n_half:
        cw[-1] = 1.0
    scale = 1.0 / math.prod(band.n)
    if band.ndim == 2:
        e_h, e_w = factors
        z = dwb.reshape(band.kept_rows, band.cols, o, cg) * (cw * scale)[None, :, None, None]
        t = torch.einsum("rmoc,rj->ocjm", z, e_h.conj())  # [O, Cg, kh, cols]
        return (t @ e_w.conj()).real  # [O, Cg, kh, kw]
    (e,) = factors
    z = dwb * (cw * scale)[:, None, None]
    return torch.einsum("moc,ml->ocl", z, e.conj()).real


# --------------------------------------------------------------------------------------------
# Contractions: torch path
# --------------------------------------------------------------------------------------------


def _torch_mac_fwd(xb: torch.Tensor, wb: torch.Tensor, groups: int) -> torch.Tensor:
    f, b, _ = xb.shape
    o, cg = wb.shape[1], wb.shape[2]
    if groups == 1:
        return torch.matmul(xb, wb.conj().transpose(1, 2))
    og = o // groups
    if cg == 1:  # depthwise-style: an element-wise product per channel
        y = xb.reshape(f, b, groups, 1) * wb.reshape(f, 1, groups, og).conj()
        return y.reshape(f, b, o)
    xg = xb.reshape(f, b, groups, cg).transpose(1, 2)  # [F, g, B, Cg]
    wg = wb.reshape(f, groups, og, cg).conj().transpose(-1, -2)  # [F, g, Cg, Og]
    return torch.matmul(xg, wg).transpose(1, 2).reshape(f, b, o)


def _torch_mac_dx(gb: torch.Tensor, wb: torch.Tensor, groups: int) -> torch.Tensor:
    f, b, o = gb.shape
    cg = wb.shape[2]
    if groups == 1:
        return torch.matmul(gb, wb)
    og = o // groups
    if cg == 1:
        dx = (gb.reshape(f, b, groups, og) * wb.reshape(f, 1, groups, og)).sum(-1)
        return dx
    gg = gb.reshape(f, b, groups, og).transpose(1, 2)  # [F, g, B, Og]
    wg = wb.reshape(f, groups, og, cg)  # [F, g, Og, Cg]
    return torch.matmul(gg, wg).transpose(1, 2).reshape(f, b, groups * cg)


def _torch_mac_dw(xb: torch.Tensor, gb: torch.Tensor, groups: int) -> torch.Tensor:
    f, b, c = xb.shape
    o = gb.shape[2]
    cg, og = c // groups, o // groups
    if groups == 1:
        return torch.matmul(gb.conj().transpose(1, 2), xb)
    if cg == 1:
        dw = (gb.reshape(f, b, groups, og).conj() * xb.reshape(f, b, groups, 1)).sum(1)
        return dw.reshape(f, o, 1)
    gg = gb.reshape(f, b, groups, og).permute(0, 2, 3, 1).conj()  # [F, g, Og, B]
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
        mode: ``"fwd"`` (``a=X [F,B,C]``, ``b=W [F,O,Cg]`` -> ``[F,B,O]``), ``"dx"``
            (``a=G [F,B,O]``, ``b=W [F,O,Cg]`` -> ``[F,B,C]``) or ``"dw"`` (``a=X [F,B,C]``,
            ``b=G [F,B,O]`` -> ``[F,O,Cg]``).
        backend: ``"torch"`` or ``"triton"`` (already resolved).
        precision: triton operand precision (see :func:`bltriton.kernels.band_mac.band_mac`).
    """
    if backend == "triton":
        from bltriton.kernels import band_mac

        return band_mac.band_mac(mode, a, b, groups, precision=precision)
    return _TORCH_MACS[mode](a, b, groups)
