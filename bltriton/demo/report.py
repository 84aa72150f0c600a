"""Reporting for the demo: summaries over seeds, the markdown and CSV tables, the run log.

A grid's results are written *as each run finishes* (:class:`RunLog`): ``runs.csv`` gains a row,
and ``results.md`` / ``results.csv`` / ``cross_rate.csv`` are rewritten from the runs so far, so
an interrupted grid (Ctrl-C) loses only the run in progress. The plots are drawn at the end
(:mod:`bltriton.demo.plots`).

Time per epoch is measured twice: wall time, and the process's CPU time. On a machine shared
with other work the two part: a run whose wall time exceeds ``LOADED_RATIO`` times its CPU time
waited for the cores, and its times are flagged (``*`` in the tables, ``loaded`` in the CSVs).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bltriton.demo.train import LOADED_RATIO, RunResult


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
    epoch_cpu_s: float
    loaded: bool
    saved_bytes_step: float
    saved_bytes_conv: float
    cuda_peak_bytes: float | None
    cross_acc_mean: dict[str, float]
    cross_acc_std: dict[str, float]
    saved_bytes_step_band: float | None = None
    saved_bytes_conv_band: float | None = None
    #: time per epoch over the plain model's on the same set (``None`` without a dense run)
    time_vs_dense: float | None = None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def summarize(results: Sequence[RunResult]) -> list[Summary]:
    """Group runs by (dataset, setting), in the order they first appear; each band row's time
    per epoch is also given as a multiple of the plain (``dense``) row's on its set."""
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
                epoch_cpu_s=statistics.fmean(r.epoch_cpu_s for r in runs),
                loaded=any(r.loaded for r in runs),
                saved_bytes_step=statistics.fmean(r.saved_bytes_step for r in runs),
                saved_bytes_conv=statistics.fmean(r.saved_bytes_conv for r in runs),
                cuda_peak_bytes=statistics.fmean(peaks) if peaks else None,
                cross_acc_mean={k: v[0] for k, v in cross.items()},
                cross_acc_std={k: v[1] for k, v in cross.items()},
                saved_bytes_step_band=_mean_or_none([r.saved_bytes_step_band for r in runs]),
                saved_bytes_conv_band=_mean_or_none([r.saved_bytes_conv_band for r in runs]),
            )
        )
    dense = {s.dataset: s.epoch_time_s for s in out if s.mode == "dense"}
    for s in out:
        if s.mode != "dense" and dense.get(s.dataset, 0) > 0:
            s.time_vs_dense = s.epoch_time_s / dense[s.dataset]
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
            "CPU time/epoch (s)",
            "time × plain",
            "saved/step, model (KiB)",
            "saved/step, convs (KiB)",
            "convs with save='band' (KiB)",
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
                f"{s.epoch_time_s:.3f}" + ("*" if s.loaded else ""),
                f"{s.epoch_cpu_s:.3f}",
                "" if s.time_vs_dense is None else f"{s.time_vs_dense:.2f}×",
                _kib(s.saved_bytes_step),
                _kib(s.saved_bytes_conv),
                _kib(s.saved_bytes_conv_band),
            ]
            if with_cuda:
                peak = s.cuda_peak_bytes
                cells.append("" if peak is None else f"{peak / 2**20:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if any(s.time_vs_dense is not None for s in rows):
            slower = [s.setting for s in rows if s.time_vs_dense is not None and s.time_vs_dense >= 1]
            lines += [
                "*time × plain*: time per epoch over the plain `nn.Conv` model's on this machine; "
                + (
                    f"at or above 1× the band does not pay here ({', '.join(slower)})."
                    if slower
                    else "every band-limited setting is faster here."
                ),
                "",
            ]
        if any(s.loaded for s in rows):
            lines += [
                f"`*`: wall time above {LOADED_RATIO:g}× the CPU time in at least one seed: the run "
                "waited for a busy machine; compare CPU times.",
                "",
            ]
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
        w.writerow([*fields, "kept_mean", "loaded"])
        for r in results:
            row = asdict(r)
            row["kept_per_layer"] = " ".join(f"{k:.6f}" for k in r.kept_per_layer)
            row["calib_rates"] = " ".join(f"{k}:{v:g}" for k, v in r.calib_rates.items())
            w.writerow([row[k] if row[k] is not None else "" for k in fields] + [r.kept_mean, int(r.loaded)])

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
        from bltriton.demo.plots import plots as draw

        files.update(draw(summaries, out, cpu=str(meta.get("cpu", ""))))
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
        "epoch_cpu_s": f"{s.epoch_cpu_s:.6f}",
        "loaded": int(s.loaded),
        "saved_bytes_step": f"{s.saved_bytes_step:.0f}",
        "saved_bytes_conv": f"{s.saved_bytes_conv:.0f}",
        "saved_bytes_step_band": "" if s.saved_bytes_step_band is None else f"{s.saved_bytes_step_band:.0f}",
        "saved_bytes_conv_band": "" if s.saved_bytes_conv_band is None else f"{s.saved_bytes_conv_band:.0f}",
        "time_vs_dense": "" if s.time_vs_dense is None else f"{s.time_vs_dense:.4f}",
        "cuda_peak_bytes": "" if s.cuda_peak_bytes is None else f"{s.cuda_peak_bytes:.0f}",
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere ``platform``'s), with its widest vector
    ISA: AVX-512, AVX2 or neither."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return f"{name} ({isa})" if isa else name


def environment() -> dict[str, object]:
    """Versions and machine facts recorded next to the results."""
    info: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
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


class RunLog:
    """Writes a grid's results as each run finishes (``add``), so an interrupted grid keeps
    every finished run; ``close`` adds the plots.

    Args:
        out: output folder (created).
        meta: what ``config.json`` and the head of ``results.md`` record.
    """

    def __init__(self, out: Path, meta: dict[str, object]) -> None:
        self.out = out
        self.meta = meta
        self.results: list[RunResult] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")

    def add(self, result: RunResult) -> None:
        """Record one finished run and rewrite the tables (no plots: they take a second)."""
        self.results.append(result)
        write_report(self.results, self.out, self.meta, plots=False)

    def close(self, plots: bool = True) -> dict[str, Path]:
        """Final write (with the plots unless ``plots=False``); returns the files written."""
        return write_report(self.results, self.out, self.meta, plots=plots)
