"""The demo's command line and run log: bad flags, runs written as they finish, Ctrl-C, the
CPU-time flag, the calibrated setting."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math

import pytest

from bltriton.demo import cli, report, train
from bltriton.demo.data import load_dataset
from bltriton.spectral import band_for_rate, fast_length


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--device", "bogus"], "--device"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--width", "0"], "--width"),
        (["--width", "nan"], "--width"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "0"], "--lr"),
        (["--rates", "1.5"], "--rates"),
        (["--energies", "0"], "--energies"),
        (["--calibrated", "1.2"], "--calibrated"),
        (["--seeds", "0,"], None),  # a list of one seed is fine: parsed, not rejected
    ],
)
def test_bad_flags_give_one_line_and_exit_2(argv, flag, tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(train, "run_grid", lambda *a, **k: ran.append(1) or [])
    code = cli.main(["demo", "--quick", "--no-progress", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    if flag is None:
        assert ran and code == 130  # reached training (stubbed: no run finished)
        return
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and not ran
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err


def _fake(ds: str, setting: str, seed: int, wall: float = 0.02, cpu: float = 0.02) -> train.RunResult:
    return train.RunResult(
        dataset=ds,
        setting=setting,
        mode="rate",
        value=0.0,
        seed=seed,
        test_acc=0.9,
        train_acc=1.0,
        final_loss=0.1,
        kept_per_layer=[1.0, 1.0, 1.0],
        epoch_time_s=wall,
        epoch_cpu_s=cpu,
        saved_bytes_step=1000,
        saved_bytes_conv=500,
        cuda_peak_bytes=None,
    )


def test_runs_are_written_as_they_finish_and_ctrl_c_keeps_them(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    calls = []

    def fake_run_one(ds, setting, seed, cfg, cross_settings=(), progress=None):
        calls.append(seed)
        if len(calls) == 3:
            # the first two runs are already on disk while the third trains
            with (out / "runs.csv").open() as f:
                assert [r["seed"] for r in csv.DictReader(f)] == ["0", "1"]
            raise KeyboardInterrupt
        return _fake(ds.name, train.setting_label(setting), seed)

    monkeypatch.setattr(train, "run_one", fake_run_one)
    argv = ["demo", "--dataset", "GunPoint", "--rates", "0", "--seeds", "3", "--no-progress"]
    code = cli.main([*argv, "--no-dense", "--energies", "", "--calibrated", "", "--out", str(out)])
    assert code == 130
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["n_seeds"] == "2"
    assert "interrupted (after 2 of 3 runs)" in capsys.readouterr().out
    assert "interrupted" in (out / "config.json").read_text() or (out / "results.md").is_file()


def test_loaded_runs_are_flagged():
    assert train.is_loaded(0.05, 0.02) and not train.is_loaded(0.02, 0.02)
    assert not train.is_loaded(0.02, 0.04)  # two threads busy: CPU time above wall time
    assert not train.is_loaded(math.nan, 0.02) and not train.is_loaded(0.05, 0.0)
    quiet = [_fake("GunPoint", "r=0", s) for s in (0, 1)]
    busy = [_fake("GunPoint", "r=0.5", 0), _fake("GunPoint", "r=0.5", 1, wall=0.09)]
    summaries = report.summarize(quiet + busy)
    assert [s.loaded for s in summaries] == [False, True]
    table = report.markdown_tables(summaries)
    assert "| 0.020 | 0.020 |" in table and "0.055* | 0.020 |" in table
    assert "compare CPU times" in table


def test_calibrated_run_trains_at_the_calibrated_rates():
    ds = load_dataset("GunPoint")
    cfg = train.TrainConfig(epochs=2, batch_size=16, lr=3e-3, width=0.125, device="cpu")
    result = train.run_one(ds, ("calibrated", 0.99), 0, cfg)
    assert result.setting == "cal E=0.99" and result.mode == "calibrated"
    assert list(result.calib_rates) == ["0", "3", "6"] and result.calib_time_s > 0
    n = (fast_length(150 + 7),)  # 'same' padding of the kernel-8 layer: 157 -> 160
    assert result.kept_per_layer[0] == pytest.approx(band_for_rate(n, result.calib_rates["0"]).kept_fraction)
    assert result.kept_per_layer[0] < 1.0 and math.isfinite(result.epoch_cpu_s)
    row = dataclasses.asdict(result)
    assert row["calib_rates"] == result.calib_rates


def test_progress_redirected_to_a_file_is_a_line_per_run(tmp_path):
    """With stderr a file (a log, CI), the demo's progress is one line per run, not a bar redrawn
    at every epoch: a quick run of 2 sets x 2 rates writes a few hundred bytes."""
    log = tmp_path / "stderr.log"
    argv = ["demo", "--quick", "--dataset", "GunPoint,ItalyPowerDemand", "--rates", "0,0.5", "--epochs", "3"]
    argv += ["--calibrated", "", "--no-plots", "--out", str(tmp_path / "o")]
    quiet = contextlib.redirect_stdout(io.StringIO())
    with log.open("w") as stderr, contextlib.redirect_stderr(stderr), quiet:
        code = cli.main(argv)
    text = log.read_text()
    assert code == 0, text
    runs = [line for line in text.splitlines() if line.startswith("run ")]
    assert [line.split(" done:")[0] for line in runs] == [f"run {i}/4" for i in range(1, 5)], text
    assert "\r" not in text and "epochs" not in text  # no bar redraws
    assert len(text.encode()) < 2000, f"{len(text.encode())} bytes on stderr:\n{text}"


def test_time_against_the_plain_epoch_says_where_the_band_does_not_pay():
    dense = dataclasses.replace(_fake("GunPoint", "dense", 0, wall=0.040), mode="dense", value=None)
    fast = _fake("GunPoint", "r=0.5", 0, wall=0.030)
    slow = _fake("GunPoint", "r=0", 0, wall=0.050)
    summaries = report.summarize([dense, slow, fast])
    assert [s.time_vs_dense for s in summaries] == [None, pytest.approx(1.25), pytest.approx(0.75)]
    table = report.markdown_tables(summaries)
    assert "| 1.25× |" in table and "| 0.75× |" in table
    assert "the band does not pay here (r=0)" in table
    table = report.markdown_tables(report.summarize([dense, fast]))
    assert "every band-limited setting is faster here" in table
