"""Calibration: the rates it chooses against an independent computation, and its round trip."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from torch import nn

from bltriton import calibrate, convert
from bltriton.__main__ import main
from bltriton.energy import DEFAULT_LEVELS, band_limited_layers
from bltriton.spectral import band_for_rate, band_index_candidates, quantize_band
from tests.helpers import held_fraction, two_sided_power


def predicted_band(inputs: list[torch.Tensor], n: tuple[int, ...], pads: tuple[int, ...], energy: float):
    """The band an independent computation predicts: zero-pad each layer input, take the full
    two-sided FFT in float64, and walk the energy search's band ordering until the real-even
    mask of a band holds ``energy`` of the summed energy."""
    total = torch.zeros(n, dtype=torch.float64)
    for x in inputs:
        xp = torch.nn.functional.pad(x.double(), [p for p in reversed(pads) for _ in range(2)])
        total += two_sided_power(xp, n)
    for band in band_index_candidates(n):
        if held_fraction(total, band) >= energy * (1 - 1e-9):
            return band
    raise AssertionError("the full band holds all the energy")


def _low_freq(batch: int, channels: int, shape: tuple[int, ...], cycles: int = 2) -> torch.Tensor:
    """Pure low-frequency signals: a few cycles with random phase under a Hann window per axis
    (smooth down to zero at the edges, so the zero padding adds no high frequencies)."""
    out = torch.ones(batch, channels, *([1] * len(shape)), dtype=torch.float64)
    for axis, length in enumerate(shape):
        t = torch.arange(length, dtype=torch.float64) / length
        phase = torch.rand(batch, channels, 1, dtype=torch.float64) * 6.28
        wave = torch.sin(2 * math.pi * cycles * t + phase) * torch.hann_window(length, dtype=torch.float64)
        out = out * wave.reshape(batch, channels, *([1] * axis), length, *([1] * (len(shape) - axis - 1)))
    return out


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("kind", ["low", "noise"])
def test_chosen_rates_match_independent_prediction(ndim, kind):
    conv = nn.Conv1d if ndim == 1 else nn.Conv2d
    shape = (96,) if ndim == 1 else (20, 20)
    model = convert(
        nn.Sequential(conv(2, 4, 5, padding=2), nn.ReLU(), conv(4, 3, 3, padding=1)), compress_rate=0.5
    ).double()
    make = (
        (lambda: _low_freq(3, 2, shape))
        if kind == "low"
        else (lambda: torch.randn(3, 2, *shape, dtype=torch.float64))
    )
    batches = [make() for _ in range(3)]
    rates = calibrate(model, batches, energy=0.99, levels=None, report=None, progress=False)
    rounded = calibrate(model, batches, energy=0.99, apply=False, report=None, progress=False)

    # the layer inputs at the full band, captured from a rate-0 copy of the same weights
    full = convert(
        nn.Sequential(conv(2, 4, 5, padding=2), nn.ReLU(), conv(4, 3, 3, padding=1)), compress_rate=0.0
    ).double()
    full.load_state_dict(model.state_dict())
    seen: dict[str, list[torch.Tensor]] = {"0": [], "2": []}
    hooks = [full[int(k)].register_forward_pre_hook(lambda m, a, k=k: seen[k].append(a[0])) for k in seen]
    with torch.no_grad():
        for b in batches:
            full(b)
    for h in hooks:
        h.remove()
    for name, k in (("0", 5), ("2", 3)):
        n = tuple(s + k - 1 for s in shape)
        n = tuple(band_for_rate(tuple(_fast(v) for v in n), 0.0).n)
        expect = predicted_band(seen[name], n, (k // 2,) * ndim, 0.99)
        assert band_for_rate(n, rates[name]) == expect, name
        assert band_for_rate(n, rounded[name]) == quantize_band(expect, DEFAULT_LEVELS), name
        assert model.get_submodule(name).compress_rate == rates[name]
    first = band_for_rate(tuple(_fast(s + 4) for s in shape), rates["0"])
    if kind == "low":  # a few cycles: a handful of coefficients hold 99 %
        assert first.kept_fraction < 0.25
    else:  # white noise: energy is flat, 99 % needs nearly everything
        assert first.kept_fraction > 0.9


def _fast(n: int) -> int:
    from bltriton.spectral import fast_length

    return fast_length(n)


def _fcn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, 4, 7, padding=3),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Conv1d(4, 4, 3, padding=1),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_rates_round_trip_through_convert_and_leave_model_untouched():
    torch.manual_seed(0)
    model = convert(_fcn(), energy=0.9)
    batches = [(torch.randn(8, 1, 50).cumsum(-1), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = io.StringIO()
    details: list = []
    rates = calibrate(model, batches, energy=0.95, progress=False, report=out, details=details)
    assert set(rates) == {"0", "3"}
    for k, v in model.state_dict().items():  # weights and batch-norm statistics restored
        assert torch.equal(v, before[k]), k
    assert model.training
    assert calibrate(model, batches, energy=0.95, progress=False, report=None, apply=False) == rates
    table = out.getvalue()
    assert "E@r=0.5" in table and all(name in table for name in rates)

    dense = _fcn()
    dense.load_state_dict({k: v for k, v in before.items()})
    fresh = convert(dense, compress_rate=rates)
    x = batches[0][0]
    fresh(x)
    model(x)
    for (name, a), (_, b), d in zip(band_limited_layers(fresh), band_limited_layers(model), details):
        assert a.energy is None and b.energy is None
        assert a.compress_rate == b.compress_rate == rates[name]
        assert a.last_band == b.last_band == d.band
        assert d.energy_kept >= 0.95


def test_calibrate_bad_input():
    model = convert(_fcn(), compress_rate=0.0)
    with pytest.raises(ValueError, match="convert it first"):
        calibrate(_fcn(), [torch.randn(2, 1, 20)], report=None, progress=False)
    with pytest.raises(ValueError, match="empty"):
        calibrate(model, [], report=None, progress=False)
    with pytest.raises(TypeError, match="batch"):
        calibrate(model, ["text"], report=None, progress=False)
    with pytest.raises(ValueError, match="energy"):
        calibrate(model, [torch.randn(2, 1, 20)], energy=1.5, report=None, progress=False)
    with pytest.raises(ValueError, match="lengths"):
        calibrate(model, [torch.randn(2, 1, 20), torch.randn(2, 1, 30)], report=None, progress=False)


def model_and_batches():
    """A ``module:function`` target for the CLI test."""
    torch.manual_seed(0)
    return _fcn(), [torch.randn(4, 1, 40) for _ in range(2)]


def test_cli_bundled_and_module_function(tmp_path, capsys):
    path = tmp_path / "rates.json"
    args = ["calibrate", "--dataset", "GunPoint", "--batches", "1", "--batch-size", "8", "--no-progress"]
    assert main([*args, "--json", str(path)]) == 0
    rates = json.loads(path.read_text())
    assert list(rates) == ["0", "3", "6"] and all(0.0 <= r < 1.0 for r in rates.values())
    assert "E@r=0.25" in capsys.readouterr().out

    assert main(["calibrate", "--model", "tests.test_calibrate:model_and_batches", "--no-progress"]) == 0
    assert list(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == ["0", "3"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "nomodule"], "--model"),
        (["--model", "tests.test_calibrate:nothing"], "cannot import"),
        (["--energy", "2"], "energy"),
        (["--batches", "0"], "--batches"),
        (["--levels", "-1"], "--levels"),
        (["--model", "resnet", "--dataset", "GunPoint"], "2D"),
    ],
)
def test_cli_bad_input(argv, needle, capsys):
    assert main(["calibrate", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err
