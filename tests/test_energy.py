"""Energy mode: quantised bands, when the band is searched, and exactness against a fixed band."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bltriton import BLConv1d, BLConv2d, convert, set_energy
from bltriton.energy import EnergyBand, band_limited_layers, energy_state
from bltriton.reference import bl_conv_reference
from bltriton.spectral import (
    band_for_rate,
    band_index_candidates,
    energy_band,
    fft_lengths,
    quantize_band,
    rate_for_band,
)
from tests.helpers import held_fraction, two_sided_power


@settings(max_examples=60, deadline=None)
@given(
    n=st.one_of(
        st.tuples(st.integers(1, 80)),
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
    ),
    energy=st.floats(0.05, 1.0),
    levels=st.integers(1, 12),
    smooth=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_quantized_band_holds_energy(n, energy, levels, smooth, seed):
    """Property: the quantised band contains the searched band, holds >= the requested energy,
    is a band a fixed rate gives, and at most ``levels`` shapes occur."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *n, generator=g, dtype=torch.float64)
    for _ in range(smooth):  # shift the energy towards low frequencies by different amounts
        x = x.cumsum(-1)
    spec = torch.fft.rfftn(x, s=n, dim=tuple(range(-len(n), 0)))
    band = energy_band(spec, n, energy)
    q = quantize_band(band, levels)
    assert q.cols >= band.cols and q.rows_top >= band.rows_top
    assert held_fraction(two_sided_power(x, n), q) >= energy - 1e-9
    assert band_for_rate(n, rate_for_band(q)) == q
    assert len({quantize_band(b, levels) for b in band_index_candidates(n)}) <= levels


def test_quantize_rejects_bad_levels():
    with pytest.raises(ValueError, match="levels"):
        quantize_band(band_for_rate((16,), 0.5), 0)


def _layer(ndim: int, energy: float, **kw) -> nn.Module:
    cls = BLConv1d if ndim == 1 else BLConv2d
    return cls(3, 4, 5, padding=2, energy=energy, backend="torch", **kw).double()


