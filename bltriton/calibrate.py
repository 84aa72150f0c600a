"""Per-layer rate calibration: fixed-band speed with the energy mode's accuracy.

:func:`calibrate` runs a few batches through a converted model, accumulates each band-limited
layer's input power spectrum (the padded input's ``rfftn``, summed over batch, channels and
batches, conjugate columns counted twice: exactly what the energy search of docs/design.md §1 sums),
and picks per layer the smallest band of the rate rule holding the requested energy of that
accumulated spectrum. The band is returned as the ``compress_rate`` that gives it
(:func:`bltriton.spectral.rate_for_band`), in the ``{layer name: rate}`` form ``convert`` takes,
and (by default) set on the layers, which then train at a fixed band.

While it measures, every band-limited layer computes at the full band (rate 0), so each layer
sees the inputs of the unconstrained model; the model's mode (train/eval) is kept, nothing is
learned, and its buffers (batch-norm statistics) are restored afterwards. The result depends
only on the batches (the same batches give the same rates). The FFT length of a layer depends
on its input length: calibrate with inputs of the length you will train on.

``python -m bltriton calibrate`` does the same for the demo's models on a bundled set, or for
any ``module:function`` that returns a model (or ``(model, batches)``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

import torch
from torch import nn

from bltriton.energy import DEFAULT_LEVELS, band_limited_layers, check_energy
from bltriton.spectral import (
    Band,
    band_energies,
    band_for_power,
    band_for_rate,
    power_spectrum,
    quantize_band,
    rate_for_band,
)

__all__ = ["LayerCalibration", "add_parsers", "calibrate", "calibration_table", "measure_spectra"]

#: Rates at which the table shows the energy kept.
TABLE_RATES = (0.25, 0.5, 0.75, 0.9)


class _PowerRecorder:
    """A layer's band chooser during calibration: adds the input's power spectrum to a running
    sum (float64) and answers the full band."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.power: torch.Tensor | None = None
        self.n: tuple[int, ...] | None = None

    def __call__(self, x_pad: torch.Tensor, n: tuple[int, ...]) -> Band:
        n = tuple(n)
        if self.n is not None and self.n != n:
            raise ValueError(
                f"calibrate: layer {self.name!r} saw FFT lengths {self.n} and {n}: the batches "
                "have different input lengths; calibrate with one length"
            )
        dims = tuple(range(-len(n), 0))
        spectrum = torch.fft.rfftn(x_pad.detach().to(torch.float64), s=n, dim=dims)
        power = power_spectrum(spectrum, n)
        self.power = power if self.power is None else self.power + power
        self.n = n
        return band_for_rate(n, 0.0)


def _inputs(batch: object) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(
        "calibrate: each batch must be an input tensor or a (inputs, ...) tuple/list; "
        f"got {type(batch).__name__}"
    )


def measure_spectra(
    model: nn.Module, batches: Iterable[object], *, progress: bool = True
) -> dict[str, tuple[torch.Tensor, tuple[int, ...]]]:
    """Accumulated input power spectrum of every band-limited layer over ``batches``.

    Args:
        model: a model with band-limited layers.
        batches: input tensors, or tuples/lists whose first element is the input (a
            ``DataLoader`` works); moved to the device of the model's first parameter.
        progress: a tqdm bar on stderr.

    Returns:
        ``{layer name: (power, n)}``: ``power`` is float64 ``[nH, nW//2+1]`` (2D) or
        ``[n//2+1]`` (1D) on the model's device (see :func:`bltriton.spectral.power_spectrum`).
    """
    from tqdm.auto import tqdm

    layers = band_limited_layers(model)
    if not layers:
        raise ValueError("calibrate: model has no band-limited layers; convert it first (bltriton.convert)")
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    recorders = {name: _PowerRecorder(name) for name, _ in layers}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    try:
        for name, layer in layers:
            layer._band_override = recorders[name]
        count = 0
        with torch.no_grad():
            for batch in tqdm(batches, desc="calibrate", unit="batch", disable=not progress, leave=False):
                x = _inputs(batch)
                model(x.to(device) if device is not None else x)
                count += 1
    finally:
        for _, layer in layers:
            layer._band_override = None
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    if count == 0:
        raise ValueError("calibrate: batches is empty; pass at least one batch")
    missing = [name for name, r in recorders.items() if r.power is None]
    if missing:
        raise ValueError(f"calibrate: layers {missing} were not called by the model's forward")
    return {name: (r.power, r.n) for name, r in recorders.items()}  # type: ignore[misc]


