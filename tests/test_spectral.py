"""Band geometry: FFT lengths, kept sets, kept fraction, energy search."""

from __future__ import annotations

import math

import pytest
import torch

from bltriton.spectral import (
    band_for_rate,
    band_index_candidates,
    energy_band,
    fast_length,
    fft_lengths,
    kept_mask,
)
from tests.helpers import held_fraction, two_sided_power


@pytest.mark.parametrize("n,expect", [(1, 1), (7, 8), (11, 12), (13, 15), (34, 36), (97, 100), (121, 125)])
def test_fast_length(n, expect):
    assert fast_length(n) == expect


def test_fft_lengths_modes():
    assert fft_lengths((34, 34), (3, 3), None) == (36, 36)
    # paper: next pow2 of Lp + max(out, k) - 1 = 34 + 32 - 1 = 65 -> 128
    assert fft_lengths((34, 34), (3, 3), "paper") == (128, 128)
    assert fft_lengths((34, 30), (3, 3), (40, 30)) == (40, 30)
    assert fft_lengths((10,), (3,), 16) == (16,)


@pytest.mark.parametrize("n", [(1, 1), (2, 3), (7, 8), (8, 7), (12, 15), (36, 36), (5, 64)])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_band_rectangles_match_definition(n, rate):
    """The two-rectangle band equals the mask built from min(k, nH-k) <= iH-1, kw <= iW-1."""
    band = band_for_rate(n, rate)
    mask = kept_mask(band)
    rect = torch.zeros(n[0], n[1] // 2 + 1, dtype=torch.bool)
    rows = band.kept_row_indices()
    rect[rows[:, None], torch.arange(band.cols)[None, :]] = True
    assert torch.equal(mask, rect)
    assert band.num_kept == int(mask.sum())
    assert band.kept_fraction == pytest.approx(int(mask.sum()) / mask.numel())
    i_h = max(1, int((n[0] // 2 + 1) * math.sqrt(1 - rate)))
    i_w = max(1, int((n[1] // 2 + 1) * math.sqrt(1 - rate)))
    assert band.cols == i_w and band.rows_top == min(i_h, n[0])
    # The implied full-plane mask is even: row k kept iff row nH-k kept.
    full_rows = mask.any(dim=1)
    assert torch.equal(full_rows, full_rows[(-torch.arange(n[0])) % n[0]])


def test_rate_zero_keeps_everything():
    for n in [(1,), (9,), (16,), (5, 5), (36, 36), (7, 10)]:
        assert band_for_rate(n, 0.0).is_full


def test_1d_band():
    band = band_for_rate((100,), 0.5)
    assert band.cols == int(51 * 0.5) and band.kept_fraction == pytest.approx(25 / 51)


def test_kept_fraction_near_argument_for_large_n():
    band = band_for_rate((256, 256), 0.5)
    assert abs(band.kept_fraction - 0.5) < 0.02


def test_candidates_cover_rate_bands():
    n = (18, 11)
    cands = band_index_candidates(n)
    assert cands[-1].is_full
    assert [c.num_kept for c in cands] == sorted(c.num_kept for c in cands)
    for rate in [0.0, 0.2, 0.5, 0.8, 0.95]:
        assert band_for_rate(n, rate) in cands


@pytest.mark.parametrize("n", [(16,), (15,), (12, 12), (9, 14)])
@pytest.mark.parametrize("energy", [0.3, 0.8, 0.95, 1.0])
def test_energy_band_is_smallest_holding_energy(n, energy):
    x = torch.randn(3, 2, *n, dtype=torch.float64).cumsum(-1)
    spec = torch.fft.rfftn(x, s=n, dim=tuple(range(-len(n), 0)))
    band = energy_band(spec, n, energy)

    power = two_sided_power(x, n)  # energy held is counted on the full two-sided spectrum
    assert held_fraction(power, band) >= energy - 1e-9
    cands = band_index_candidates(n)
    idx = cands.index(band)
    if idx > 0:
        assert held_fraction(power, cands[idx - 1]) < energy