@pytest.mark.parametrize("ndim", [1, 2])
def test_outputs_and_gradients_equal_the_reported_fixed_band(ndim):
    """An energy-mode call computes exactly the fixed-band convolution of the band it reports."""
    layer = _layer(ndim, 0.9)
    shape = (4, 3, 40) if ndim == 1 else (4, 3, 14, 14)
    x = torch.randn(shape, dtype=torch.float64).cumsum(-1)
    x = (x if ndim == 1 else x.cumsum(-2)).requires_grad_()  # smooth: a band short of full
    y = layer(x)
    band = layer.last_band
    assert band is not None and not band.is_full
    dy = torch.randn_like(y)
    dx, dw, db = torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)

    # The same algorithm as the energy-mode call took (bit for bit needs the same arithmetic):
    # 'auto' is measured for a fixed band but estimated for a band chosen per call.
    fixed = (BLConv1d if ndim == 1 else BLConv2d)(
        3, 4, 5, padding=2, compress_rate=rate_for_band(band), backend="torch", algorithm=layer.last_algorithm
    ).double()
    fixed.load_state_dict(layer.state_dict())
    x2 = x.detach().clone().requires_grad_()
    y2 = fixed(x2)
    assert fixed.last_band == band
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    for a, b in zip((dx, dw, db), torch.autograd.grad(y2, (x2, fixed.weight, fixed.bias), dy)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # and the float64 dense reference of that band agrees (the fixed path is itself correct)
    pads = ((2, 2),) * ndim
    ref, ref_band = bl_conv_reference(
        x.detach(),
        layer.weight.detach(),
        layer.bias.detach(),
        stride=(1,) * ndim,
        padding=pads,
        dilation=(1,) * ndim,
        compress_rate=rate_for_band(band),
    )
    assert ref_band == band
    assert float((y.detach() - ref).norm() / ref.norm()) < 1e-12


def test_band_is_searched_every_k_calls():
    layer = _layer(1, 0.95)
    state = set_energy(nn.Sequential(layer), 0.95, every=3, max_every=3, levels=None)[0]._energy_state
    low = torch.sin(torch.linspace(0, 6.28, 60, dtype=torch.float64)).expand(2, 3, 60).contiguous()
    noise = torch.randn(2, 3, 60, dtype=torch.float64)
    n = fft_lengths((64,), (5,), None)
    bands = []
    for x in (low, noise, noise, noise, low):  # calls 1..5: searches on calls 1 and 4
        layer(x)
        bands.append(layer.last_band)
    assert state.searches == 2
    spec = lambda x: torch.fft.rfftn(torch.nn.functional.pad(x, (2, 2)), s=n, dim=(-1,))
    assert bands[0] == bands[1] == bands[2] == energy_band(spec(low), n, 0.95)
    assert bands[3] == bands[4] == energy_band(spec(noise), n, 0.95)
    assert bands[3].num_kept > bands[0].num_kept
    # a new input length (new FFT length) searches at once
    layer(torch.randn(2, 3, 30, dtype=torch.float64))
    assert state.searches == 3 and layer.last_band.n != n


def test_interval_doubles_while_the_band_holds_still():
    layer = _layer(1, 0.95)
    state = set_energy(nn.Sequential(layer), 0.95, every=2, max_every=8, levels=None)[0]._energy_state
    low = torch.sin(torch.linspace(0, 6.28, 60, dtype=torch.float64)).expand(2, 3, 60).contiguous()
    searched = []
    for call in range(1, 25):
        before = state.searches
        layer(low)
        if state.searches > before:
            searched.append(call)
    assert searched == [1, 3, 7, 15, 23]  # intervals 2, 4, 8, 8
    low_band = state.band
    noise = torch.randn(2, 3, 60, dtype=torch.float64)
    for call in range(25, 36):
        before = state.searches
        layer(noise)
        if state.searches > before:
            searched.append(call)
    # the search at call 31 sees the new band: back to every=2 (33, 35), then doubling again
    assert searched[5:] == [31, 33]
    assert state.band.num_kept > low_band.num_kept and layer.last_band == state.band


def test_every_1_without_levels_is_the_per_call_search():
    model = convert(nn.Sequential(nn.Conv1d(2, 3, 3, padding=1)), energy=0.9).double()
    set_energy(model, 0.9, every=1, max_every=1, levels=None)
    n = fft_lengths((34,), (3,), None)
    for scale in (0, 1, 2, 3):
        x = torch.randn(3, 2, 32, dtype=torch.float64)
        for _ in range(scale):
            x = x.cumsum(-1)
        model(x)
        spec = torch.fft.rfftn(torch.nn.functional.pad(x, (1, 1)), s=n, dim=(-1,))
        assert model[0].last_band == energy_band(spec, n, 0.9)


def test_default_mode_quantizes_and_changing_energy_keeps_settings():
    layer = _layer(1, 0.9)
    layer(torch.randn(2, 3, 50, dtype=torch.float64))
    state = energy_state(layer)
    assert state.levels is not None and state.band == quantize_band(state.band, state.levels)
    state.every = 5
    layer.energy = 0.5
    new = energy_state(layer)
    assert new is not state and new.energy == 0.5 and new.every == 5


def test_energy_state_and_set_energy_reject_bad_values():
    with pytest.raises(ValueError, match="every"):
        EnergyBand(0.9, every=0)
    with pytest.raises(ValueError, match="levels"):
        EnergyBand(0.9, levels=0)
    with pytest.raises(ValueError, match="max_every"):
        EnergyBand(0.9, every=8, max_every=4)
    with pytest.raises(ValueError, match="energy"):
        EnergyBand(1.5)
    with pytest.raises(TypeError, match="energy"):
        set_energy(convert(nn.Sequential(nn.Conv1d(1, 1, 3))), "high")
    with pytest.raises(ValueError, match="convert it first"):
        set_energy(nn.Sequential(nn.Linear(2, 2)), 0.9)


def test_set_energy_on_a_fixed_rate_model():
    model = convert(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Conv1d(2, 2, 3)), compress_rate=0.5)
    set_energy(model, 0.99, every=2)
    for _, layer in band_limited_layers(model):
        assert layer.energy == 0.99 and layer.compress_rate == 0.0 and layer._energy_state.every == 2
    model(torch.randn(2, 1, 20))
    assert all(layer.kept_fraction is not None for _, layer in band_limited_layers(model))


def test_energy_intervals_accept_numpy_ints():
    """``every``/``max_every``/``levels`` take numpy integers (stored as Python ints) like the
    rate and energy take numpy floats; bools and non-integers are refused by name."""
    import numpy as np

    state = set_energy(nn.Sequential(BLConv1d(2, 3, 3)), 0.9, every=np.int64(2), max_every=np.int32(8))
    st = state[0]._energy_state
    assert (st.every, st.max_every) == (2, 8) and type(st.every) is int
    assert EnergyBand(0.9, levels=np.int16(4)).levels == 4
    for bad in (True, 2.0, np.float64(2.0), "2"):
        with pytest.raises(ValueError, match="every"):
            set_energy(nn.Sequential(BLConv1d(2, 3, 3)), 0.9, every=bad)
