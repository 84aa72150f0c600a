"""The demo end to end: the ``--quick`` run, learning on real data, the CLI's wiring."""

from __future__ import annotations

import argparse
import csv
import math

import pytest
import torch

from bltriton import BLConv1d
from bltriton.demo import cli, report, train
from bltriton.demo.data import DEV_SETS, load_dataset
from bltriton.demo.models import band_layers, build_fcn, build_resnet, kept_fractions, set_band

RATES = ("r=0", "r=0.25", "r=0.5", "r=0.75")
CALIBRATED = "cal E=0.99"


def _finite(text: str) -> bool:
    return math.isfinite(float(text))


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0

    for name in (
        "results.md",
        "results.csv",
        "runs.csv",
        "cross_rate.csv",
        "config.json",
        "accuracy_vs_kept.png",
        "cost_vs_kept.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_kept.png").read_bytes()[:4] == b"\x89PNG"

    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for dataset in DEV_SETS:  # one row per rate, and the calibrated model
        got = [r for r in rows if r["dataset"] == dataset]
        assert [r["setting"] for r in got] == [*RATES, CALIBRATED]
        for r in got:
            for key in (
                "acc_mean",
                "acc_std",
                "kept_mean",
                "epoch_time_s",
                "epoch_cpu_s",
                "saved_bytes_step",
                "saved_bytes_conv",
            ):
                assert _finite(r[key]), (dataset, key, r[key])
            assert 0.0 <= float(r["acc_mean"]) <= 1.0
            kept = [float(k) for k in r["kept_per_layer"].split()]
            assert len(kept) == 3  # the FCN's three band-limited convolutions
        # measured kept fraction falls with the rate; the convolutions' saved bytes do not grow
        # with it (the default save='input' keeps each layer's input, the same at every rate)
        kept_mean = [float(r["kept_mean"]) for r in got[: len(RATES)]]
        saved = [float(r["saved_bytes_conv"]) for r in got[: len(RATES)]]
        assert kept_mean[0] == pytest.approx(1.0)
        assert kept_mean == sorted(kept_mean, reverse=True)
        assert saved == sorted(saved, reverse=True)
        # save='band' keeps the input band instead: it falls with the band, under the input's
        # bytes from r=0.5 on
        band = [float(r["saved_bytes_conv_band"]) for r in got[: len(RATES)]]
        assert band == sorted(band, reverse=True) and band[-1] < band[0] / 2, band
        assert band[2] < saved[2], (band, saved)

    with (out / "cross_rate.csv").open() as f:
        cross = list(csv.DictReader(f))
    assert len(cross) == len(DEV_SETS) * len(RATES) ** 2
    assert all(_finite(r["acc_mean"]) for r in cross)

    printed = capsys.readouterr().out
    assert "### GunPoint" in printed and str(out.resolve()) in printed
    markdown = (out / "results.md").read_text()
    rows_05 = [line for line in markdown.splitlines() if line.startswith("| r=0.5 |")]
    assert len(rows_05) == 2 * len(DEV_SETS)  # results table + cross-rate matrix


@pytest.fixture(scope="module")
def gunpoint():
    return load_dataset("GunPoint")


# 60 epochs of the quarter-width FCN, Adam lr 3e-3: 92-95% test accuracy for seeds 0-2 on CPU.
LEARN = train.TrainConfig(epochs=60, batch_size=16, lr=3e-3, width=0.25, device="cpu")


def test_band_limited_fcn_learns_gunpoint(gunpoint):
    result = train.run_one(gunpoint, ("rate", 0.0), seed=0, cfg=LEARN)
    # chance is 50%, always answering the majority class gives 50.7% on the test split
    assert result.test_acc >= 0.75, result
    assert result.kept_per_layer == pytest.approx([1.0, 1.0, 1.0])


def test_threshold_is_out_of_reach_of_a_broken_model(gunpoint, monkeypatch):
    """The learning test's bar cannot be met by a network whose convolutions output zeros."""
    monkeypatch.setattr(
        BLConv1d, "forward", lambda self, x: x.new_zeros(x.shape[0], self.out_channels, x.shape[-1])
    )
    cfg = train.TrainConfig(epochs=5, batch_size=16, lr=3e-3, width=0.125, device="cpu")
    result = train.run_one(gunpoint, ("rate", 0.0), seed=0, cfg=cfg)
    assert result.test_acc < 0.6


