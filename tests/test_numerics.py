"""The numerics docs/numerics.md states hold: error relative to the global
magnitude, one non-finite input poisons its sample, earlier overflow (the spectral algorithm;
the spatial one overflows where F.conv2d does), and the opt-in check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bltriton import bl_conv1d, bl_conv2d
from tests.helpers import rel_err

FAR = (slice(None), slice(None), slice(16, None), slice(16, None))  # the quadrant far from the spike


def test_error_is_relative_to_global_magnitude():
    x = 1e-3 * torch.randn(1, 4, 32, 32)
    x[0, 0, 5, 5] = 1e6
    w = torch.randn(4, 4, 3, 3)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    y = bl_conv2d(x, w, padding=1, backend="torch", algorithm="spectral")
    assert rel_err(y, ref) < 1e-6  # globally as accurate as fp32 allows
    assert rel_err(y[FAR], ref[FAR]) > 0.1  # locally, far from the spike, no correct digit
    assert rel_err(F.conv2d(x, w, padding=1)[FAR], ref[FAR]) < 1e-5  # F.conv2d is local
    y64 = bl_conv2d(x.double(), w.double(), padding=1, backend="torch", algorithm="spectral")
    assert rel_err(y64[FAR], ref[FAR]) < 1e-6  # float64 is the remedy


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_one_nonfinite_input_poisons_its_sample_only(value, rate):
    x = torch.randn(2, 4, 16, 16)
    x[0, 1, 7, 9] = value
    w = torch.randn(4, 4, 3, 3)
    y = bl_conv2d(x, w, padding=1, compress_rate=rate, backend="torch")
    assert (~torch.isfinite(y[0])).float().mean() > 0.4  # docs/numerics.md: the whole sample
    assert torch.isfinite(y[1]).all()
    assert (~torch.isfinite(F.conv2d(x, w, padding=1)[0])).sum() == 36
    x1 = torch.randn(2, 3, 40)
    x1[1, 0, 11] = value
    y1 = bl_conv1d(x1, torch.randn(2, 3, 5), compress_rate=rate, backend="torch")
    assert (~torch.isfinite(y1[1])).float().mean() > 0.4 and torch.isfinite(y1[0]).all()


def test_overflow_earlier_than_conv2d():
    torch.manual_seed(0)
    kw = {"padding": 1, "backend": "torch", "algorithm": "spectral"}
    small = [1e17 * torch.randn(1, 4, 32, 32), 1e17 * torch.randn(4, 4, 3, 3)]
    assert torch.isfinite(bl_conv2d(*small, **kw)).all()
    big = [1e18 * torch.randn(1, 4, 32, 32), 1e18 * torch.randn(4, 4, 3, 3)]
    assert not torch.isfinite(bl_conv2d(*big, **kw)).all()
    assert torch.isfinite(F.conv2d(*big, padding=1)).all()
    assert torch.isfinite(bl_conv2d(*[t.double() for t in big], **kw)).all()
    # The spatial algorithm forms no spectral products: finite where F.conv2d is.
    assert torch.isfinite(bl_conv2d(*big, padding=1, compress_rate=0.5, algorithm="spatial")).all()


def test_check_finite_env_raises_and_names_tensor(monkeypatch):
    x, w = torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3, 3)
    monkeypatch.setenv("BLTRITON_CHECK_FINITE", "1")
    assert torch.isfinite(bl_conv2d(x, w)).all()  # finite input passes
    bias = torch.tensor([0.0, float("inf")])
    with pytest.raises(ValueError, match="bias has 1 non-finite"):
        bl_conv2d(x, w, bias)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="input has 1 non-finite"):
        bl_conv2d(x, w)
    monkeypatch.setenv("BLTRITON_CHECK_FINITE", "0")
    assert torch.isnan(bl_conv2d(x, w)).any()