@dataclass(frozen=True)
class LayerCalibration:
    """What :func:`calibrate` found for one layer.

    Attributes:
        name: qualified layer name (as ``convert`` takes it).
        n: FFT lengths of the layer's input.
        band: the smallest band holding the requested energy.
        rate: the ``compress_rate`` giving ``band``.
        energy_kept: fraction of the measured energy ``band`` holds.
        energy_at: fraction kept at each of :data:`TABLE_RATES`.
    """

    name: str
    n: tuple[int, ...]
    band: Band
    rate: float
    energy_kept: float
    energy_at: dict[float, float]


def _layer_calibration(
    name: str, power: torch.Tensor, n: tuple[int, ...], energy: float, levels: int | None
) -> LayerCalibration:
    power = power.double().cpu()
    band = band_for_power(power, n, energy)
    if levels is not None:
        band = quantize_band(band, levels)
    shown = [band_for_rate(n, r) for r in TABLE_RATES]
    held = band_energies(power, n, [*shown, band, band_for_rate(n, 0.0)])
    total = float(held[-1]) or 1.0
    return LayerCalibration(
        name=name,
        n=n,
        band=band,
        rate=rate_for_band(band),
        energy_kept=float(held[-2]) / total,
        energy_at={r: float(h) / total for r, h in zip(TABLE_RATES, held)},
    )


def calibration_table(layers: Sequence[LayerCalibration], energy: float) -> str:
    """The per-layer table :func:`calibrate` prints (plain text)."""
    head = ["layer", "n", *(f"E@r={r:g}" for r in TABLE_RATES), "rate", "kept", f"E kept (>= {energy:g})"]
    rows = [
        [
            c.name,
            "x".join(map(str, c.n)),
            *(f"{c.energy_at[r]:.4f}" for r in TABLE_RATES),
            f"{c.rate:g}",
            f"{c.band.kept_fraction:.3f}",
            f"{c.energy_kept:.4f}",
        ]
        for c in layers
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), *(fmt.format(*r) for r in rows)])


def calibrate(
    model: nn.Module,
    batches: Iterable[object],
    energy: float = 0.99,
    *,
    levels: int | None = DEFAULT_LEVELS,
    apply: bool = True,
    progress: bool = True,
    report: TextIO | bool | None = True,
    details: list[LayerCalibration] | None = None,
) -> dict[str, float]:
    """Choose a fixed ``compress_rate`` per band-limited layer keeping ``energy`` of its input.

    Args:
        model: a converted model (its band-limited layers are calibrated).
        batches: a few batches: input tensors or ``(inputs, ...)`` tuples (a ``DataLoader``).
        energy: fraction of each layer's input spectral energy to keep, in ``(0, 1]``.
        levels: round each band up to one of ``levels`` fixed bands
            (:func:`bltriton.spectral.quantize_band`, as the energy mode does; it still holds
            ``>= energy``); ``None`` keeps the smallest band. On GunPoint the exact band of the
            first layer kept 15 % of the spectrum and cost 9 points of accuracy (89.1 % against
            98.0 % at rate 0, 3 seeds); rounded up to 25 % it matched the energy mode.
        apply: set the rates on the layers (leaving energy mode); otherwise only return them.
        progress: a tqdm bar on stderr while the batches run.
        report: where to print the per-layer table (``True``: stdout; ``None``/``False``: nowhere).
        details: if a list is given, one :class:`LayerCalibration` per layer is appended.

    Returns:
        ``{layer name: rate}``, usable as ``convert(model, compress_rate=rates)``.
    """
    energy = check_energy(energy)
    spectra = measure_spectra(model, batches, progress=progress)
    found = [_layer_calibration(name, power, n, energy, levels) for name, (power, n) in spectra.items()]
    if apply:
        for name, layer in band_limited_layers(model):
            layer.energy = None
            layer._energy_state = None
            layer.compress_rate = next(c.rate for c in found if c.name == name)
    if report:
        print(calibration_table(found, energy), file=sys.stdout if report is True else report)
    if details is not None:
        details.extend(found)
    return {c.name: c.rate for c in found}