def test_models_are_converted_with_the_library():
    fcn = build_fcn(1, 3, width=0.25, compress_rate=0.5)
    layers = band_layers(fcn)
    assert len(layers) == 3 and all(isinstance(m, BLConv1d) for _, m in layers)
    assert [m.out_channels for _, m in layers] == [32, 64, 32]
    x = torch.randn(4, 1, 40)
    assert fcn(x).shape == (4, 3)
    assert all(0.4 < k <= 0.5 for k in kept_fractions(fcn))
    set_band(fcn, rate=0.0)
    fcn(x)
    assert kept_fractions(fcn) == pytest.approx([1.0, 1.0, 1.0])
    set_band(fcn, energy=0.9)
    assert fcn(x).shape == (4, 3)
    assert all(0.0 < k <= 1.0 for k in kept_fractions(fcn))

    plain = build_fcn(1, 3, band=False)
    assert not band_layers(plain)
    assert [m.out_channels for m in plain if isinstance(m, torch.nn.Conv1d)] == [128, 256, 128]

    resnet = build_resnet(1, 10, width=0.5, compress_rate=0.25)
    assert len(band_layers(resnet)) == 7  # stem + 2 per block; the 1x1 shortcut stays plain
    assert resnet(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_energy_and_dense_runs(gunpoint):
    cfg = train.TrainConfig(epochs=1, batch_size=16, lr=3e-3, width=0.125, device="cpu")
    settings = [("dense", None), ("rate", 0.0), ("rate", 0.5), ("energy", 0.9)]
    dense = train.run_one(gunpoint, ("dense", None), 0, cfg, cross_settings=settings)
    assert dense.kept_per_layer == [] and set(dense.cross_acc) == {"r=0", "r=0.5"}
    energy = train.run_one(gunpoint, ("energy", 0.9), 0, cfg, cross_settings=settings)
    assert energy.setting == "E=0.9" and energy.cross_acc == {}
    assert all(0.0 < k <= 1.0 for k in energy.kept_per_layer)
    summary = report.summarize([dense, energy])
    assert [s.setting for s in summary] == ["dense", "E=0.9"]
    assert "| E=0.9 |" in report.markdown_tables(summary)


def test_cli_parsers_and_presets():
    parser = argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "demo",
            "--dataset",
            "gunpoint,arrowhead",
            "--dataset",
            "digits",
            "--rates",
            "0,0.5",
            "--seeds",
            "2",
            "--epochs",
            "3",
        ]
    )
    assert callable(args.func)
    run = cli.resolve(args, "full")
    assert run["rates"] == [0.0, 0.5] and run["seeds"] == [0, 1] and run["epochs"] == 3
    assert "ArrowHead" not in run["per_dataset"]  # --epochs overrides the per-set epochs
    assert run["per_dataset"]["digits"] == {"batch_size": 64}

    exp = parser.parse_args(["experiments", "--seeds", "0,4"])
    run = cli.resolve(exp, "experiments")
    assert run["energies"] == [0.99, 0.95, 0.9] and run["seeds"] == [0, 4]
    assert len(run["seeds"]) >= 2 and run["dense"] is True

    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--rates", "half"])


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert cli.main(["demo", "--rates", "50", "--out", str(tmp_path)]) == 2
    assert "fractions in [0, 1)" in capsys.readouterr().err
    assert cli.main(["demo", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert "neither a bundled set" in capsys.readouterr().err
    assert cli.main(["demo", "--device", "nonsense", "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["demo", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_default_demo_is_the_short_run_where_the_band_pays_and_full_is_the_study():
    """The default preset: the paper's full-width FCN, a whole training split per batch, the
    spectral algorithm, rates up to 0.75 beside the plain model, one seed (about a minute);
    ``--full`` is the 63-run study of three sets at a quarter width."""
    parser = cli.build_parser()
    run = cli.resolve(parser.parse_args(["demo"]), cli._demo_preset(parser.parse_args(["demo"])))
    assert run["preset"] == "demo" and run["width"] == 1.0 and run["algorithm"] == "spectral"
    assert run["dense"] and {0.0, 0.5, 0.75} <= set(run["rates"]) and run["seeds"] == [0]
    assert run["batch_size"] >= max(len(load_dataset(n).y_train) for n in cli.PRESETS["demo"]["datasets"])
    full = parser.parse_args(["demo", "--full"])
    run = cli.resolve(full, cli._demo_preset(full))
    settings = int(run["dense"]) + len(run["rates"]) + len(run["energies"]) + len(run["calibrated"])
    assert run["preset"] == "full" and settings * len(run["seeds"]) * len(DEV_SETS) == 63
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--full", "--quick"])


def test_expected_duration_is_printed_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "run_grid", lambda *a, **k: [])
    assert cli.main(["demo", "--no-progress", "--out", str(tmp_path / "o")]) == 130
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("expected duration: about ") and "Zen 3" in first and "estimated" in first
    assert cli.main(["demo", "--epochs", "3", "--no-progress", "--out", str(tmp_path / "p")]) == 130
    assert capsys.readouterr().err.splitlines()[0] == (
        "expected duration: not estimated (options given change the preset's grid)"
    )


def test_default_demo_settings_end_to_end(tmp_path):
    """The default preset's model and policies on the smallest set for one epoch: the tables
    give each band row's time as a multiple of the plain epoch and both save policies' bytes."""
    out = tmp_path / "d"
    argv = ["demo", "--dataset", "ItalyPowerDemand", "--epochs", "1", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    with (out / "results.csv").open() as f:
        rows = {r["setting"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["dense", "r=0", "r=0.5", "r=0.75"]
    assert rows["dense"]["time_vs_dense"] == "" and rows["dense"]["saved_bytes_conv_band"] == ""
    for name in ("r=0", "r=0.5", "r=0.75"):
        assert float(rows[name]["time_vs_dense"]) > 0
        # save='input' (the default) keeps what nn.Conv1d keeps; save='band' falls with the band
        assert float(rows[name]["saved_bytes_conv"]) == pytest.approx(
            float(rows["dense"]["saved_bytes_conv"]), rel=0.01
        )
    band = [float(rows[n]["saved_bytes_conv_band"]) for n in ("r=0", "r=0.5", "r=0.75")]
    assert band == sorted(band, reverse=True)
    assert "time × plain" in (out / "results.md").read_text()
    assert (out / "cost_vs_kept.png").read_bytes()[:4] == b"\x89PNG"
