"""Dense, slow, obviously correct band-limited convolution (the reference).

Full spectra, an explicit real-even mask built from the definition in docs/design.md §1, and autograd
through ``torch.fft``. Tests and benchmarks compare every backend against this; it is never used
by the library's own layers. The padding is ``F.pad`` (through :func:`bltriton.functional.pad_input`),
checked on its own by the rate-0 comparisons with ``F.conv*d``.
"""

from __future__ import annotations

import torch

from bltriton.functional import pad_input
from bltriton.spectral import Band, band_for_rate, energy_band, fft_lengths, kept_mask


def _dilate(weight: torch.Tensor, dilation: tuple[int, ...]) -> torch.Tensor:
    """Insert ``d - 1`` zeros between filter taps along each spatial axis."""
    ndim = len(dilation)
    k = weight.shape[-ndim:]
    ke = tuple(d * (kk - 1) + 1 for kk, d in zip(k, dilation))
    out = weight.new_zeros(*weight.shape[:-ndim], *ke)
    index = (Ellipsis, *(slice(None, None, d) for d in dilation))
    out[index] = weight
    return out


def bl_conv_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int = 1,
    padding_mode: str = "zeros",
    compress_rate: float = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, Band]:
    """Band-limited cross-correlation, computed densely. Differentiable by autograd.

    Args:
        x: ``[B, C, *L]`` (1 or 2 spatial axes).
        weight: ``[O, C // groups, *k]``.
        bias: ``[O]`` or ``None``.
        stride, dilation: one int per spatial axis.
        padding: ``(before, after)`` per spatial axis.

    Returns:
        ``(y, band)`` with ``y`` of shape ``[B, O, *out]``.
    """
    ndim = weight.dim() - 2
    dims = tuple(range(-ndim, 0))
    x_pad = pad_input(x, padding, padding_mode)
    w_dil = _dilate(weight, dilation)
    lp = tuple(x_pad.shape[-ndim:])
    ke = tuple(w_dil.shape[-ndim:])
    n = fft_lengths(lp, ke, fft_size)
    X = torch.fft.rfftn(x_pad, s=n, dim=dims)
    Wf = torch.fft.rfftn(w_dil, s=n, dim=dims)
    band = energy_band(X, n, energy) if energy is not None else band_for_rate(n, compress_rate)
    mask = kept_mask(band, device=x.device).to(X.real.dtype)

    b, c = x.shape[:2]
    o = weight.shape[0]
    cg, og = c // groups, o // groups
    Xg = X.reshape(b, groups, cg, *X.shape[2:])
    Wg = Wf.reshape(groups, og, cg, *Wf.shape[2:])
    # Y[b, g, o, f] = sum_c X[b, g, c, f] * conj(W[g, o, c, f])
    Y = (Xg.unsqueeze(2) * Wg.conj().unsqueeze(0)).sum(dim=3)
    Y = Y.reshape(b, o, *Y.shape[3:]) * mask
    y_full = torch.fft.irfftn(Y, s=n, dim=dims)
    crop = (Ellipsis, *(slice(0, lpi - kei + 1, s) for lpi, kei, s in zip(lp, ke, stride)))
    y = y_full[crop]
    if bias is not None:
        y = y + bias.reshape(o, *([1] * ndim))
    return y, band