# --------------------------------------------------------------------------------------------
# python -m bltriton calibrate
# --------------------------------------------------------------------------------------------


def _load_target(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model must be 'fcn', 'resnet' or 'module:function'; got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model {spec}: cannot import: {e}") from None
    out = fn()
    model, batches = out if isinstance(out, tuple) else (out, None)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec}: returned {type(model).__name__}, expected an nn.Module")
    return model, batches


def _main(args: argparse.Namespace) -> int:
    from bltriton import convert
    from bltriton._cli import resolve_device
    from bltriton.demo.data import load_dataset
    from bltriton.demo.models import build_model

    try:
        check_energy(args.energy)
        if args.levels < 0:
            raise ValueError(f"--levels must be >= 0 (0: exact bands); got {args.levels}")
        if args.batches < 1 or args.batch_size < 1:
            raise ValueError("--batches and --batch-size must be at least 1")
        device = resolve_device(args.device)
        batches = None
        if args.model in ("fcn", "resnet"):
            ds = load_dataset(args.dataset or "GunPoint")
            want = 1 if args.model == "fcn" else 2
            if ds.spatial_dims != want:
                raise ValueError(f"--model {args.model} needs {want}D data; {ds.name} is {ds.spatial_dims}D")
            torch.manual_seed(args.seed)
            model = build_model(ds.spatial_dims, ds.in_channels, ds.num_classes, width=args.width)
        else:
            model, batches = _load_target(args.model)
            ds = load_dataset(args.dataset) if args.dataset else None
        if batches is None:
            if ds is None:
                raise ValueError("--dataset is needed when the model function returns no batches")
            X = torch.from_numpy(ds.X_train)
            perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(args.seed))
            batches = [X[perm[i * args.batch_size : (i + 1) * args.batch_size]] for i in range(args.batches)]
            batches = [b for b in batches if len(b)]
        model = model.to(device)
        if not band_limited_layers(model):
            convert(model, compress_rate=0.0)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    levels = None if args.levels == 0 else args.levels
    rates = calibrate(model, batches, args.energy, levels=levels, progress=not args.no_progress)
    print(json.dumps(rates))
    if args.json:
        args.json.write_text(json.dumps(rates, indent=2) + "\n", encoding="utf-8")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` subcommand."""
    from pathlib import Path

    p = subparsers.add_parser(
        "calibrate",
        help="choose a fixed compress rate per layer keeping a fraction of the spectral energy",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "--model",
        default="fcn",
        help="'fcn' or 'resnet' (the demo's models, at init), or 'module:function' returning a "
        "model or (model, batches) (default: fcn)",
    )
    p.add_argument("--dataset", help="bundled set whose training data feed the model (default GunPoint)")
    p.add_argument("--energy", type=float, default=0.99, help="energy to keep per layer (default 0.99)")
    p.add_argument(
        "--levels",
        type=int,
        default=DEFAULT_LEVELS,
        help=f"round bands up to this many fixed bands (default {DEFAULT_LEVELS}; 0: exact)",
    )
    p.add_argument("--batches", type=int, default=4, help="batches to run (default 4)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per batch (default 32)")
    p.add_argument("--width", type=float, default=0.25, help="width of the demo model (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seeds the model init and the batch draw")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--json", type=Path, help="also write the {layer: rate} dict to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
