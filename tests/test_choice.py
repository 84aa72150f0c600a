"""The measured algorithm choice (bltriton/choice.py): a timer decides ``algorithm='auto'``, the
pick is cached per machine and reused by another process, foreign or stale entries are not read,
``BLTRITON_AUTOTUNE=0``, tracing and functorch transforms take the estimate, and the pick never
changes the result. Timers are fakes (no real timing: the tests stay fast and deterministic)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from bltriton import BLConv1d, BLConv2d, choice, functional, spatial
from bltriton.autotune.cache import CacheFile
from tests.helpers import assert_close_rel, run_autotune_child


@pytest.fixture(autouse=True)
def fresh_choice(tmp_path, monkeypatch):
    """A private cache folder, no remembered picks or checked calls, default settings."""
    monkeypatch.setenv("BLTRITON_CACHE_DIR", str(tmp_path / "cache"))
    for name in (
        "BLTRITON_AUTOTUNE",
        "BLTRITON_FORCE_RETUNE",
        "BLTRITON_PRINT_AUTOTUNING",
        "BLTRITON_ALGORITHM",
    ):
        monkeypatch.delenv(name, raising=False)
    choice.clear_memory()
    functional._CALLS.clear()
    old = choice.configure()
    yield
    choice.configure(**old)
    choice.set_timer(None)
    choice.clear_memory()
    functional._CALLS.clear()


class FakeTimer:
    """Says ``ms[algorithm]`` for each candidate (after running each once, as a real timer would,
    so a candidate that cannot run fails the test); counts its calls."""

    def __init__(self, **ms: float) -> None:
        self.ms, self.calls, self.seen = ms, 0, []

    def __call__(self, runs, layer_calls):
        self.calls += 1
        self.seen.append(sorted(runs))
        for run in runs.values():
            run()
        return {name: self.ms[name] for name in runs}


def refuse(runs, layer_calls):
    raise AssertionError("nothing may be timed here")


def _layer(**kw) -> tuple[BLConv2d, torch.Tensor]:
    return BLConv2d(3, 4, 3, padding=1, compress_rate=0.5, **kw), torch.randn(2, 3, 9, 11)


def _estimate_pick(layer: BLConv2d, x: torch.Tensor, training: bool) -> str:
    spec = layer._last_call["spec"]
    return spatial.choose_algorithm(
        "auto", spec, tuple(x.shape), tuple(layer.weight.shape), x.device, training
    )


def _cache_entries() -> dict:
    files = list((choice._env.cache_dir()).glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())["entries"]


@pytest.mark.parametrize("winner", ["spectral", "spatial"])
def test_the_timer_decides_not_the_estimate(winner):
    """Whichever algorithm the timer says is faster runs, whatever the estimate says; the timing
    is one call per shape and grad mode (the call memo serves the rest), with both candidates."""
    loser = "spatial" if winner == "spectral" else "spectral"
    timer = FakeTimer(**{winner: 1.0, loser: 2.0})
    choice.configure(prune_ratio=1e9)  # the estimate must not rule either out
    layer, x = _layer()
    with choice.use_timer(timer):
        for _ in range(3):
            layer(x).sum().backward()
            assert layer.last_algorithm == winner
    assert timer.calls == 1 and timer.seen == [["spatial", "spectral"]]
    with choice.use_timer(FakeTimer(**{winner: 2.0, loser: 1.0})):
        with torch.no_grad():  # inference is another key: timed on its own
            layer(x)
        assert layer.last_algorithm == loser
    assert choice.stats()["timed"] == 2


def test_pick_is_cached_and_a_second_process_reuses_it(tmp_path):
    """The pick and both timings land in this CPU's cache file under a key naming the CPU model,
    ISA, threads and versions; a fresh process on the same folder picks the same without timing."""
    choice.configure(prune_ratio=1e9)
    layer, x = _layer()
    with choice.use_timer(FakeTimer(spectral=5.0, spatial=3.0)):
        layer(x).sum().backward()
    assert layer.last_algorithm == "spatial"
    (entry,) = _cache_entries().values()
    key = entry["key"]
    assert key["kernel"] == "algorithm" and key["device"].startswith("cpu ")
    assert {"isa", "threads", "torch", "triton", "bltriton"} <= set(key)
    assert key["threads"] == torch.get_num_threads() and key["key"]["training"] is True
    assert entry["best"] == {"algorithm": "spatial"} and entry["best_ms"] == 3.0
    code = """
