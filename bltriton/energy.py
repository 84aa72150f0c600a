"""Energy mode of the band-limited modules: which band a call uses, and when it changes.

A module built with ``energy=E`` (``BLConv1d(..., energy=0.99)``, ``convert(model, energy=E)``)
keeps, per layer, the smallest band of the rate rule whose coefficients hold at least ``E`` of
the spectral energy of its (padded) input, summed over batch and channels (``spectral.energy_band``).
Searching that band costs a full ``rfftn`` of the input and one host sync, and a band that moves
from batch to batch makes every call pay for new DFT operands and tuned configs. So the module
form is *amortised* and *quantised*; exactly:

1. **When the band is evaluated.** Each layer counts its forward calls (training and evaluation
   alike). The band is searched on the layer's first call, whenever the FFT length changes (a
   new input length), and when ``interval`` calls have passed since the last search. The
   interval starts at ``every``; a search that finds the band unchanged doubles it (up to
   ``max_every``), a search that finds another band (or a new length) sets it back to
   ``every``. Every other call uses the band of the last search unchanged: the batch in hand is
   not inspected. A stable band thus costs one search per ``max_every`` calls; a moving one,
   one per ``every``.
2. **Which band.** The search finds the smallest band holding ``>= E`` of *that call's* input
   energy, then rounds it *up* with :func:`bltriton.spectral.quantize_band` (``levels`` evenly
   spaced sizes per axis). The rounded band contains the searched one, so the call that searched
   keeps at least ``E``; the calls in between keep what the same band holds of their own input
   (usually about ``E``: the spectrum of a data set's batches varies little, see docs/usage.md).
3. **What is reported.** ``layer.last_band`` / ``layer.kept_fraction`` are the band the last call
   computed with; that call's output and gradients are exactly those of the fixed band
   ``last_band`` (the forward and backward are the fixed-band ones).

``every=1, max_every=1, levels=None`` is the per-call search of the functional API (``bl_conv1d(...,
energy=E)``), which stays stateless and exact. The defaults below were chosen by measurement on
a shared 2-core CPU (FCN on the bundled sets and on generated high-frequency series; see
the energy section of docs/usage.md): ``every=DEFAULT_EVERY``, ``max_every=DEFAULT_MAX_EVERY``,
``levels=DEFAULT_LEVELS``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bltriton import spectral
from bltriton.spectral import Band, band_for_power, power_spectrum, quantize_band

__all__ = [
    "DEFAULT_EVERY",
    "DEFAULT_LEVELS",
    "DEFAULT_MAX_EVERY",
    "EnergyBand",
    "band_chooser",
    "band_limited_layers",
    "energy_state",
    "set_energy",
]

#: Search the band every 8th call at first. Measured (bench/energy_step.py, FCN width 0.25,
#: batch 16, E=0.99, CPU time on a shared 2-core machine): energy-mode steps cost 0.96-1.06x the
#: matched fixed-band step at every=8 on the four 1D sets, against 1.11-1.25x at every=1.
DEFAULT_EVERY = 8
#: Interval cap of the doubling: where the band is full (digits, ItalyPowerDemand) a search
#: costs about 0.4x a step, so at 64 it adds under 1 %.
DEFAULT_MAX_EVERY = 64
#: Sizes per axis a band may take: 8 keeps at most 8 shapes per 1D layer (about 16 in 2D).
DEFAULT_LEVELS = 8


def _check_positive_int(value: object, name: str, allow_none: bool = False) -> int | None:
    """``value`` as a Python int (Python and numpy integers; not bools), or ``None`` if allowed."""
    if allow_none and value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return int(value)


def check_energy(energy: object) -> float:
    """Validate ``energy`` (a fraction in ``(0, 1]``, Python or numpy number; not ``None``) and
    return it as a float (:func:`bltriton.spectral.check_energy`)."""
    if energy is None:
        raise TypeError("energy must be a float in (0, 1]; got NoneType")
    return spectral.check_energy(energy)


@dataclass
class EnergyBand:
    """Energy-mode state of one layer: a callable ``(x_pad, n) -> Band`` (see the module doc).

    Attributes:
        energy: fraction of the input's spectral energy to keep, in ``(0, 1]``.
        every: the shortest interval, in calls, between searches (1: every call).
        max_every: the longest (the interval doubles while the band holds still).
        levels: quantisation of :func:`~bltriton.spectral.quantize_band` (``None``: none).
        band: the band in use (``None`` before the first call).
        searches: how many searches ran (a counter for tests and measurements).
    """

    energy: float
    every: int = DEFAULT_EVERY
    max_every: int = DEFAULT_MAX_EVERY
    levels: int | None = DEFAULT_LEVELS
    band: Band | None = None
    searches: int = 0
    _since: int = field(default=0, repr=False)
    _interval: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.energy = check_energy(self.energy)
        self.every = _check_positive_int(self.every, "every")
        self.max_every = _check_positive_int(self.max_every, "max_every")
        if self.max_every < self.every:
            raise ValueError(f"max_every ({self.max_every}) must be >= every ({self.every})")
        self.levels = _check_positive_int(self.levels, "levels", allow_none=True)

    def search(self, x_pad: torch.Tensor, n: tuple[int, ...]) -> Band:
        """The quantised smallest band holding ``energy`` of ``x_pad``'s spectrum.

        Args:
            x_pad: padded input ``[B, C, *L]``.
            n: FFT lengths (``len(n)`` spatial axes).
        """
        dims = tuple(range(-len(n), 0))
        with torch.no_grad():
            x = x_pad.detach()
            spectrum = torch.fft.rfftn(x if x.dtype == torch.float64 else x.float(), s=n, dim=dims)
            band = band_for_power(power_spectrum(spectrum, n), n, self.energy)
        return band if self.levels is None else quantize_band(band, self.levels)

    def __call__(self, x_pad: torch.Tensor, n: tuple[int, ...]) -> Band:
        if x_pad.device.type == "meta":  # no values to search (shape inference): the full band,
            return spectral.band_for_rate(tuple(n), 0.0)  # which gives the same output shape
        if self.band is None or self.band.n != tuple(n) or self._since >= self._interval:
            band = self.search(x_pad, tuple(n))
            same = band == self.band
            self._interval = min(self.max_every, 2 * self._interval) if same else self.every
            self.band = band
            self.searches += 1
            self._since = 0
        self._since += 1
        return self.band

    def reset(self) -> None:
        """Forget the band: the next call searches."""
        self.band = None
        self._since = 0
        self._interval = 0


def band_chooser(module: nn.Module) -> EnergyBand | None:
    """What picks the band of a band-limited module's next call: a temporary override (set by
    :func:`bltriton.calibrate` while it measures), the energy-mode state, or ``None`` for the
    fixed ``compress_rate``."""
    # From the instance's dict: a missing attribute goes through nn.Module.__getattr__ (and an
    # AttributeError) at every call.
    override = module.__dict__.get("_band_override")
    if override is not None:
        return override
    return None if module.energy is None else energy_state(module)


def energy_state(module: nn.Module) -> EnergyBand:
    """The :class:`EnergyBand` of a band-limited module in energy mode (made on first use, and
    remade with the same ``every``/``max_every``/``levels`` when ``module.energy`` was changed)."""
    state = getattr(module, "_energy_state", None)
    if state is None or state.energy != module.energy:
        every = DEFAULT_EVERY if state is None else state.every
        max_every = DEFAULT_MAX_EVERY if state is None else state.max_every
        levels = DEFAULT_LEVELS if state is None else state.levels
        state = EnergyBand(module.energy, every, max_every, levels)
        module._energy_state = state
    return state


def band_limited_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, layer)`` of every band-limited layer of ``model``, in module order."""
    from bltriton.nn import is_band_limited

    return [(name, m) for name, m in model.named_modules() if is_band_limited(m)]


def set_energy(
    model: nn.Module,
    energy: float,
    *,
    every: int = DEFAULT_EVERY,
    max_every: int | None = None,
    levels: int | None = DEFAULT_LEVELS,
) -> nn.Module:
    """Put every band-limited layer of ``model`` in energy mode.

    Args:
        model: a model with band-limited layers (``convert`` it first).
        energy: fraction of each layer's input spectral energy to keep, in ``(0, 1]``.
        every: shortest interval, in forward calls, between band searches (1: each call).
        max_every: longest interval, reached by doubling while the band holds still (default:
            ``max(every, DEFAULT_MAX_EVERY)``; ``every`` for a fixed interval).
        levels: round bands up to ``levels`` sizes per axis (``None``: the exact band).

    Returns:
        ``model``.
    """
    energy = check_energy(energy)
    every = _check_positive_int(every, "every")
    cap = max(every, DEFAULT_MAX_EVERY) if max_every is None else max_every
    layers = band_limited_layers(model)
    if not layers:
        raise ValueError("set_energy: model has no band-limited layers; convert it first")
    for _, layer in layers:
        layer.compress_rate = 0.0
        layer.energy = energy
        layer._energy_state = EnergyBand(energy, every, cap, levels)
    return model
