"""Plots of the demo: accuracy against the measured kept fraction, and cost (time, memory) against it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bltriton.demo.report import Summary


def plots(summaries: Sequence[Summary], out: Path, cpu: str = "") -> dict[str, Path]:
    """``accuracy_vs_kept.png`` and ``cost_vs_kept.png`` (time per epoch with its multiple of the
    plain model's, and saved-for-backward bytes under both save policies) in ``out``; ``cpu``
    names the machine in the cost plot's title."""
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
    ncols = 3 if with_cuda else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.6 * ncols, 4.4))
    _time_panel(axes[0], summaries, datasets)
    _memory_panel(axes[1], summaries, datasets)
    if with_cuda:
        _series_panel(axes[2], summaries, datasets, "cuda_peak_bytes", 1 / 2**20)
        axes[2].set_title("CUDA peak per step (MiB)")
    machine = f" on {cpu}" if cpu else ""
    fig.suptitle(f"Cost vs band{machine} (dotted: plain nn.Conv)", fontsize=10)
    fig.tight_layout()
    files["plot_cost"] = out / "cost_vs_kept.png"
    fig.savefig(files["plot_cost"], dpi=120)
    plt.close(fig)
    return files


def _points(summaries: Sequence[Summary], name: str, attr: str) -> list[tuple[float, float, Summary]]:
    return sorted(
        (
            (s.kept_mean, float(getattr(s, attr)), s)
            for s in summaries
            if s.dataset == name and s.mode in ("rate", "energy") and getattr(s, attr) is not None
        ),
        key=lambda p: p[:2],
    )


def _dense(summaries: Sequence[Summary], name: str) -> Summary | None:
    return next((s for s in summaries if s.dataset == name and s.mode == "dense"), None)


def _series_panel(ax, summaries, datasets, attr: str, scale: float, ls: str = "-", suffix: str = "") -> None:
    for i, name in enumerate(datasets):
        pts = _points(summaries, name, attr)
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] * scale for p in pts],
                marker="o",
                ls=ls,
                color=f"C{i}",
                label=name + suffix,
            )
        dense = _dense(summaries, name)
        if dense is not None and getattr(dense, attr) is not None and not suffix:
            ax.axhline(getattr(dense, attr) * scale, color=f"C{i}", lw=0.8, ls=":")
    ax.set_xlabel("measured kept fraction (mean over layers)")
    ax.grid(alpha=0.3)


def _time_panel(ax, summaries, datasets) -> None:
    """Time per epoch against the band; each point labelled with its multiple of the plain
    model's epoch, in red where the band does not pay (at or above 1x)."""
    _series_panel(ax, summaries, datasets, "epoch_time_s", 1.0)
    slower = False
    for name in datasets:
        for x, y, s in _points(summaries, name, "epoch_time_s"):
            if s.time_vs_dense is None:
                continue
            pays = s.time_vs_dense < 1
            slower |= not pays
            ax.annotate(
                f"{s.time_vs_dense:.2f}×",
                (x, y),
                textcoords="offset points",
                xytext=(4, 5),
                fontsize=7,
                color="green" if pays else "red",
            )
    ax.set_title("time per epoch (s); labels: × plain", fontsize=10)
    if slower:
        ax.text(
            0.01,
            0.99,
            "red: at or above the plain epoch:\nthe band does not pay here",
            transform=ax.transAxes,
            va="top",
            fontsize=7,
            color="red",
        )
    ax.legend(fontsize=7, loc="lower right")


def _memory_panel(ax, summaries, datasets) -> None:
    """What the convolutions save for backward: the default ``save='input'`` (solid: the plain
    model's bytes at every band) and ``save='band'`` (dashed: falls with the band)."""
    _series_panel(ax, summaries, datasets, "saved_bytes_conv", 1 / 1024, suffix=" save='input'")
    _series_panel(ax, summaries, datasets, "saved_bytes_conv_band", 1 / 1024, ls="--", suffix=" save='band'")
    for i, name in enumerate(datasets):
        dense = _dense(summaries, name)
        if dense is not None:
            ax.axhline(dense.saved_bytes_conv / 1024, color=f"C{i}", lw=0.8, ls=":")
    ax.set_ylim(bottom=0)
    ax.set_title("saved for backward by the convs per step (KiB)", fontsize=10)
    ax.legend(fontsize=7)