import json, torch
from bltriton import BLConv2d, choice
choice.configure(prune_ratio=1e9)
def refuse(runs, layer_calls):
    raise AssertionError("timed in the second process")
choice.set_timer(refuse)
torch.manual_seed(0)
layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5)
layer(torch.randn(2, 3, 9, 11)).sum().backward()
print(json.dumps({"pick": layer.last_algorithm, "stats": choice.stats()}))
"""
    out = run_autotune_child(code, choice._env.cache_dir(), env={"TRITON_INTERPRET": "0"})
    assert out["pick"] == "spatial"
    assert out["stats"]["timed"] == 0 and out["stats"]["cache_hits"] == 1


@pytest.mark.parametrize(
    "field, value",
    [("device", "cpu AMD EPYC 7B13 (cpu family 25 model 1 stepping 0)"), ("isa", "AVX2 avx2 fma"),
     ("threads", 64), ("torch", "2.0.0"), ("bltriton", "0.0.1"), ("triton", "2.1.0")],
)  # fmt: skip
def test_a_foreign_or_stale_entry_is_ignored(field, value):
    """An entry timed on another CPU, thread count or version, written into this machine's file
    (a shared folder, an upgrade), says ``spectral``; this machine times again and keeps its own
    pick beside it."""
    choice.configure(prune_ratio=1e9)
    layer, x = _layer()
    with choice.use_timer(FakeTimer(spectral=9.0, spatial=1.0)):
        layer(x).sum().backward()
    (name,) = _cache_entries()
    foreign = json.loads(name)
    foreign[field] = value
    path = next(choice._env.cache_dir().glob("*.json"))
    handle = CacheFile(path.parent, path.stem)
    from bltriton.autotune.cache import canonical_json

    timings = {'{"algorithm":"spectral"}': 0.1, '{"algorithm":"spatial"}': 50.0}
    path.unlink()  # only the foreign entry is left
    handle.merge_write({canonical_json(foreign): {"key": foreign, "timings": timings}})
    choice.clear_memory()
    functional._CALLS.clear()
    timer = FakeTimer(spectral=9.0, spatial=1.0)
    with choice.use_timer(timer):
        layer(x).sum().backward()
    assert timer.calls == 1 and layer.last_algorithm == "spatial"
    assert len(_cache_entries()) == 2


def test_autotune_off_takes_the_estimate(monkeypatch):
    """``BLTRITON_AUTOTUNE=0``: the estimate's pick, nothing timed, no cache file."""
    monkeypatch.setenv("BLTRITON_AUTOTUNE", "0")
    layer, x = _layer()
    with choice.use_timer(refuse):
        layer(x).sum().backward()
    assert layer.last_algorithm == _estimate_pick(layer, x, True)
    assert not list(choice._env.cache_dir().glob("*.json"))


def test_force_retune_times_again():
    choice.configure(prune_ratio=1e9)
    layer, x = _layer()
    with choice.use_timer(FakeTimer(spectral=1.0, spatial=2.0)):
        layer(x).sum().backward()
    choice.clear_memory()
    functional._CALLS.clear()
    timer = FakeTimer(spectral=2.0, spatial=1.0)
    with pytest.MonkeyPatch.context() as mp, choice.use_timer(timer):
        mp.setenv("BLTRITON_FORCE_RETUNE", "1")
        layer(x).sum().backward()
    assert timer.calls == 1 and layer.last_algorithm == "spatial"


