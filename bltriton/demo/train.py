"""Training, evaluation, measurement and reporting for the band-limiting demo.

One *run* trains one model (a dataset, a band setting, a seed) and measures it:

* test accuracy at its own band and, for models trained at a fixed rate, at every other rate of
  the grid (``set_band``; the cross-rate matrix); the dense baseline is converted after training
  (``convert`` keeps the weights) to show band-limiting applied at inference only;
* the measured kept fraction of each band-limited layer (averaged over the test batches);
* training time per epoch: the median over the epochs after the first (which pays warm-up
  costs); the median, because a shared machine makes single epochs slow now and then;
* the bytes autograd saves for backward in one training step at the training batch size, for the
  whole model and for the convolutions alone (``bltriton.utils.SavedTensorBytes``);
* on CUDA, the peak memory of that step (``torch.cuda.max_memory_allocated``).

:func:`run_grid` runs every combination and :func:`write_report` writes the markdown and CSV
tables, the cross-rate matrix and the plots.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import platform
import random
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bltriton.demo.data import Dataset
from bltriton.demo.models import band_layers, build_model, conv_layers, set_band
from bltriton.utils import SavedTensorBytes

#: Setting of a run: ("dense", None) plain nn.Conv; ("rate", r) fixed compress rate;
#: ("energy", E) energy-preserving band.
Setting = tuple[str, float | None]


def setting_label(setting: Setting) -> str:
    """Short label of a band setting: ``dense``, ``r=0.25``, ``E=0.99``."""
    mode, value = setting
    if mode == "dense":
        return "dense"
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
    saved_bytes_step: int
    saved_bytes_conv: int
    cuda_peak_bytes: int | None
    cross_acc: dict[str, float] = field(default_factory=dict)

    @property
    def kept_mean(self) -> float:
        vals = [k for k in self.kept_per_layer if not math.isnan(k)]
        return statistics.fmean(vals) if vals else 1.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_model(ds: Dataset, setting: Setting, cfg: TrainConfig) -> nn.Module:
    mode, value = setting
    kwargs: dict[str, object] = {"width": cfg.width, "backend": cfg.backend}
    if mode == "dense":
        kwargs["band"] = False
    elif mode == "rate":
        kwargs["compress_rate"] = value
    else:
        kwargs["energy"] = value
    return build_model(ds.spatial_dims, ds.in_channels, ds.num_classes, **kwargs)


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
        ``(epoch_times_s, last_epoch_mean_loss)``.
    """
    device = X.device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    bs = max(2, min(cfg.batch_size, n))
    times: list[float] = []
    mean_loss = math.nan
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        _sync(device)
        t0 = time.perf_counter()
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
        mean_loss = total / max(1, count)
        if progress is not None:
            progress(epoch, mean_loss)
    return times, mean_loss


