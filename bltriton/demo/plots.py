"""Plots of the demo: accuracy against the measured kept fraction, and cost against it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bltriton.demo.report import Summary


def plots(summaries: Sequence[Summary], out: Path) -> dict[str, Path]:
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