@pytest.mark.parametrize(
    "cls, x_shape, kernel, stride, groups",
    [
        pytest.param(BLConv1d, (3, 4, 33), 5, 2, 1, id="1d-k5-s2"),
        pytest.param(BLConv2d, (2, 4, 7, 9), 3, 1, 2, id="2d-7x9-k3-g2"),
        pytest.param(BLConv2d, (1, 4, 12, 12), 7, 1, 4, id="2d-12x12-k7-depthwise"),
    ],
)
def test_the_choice_changes_no_result(cls, x_shape, kernel, stride, groups):
    """The layer run with each pick (the timer's) gives the same output and gradients, float64."""
    out = {}
    for winner, loser in (("spectral", "spatial"), ("spatial", "spectral")):
        choice.clear_memory()
        functional._CALLS.clear()
        shutil.rmtree(choice._env.cache_dir(), ignore_errors=True)  # the first pick is stored
        torch.manual_seed(0)
        layer = cls(4, 8, kernel, stride=stride, padding=kernel // 2, groups=groups, compress_rate=0.5)
        layer = layer.double()
        x = torch.randn(*x_shape, dtype=torch.float64, requires_grad=True)
        choice.configure(prune_ratio=1e9)
        with choice.use_timer(FakeTimer(**{winner: 1.0, loser: 2.0})):
            y = layer(x)
        assert layer.last_algorithm == winner
        y.backward(torch.ones_like(y))
        out[winner] = (y, x.grad, layer.weight.grad, layer.bias.grad)
    for name, a, b in zip(("y", "dx", "dw", "db"), out["spectral"], out["spatial"]):
        assert_close_rel(a, b, 1e-11, name)


def test_no_timing_under_torch_compile():
    """Dynamo traces the call: the estimate decides, nothing is timed, the result is eager's."""
    layer, x = _layer()
    with choice.use_timer(refuse):
        compiled = torch.compile(layer, backend="eager", fullgraph=True)
        y = compiled(x)
    assert choice.stats()["timed"] == 0 and not choice.decisions()
    with choice.use_timer(FakeTimer(spectral=1.0, spatial=1.5)):
        assert_close_rel(y, layer(x), 1e-5)


def test_no_timing_under_functorch_transforms():
    layer, x = _layer()
    with choice.use_timer(refuse):
        ys = torch.func.vmap(layer)(x.unsqueeze(1))
    assert ys.shape == (2, 1, 4, 9, 11)
    assert choice.decisions()[-1]["how"] == "estimate: functorch transform"


def test_prune_and_budget_fall_back_to_the_estimate():
    """A candidate estimated over ``prune_ratio`` x the best is not timed; once the process's
    timing budget is spent, new shapes take the estimate (not stored)."""
    layer, x = _layer()
    choice.configure(prune_ratio=1.0)  # only the best estimate is left (no tie here)
    with choice.use_timer(refuse):
        layer(x).sum().backward()
    assert layer.last_algorithm == _estimate_pick(layer, x, True)
    assert choice.stats()["pruned"] == 1
    choice.configure(prune_ratio=1e9, budget_s=1e-9)
    with choice.use_timer(FakeTimer(spectral=1.0, spatial=2.0)):
        layer(torch.randn(2, 3, 10, 12)).sum().backward()  # spends more than the budget
        layer(torch.randn(2, 3, 11, 12)).sum().backward()
    assert choice.stats()["timed"] == 1
    assert "budget" in choice.decisions()[-1]["how"]


def test_interleaved_timer_is_bounded():
    """One warm-up of each, then rounds while they cost at most ``layer_calls`` runs of the
    fastest; the best time of each."""
    calls = {"a": 0, "b": 0}

    def run(name):
        calls[name] += 1

    ms = choice.interleaved_timer({"a": lambda: run("a"), "b": lambda: run("b")}, 10.0)
    assert set(ms) == {"a", "b"} and all(math.isfinite(v) and v >= 0 for v in ms.values())
    assert 2 <= calls["a"] == calls["b"] <= 1 + choice.settings().max_rounds


def test_print_autotuning_reports_the_pick(monkeypatch, capsys):
    monkeypatch.setenv("BLTRITON_PRINT_AUTOTUNING", "1")
    choice.configure(prune_ratio=1e9)
    layer, x = _layer()
    with choice.layer_label("block.conv"), choice.use_timer(FakeTimer(spectral=2.5, spatial=1.25)):
        layer(x).sum().backward()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[bltriton autotune] algorithm block.conv x[2, 3, 9, 11]")
    assert "-> spatial" in line and "spectral 2.500 ms" in line and "spatial 1.250 ms" in line


def test_configure_names_bad_settings():
    with pytest.raises(TypeError, match="budget"):
        choice.configure(budget=1)
    with pytest.raises(ValueError, match="prune_ratio"):
        choice.configure(prune_ratio=0)


# -- pre-tuning, the per-layer report, convert's layer filter ----------------------------------


def _model() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.Conv2d(8, 4, 3, stride=2, padding=1),
        torch.nn.Conv2d(4, 4, 1),
    )