def measure_step(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[int, int, int | None]:
    """Bytes saved for backward in one training step, for the model and for its convolutions.

    Runs forward + backward on copies of ``model`` (batch-norm statistics and gradients of the
    original stay untouched) on the first ``batch_size`` samples, twice: once under one
    ``SavedTensorBytes`` for the whole model (which also gives the CUDA peak), once with one
    ``SavedTensorBytes`` around each convolution. Two passes because saved-tensor hooks do not
    nest (only the innermost pair sees a tensor). A plain ``nn.Conv`` saves its input, which
    usually shares storage with the previous ReLU's saved output; a band-limited layer saves
    the band of the input and filter spectra.

    Returns:
        ``(saved_bytes_model, saved_bytes_convolutions, cuda_peak_bytes or None)``.
    """
    xb, yb = X[:batch_size], y[:batch_size]
    device = X.device

    probe = copy.deepcopy(model).train()
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

    probe = copy.deepcopy(model).train()
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

    with warnings.catch_warnings():
        # nn.Conv1d's own note on 'same' padding with the FCN's even kernel (8): harmless here
        warnings.filterwarnings("ignore", message="Using padding='same'", category=UserWarning)
        times, loss = train_model(model, X_train, y_train, cfg, seed, progress)
    test_acc, kept = evaluate(model, X_test, y_test, cfg.eval_batch_size)
    train_acc, _ = evaluate(model, X_train, y_train, cfg.eval_batch_size)
    bs = max(2, min(cfg.batch_size, len(ds.y_train)))
    saved, saved_conv, peak = measure_step(model, X_train, y_train, bs)

    mode, value = setting
    cross: dict[str, float] = {}
    if cross_settings and mode in ("rate", "dense"):
        if mode == "dense":  # band-limit the trained dense model at inference only
            from bltriton import convert

            model = convert(copy.deepcopy(model), compress_rate=0.0, backend=cfg.backend)
        for other in cross_settings:
            if other[0] != "rate":
                continue
            set_band(model, rate=other[1])
            cross[setting_label(other)] = evaluate(model, X_test, y_test, cfg.eval_batch_size)[0]
        if mode == "rate":
            set_band(model, rate=value)

    steady = times[1:] if len(times) > 1 else times
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
        epoch_time_s=statistics.median(steady) if steady else math.nan,
        saved_bytes_step=saved,
        saved_bytes_conv=saved_conv,
        cuda_peak_bytes=peak,
        cross_acc=cross,
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
) -> list[RunResult]:
    """Train and measure every (dataset, setting, seed).

    Args:
        datasets: the sets.
        settings: band settings, e.g. ``[("dense", None), ("rate", 0.0), ("rate", 0.5)]``.
        seeds: one run per seed.
        cfg: hyper-parameters; ``configs[name]`` overrides them for dataset ``name``.
        show_progress: tqdm bars on stderr (runs, and epochs of the current run).
        cross: evaluate each fixed-rate (and dense) model at every rate of ``settings``.
    """
    from tqdm.auto import tqdm

    configs = configs or {}
    jobs = [(ds, s, seed) for ds in datasets for s in settings for seed in seeds]
    results: list[RunResult] = []
    outer = tqdm(jobs, desc="runs", unit="run", disable=not show_progress, dynamic_ncols=True)
    for ds, setting, seed in outer:
        c = configs.get(ds.name, cfg)
        outer.set_postfix_str(f"{ds.name} {setting_label(setting)} seed {seed}")
        with tqdm(total=c.epochs, desc="epochs", leave=False, disable=not show_progress, unit="ep") as bar:

            def tick(epoch: int, loss: float, bar=bar) -> None:
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)

            results.append(run_one(ds, setting, seed, c, settings if cross else (), tick))
    return results


# ----------------------------------------------------------------------------------- reporting


