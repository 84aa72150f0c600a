"""Training, evaluation and measurement for the band-limiting demo.

One *run* trains one model (a dataset, a band setting, a seed) and measures it:

* test accuracy at its own band and, for models trained at a fixed rate, at every other rate of
  the grid (``set_band``; the cross-rate matrix); the dense baseline is converted after training
  (``convert`` keeps the weights) to show band-limiting applied at inference only;
* the measured kept fraction of each band-limited layer (averaged over the test batches);
* training time per epoch: the median over the epochs after the first (which pays warm-up
  costs); the median, because a shared machine makes single epochs slow now and then; as wall
  time and as the process's CPU time (:mod:`bltriton.demo.report` flags runs where they part);
* the bytes autograd saves for backward in one training step at the training batch size, for the
  whole model and for the convolutions alone (``bltriton.utils.SavedTensorBytes``), with the
  layers' default ``save='input'`` (a reference to the input, which the preceding ReLU keeps
  anyway: the plain model's bytes at every band) and, for band-limited models, once more with
  ``save='band'`` (the input band instead: it falls with the band);
* on CUDA, the peak memory of that step (``torch.cuda.max_memory_allocated``).

Band settings: ``("dense", None)`` (plain ``nn.Conv``), ``("rate", r)`` (fixed rate),
``("energy", E)`` (energy mode, :mod:`bltriton.energy`) and ``("calibrated", E)``: the rate-0
model calibrated on a few training batches with :func:`bltriton.calibrate` before training, then
trained at those fixed per-layer rates.

:func:`run_grid` runs every combination and hands each finished run to a callback
(:class:`bltriton.demo.report.RunLog` writes it at once); :mod:`bltriton.demo.report` writes
the tables, :mod:`bltriton.demo.plots` the plots.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bltriton._cli import resolve_device
from bltriton.demo.data import Dataset
from bltriton.demo.models import band_layers, build_model, conv_layers, set_band
from bltriton.utils import SavedTensorBytes

#: Setting of a run: ("dense", None) plain nn.Conv; ("rate", r) fixed compress rate;
#: ("energy", E) energy mode; ("calibrated", E) fixed per-layer rates from bltriton.calibrate.
Setting = tuple[str, float | None]

#: Calibration of a ``("calibrated", E)`` run: this many training batches of this size (fewer
#: if the set is smaller), drawn with the run's seed.
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH_SIZE = 64


def setting_label(setting: Setting) -> str:
    """Short label of a band setting: ``dense``, ``r=0.25``, ``E=0.99``, ``cal E=0.99``."""
    mode, value = setting
    if mode == "dense":
        return "dense"
    if mode == "calibrated":
        return f"cal E={value:g}"
    return f"r={value:g}" if mode == "rate" else f"E={value:g}"


@dataclass
class TrainConfig:
    """Hyper-parameters shared by the runs of a grid."""

    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 0.0
    width: float = 0.5
    device: str = "cpu"
    backend: str | None = None
    algorithm: str | None = None
    eval_batch_size: int = 512


@dataclass
class RunResult:
    """Everything measured for one trained model."""

    dataset: str
    setting: str
    mode: str
    value: float | None
    seed: int
    test_acc: float
    train_acc: float
    final_loss: float
    kept_per_layer: list[float]
    epoch_time_s: float
    epoch_cpu_s: float
    saved_bytes_step: int
    saved_bytes_conv: int
    cuda_peak_bytes: int | None
    cross_acc: dict[str, float] = field(default_factory=dict)
    calib_rates: dict[str, float] = field(default_factory=dict)
    calib_time_s: float | None = None
    saved_bytes_step_band: int | None = None
    saved_bytes_conv_band: int | None = None

    @property
    def loaded(self) -> bool:
        """Whether the run waited for the CPU (see :data:`LOADED_RATIO`): its times are noise."""
        return is_loaded(self.epoch_time_s, self.epoch_cpu_s)

    @property
    def kept_mean(self) -> float:
        vals = [k for k in self.kept_per_layer if not math.isnan(k)]
        return statistics.fmean(vals) if vals else 1.0


#: A CPU run whose wall time per epoch exceeds this multiple of its process CPU time per epoch
#: spent that much time waiting for the cores (the process, busy, uses at least one core):
#: the machine was loaded and its times compare badly with other runs'.
LOADED_RATIO = 1.5


def is_loaded(wall_s: float, cpu_s: float) -> bool:
    """Wall time beyond :data:`LOADED_RATIO` × CPU time (NaN-safe: unknown is not loaded)."""
    return bool(cpu_s > 0 and wall_s > LOADED_RATIO * cpu_s)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_model(ds: Dataset, setting: Setting, cfg: TrainConfig) -> nn.Module:
    mode, value = setting
    kwargs: dict[str, object] = {"width": cfg.width, "backend": cfg.backend, "algorithm": cfg.algorithm}
    if mode == "dense":
        kwargs["band"] = False
    elif mode == "rate":
        kwargs["compress_rate"] = value
    elif mode == "energy":
        kwargs["energy"] = value
    elif mode == "calibrated":
        kwargs["compress_rate"] = 0.0  # calibrate() sets the rates
    else:
        raise ValueError(f"unknown band setting {setting!r}")
    return build_model(ds.spatial_dims, ds.in_channels, ds.num_classes, **kwargs)


def calibrate_model(
    model: nn.Module, X: torch.Tensor, energy: float, seed: int
) -> tuple[dict[str, float], float]:
    """Calibrate ``model``'s layers on :data:`CALIBRATION_BATCHES` shuffled training batches.

    Returns:
        ``({layer: rate}, seconds taken)``.
    """
    from bltriton import calibrate

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X), generator=gen).to(X.device)
    size = CALIBRATION_BATCH_SIZE
    batches = [X[perm[i : i + size]] for i in range(0, min(len(X), CALIBRATION_BATCHES * size), size)]
    t0 = time.perf_counter()
    rates = calibrate(model, batches, energy, progress=False, report=None)
    return rates, time.perf_counter() - t0


@torch.no_grad()
def evaluate(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> tuple[float, list[float]]:
    """Accuracy of ``model`` (eval mode) and each band layer's kept fraction, batch-weighted.

    Args:
        model: classifier returning logits ``[n, classes]``.
        X: inputs ``[n, ...]`` on the model's device.
        y: int64 labels ``[n]``.

    Returns:
        ``(accuracy, kept_per_layer)``; ``kept_per_layer`` is empty for a model without
        band-limited layers.
    """
    was_training = model.training
    model.eval()
    layers = [m for _, m in band_layers(model)]
    kept = np.zeros(len(layers))
    correct = 0
    for start in range(0, len(y), batch_size):
        xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        correct += int((model(xb).argmax(dim=1) == yb).sum())
        for i, m in enumerate(layers):
            k = m.kept_fraction
            kept[i] += (math.nan if k is None else float(k)) * len(yb)
    model.train(was_training)
    return correct / len(y), [float(k) / len(y) for k in kept]


def train_model(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[list[float], float]:
    """Train with Adam and a cosine learning-rate schedule, cross-entropy loss.

    Args:
        model: classifier on ``X``'s device.
        X: training inputs ``[n, ...]``.
        y: int64 labels ``[n]``.
        cfg: epochs, batch size, learning rate.
        seed: seeds the shuffling.
        progress: called after each epoch with ``(epoch, mean loss)``.

    Returns:
        ``(epoch_wall_s, epoch_cpu_s, last_epoch_mean_loss)``: per epoch, wall time and the
        process's CPU time (all threads).
    """
    device = X.device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    bs = max(2, min(cfg.batch_size, n))
    times: list[float] = []
    cpu_times: list[float] = []
    mean_loss = math.nan
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        total, count = 0.0, 0
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        mean_loss = total / max(1, count)
        if progress is not None:
            progress(epoch, mean_loss)
    return times, cpu_times, mean_loss


def measure_step(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int, save: str | None = None
) -> tuple[int, int, int | None]:
    """Bytes saved for backward in one training step, for the model and for its convolutions.

    Runs forward + backward on copies of ``model`` (batch-norm statistics and gradients of the
    original stay untouched) on the first ``batch_size`` samples, twice: once under one
    ``SavedTensorBytes`` for the whole model (which also gives the CUDA peak), once with one
    ``SavedTensorBytes`` around each convolution. Two passes because saved-tensor hooks do not
    nest (only the innermost pair sees a tensor). A plain ``nn.Conv`` saves its input, which
    usually shares storage with the previous ReLU's saved output; a band-limited layer saves
    the band of the input and filter spectra.

    Args:
        save: the band-limited layers' save policy for the measurement (``None``: as they are).

    Returns:
        ``(saved_bytes_model, saved_bytes_convolutions, cuda_peak_bytes or None)``.
    """
    xb, yb = X[:batch_size], y[:batch_size]
    device = X.device

    def copy_with_policy() -> nn.Module:
        probe = copy.deepcopy(model).train()
        if save is not None:
            for _, m in band_layers(probe):
                m.save = save
        return probe

    probe = copy_with_policy()
    peak = None
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    with SavedTensorBytes() as saved:
        loss = nn.functional.cross_entropy(probe(xb), yb)
    loss.backward()
    if device.type == "cuda":
        _sync(device)
        peak = int(torch.cuda.max_memory_allocated(device))
    del probe, loss

    probe = copy_with_policy()
    per_conv: list[SavedTensorBytes] = []

    def pre_hook(module: nn.Module, args: object) -> None:
        per_conv.append(SavedTensorBytes())
        per_conv[-1].__enter__()

    def post_hook(module: nn.Module, args: object, output: object) -> None:
        per_conv[-1].__exit__(None, None, None)

    handles = []
    for _, m in conv_layers(probe):
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    try:
        loss = nn.functional.cross_entropy(probe(xb), yb)
    finally:
        for h in handles:
            h.remove()
    loss.backward()
    return saved.nbytes, sum(c.nbytes for c in per_conv), peak


def run_one(
    ds: Dataset,
    setting: Setting,
    seed: int,
    cfg: TrainConfig,
    cross_settings: Sequence[Setting] = (),
    progress: Callable[[int, float], None] | None = None,
) -> RunResult:
    """Train one model on ``ds`` at ``setting`` and measure it (see the module docstring)."""
    device = resolve_device(cfg.device)
    seed_everything(seed)
    model = _make_model(ds, setting, cfg).to(device)
    X_train = torch.from_numpy(ds.X_train).to(device)
    y_train = torch.from_numpy(ds.y_train).to(device)
    X_test = torch.from_numpy(ds.X_test).to(device)
    y_test = torch.from_numpy(ds.y_test).to(device)

    calib_rates: dict[str, float] = {}
    calib_time = None
    with warnings.catch_warnings():
        # nn.Conv1d's own note on 'same' padding with the FCN's even kernel (8): harmless here
        warnings.filterwarnings("ignore", message="Using padding='same'", category=UserWarning)
        if setting[0] == "calibrated":
            calib_rates, calib_time = calibrate_model(model, X_train, float(setting[1]), seed)
        times, cpu_times, loss = train_model(model, X_train, y_train, cfg, seed, progress)
    test_acc, kept = evaluate(model, X_test, y_test, cfg.eval_batch_size)
    train_acc, _ = evaluate(model, X_train, y_train, cfg.eval_batch_size)
    bs = max(2, min(cfg.batch_size, len(ds.y_train)))
    saved, saved_conv, peak = measure_step(model, X_train, y_train, bs)
    saved_band = saved_conv_band = None
    if band_layers(model):
        saved_band, saved_conv_band, _ = measure_step(model, X_train, y_train, bs, save="band")

    mode, value = setting
    cross: dict[str, float] = {}
    if cross_settings and mode in ("rate", "dense"):
        if mode == "dense":  # band-limit the trained dense model at inference only
            from bltriton import convert

            model = convert(
                copy.deepcopy(model), compress_rate=0.0, backend=cfg.backend, algorithm=cfg.algorithm
            )
        for other in cross_settings:
            if other[0] != "rate":
                continue
            set_band(model, rate=other[1])
            cross[setting_label(other)] = evaluate(model, X_test, y_test, cfg.eval_batch_size)[0]
        if mode == "rate":
            set_band(model, rate=value)

    def steady(values: list[float]) -> float:
        values = values[1:] if len(values) > 1 else values
        return statistics.median(values) if values else math.nan

    return RunResult(
        dataset=ds.name,
        setting=setting_label(setting),
        mode=mode,
        value=value,
        seed=seed,
        test_acc=test_acc,
        train_acc=train_acc,
        final_loss=loss,
        kept_per_layer=kept,
        epoch_time_s=steady(times),
        epoch_cpu_s=steady(cpu_times),
        saved_bytes_step=saved,
        saved_bytes_conv=saved_conv,
        cuda_peak_bytes=peak,
        cross_acc=cross,
        calib_rates=calib_rates,
        calib_time_s=calib_time,
        saved_bytes_step_band=saved_band,
        saved_bytes_conv_band=saved_conv_band,
    )


def run_grid(
    datasets: Sequence[Dataset],
    settings: Sequence[Setting],
    seeds: Sequence[int],
    cfg: TrainConfig,
    *,
    configs: dict[str, TrainConfig] | None = None,
    show_progress: bool = True,
    cross: bool = True,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Train and measure every (dataset, setting, seed).

    Args:
        datasets: the sets.
        settings: band settings, e.g. ``[("dense", None), ("rate", 0.0), ("rate", 0.5)]``.
        seeds: one run per seed.
        cfg: hyper-parameters; ``configs[name]`` overrides them for dataset ``name``.
        show_progress: progress on stderr: where stderr is a terminal, tqdm bars (runs, and epochs
            of the current run); elsewhere (a log file, a pipe, CI) one line per finished run, so
            a redirected run writes a few KiB instead of a bar redrawn at every epoch (about
            9,200 lines, 0.9 MB, for the default demo).
        cross: evaluate each fixed-rate (and dense) model at every rate of ``settings``.
        on_result: called with each run as soon as it finishes (e.g. ``RunLog.add``).
    """
    from tqdm.auto import tqdm

    configs = configs or {}
    jobs = [(ds, s, seed) for ds in datasets for s in settings for seed in seeds]
    results: list[RunResult] = []
    bars = show_progress and _is_terminal(sys.stderr)
    outer = tqdm(jobs, desc="runs", unit="run", disable=not bars, dynamic_ncols=True)
    start = time.perf_counter()
    for i, (ds, setting, seed) in enumerate(outer, 1):
        c = configs.get(ds.name, cfg)
        label = f"{ds.name} {setting_label(setting)} seed {seed}"
        outer.set_postfix_str(label)
        with tqdm(total=c.epochs, desc="epochs", leave=False, disable=not bars, unit="ep") as bar:

            def tick(epoch: int, loss: float, bar=bar) -> None:
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)

            results.append(run_one(ds, setting, seed, c, settings if cross else (), tick))
        if show_progress and not bars:
            elapsed = time.perf_counter() - start
            print(f"run {i}/{len(jobs)} done: {label} ({elapsed:.0f} s so far)", file=sys.stderr, flush=True)
        if on_result is not None:
            on_result(results[-1])
    return results


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