def test_tune_times_every_layer_once_and_leaves_the_model_alone(capsys):
    """``tune`` decides each layer's shapes per mode (one line per layer where stderr is not a
    terminal), lifts the process budget, restores batch-norm statistics and touches no .grad;
    the next training step is served without timing."""
    import bltriton

    model = bltriton.convert(_model(), 0.5)
    x = torch.randn(2, 3, 10, 10)
    stats = model[1].running_mean.clone()
    choice.configure(prune_ratio=1e9, budget_s=1e-9)
    timer = FakeTimer(spectral=1.0, spatial=2.0)
    with choice.use_timer(timer):
        made = bltriton.tune(model, x, modes=("train", "eval"))
    assert timer.calls == 6 and choice.settings().budget_s == 1e-9
    assert [(d["layer"], d["training"]) for d in made] == [
        ("0", True), ("3", True), ("4", True), ("0", False), ("3", False), ("4", False)
    ]  # fmt: skip
    assert all(d["pick"] == "spectral" for d in made)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("tune train 0: spectral (spectral 1.000 ms")
    assert torch.equal(model[1].running_mean, stats) and model.training
    assert all(p.grad is None for p in model.parameters())
    with choice.use_timer(refuse):
        model(x).sum().backward()
    assert model[0].last_algorithm == "spectral"


def test_profile_reports_each_layer_and_which_pay(capsys):
    """One row per convertible layer (the 1x1 left out) with its kinds and shapes; ``paying``
    names the rows whose band-limited time is the lower; the model is unchanged."""
    import bltriton

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with choice.use_timer(FakeTimer(spectral=1.0, spatial=2.0)):
        report = bltriton.profile(model, torch.randn(2, 3, 10, 10), 0.5, reps=1)
    assert [r.name for r in report.rows] == ["0", "3", "4"]
    assert [r.kinds for r in report.rows] == [
        ("dense", "2d"),
        ("depthwise", "2d"),
        ("dense", "strided", "2d"),
    ]
    assert report.rows[1].input_shape == (2, 8, 10, 10) and report.rows[2].weight_shape == (4, 8, 3, 3)
    assert all(r.algorithm == "spectral" and 0 < r.kept_fraction < 1 for r in report.rows)
    assert all(r.dense_ms > 0 and r.band_ms > 0 and r.limit.startswith("spectral: ") for r in report.rows)
    assert report.paying() == [r.name for r in report.rows if r.band_ms < r.dense_ms]
    assert report.paying(margin=1e9) == ["0", "3", "4"]
    out = capsys.readouterr().out
    assert "| layer | kind | input |" in out and "| 3 | depthwise 2d | 2x8x10x10 |" in out
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(bltriton.nn.is_band_limited(m) for m in model.modules())


