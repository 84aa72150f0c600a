"""bltriton: band-limited convolution for PyTorch (truncated spectra in forward and backward)."""

from __future__ import annotations

from bltriton.calibrate import calibrate
from bltriton.energy import set_energy
from bltriton.functional import bl_conv1d, bl_conv2d
from bltriton.layer_report import ProfileReport, profile
from bltriton.nn import BLConv1d, BLConv2d, convert, set_compress_rate
from bltriton.pretune import tune
from bltriton.spectral import Band

__version__ = "0.1.0"

__all__ = [
    "BLConv1d",
    "BLConv2d",
    "Band",
    "ProfileReport",
    "__version__",
    "bl_conv1d",
    "bl_conv2d",
    "calibrate",
    "convert",
    "profile",
    "set_compress_rate",
    "set_energy",
    "tune",
]
