"""Band geometry: FFT lengths, the kept frequency set, the measured kept fraction, energy search.

Everything here is the semantics of docs/design.md §1 (FFT lengths, the band), in one place. The
kept set of a 2D layer is two rectangles of the ``rfft2`` layout ``(nH, nW // 2 + 1)``: rows
``[0, a)`` and ``[b0, nH)`` (the positive and negative row frequencies) times columns ``[0, iW)``.
A 1D layer keeps ``[0, i)``. Kernels and the torch path address the band by that index
arithmetic; nothing here builds a gather table.

Kept frequencies are numbered *frequency-major*: ``f = r * cols + c`` with ``r`` the index among
the kept rows (top rows first, then the bottom rows in increasing order) and ``c`` the column.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Band",
    "band_energies",
    "band_for_power",
    "band_for_rate",
    "band_index_candidates",
    "check_energy",
    "check_fft_size",
    "check_rate",
    "column_weights",
    "energy_band",
    "fast_length",
    "fft_lengths",
    "kept_mask",
    "next_pow2",
    "power_spectrum",
    "quantize_band",
    "rate_for_band",
]


def fast_length(n: int) -> int:
    """Smallest ``m >= n`` of the form ``2^a * 3^b * 5^c`` (a fast length for pocketfft/cuFFT)."""
    if n < 1:
        raise ValueError(f"FFT length must be >= 1, got {n}")
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def next_pow2(n: int) -> int:
    """Smallest power of two ``>= n`` (1 for ``n <= 1``): the one such helper of the library
    (the tuner buckets with it; the kernels use ``triton.next_power_of_2``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def fft_lengths(
    padded: tuple[int, ...],
    effective_kernel: tuple[int, ...],
    fft_size: str | int | tuple[int, ...] | None,
) -> tuple[int, ...]:
    """FFT length per spatial axis.

    Args:
        padded: padded input length ``Lp`` per axis.
        effective_kernel: dilated kernel length ``ke`` per axis.
        fft_size: ``None``/``"fast"`` (smallest fast length >= ``Lp``, enough for the forward
            correlation and both gradients without wrap-around), ``"paper"`` (the authors' power of
            two >= ``Lp + max(out, ke) - 1``, for reproduction only), an int for every axis, or a
            tuple with one int per axis (each >= ``Lp``).
    """
    sizes = check_fft_size(fft_size, len(padded))
    if sizes is None:
        return tuple(fast_length(lp) for lp in padded)
    if sizes == "paper":
        out = tuple(lp - ke + 1 for lp, ke in zip(padded, effective_kernel))
        return tuple(next_pow2(lp + max(o, ke) - 1) for lp, o, ke in zip(padded, out, effective_kernel))
    for axis, (s, lp) in enumerate(zip(sizes, padded)):
        if s < lp:
            raise ValueError(
                f"fft_size[{axis}]={s} is smaller than the padded input length {lp}: the "
                "correlation would wrap around"
            )
    return sizes


@dataclass(frozen=True)
class Band:
    """The kept frequency set of one layer call.

    Attributes:
        n: FFT length per spatial axis (1 or 2 entries).
        rows_top: ``a``; rows ``[0, a)`` are kept (2D). Always 1 in 1D.
        rows_bottom: ``b0``; rows ``[b0, nH)`` are kept (2D), ``b0 >= a``. ``nH`` (=1) in 1D.
        cols: columns ``[0, cols)`` of the half spectrum are kept (``iW``, or ``i`` in 1D).
    """

    n: tuple[int, ...]
    rows_top: int
    rows_bottom: int
    cols: int

    @property
    def ndim(self) -> int:
        return len(self.n)

    @property
    def n_half(self) -> int:
        """Length of the last (halved) axis of the rfft layout."""
        return self.n[-1] // 2 + 1

    @property
    def n_rows(self) -> int:
        """``nH`` in 2D, 1 in 1D."""
        return self.n[0] if self.ndim == 2 else 1

    @property
    def kept_rows(self) -> int:
        return self.rows_top + (self.n_rows - self.rows_bottom)

    @property
    def num_kept(self) -> int:
        return self.kept_rows * self.cols

    @property
    def num_total(self) -> int:
        return self.n_rows * self.n_half

    @property
    def kept_fraction(self) -> float:
        """Measured kept fraction: kept / total rfft coefficients."""
        return self.num_kept / self.num_total

    @property
    def is_full(self) -> bool:
        return self.num_kept == self.num_total

    def kept_row_indices(self, device: torch.device | None = None) -> torch.Tensor:
        """Row index in the full spectrum of each kept row, shape ``[kept_rows]`` (int64)."""
        top = torch.arange(self.rows_top, device=device)
        bottom = torch.arange(self.rows_bottom, self.n_rows, device=device)
        return torch.cat([top, bottom])

    def row_frequencies(self) -> list[int]:
        """Signed row frequency (``-nH/2 .. nH/2``) of each kept row, in kept order."""
        nh = self.n_rows
        return [r if r < self.rows_top else r - nh for r in self.kept_row_indices().tolist()]


def column_weights(n: int, cols: int) -> torch.Tensor:
    """Weight of each of the first ``cols`` columns of a half spectrum of length ``n`` in a full-
    spectrum sum (``irfft``, energy): 2 for a column whose conjugate the half layout implies, 1 for
    column 0 and, for even ``n``, the Nyquist column ``n/2``. Float64 ``[cols]``."""
    w = torch.full((cols,), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if n % 2 == 0 and cols == n // 2 + 1:
        w[-1] = 1.0
    return w


def _is_real_number(value: object) -> bool:
    """Python and numpy ints/floats (``numbers.Real``; symbolic ones under ``torch.compile``), not
    bools: what torch accepts as a float."""
    real = isinstance(value, (numbers.Real, torch.SymFloat, torch.SymInt))
    return real and not isinstance(value, (bool, np.bool_))


def check_rate(compress_rate: float | None) -> float:
    """Validate ``compress_rate`` (a fraction in ``[0, 1)``, Python or numpy number; ``None`` means
    0, the full band) and return it as a float."""
    if compress_rate is None:
        return 0.0
    if not _is_real_number(compress_rate):
        raise TypeError(f"compress_rate must be a float in [0, 1); got {type(compress_rate).__name__}")
    r = float(compress_rate)
    if not (0.0 <= r < 1.0):  # also rejects NaN
        hint = (
            f" (it is a fraction of coefficients discarded: did you mean {r / 100:g}?)"
            if 1.0 <= r <= 100.0
            else ""
        )
        raise ValueError(f"compress_rate must be in [0, 1); got {compress_rate!r}{hint}")
    return r


def check_energy(energy: float | None, compress_rate: float | None = None) -> float | None:
    """Validate ``energy`` (``None``, or a fraction in ``(0, 1]`` of the spectral energy kept) and its
    exclusion with ``compress_rate`` (which must then be 0 or ``None``); returns it as a float."""
    if energy is None:
        return None
    if not _is_real_number(energy):
        raise TypeError(f"energy must be a float in (0, 1] or None; got {type(energy).__name__}")
    e = float(energy)
    if not (0.0 < e <= 1.0):  # also rejects NaN
        raise ValueError(f"energy must be in (0, 1] (fraction of spectrum energy kept); got {energy!r}")
    if compress_rate is not None and check_rate(compress_rate) != 0.0:
        raise ValueError(
            "compress_rate and energy are exclusive: pass energy=None for a fixed band, or "
            "compress_rate=0.0 (or None) for the energy-driven band"
        )
    return e


def check_fft_size(fft_size: object, ndim: int) -> str | tuple[int, ...] | None:
    """Validate ``fft_size`` where it is given (before any input is seen) and normalise it.

    Accepts ``None``/``"fast"``, ``"paper"``, a positive int (Python or numpy integer) or a tuple of
    ``ndim`` of them. Floats are rejected, as torch rejects them for sizes. Whether the lengths
    cover the padded input is checked per call by :func:`fft_lengths`.

    Returns:
        ``None``, ``"paper"`` or a tuple of ``ndim`` Python ints.
    """
    if fft_size is None:
        return None
    form = f"None, 'fast', 'paper', a positive int or a tuple of {ndim} positive ints"
    if isinstance(fft_size, str):
        if fft_size in ("fast", "paper"):
            return None if fft_size == "fast" else "paper"
        raise ValueError(f"fft_size must be {form}; got {fft_size!r}")
    items = tuple(fft_size) if isinstance(fft_size, (tuple, list)) else (fft_size,) * ndim
    if len(items) != ndim:
        raise ValueError(f"fft_size must be {form}; got {fft_size!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items):
        raise TypeError(f"fft_size must be {form} (floats are not sizes); got {fft_size!r}")
    sizes = tuple(int(v) for v in items)
    if any(v < 1 for v in sizes):
        raise ValueError(f"fft_size must be {form}; got {fft_size!r}")
    return sizes


def _band_from_counts(n: tuple[int, ...], i_rows: int, i_cols: int) -> Band:
    n_half = n[-1] // 2 + 1
    cols = max(1, min(i_cols, n_half))
    if len(n) == 1:
        return Band(n=n, rows_top=1, rows_bottom=1, cols=cols)
    nh = n[0]
    i_rows = max(1, min(i_rows, nh // 2 + 1))
    # Keep row k iff min(k, nH - k) <= iH - 1: rows [0, iH) and [nH - iH + 1, nH), deduplicated.
    top = min(i_rows, nh)
    bottom = max(top, nh - i_rows + 1)
    return Band(n=n, rows_top=top, rows_bottom=bottom, cols=cols)


def band_for_rate(n: tuple[int, ...], compress_rate: float) -> Band:
    """Band of docs/design.md §1 for a fixed ``compress_rate`` (fraction of coefficients discarded).

    2D: ``iH = max(1, int((nH//2+1)·sqrt(1−r)))``, ``iW`` likewise with ``nW``.
    1D: ``i = max(1, int((n//2+1)·(1−r)))``.
    """
    r = check_rate(compress_rate)
    if len(n) == 1:
        return _band_from_counts(n, 1, max(1, int((n[0] // 2 + 1) * (1.0 - r))))
    t = math.sqrt(1.0 - r)
    i_h = max(1, int((n[0] // 2 + 1) * t))
    i_w = max(1, int((n[1] // 2 + 1) * t))
    return _band_from_counts(n, i_h, i_w)


def band_index_candidates(n: tuple[int, ...]) -> list[Band]:
    """Every distinct band the rate rule can produce, smallest first (the energy search space).

    The rule depends on the rate through one scale ``t`` (``sqrt(1-r)`` in 2D, ``1-r`` in 1D); the
    band changes only where ``t`` crosses ``j / (nH//2+1)`` or ``j / (nW//2+1)``.
    """
    if len(n) == 1:
        return [_band_from_counts(n, 1, i) for i in range(1, n[0] // 2 + 2)]
    h_rows, h_cols = n[0] // 2 + 1, n[1] // 2 + 1
    ts = sorted({j / h_rows for j in range(1, h_rows + 1)} | {j / h_cols for j in range(1, h_cols + 1)})
    bands: list[Band] = []
    for t in ts:
        # A tiny epsilon guards int() against t·h landing just below an integer.
        b = _band_at_scale(n, t)
        if not bands or bands[-1] != b:
            bands.append(b)
    return bands


def rate_for_band(band: Band) -> float:
    """A ``compress_rate`` for which :func:`band_for_rate` gives ``band`` back.

    The rule depends on the rate through one scale ``t`` (``1-r`` in 1D, ``sqrt(1-r)`` in 2D) and
    is constant on the interval between two breakpoints of :func:`band_index_candidates`; the
    rate returned is that of the interval's midpoint (so float rounding cannot flip the band),
    rounded to 4 decimals when that still maps back, and 0 for the full band.

    Raises:
        ValueError: ``band`` is not a band of the rate rule (its rows and columns do not come
            from one scale ``t``).
    """
    if band.is_full:
        return 0.0
    if band.ndim == 1:
        h = band.n_half
        ts = [j / h for j in range(1, h + 1)]
    else:
        h_rows, h_cols = band.n[0] // 2 + 1, band.n_half
        ts = sorted({j / h_rows for j in range(1, h_rows + 1)} | {j / h_cols for j in range(1, h_cols + 1)})
    ts.append(1.0 + 1.0 / max(band.n))
    for lo, hi in itertools.pairwise(ts):
        t = min(1.0, (lo + hi) / 2)
        rate = 1.0 - (t if band.ndim == 1 else t * t)
        if band_for_rate(band.n, rate) == band:
            for digits in (4, 6):
                short = round(rate, digits)
                if 0.0 <= short < 1.0 and band_for_rate(band.n, short) == band:
                    return short
            return rate
    raise ValueError(f"rate_for_band: {band} is not a band of the rate rule on n={band.n}")


def kept_mask(band: Band, device: torch.device | None = None) -> torch.Tensor:
    """Explicit boolean mask of the kept set in the rfft layout, shape ``[nH, nW//2+1]`` (2D) or
    ``[n//2+1]`` (1D). Built from the *definition* (``min(k, nH−k) <= iH−1``), not from the
    rectangles, so tests can check one against the other."""
    cols = torch.arange(band.n_half, device=device) < band.cols
    if band.ndim == 1:
        return cols
    nh = band.n[0]
    k = torch.arange(nh, device=device)
    i_h = band.rows_top  # iH (rows_top == iH whenever iH <= nH)
    rows = torch.minimum(k, nh - k) <= i_h - 1
    return rows[:, None] & cols[None, :]


def power_spectrum(spectrum: torch.Tensor, n: tuple[int, ...]) -> torch.Tensor:
    """Energy per rfft coefficient summed over batch and channels, conjugate columns counted.

    Args:
        spectrum: ``rfftn`` output, ``[..., nH, nW//2+1]`` (2D) or ``[..., n//2+1]`` (1D); every
            leading axis (batch, channels) is summed.
        n: FFT lengths.

    Returns:
        ``[nH, nW//2+1]`` (2D) or ``[n//2+1]`` (1D) real: ``sum |X|^2`` with the columns whose
        conjugate the half layout implies (all but column 0 and, for even ``nW``, the Nyquist
        column) counted twice, so the total is the full-plane energy.
    """
    ndim = len(n)
    power = spectrum.detach().abs().square().sum(dim=tuple(range(spectrum.dim() - ndim)))
    return power * column_weights(n[-1], n[-1] // 2 + 1).to(power.device, power.dtype)


def band_energies(power: torch.Tensor, n: tuple[int, ...], bands: list[Band]) -> torch.Tensor:
    """Energy held by each of ``bands`` (nested or not), from a :func:`power_spectrum`.

    Args:
        power: ``[nH, nW//2+1]`` or ``[n//2+1]``.
        n: FFT lengths.
        bands: bands of the rate rule on ``n`` (``rows_top`` rows counted from each side).

    Returns:
        ``[len(bands)]``, same dtype and device as ``power`` (no host sync).
    """
    if len(n) == 1:
        cum = power.cumsum(0)
        return cum[[b.cols - 1 for b in bands]]
    nh = n[0]
    # Fold row k and nH-k together: folded[d] = rows at distance d from 0.
    dist = torch.minimum(torch.arange(nh), nh - torch.arange(nh)).to(power.device)
    folded = torch.zeros(nh // 2 + 1, power.shape[-1], dtype=power.dtype, device=power.device)
    folded.index_add_(0, dist, power)
    cum = folded.cumsum(0).cumsum(1)
    rows = torch.tensor([b.rows_top - 1 for b in bands], device=power.device)
    cols = torch.tensor([b.cols - 1 for b in bands], device=power.device)
    return cum[rows, cols]


def band_for_power(power: torch.Tensor, n: tuple[int, ...], energy: float) -> Band:
    """Smallest band of :func:`band_index_candidates` holding ``>= energy`` of ``power``'s total.

    One host sync. The relative tolerance ``1e-6`` keeps ``energy=1`` from failing on the
    rounding of the cumulative sums.
    """
    candidates = band_index_candidates(n)
    kept = band_energies(power, n, candidates)
    ok = kept >= energy * kept[-1] * (1 - 1e-6)
    first = int(torch.argmax(ok.to(torch.int8)).item())  # the one host sync
    return candidates[first]


def energy_band(spectrum: torch.Tensor, n: tuple[int, ...], energy: float) -> Band:
    """Smallest band (same shape rule) whose coefficients hold ``>= energy`` of the spectrum energy.

    Args:
        spectrum: ``rfftn`` output, shape ``[B, C, nH, nW//2+1]`` (2D) or ``[B, C, n//2+1]`` (1D).
        n: FFT lengths.
        energy: fraction in (0, 1].

    Energy is summed over batch and channels; columns whose conjugate is implied by the half
    layout (all but column 0 and, for even ``nW``, the Nyquist column) count twice. One host sync.
    """
    return band_for_power(power_spectrum(spectrum, n), n, energy)


def _band_at_scale(n: tuple[int, ...], t: float) -> Band:
    """The rate rule's band at scale ``t`` (``1-r`` in 1D, ``sqrt(1-r)`` in 2D)."""
    if len(n) == 1:
        return _band_from_counts(n, 1, max(1, int((n[0] // 2 + 1) * t + 1e-9)))
    return _band_from_counts(
        n, max(1, int((n[0] // 2 + 1) * t + 1e-9)), max(1, int((n[1] // 2 + 1) * t + 1e-9))
    )


def quantize_band(band: Band, levels: int) -> Band:
    """Round a band up to the smallest of ``levels`` fixed bands that contains it.

    The fixed bands are those of the rate rule at the scales ``t = j / levels``, ``j = 1..levels``
    (``t`` is ``1-r`` in 1D, ``sqrt(1-r)`` in 2D; ``j = levels`` is the full band): so at most
    ``levels`` shapes occur per layer, each a band a fixed ``compress_rate`` also gives. The
    result contains ``band``, so it holds at least the energy ``band`` held; a layer whose band
    moves from batch to batch then reuses a handful of shapes (their cached DFT operands and tuned
    configs) instead of paying for a new one each time.

    Args:
        band: any band on ``band.n`` (rows counted from each side, as the rate rule keeps them).
        levels: number of fixed bands (``>= 1``); in 1D, ``levels >= n//2+1`` leaves every
            band unchanged.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive int; got {levels!r}")
    for j in range(1, levels + 1):
        q = _band_at_scale(band.n, j / levels)
        if q.cols >= band.cols and q.rows_top >= band.rows_top:
            return q
    raise AssertionError("unreachable: the full band contains every band")  # j == levels is full