@dataclass
class Summary:
    """Runs of one (dataset, setting) aggregated over seeds."""

    dataset: str
    setting: str
    mode: str
    value: float | None
    n_seeds: int
    acc_mean: float
    acc_std: float
    kept_per_layer: list[float]
    kept_mean: float
    epoch_time_s: float
    saved_bytes_step: float
    saved_bytes_conv: float
    cuda_peak_bytes: float | None
    cross_acc_mean: dict[str, float]
    cross_acc_std: dict[str, float]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: Sequence[RunResult]) -> list[Summary]:
    """Group runs by (dataset, setting), in the order they first appear."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.setting), []).append(r)
    out = []
    for (dataset, setting), runs in groups.items():
        acc_mean, acc_std = _mean_std([r.test_acc for r in runs])
        n_layers = len(runs[0].kept_per_layer)
        kept = [statistics.fmean(r.kept_per_layer[i] for r in runs) for i in range(n_layers)]
        cross_keys = list(runs[0].cross_acc)
        cross = {k: _mean_std([r.cross_acc[k] for r in runs if k in r.cross_acc]) for k in cross_keys}
        peaks = [r.cuda_peak_bytes for r in runs if r.cuda_peak_bytes is not None]
        out.append(
            Summary(
                dataset=dataset,
                setting=setting,
                mode=runs[0].mode,
                value=runs[0].value,
                n_seeds=len(runs),
                acc_mean=acc_mean,
                acc_std=acc_std,
                kept_per_layer=kept,
                kept_mean=statistics.fmean(r.kept_mean for r in runs),
                epoch_time_s=statistics.fmean(r.epoch_time_s for r in runs),
                saved_bytes_step=statistics.fmean(r.saved_bytes_step for r in runs),
                saved_bytes_conv=statistics.fmean(r.saved_bytes_conv for r in runs),
                cuda_peak_bytes=statistics.fmean(peaks) if peaks else None,
                cross_acc_mean={k: v[0] for k, v in cross.items()},
                cross_acc_std={k: v[1] for k, v in cross.items()},
            )
        )
    return out


def _kib(n: float | None) -> str:
    return "" if n is None else f"{n / 1024:.0f}"


def _acc(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def markdown_tables(summaries: Sequence[Summary]) -> str:
    """The results table (one per dataset) and the cross-rate matrices, as markdown."""
    lines: list[str] = []
    with_cuda = any(s.cuda_peak_bytes is not None for s in summaries)
    for dataset in dict.fromkeys(s.dataset for s in summaries):
        rows = [s for s in summaries if s.dataset == dataset]
        n = max(s.n_seeds for s in rows)
        lines += [f"### {dataset}", ""]
        head = [
            "band",
            "kept fraction per layer",
            "mean kept",
            f"test acc % (mean ± std, {n} seed{'s' if n > 1 else ''})",
            "time/epoch (s)",
            "saved/step, model (KiB)",
            "saved/step, convs (KiB)",
        ]
        if with_cuda:
            head.append("CUDA peak/step (MiB)")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        for s in rows:
            kept = " / ".join(f"{k:.2f}" for k in s.kept_per_layer) or "1 (plain conv)"
            cells = [
                s.setting,
                kept,
                f"{s.kept_mean:.2f}",
                _acc(s.acc_mean, s.acc_std, s.n_seeds),
                f"{s.epoch_time_s:.3f}",
                _kib(s.saved_bytes_step),
                _kib(s.saved_bytes_conv),
            ]
            if with_cuda:
                peak = s.cuda_peak_bytes
                cells.append("" if peak is None else f"{peak / 2**20:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        crossed = [s for s in rows if s.cross_acc_mean]
        if crossed:
            cols = list(crossed[0].cross_acc_mean)
            lines += [
                f"Cross-rate test accuracy % on {dataset} (rows: trained at; columns: evaluated "
                "at; `dense` = trained with nn.Conv, band-limited after training):",
                "",
                "| trained \\ evaluated | " + " | ".join(cols) + " |",
                "|" + "|".join("---" for _ in range(len(cols) + 1)) + "|",
            ]
            for s in crossed:
                cells = [_acc(s.cross_acc_mean[c], s.cross_acc_std[c], s.n_seeds) for c in cols]
                lines.append(f"| {s.setting} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def write_report(
    results: Sequence[RunResult],
    out: Path,
    meta: dict[str, object],
    *,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv``, ``runs.csv``, ``cross_rate.csv``, ``config.json``
    and (with ``plots``) ``accuracy_vs_kept.png`` and ``cost_vs_kept.png`` into ``out``.

    Returns:
        name → path of each file written.
    """
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarize(results)
    files: dict[str, Path] = {}

    md = ["# Band-limited training: accuracy, time and memory against the band", ""]
    md += [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, dict)]
    md += ["", markdown_tables(summaries)]
    files["markdown"] = out / "results.md"
    files["markdown"].write_text("\n".join(md) + "\n", encoding="utf-8")

    files["csv"] = out / "results.csv"
    with files["csv"].open("w", newline="", encoding="utf-8") as f:
        rows = [_summary_row(s) for s in summaries]
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        w.writeheader()
        w.writerows(rows)

    files["runs"] = out / "runs.csv"
    with files["runs"].open("w", newline="", encoding="utf-8") as f:
        fields = [k for k in asdict(results[0]) if k != "cross_acc"] if results else []
        w = csv.writer(f)
        w.writerow([*fields, "kept_mean"])
        for r in results:
            row = asdict(r)
            row["kept_per_layer"] = " ".join(f"{k:.6f}" for k in r.kept_per_layer)
            w.writerow([row[k] if row[k] is not None else "" for k in fields] + [r.kept_mean])

    files["cross"] = out / "cross_rate.csv"
    with files["cross"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "trained", "evaluated", "acc_mean", "acc_std", "n_seeds"])
        for s in summaries:
            for k, v in s.cross_acc_mean.items():
                w.writerow([s.dataset, s.setting, k, f"{v:.6f}", f"{s.cross_acc_std[k]:.6f}", s.n_seeds])

    files["config"] = out / "config.json"
    files["config"].write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")

    if plots and summaries:
        files.update(_plots(summaries, out))
    return files