@pytest.mark.parametrize(
    "layers, converted",
    [
        pytest.param(["0", "4"], {"0", "4"}, id="names"),
        pytest.param("depthwise", {"3"}, id="kind"),
        pytest.param(["strided", "0"], {"0", "4"}, id="kind-and-name"),
        pytest.param(lambda name, conv: conv.out_channels == 8, {"0", "3"}, id="predicate"),
        pytest.param(None, {"0", "3", "4"}, id="all"),
    ],
)
def test_convert_takes_a_layer_filter(layers, converted):
    import bltriton

    model = bltriton.convert(_model(), 0.5, layers=layers)
    got = {n for n, m in model.named_modules() if bltriton.nn.is_band_limited(m)}
    assert got == converted


@pytest.mark.parametrize(
    "call, error, match",
    [
        pytest.param(lambda m, x: __import__("bltriton").convert(m, 0.5, layers=["nope"]), ValueError,
                     r"layers names \['nope'\]", id="convert-unknown-name"),
        pytest.param(lambda m, x: __import__("bltriton").convert(m, 0.5, layers=3), TypeError, "layers",
                     id="convert-layers-type"),
        pytest.param(lambda m, x: __import__("bltriton").convert(m, 0.5, layers=[1]), TypeError, "layers",
                     id="convert-layers-items"),
        pytest.param(lambda m, x: __import__("bltriton").tune(m, x, modes="fast"), ValueError, "modes",
                     id="tune-modes"),
        pytest.param(lambda m, x: __import__("bltriton").tune("model", x), TypeError, "model",
                     id="tune-model"),
        pytest.param(lambda m, x: __import__("bltriton").tune(m, [1]), TypeError, "example_input",
                     id="tune-input"),
        pytest.param(lambda m, x: __import__("bltriton").profile(m, x, 1.5), ValueError, "rate",
                     id="profile-rate"),
        pytest.param(lambda m, x: __import__("bltriton").profile(m, x, reps=0), ValueError, "reps",
                     id="profile-reps"),
        pytest.param(lambda m, x: __import__("bltriton").profile(m, "x"), TypeError, "example_input",
                     id="profile-input"),
    ],
)  # fmt: skip
def test_bad_arguments_name_themselves(call, error, match):
    with pytest.raises(error, match=match):
        call(_model(), torch.randn(1, 3, 8, 8))


def test_tune_refuses_when_autotune_is_off(monkeypatch):
    import bltriton

    monkeypatch.setenv("BLTRITON_AUTOTUNE", "0")
    with pytest.raises(RuntimeError, match="BLTRITON_AUTOTUNE=0"):
        bltriton.tune(bltriton.convert(_model(), 0.5), torch.randn(1, 3, 8, 8))