def _summary_row(s: Summary) -> dict[str, object]:
    return {
        "dataset": s.dataset,
        "setting": s.setting,
        "mode": s.mode,
        "value": "" if s.value is None else s.value,
        "n_seeds": s.n_seeds,
        "acc_mean": f"{s.acc_mean:.6f}",
        "acc_std": f"{s.acc_std:.6f}",
        "kept_mean": f"{s.kept_mean:.6f}",
        "kept_per_layer": " ".join(f"{k:.6f}" for k in s.kept_per_layer),
        "epoch_time_s": f"{s.epoch_time_s:.6f}",
        "saved_bytes_step": f"{s.saved_bytes_step:.0f}",
        "saved_bytes_conv": f"{s.saved_bytes_conv:.0f}",
        "cuda_peak_bytes": "" if s.cuda_peak_bytes is None else f"{s.cuda_peak_bytes:.0f}",
    }


def _plots(summaries: Sequence[Summary], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(s.dataset for s in summaries))
    files: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, name in enumerate(datasets):
        color = f"C{i}"
        for mode, marker, ls in (("rate", "o", "-"), ("energy", "s", "--")):
            pts = sorted(
                (s.kept_mean, s.acc_mean, s.acc_std)
                for s in summaries
                if s.dataset == name and s.mode == mode
            )
            if pts:
                x, y, e = (np.array(v) for v in zip(*pts))
                label = name if mode == "rate" else f"{name} (energy)"
                ax.errorbar(x, 100 * y, 100 * e, marker=marker, ls=ls, color=color, label=label, capsize=3)
        dense = [s for s in summaries if s.dataset == name and s.mode == "dense"]
        if dense:
            ax.axhline(100 * dense[0].acc_mean, color=color, lw=0.8, ls=":")
    ax.set_xlabel("measured kept fraction of the spectrum (mean over layers)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs band (dotted: plain nn.Conv)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["plot_accuracy"] = out / "accuracy_vs_kept.png"
    fig.savefig(files["plot_accuracy"], dpi=120)
    plt.close(fig)

    with_cuda = any(s.cuda_peak_bytes is not None for s in summaries)
    metrics = [
        ("epoch_time_s", "time per epoch (s)", 1.0),
        ("saved_bytes_conv", "saved for backward, convs (KiB)", 1 / 1024),
    ]
    if with_cuda:
        metrics.append(("cuda_peak_bytes", "CUDA peak per step (MiB)", 1 / 2**20))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for ax, (attr, title, scale) in zip(np.atleast_1d(axes), metrics):
        for i, name in enumerate(datasets):
            color = f"C{i}"
            pts = sorted(
                (s.kept_mean, getattr(s, attr))
                for s in summaries
                if s.dataset == name and s.mode in ("rate", "energy") and getattr(s, attr) is not None
            )
            if pts:
                x, y = (np.array(v, dtype=float) for v in zip(*pts))
                ax.plot(x, y * scale, marker="o", color=color, label=name)
            dense = [s for s in summaries if s.dataset == name and s.mode == "dense"]
            if dense and getattr(dense[0], attr) is not None:
                ax.axhline(getattr(dense[0], attr) * scale, color=color, lw=0.8, ls=":")
        ax.set_xlabel("measured kept fraction (mean over layers)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Cost vs band (dotted: plain nn.Conv)")
    fig.tight_layout()
    files["plot_cost"] = out / "cost_vs_kept.png"
    fig.savefig(files["plot_cost"], dpi=120)
    plt.close(fig)
    return files


def environment() -> dict[str, object]:
    """Versions and machine facts recorded next to the results."""
    info: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads",
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        import bltriton

        info["bltriton"] = bltriton.__version__
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(bltriton.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
    except (ImportError, OSError, subprocess.SubprocessError):
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info