def test_cache_show_lists_the_choices_and_clear_removes_them(capsys):
    from bltriton.__main__ import main

    choice.configure(prune_ratio=1e9)
    layer, x = _layer()
    with choice.use_timer(FakeTimer(spectral=2.0, spatial=1.5)):
        layer(x).sum().backward()
    assert main(["cache", "show", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "algorithm x[2, 3, 9, 11] w[4, 3, 3, 3]" in out
    assert "train -> spatial (spatial 1.500 ms, spectral 2.000 ms; cpu " in out
    assert main(["cache", "clear"]) == 0  # the choices' file is the cache's own: cleared too
    assert not list(choice._env.cache_dir().glob("*.json"))


def test_no_timing_during_cuda_graph_capture(monkeypatch):
    """While a CUDA graph is captured nothing may run outside it: the estimate decides (the
    capture check is the tuner's own, faked here: the CPU has no graphs)."""
    monkeypatch.setattr(choice._timing, "capturing", lambda: True)
    layer, x = _layer()
    with choice.use_timer(refuse):
        layer(x).sum().backward()
    assert choice.decisions()[-1]["how"] == "estimate: CUDA graph capture"
    assert layer.last_algorithm == _estimate_pick(layer, x, True)


def test_fit_rule_measures_this_machine_in_one_command(monkeypatch, tmp_path, capsys):
    """``python -m bench.fit_rule`` without row files measures (stubbed here: rows timed by a
    known rule under this machine's rule key), fits them and prints the RULES entry."""
    import numpy as np

    from bench import fit_rule

    key = spatial.rule_key(torch.device("cpu"))
    truth = {**vars(spatial.RULES[key]), "conv": 3e11, "transform": 2e10}
    rng = np.random.default_rng(1)

    def fake_measure(configs, out, reps, device):
        assert configs == "quick" and device == "cpu"
        rows = []
        for _ in range(30):
            terms = {
                alg: {n: 1.0 if n.endswith("_call") else float(rng.uniform(1e6, 1e9)) for n in names}
                for alg, names in fit_rule.ALGORITHMS.items()
            }
            row = {"model": "m", "batch": 1, "rate": 0.5, "count": 1, "layer": "l", "rule": key}
            row |= {"terms": terms, "ms": {}}
            spec_s, spat_s = fit_rule.predict([row], truth)[0]
            row["ms"] = {"spectral": spec_s * 1e3, "spatial": spat_s * 1e3}
            rows.append(row)
        out.write_text(json.dumps(rows))

    monkeypatch.setattr(fit_rule, "measure", fake_measure)
    assert fit_rule.main(["--out", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "30 layer shapes; fitted rule" in out and "worst configuration: 0.0%" in out
    assert f'"{key}": AlgorithmRule(' in out and "conv=3e+11" in out


def test_timing_leaves_the_random_stream_alone():
    """A seeded run draws the same numbers whether its first call timed the candidates or read
    them from the cache."""
    choice.configure(prune_ratio=1e9)
    layer, x = _layer()
    torch.manual_seed(7)
    with choice.use_timer(choice.interleaved_timer):
        layer(x).sum().backward()
    assert choice.stats()["timed"] == 1
    drawn = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(3), drawn)


def small_model() -> torch.nn.Module:
    """A model factory for the command line (``--model tests.test_choice:small_model``)."""
    return _model()


def test_cli_profile_and_tune(capsys):
    """``python -m bltriton profile`` prints the table and the paying layers' names;
    ``tune --mode both`` decides each layer per mode and says how many it timed."""
    from bltriton.__main__ import main

    argv = ["--model", "tests.test_choice:small_model", "--input-shape", "2,3,10,10", "--device", "cpu"]
    with choice.use_timer(FakeTimer(spectral=1.0, spatial=2.0)):
        assert main(["profile", *argv, "--reps", "1", "--compress-rate", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "| 4 | dense strided 2d | 2x8x10x10 | 4x8x3x3 |" in out
    assert json.loads(out.strip().splitlines()[-1].removeprefix("paying: ")) is not None
    choice.clear_memory()
    functional._CALLS.clear()
    shutil.rmtree(choice._env.cache_dir(), ignore_errors=True)
    with choice.use_timer(FakeTimer(spectral=1.0, spatial=2.0)):
        assert main(["tune", "--model", "tests.test_choice:small_bl_model", *argv[2:], "--mode", "both"]) == 0
    captured = capsys.readouterr()
    assert "algorithm choices: 6 timed, 0 from the cache" in captured.out
    assert len([line for line in captured.err.splitlines() if line.startswith("tune ")]) == 6


def small_bl_model() -> torch.nn.Module:
    import bltriton

    return bltriton.convert(_model(), 0.5)


def test_cli_profile_names_a_bad_rate():
    from bltriton.__main__ import main

    argv = ["profile", "--model", "tests.test_choice:small_model", "--input-shape", "2,3,10,10"]
    assert main([*argv, "--compress-rate", "1.5", "--device", "cpu"]) == 2
