"""Autotuner and its on-disk cache, on the CPU with a stubbed timer.

Every test gets its own cache folder (``BLTRITON_CACHE_DIR`` under ``tmp_path``), a fresh
in-process state and ``configure(tune_on_cpu=True)``. Cross-process tests run children with
``sys.executable -c`` through :func:`run_autotune_child`; a variant that tunes through the real
Triton launch path only needs another ``code`` string for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from bltriton import autotune
from bltriton._cli import UsageError
from bltriton.autotune import cache as cache_mod
from bltriton.autotune import cli
from bltriton.autotune import files as files_mod
from bltriton.autotune import keys as keys_mod
from bltriton.autotune import tuner as tuner_mod
from tests.helpers import child_env, run_autotune_child

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNEL = "stub_kernel"
SOURCE_HASH = "stubhash0"
DEFAULT = {"BLOCK": 8, "num_warps": 2}
COSTS = {16: 3.0, 32: 1.0, 64: 2.0, 128: 0.5}

try:
    from triton.runtime.errors import OutOfResources
except ImportError:  # no Triton: any exception marks a config as failed
    OutOfResources = None


def _out_of_resources() -> Exception:
    if OutOfResources is not None:
        return OutOfResources(300000, 232448, "shared memory")
    return RuntimeError("out of resources: shared memory")


def configs_for(*blocks: int) -> list[dict[str, Any]]:
    return [{"BLOCK": b, "num_warps": 4} for b in blocks]


class StubKernel:
    """A fake kernel: ``run(cfg)`` "launches" it, ``timer(fn)`` reports ``costs[BLOCK]`` ms.

    Args:
        costs: BLOCK → milliseconds the stub timer reports.
        fail: BLOCK values whose launch raises Triton's ``OutOfResources``.
        transient_fail: BLOCK values whose launch raises a ``RuntimeError`` (like CUDA OOM).
    """

    def __init__(
        self,
        costs: dict[int, float] | None = None,
        fail: tuple[int, ...] = (),
        transient_fail: tuple[int, ...] = (),
    ) -> None:
        self.costs = dict(COSTS if costs is None else costs)
        self.fail = set(fail)
        self.transient_fail = set(transient_fail)
        self.timed: list[int] = []
        self.last: dict[str, Any] | None = None

    def run(self, cfg: dict[str, Any]) -> None:
        self.last = cfg
        if cfg["BLOCK"] in self.fail:
            raise _out_of_resources()
        if cfg["BLOCK"] in self.transient_fail:
            raise RuntimeError("CUDA out of memory")

    def timer(self, fn) -> float:
        self.last = None
        self.timed.append(-1)  # placeholder, replaced below if the launch works
        fn()
        assert self.last is not None
        self.timed[-1] = self.last["BLOCK"]
        return self.costs[self.last["BLOCK"]]

    def get(self, blocks=(16, 32, 64), b: int = 4, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("kernel", KERNEL)
        kwargs.setdefault("source_hash", SOURCE_HASH)
        kwargs.setdefault("device", torch.device("cpu"))
        with autotune.use_timer(self.timer):
            return autotune.get_config(
                key={"mode": "fwd", "B": b, "C": 3, "precision": "ieee"},
                configs=configs_for(*blocks),
                default=DEFAULT,
                run=self.run,
                **kwargs,
            )


@pytest.fixture(autouse=True)
def fresh_tuner(tmp_path, monkeypatch):
    """Own cache folder, no tuning env vars, fresh in-process state, tuning allowed on CPU."""
    monkeypatch.setenv("BLTRITON_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("BLTRITON_AUTOTUNE", "BLTRITON_FORCE_RETUNE", "BLTRITON_PRINT_AUTOTUNING"):
        monkeypatch.delenv(name, raising=False)
    old = autotune.configure(tune_on_cpu=True)
    autotune.clear_memory()
    autotune.reset_stats()
    yield
    autotune.set_timer(None)
    autotune.configure(**old)
    autotune.clear_memory()
    autotune.reset_stats()


def cache_path() -> Path:
    return autotune.cache_file_path(autotune.cache_dir(), autotune.CPU_DEVICE_NAME)


def load_cache() -> dict[str, Any]:
    doc = json.loads(cache_path().read_text())
    assert doc["schema"] == autotune.SCHEMA_VERSION
    return doc


def our_warnings(records) -> list[warnings.WarningMessage]:
    return [r for r in records if issubclass(r.category, autotune.BLTritonCacheWarning)]


def new_process() -> None:
    """What a fresh process would have: no in-memory choices, zeroed counters."""
    autotune.clear_memory()
    autotune.reset_stats()


# -- choosing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(-3, 1), (0, 1), (1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (33, 64), (64, 64), (65, 128)],
)
def test_bucket_pow2(n, expected):
    assert autotune.bucket_pow2(n) == expected


@pytest.mark.parametrize("bad", [2.0, True, "4"])
def test_bucket_pow2_rejects_non_int(bad):
    with pytest.raises(TypeError):
        autotune.bucket_pow2(bad)


def test_picks_fastest_and_returns_a_copy():
    stub = StubKernel()
    cfg = stub.get()
    assert cfg == {"BLOCK": 32, "num_warps": 4}
    assert sorted(stub.timed) == [16, 32, 64]
    cfg["BLOCK"] = 999  # the caller's copy; the tuner's choice is unchanged
    assert stub.get()["BLOCK"] == 32
    s = autotune.stats()
    assert (s["misses"], s["timings"], s["hits"], s["tuned_keys"]) == (1, 3, 1, 1)


def test_failing_configs_are_skipped():
    stub = StubKernel(fail=(32,))
    assert stub.get()["BLOCK"] == 64
    s = autotune.stats()
    assert s["failed"] == 1 and s["timings"] == 3


@pytest.mark.skipif(OutOfResources is None, reason="needs Triton's error classes")
def test_only_config_failures_are_stored():
    stub = StubKernel(fail=(16,), transient_fail=(32,))
    assert stub.get()["BLOCK"] == 64
    timings = next(iter(load_cache()["entries"].values()))["timings"]
    assert {json.loads(c)["BLOCK"]: ms for c, ms in timings.items()} == {16: None, 64: 2.0}
    assert stub.get()["BLOCK"] == 64 and len(stub.timed) == 3  # not retried in this process
    new_process()
    stub.transient_fail.clear()
    stub.timed.clear()
    assert stub.get()["BLOCK"] == 32  # the next process tries it again, and only it
    assert stub.timed == [32]


def test_configs_may_be_any_iterable():
    stub = StubKernel()
    with autotune.use_timer(stub.timer):
        cfg = autotune.get_config(
            KERNEL, SOURCE_HASH, {"B": 1}, iter(configs_for(16, 32)), DEFAULT, stub.run, "cpu"
        )
    assert cfg["BLOCK"] == 32


def test_all_failing_falls_back_to_default():
    stub = StubKernel(fail=(16, 32, 64))
    assert stub.get() == DEFAULT
    assert autotune.stats()["failed"] == 3
    entry = next(iter(load_cache()["entries"].values()))
    assert entry["best"] is None
    assert set(entry["timings"].values()) == {None}  # failures stored as null, strict JSON
    # The decision is remembered: no retiming of a key whose configs all fail.
    assert stub.get() == DEFAULT
    assert autotune.stats()["timings"] == 3


def test_nonfinite_timer_result_counts_as_failed():
    stub = StubKernel(costs={16: math.nan, 32: -1.0, 64: 2.0})
    assert stub.get()["BLOCK"] == 64
    assert autotune.stats()["failed"] == 2


def test_second_lookup_is_a_memory_hit():
    stub = StubKernel()
    first = stub.get()
    before = autotune.stats()
    for _ in range(50):
        assert stub.get() == first
    after = autotune.stats()
    assert after["timings"] == before["timings"] == 3
    assert after["hits"] == before["hits"] + 50
    assert after["misses"] == 1


def test_every_timing_is_stored():
    StubKernel(fail=(64,)).get(blocks=(16, 32, 64))
    doc = load_cache()
    assert doc["bltriton"] == autotune.bltriton_version()
    (name, entry), *rest = doc["entries"].items()
    assert not rest
    assert json.loads(name) == entry["key"]
    assert entry["key"]["kernel"] == KERNEL
    assert entry["key"]["device"] == "cpu-interpreter" and entry["key"]["capability"] is None
    assert entry["key"]["triton"] == autotune.triton_version()
    assert entry["key"]["key"] == {"mode": "fwd", "B": 4, "C": 3, "precision": "ieee"}
    timings = {json.loads(c)["BLOCK"]: ms for c, ms in entry["timings"].items()}
    assert timings == {16: 3.0, 32: 1.0, 64: None}
    assert entry["best"] == {"BLOCK": 32, "num_warps": 4} and entry["best_ms"] == 1.0
    assert "updated" in entry


def test_larger_config_list_times_only_new_configs():
    stub = StubKernel()
    assert stub.get(blocks=(16, 32))["BLOCK"] == 32
    assert sorted(stub.timed) == [16, 32]
    # Same process, one more config: only it is timed.
    stub.timed.clear()
    assert stub.get(blocks=(16, 32, 64))["BLOCK"] == 32
    assert stub.timed == [64]
    # Next process, one more again: the stored three are reused from disk.
    new_process()
    stub.timed.clear()
    assert stub.get(blocks=(16, 32, 64, 128))["BLOCK"] == 128
    assert stub.timed == [128]
    # A smaller list is a pure hit and chooses among its own configs only.
    new_process()
    stub.timed.clear()
    assert stub.get(blocks=(16, 64))["BLOCK"] == 64
    assert stub.timed == []
    assert autotune.stats()["disk_hits"] == 1
    timings = next(iter(load_cache()["entries"].values()))["timings"]
    assert len(timings) == 4


def test_config_list_grown_in_place_is_noticed():
    stub = StubKernel()
    configs = configs_for(16, 32)
    with autotune.use_timer(stub.timer):
        get = lambda: autotune.get_config(KERNEL, SOURCE_HASH, {"B": 1}, configs, DEFAULT, stub.run, "cpu")
        assert get()["BLOCK"] == 32
        configs.append({"BLOCK": 128, "num_warps": 4})
        assert get()["BLOCK"] == 128
    assert stub.timed == [16, 32, 128]


def test_prune_hook_runs_before_timing():
    seen = []

    def prune(configs, key, device):
        seen.append((len(configs), key["B"], str(device)))
        return [c for c in configs if c["BLOCK"] != 32]

    stub = StubKernel()
    assert stub.get(prune=prune)["BLOCK"] == 64
    assert sorted(stub.timed) == [16, 64]
    assert seen == [(3, 4, "cpu")]


def test_triton_config_objects_are_accepted():
    """Kernels may pass ``triton.Config`` candidates: stored by ``all_kwargs()``, so the dict
    spelling of the same configs shares the cache entry; the chosen object itself comes back."""
    triton = pytest.importorskip("triton")
    configs = [triton.Config({"BLOCK": b}, num_warps=4) for b in (16, 32, 64)]
    stub = StubKernel()
    ran = []

    def run(cfg):
        ran.append(cfg)
        stub.run({"BLOCK": cfg.kwargs["BLOCK"]})

    with autotune.use_timer(stub.timer):
        get = lambda cfgs, fn: autotune.get_config(KERNEL, SOURCE_HASH, {"B": 1}, cfgs, DEFAULT, fn, "cpu")
        assert get(configs, run) is configs[1]
        assert get(configs, run) is configs[1]  # memory hit
        assert len(ran) == 3 and all(any(r is c for c in configs) for r in ran)
        new_process()
        as_dicts = [c.all_kwargs() for c in configs]
        assert get(as_dicts, stub.run) == configs[1].all_kwargs()
    assert autotune.stats()["timings"] == 0 and autotune.stats()["disk_hits"] == 1


def test_clear_memory_replaces_the_whole_state():
    stub = StubKernel(transient_fail=(64,))
    stub.get(b=4)
    with pytest.warns(autotune.BLTritonCacheWarning):
        cache_path().write_text("{broken")
        stub.get(b=8)  # a warned-about file handle with a parse cache
    state = tuner_mod._state
    assert state.decided and state.timings and state.transient and state.files
    autotune.clear_memory()
    assert tuner_mod._state is not state and tuner_mod._state == tuner_mod.TunerState()
    assert autotune.stats()["misses"] == 2  # the counters are separate: reset_stats()
    autotune.reset_stats()
    assert set(autotune.stats().values()) == {0}


def test_distinct_keys_are_tuned_separately():
    stub = StubKernel()
    stub.get(b=4)
    stub.get(b=8)
    stub.get(b=4)
    s = autotune.stats()
    assert (s["misses"], s["tuned_keys"], s["timings"], s["hits"]) == (2, 2, 6, 1)
    assert len(load_cache()["entries"]) == 2


def test_other_triton_version_or_source_hash_is_another_key(monkeypatch):
    stub = StubKernel()
    stub.get()
    new_process()
    stub.get(source_hash="stubhash1")  # edited kernel source
    assert autotune.stats()["timings"] == 3
    new_process()
    monkeypatch.setattr(keys_mod, "triton_version", lambda: "0.0.0-other")
    stub.get()  # same kernel, another Triton
    assert autotune.stats()["timings"] == 3
    entries = load_cache()["entries"].values()
    assert len(entries) == 3
    assert {(e["key"]["source_hash"], e["key"]["triton"]) for e in entries} == {
        (SOURCE_HASH, autotune.triton_version()),
        ("stubhash1", autotune.triton_version()),
        (SOURCE_HASH, "0.0.0-other"),
    }


def test_key_values_must_be_json():
    with pytest.raises(TypeError, match="JSON"):
        autotune.get_config(
            KERNEL, SOURCE_HASH, {"B": object()}, configs_for(16), DEFAULT, lambda c: None, "cpu"
        )


def test_key_order_does_not_matter():
    stub = StubKernel()
    stub.get()
    new_process()
    with autotune.use_timer(stub.timer):
        cfg = autotune.get_config(
            KERNEL,
            SOURCE_HASH,
            {"precision": "ieee", "C": 3, "B": 4, "mode": "fwd"},
            [{"num_warps": 4, "BLOCK": b} for b in (64, 32, 16)],
            DEFAULT,
            stub.run,
            "cpu",
        )
    assert cfg["BLOCK"] == 32
    assert autotune.stats()["timings"] == 0


def test_default_cpu_timer_measures_something():
    calls = []
    cfg = autotune.get_config(
        KERNEL, SOURCE_HASH, {"B": 1}, configs_for(16, 32), DEFAULT, calls.append, "cpu"
    )
    assert cfg in configs_for(16, 32)
    # One warm-up plus Settings.cpu_reps runs per config.
    assert len(calls) == 2 * (1 + autotune.settings().cpu_reps)


def test_configure_rejects_unknown_settings():
    with pytest.raises(TypeError, match="tune_on_gpu"):
        autotune.configure(tune_on_gpu=True)


# -- when not to time --------------------------------------------------------------------------


def test_no_timing_on_cpu_unless_asked():
    autotune.configure(tune_on_cpu=False)
    stub = StubKernel()
    assert stub.get() == DEFAULT
    assert stub.get() == DEFAULT
    assert stub.timed == []
    assert autotune.stats()["defaults"] == 2
    assert not cache_path().exists()


def test_autotune_off_uses_default_without_timing_or_writes(monkeypatch):
    monkeypatch.setenv("BLTRITON_AUTOTUNE", "0")
    stub = StubKernel()
    assert stub.get() == DEFAULT
    assert stub.timed == []
    assert not Path(autotune.cache_dir()).exists()
    s = autotune.stats()
    assert s["timings"] == 0 and s["defaults"] == 1


def test_force_retune_times_again_and_stores(monkeypatch):
    StubKernel().get()
    new_process()
    monkeypatch.setenv("BLTRITON_FORCE_RETUNE", "1")
    faster64 = StubKernel(costs={16: 3.0, 32: 1.0, 64: 0.25})
    assert faster64.get()["BLOCK"] == 64
    assert sorted(faster64.timed) == [16, 32, 64]
    # Once decided in this process, the key is not retuned again.
    assert faster64.get()["BLOCK"] == 64
    assert len(faster64.timed) == 3
    entry = next(iter(load_cache()["entries"].values()))
    assert entry["best"]["BLOCK"] == 64 and entry["best_ms"] == 0.25
    # Without the flag, the next process reads the new choice.
    monkeypatch.delenv("BLTRITON_FORCE_RETUNE")
    new_process()
    assert StubKernel().get()["BLOCK"] == 64
    assert autotune.stats()["timings"] == 0


def test_print_autotuning(monkeypatch, capsys):
    monkeypatch.setenv("BLTRITON_PRINT_AUTOTUNING", "1")
    stub = StubKernel(fail=(16,))
    stub.get()
    stub.get()  # memory hits print nothing
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out
    assert "failed" in out[0] and '"BLOCK":16' in out[0]
    assert KERNEL in out[1] and '"BLOCK":32' in out[1] and "1.0000 ms" in out[1]
    assert "miss: timed 3 of 3 configs" in out[1]
    assert '"B":4' in out[1]
    new_process()
    stub.get()
    out = capsys.readouterr().out
    assert "disk hit" in out and '"BLOCK":32' in out


def test_print_autotuning_when_off(monkeypatch, capsys):
    monkeypatch.setenv("BLTRITON_PRINT_AUTOTUNING", "1")
    monkeypatch.setenv("BLTRITON_AUTOTUNE", "0")
    stub = StubKernel()
    stub.get()
    stub.get()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "BLTRITON_AUTOTUNE=0" in out[0]


def test_no_timing_during_graph_capture(monkeypatch):
    # Capturing implies an initialized CUDA context: fake both.
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    stub = StubKernel()
    assert stub.get() == DEFAULT
    assert stub.timed == []
    assert autotune.stats()["capture_skips"] == 1
    assert not cache_path().exists()
    # After the capture the key is tuned for real.
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert stub.get()["BLOCK"] == 32
    # A later process capturing a graph uses the stored choice.
    new_process()
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    stub.timed.clear()
    assert stub.get()["BLOCK"] == 32
    # ... and a partly known list answers from the known part without timing.
    assert stub.get(blocks=(16, 32, 64, 128))["BLOCK"] == 32
    assert stub.timed == []


# -- the cache file: robustness ----------------------------------------------------------------


def _valid_cache_bytes() -> bytes:
    doc = {"schema": 1, "bltriton": "0", "entries": {"k": {"key": {}, "timings": {"{}": 1.0}}}}
    return json.dumps(doc, indent=1).encode()


BAD_FILES = {
    "corrupt": b"{this is not json",
    "truncated": _valid_cache_bytes()[:40],
    "empty": b"",
    "whitespace": b"  \n",
    "binary": b"\xff\xfe\x00\x81garbage",
    "foreign-schema": json.dumps({"schema": 99, "entries": {}}).encode(),
    "no-schema": json.dumps({"entries": {}}).encode(),
    "not-a-dict": b"[1, 2, 3]",
    "entries-not-a-dict": json.dumps({"schema": 1, "entries": [1]}).encode(),
}


def _assert_recovered(original: bytes | None) -> None:
    folder = cache_path().parent
    aside = [p for p in folder.iterdir() if cache_mod.CORRUPT_MARKER in p.name]
    assert len(aside) == 1, sorted(p.name for p in folder.iterdir())
    if original is not None:
        assert aside[0].read_bytes() == original
    entries = load_cache()["entries"]
    assert len(entries) == 1
    assert next(iter(entries.values()))["best"]["BLOCK"] == 32


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_cache_file_is_set_aside_and_rebuilt(kind):
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(BAD_FILES[kind])
    stub = StubKernel()
    with pytest.warns(autotune.BLTritonCacheWarning) as records:
        assert stub.get()["BLOCK"] == 32
    assert len(our_warnings(records)) == 1, [str(r.message) for r in records]
    assert sorted(stub.timed) == [16, 32, 64]
    _assert_recovered(BAD_FILES[kind])
    # Further keys and processes use the fresh file without more warnings.
    with warnings.catch_warnings(record=True) as more:
        warnings.simplefilter("always")
        stub.get(b=8)
        new_process()
        stub.get(b=8)
    assert our_warnings(more) == []
    assert autotune.stats()["disk_hits"] == 1


def test_bad_entries_are_dropped_silently():
    path = cache_path()
    path.parent.mkdir(parents=True)
    doc = {"schema": 1, "entries": {"a": [1], "b": {"key": {}, "timings": {"{}": "fast"}}}}
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert StubKernel().get()["BLOCK"] == 32
    assert our_warnings(records) == []
    entries = load_cache()["entries"]
    assert "a" not in entries and entries["b"]["timings"] == {}


def test_unreadable_cache_file_directory_in_its_place():
    path = cache_path()
    (path / "inner").mkdir(parents=True)  # open() raises IsADirectoryError
    with pytest.warns(autotune.BLTritonCacheWarning) as records:
        assert StubKernel().get()["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    _assert_recovered(None)


def test_unreadable_cache_file_permission_denied(monkeypatch):
    # Running as root, chmod 000 does not stop reads: make the read refuse this one file instead.
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(_valid_cache_bytes())
    unreadable_inode = path.stat().st_ino
    real_read = cache_mod.read_regular

    def guarded_read(file):
        if Path(file) == path and os.stat(file).st_ino == unreadable_inode:
            raise PermissionError(13, "Permission denied", str(file))
        return real_read(file)

    monkeypatch.setattr(cache_mod, "read_regular", guarded_read)
    with pytest.warns(autotune.BLTritonCacheWarning) as records:
        assert StubKernel().get()["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    assert "Permission denied" in str(our_warnings(records)[0].message)
    _assert_recovered(_valid_cache_bytes())


def test_unreadable_cache_file_chmod_000():
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(_valid_cache_bytes())
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        pass
    else:
        pytest.skip("chmod 000 does not stop reads here (running as root)")
    with pytest.warns(autotune.BLTritonCacheWarning) as records:
        assert StubKernel().get()["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    _assert_recovered(None)


def test_uncreatable_cache_dir_tunes_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BLTRITON_CACHE_DIR", str(blocker / "cache"))
    stub = StubKernel()
    with pytest.warns(autotune.BLTritonCacheWarning, match="cannot be written") as records:
        assert stub.get()["BLOCK"] == 32
        assert stub.get(b=8)["BLOCK"] == 32  # same folder: no second warning
    assert len(our_warnings(records)) == 1
    assert stub.get()["BLOCK"] == 32  # remembered in memory
    s = autotune.stats()
    assert (s["misses"], s["timings"], s["hits"]) == (2, 6, 1)


def test_read_only_cache_dir_reads_but_does_not_write(monkeypatch):
    StubKernel().get(b=4)  # written while the folder was writable
    new_process()

    def no_temp_files(*args, **kwargs):
        raise PermissionError(13, "Permission denied (read-only folder)")

    monkeypatch.setattr(files_mod.tempfile, "mkstemp", no_temp_files)
    stub = StubKernel()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert stub.get(b=4)["BLOCK"] == 32  # read from the file
    assert our_warnings(records) == [] and stub.timed == []
    with pytest.warns(autotune.BLTritonCacheWarning, match="read-only") as records:
        assert stub.get(b=8)["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    assert len(load_cache()["entries"]) == 1  # the old file is intact
    assert not [p for p in cache_path().parent.iterdir() if p.name.endswith(".tmp")]


def test_lock_held_too_long_keeps_choice_in_memory():
    cache_path().parent.mkdir(parents=True)
    autotune.configure(lock_timeout_s=0.05)
    # A second, independent lock on the same file blocks like another process's would.
    held = cache_mod.filelock.FileLock(str(cache_path()) + ".lock")
    with held, pytest.warns(autotune.BLTritonCacheWarning, match="Timeout") as records:
        assert StubKernel().get()["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    assert not cache_path().exists()
    assert StubKernel().get()["BLOCK"] == 32  # remembered in memory, no timing


def _tune_in_thread(timeout: float) -> tuple[bool, list]:
    """Tune the stub in a thread; (finished within ``timeout``, the cache warnings)."""
    import threading

    result: dict[str, Any] = {}

    def work():
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            result["cfg"] = StubKernel().get()
        result["warnings"] = our_warnings(records)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), result


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_at_cache_path_does_not_hang():
    path = cache_path()
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    finished, result = _tune_in_thread(timeout=10)
    if not finished:  # keep unblocking the reader until it gives up, so that the thread ends
        deadline = time.monotonic() + 30
        while "warnings" not in result and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)
    assert finished, "reading a FIFO at the cache path blocked"
    assert result["cfg"]["BLOCK"] == 32
    assert len(result["warnings"]) == 1 and "FIFO" in str(result["warnings"][0].message)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)  # left alone: not replaced, not renamed
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]
    assert StubKernel().get()["BLOCK"] == 32  # decided in memory


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_cli_cache_show_reports_a_fifo_without_reading_it(capsys):
    path = cache_path()
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    assert run_cli("cache", "show", "--device", "cpu") == 0  # returns: the FIFO is not opened for reading
    assert "unusable (a named pipe (FIFO))" in capsys.readouterr().out
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.mark.parametrize("target", ["/dev/zero", "regular-file"])
def test_symlink_at_cache_path_is_left_alone(tmp_path, target):
    """A symlinked cache file is neither followed nor replaced (documented in files.py): a link to
    /dev/zero once read without limit until MemoryError."""
    if target == "/dev/zero" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    if target == "regular-file":
        target = tmp_path / "elsewhere.json"
        target.write_bytes(_valid_cache_bytes())
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    finished, result = _tune_in_thread(timeout=30)
    assert finished and result["cfg"]["BLOCK"] == 32
    assert len(result["warnings"]) == 1 and "symbolic link" in str(result["warnings"][0].message)
    assert path.is_symlink() and os.readlink(path) == str(target)
    if isinstance(target, Path):
        assert target.read_bytes() == _valid_cache_bytes()


def test_oversized_cache_file_is_not_read(monkeypatch):
    monkeypatch.setattr(files_mod, "MAX_FILE_BYTES", 64)
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(_valid_cache_bytes())
    assert len(_valid_cache_bytes()) > 64
    with pytest.warns(autotune.BLTritonCacheWarning, match="larger than 64 bytes"):
        assert StubKernel().get()["BLOCK"] == 32


def test_stuck_lock_is_waited_for_once_then_written_later():
    cache_path().parent.mkdir(parents=True)
    autotune.configure(lock_timeout_s=0.5)
    held = cache_mod.filelock.FileLock(str(cache_path()) + ".lock")
    stub = StubKernel()
    with held, pytest.warns(autotune.BLTritonCacheWarning, match="not waiting for it again") as records:
        start = time.monotonic()
        for b in (4, 8, 16):
            assert stub.get(b=b)["BLOCK"] == 32
        elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 0.4, f"waited {elapsed:.2f} s: the lock was waited for more than once"
    assert len(our_warnings(records)) == 1
    assert not cache_path().exists()
    # The lock is free again: the next write brings the three pending keys along.
    assert stub.get(b=32)["BLOCK"] == 32
    assert len(load_cache()["entries"]) == 4


def test_stuck_lock_pending_keys_are_written_at_exit():
    cache_path().parent.mkdir(parents=True)
    autotune.configure(lock_timeout_s=0.05)
    held = cache_mod.filelock.FileLock(str(cache_path()) + ".lock")
    with held, pytest.warns(autotune.BLTritonCacheWarning):
        StubKernel().get(b=4)
    cache_mod._exit_flush.run()  # what the atexit hook runs
    assert len(load_cache()["entries"]) == 1


def test_cache_file_mode_follows_the_umask():
    old = os.umask(0o022)
    try:
        StubKernel().get()
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache_path().stat().st_mode) == 0o644


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file to another user"
)


@needs_root
def test_another_users_cache_file_is_read_but_never_replaced():
    StubKernel().get(b=4)
    path = cache_path()
    os.chown(path, 12345, 12345)
    before = path.read_bytes(), path.stat().st_ino
    new_process()
    stub = StubKernel()
    with pytest.warns(autotune.BLTritonCacheWarning, match="another user") as records:
        assert stub.get(b=4)["BLOCK"] == 32  # read from the file
        assert stub.get(b=8)["BLOCK"] == 32  # tuned, kept in memory
        assert stub.get(b=16)["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    assert autotune.stats()["disk_hits"] == 1 and stub.timed == [16, 32, 64] * 2
    assert (path.read_bytes(), path.stat().st_ino) == before
    assert path.stat().st_uid == 12345


@needs_root
def test_another_users_bad_cache_file_is_not_set_aside():
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    os.chown(path, 12345, 12345)
    with pytest.warns(autotune.BLTritonCacheWarning, match="another user") as records:
        assert StubKernel().get()["BLOCK"] == 32
    assert len(our_warnings(records)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]
    assert path.read_bytes() == b"{not json"


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_stale_temp_files_of_dead_writers_are_removed_on_the_next_write():
    folder = cache_path().parent
    folder.mkdir(parents=True)
    host = files_mod._host()
    dead = folder / f".{cache_path().name}.{host}-{_dead_pid()}.abcd1234.tmp"
    live = folder / f".{cache_path().name}.{host}-1.abcd1234.tmp"  # pid 1 is alive
    old_style = folder / f".{cache_path().name}.k2j4h5g6.tmp"  # before pids were in the name
    fresh_old_style = folder / f".{cache_path().name}.zzzz9999.tmp"
    other = folder / ".notes.json.abcd1234.tmp"  # another file's
    for p in (dead, live, old_style, fresh_old_style, other):
        p.write_text("{partial")
    two_hours_ago = time.time() - 7200
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))
    StubKernel().get()
    left = sorted(p.name for p in folder.iterdir())
    assert dead.name not in left and old_style.name not in left
    assert {live.name, fresh_old_style.name, other.name} <= set(left)


# -- across processes --------------------------------------------------------------------------

#: Child program: tunes the stub kernel for the batch sizes in argv[1] (JSON list) and prints
#: ``{"stats": ..., "chosen": [...]}`` as its last stdout line. argv[2], if given, is a folder
#: used as a start barrier: the child touches ``ready-<pid>`` and waits for ``go``.
STUB_CHILD_CODE = """
import json, os, pathlib, sys, time
from bltriton import autotune
from bltriton._cli import UsageError

autotune.configure(tune_on_cpu=True)
costs = {16: 3.0, 32: 1.0, 64: 2.0}
state = {}

def run(cfg):
    state["cfg"] = cfg

def timer(fn):
    fn()
    return costs[state["cfg"]["BLOCK"]]

autotune.set_timer(timer)
if len(sys.argv) > 2:
    barrier = pathlib.Path(sys.argv[2])
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (barrier / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
configs = [{"BLOCK": b, "num_warps": 4} for b in (16, 32, 64)]
chosen = [
    autotune.get_config(
        "stub_kernel", "stubhash0", {"mode": "fwd", "B": b}, configs,
        {"BLOCK": 8, "num_warps": 2}, run, "cpu",
    )
    for b in json.loads(sys.argv[1])
]
print(json.dumps({"stats": autotune.stats(), "chosen": chosen}))
"""


def test_cache_reused_by_the_next_process(tmp_path):
    cache_dir = tmp_path / "shared-cache"
    keys = json.dumps([4, 8, 16])
    first = run_autotune_child(STUB_CHILD_CODE, cache_dir, [keys])
    assert first["stats"]["timings"] == 9 and first["stats"]["misses"] == 3
    second = run_autotune_child(STUB_CHILD_CODE, cache_dir, [keys])
    assert second["stats"]["timings"] == 0
    assert second["stats"]["misses"] == 0
    assert second["stats"]["disk_hits"] == 3
    assert second["chosen"] == first["chosen"] == [{"BLOCK": 32, "num_warps": 4}] * 3


def _forked_tuner(batches: list[int], barrier: Any, out_path: str) -> None:
    """Child of the fork-based concurrency test: a fresh tuner state, then tune ``batches``."""
    autotune.clear_memory()
    autotune.reset_stats()
    stub = StubKernel()
    barrier.wait(timeout=60)  # every child starts tuning at the same moment
    for b in batches:
        stub.get(b=b)
    Path(out_path).write_text(json.dumps(autotune.stats()))


def _run_forked(cache_dir: Path, work: Path, batch_lists: list[list[int]]) -> list[dict]:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(batch_lists))
    procs = [
        ctx.Process(target=_forked_tuner, args=(batches, barrier, str(work / f"stats-{i}.json")))
        for i, batches in enumerate(batch_lists)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [json.loads((work / f"stats-{i}.json").read_text()) for i in range(len(procs))]


def _run_subprocesses(cache_dir: Path, work: Path, batch_lists: list[list[int]]) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STUB_CHILD_CODE, json.dumps(batches), str(work)],
            env=child_env(cache_dir),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batches in batch_lists
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.01)
        (work / "go").touch()  # start tuning at once
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    return [json.loads(out.strip().splitlines()[-1])["stats"] for out, _ in results]


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(
            "fork",
            marks=pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
        ),
        # Fully separate interpreters; each imports torch, so this one is slower.
        pytest.param("subprocess", marks=pytest.mark.slow),
    ],
)
def test_concurrent_processes_lose_no_entries(tmp_path, start):
    cache_dir, work = Path(autotune.cache_dir()), tmp_path / "work"
    work.mkdir()
    n_procs, k = 8, 5
    batch_lists = [[1000 * i + j for j in range(k)] for i in range(n_procs)]
    runner = _run_forked if start == "fork" else _run_subprocesses
    for stats in runner(cache_dir, work, batch_lists):
        assert stats["misses"] == k and stats["timings"] == 3 * k
    files = sorted(p.name for p in cache_dir.iterdir())
    doc = json.loads((cache_dir / "cpu-interpreter.json").read_text())
    assert doc["schema"] == 1
    assert len(doc["entries"]) == n_procs * k, files
    assert all(len(e["timings"]) == 3 for e in doc["entries"].values())
    assert not [f for f in files if f.endswith(".tmp") or cache_mod.CORRUPT_MARKER in f]


# -- CLI ---------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bltriton")
    cli.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_cache_path(capsys):
    assert run_cli("cache", "path") == 0
    assert capsys.readouterr().out.strip() == str(autotune.cache_dir())


def test_cli_cache_show(capsys):
    assert run_cli("cache", "show", "--device", "cpu") == 0
    assert "no autotune cache" in capsys.readouterr().out
    StubKernel().get(b=4)
    StubKernel(fail=(16, 32, 64)).get(b=8)
    assert run_cli("cache", "show", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and str(cache_path()) in out
    line4 = next(line for line in out.splitlines() if '"B":4' in line)
    assert KERNEL in line4 and '{"BLOCK":32,"num_warps":4}' in line4 and "1.0000 ms" in line4
    line8 = next(line for line in out.splitlines() if '"B":8' in line)
    assert "default" in line8 and "failed" in line8
    assert run_cli("cache", "show", "--all") == 0
    assert "2 entries" in capsys.readouterr().out


def test_cli_cache_show_leaves_a_bad_file_alone(capsys):
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 2, "entries": {}}')
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert run_cli("cache", "show", "--device", "cpu") == 0
        assert run_cli("cache", "show", "--all") == 0
    assert our_warnings(records) == []
    # ``show`` names the current device's file; ``show --all`` lists only files proven to be caches.
    assert capsys.readouterr().out.count("unusable") == 1
    assert path.read_text() == '{"schema": 2, "entries": {}}'


def test_cli_cache_clear(capsys):
    StubKernel().get()
    folder = cache_path().parent
    (folder / "notes.json").write_text('{"not": "a cache"}')  # must survive
    (folder / "cpu-interpreter.json.corrupt-20250101T000000-1").write_text("{")
    assert run_cli("cache", "clear") == 0
    out = capsys.readouterr().out
    assert "removed 1 cache file" in out
    assert f"removed {cache_path()}\n" in out and "corrupt-20250101T000000-1\n" in out
    assert sorted(p.name for p in folder.iterdir()) == ["notes.json"]
    new_process()
    stub = StubKernel()
    stub.get()
    assert len(stub.timed) == 3  # nothing cached any more


#: Files ``cache clear`` once deleted although nothing proves they are the cache's own.
NOT_OURS = {
    # another tool's JSON with the same top-level keys (no version marker, no kernel names)
    "tool.json": json.dumps({"schema": 1, "entries": {"a": {"key": {}, "timings": {}}}}),
    "tool-v2.json": json.dumps({"schema": 3, "bltriton": "x", "entries": {"a": {"key": {"k": 1}}}}),
    "data.corrupt-backup.json": "{",  # has ".corrupt-" and ".json" in its name
    "report.json.corrupt-yesterday": "{",
    "other.json.lock": "",  # a lock whose JSON is missing
    "cpu-interpreter.json.tmp": "{",
    "notes.JSON": json.dumps({"schema": 1, "bltriton": "0", "entries": {}}),
}


def test_cli_cache_clear_deletes_only_what_it_can_prove_is_its_own(capsys):
    StubKernel().get()
    folder = cache_path().parent
    for name, text in NOT_OURS.items():
        (folder / name).write_text(text)
    assert run_cli("cache", "clear") == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == sorted(NOT_OURS)
    removed = [line for line in out.splitlines() if line.startswith("removed /")]
    assert removed == [f"removed {cache_path()}", f"removed {cache_path()}.lock"]


def test_cli_cache_clear_missing_folder(capsys):
    assert run_cli("cache", "clear") == 0
    assert "no autotune cache" in capsys.readouterr().out


class BLStubLayer(torch.nn.Module):
    """Stands in for a band-limited layer: its forward asks the tuner for a config."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autotune.get_config(
            "stub_layer",
            SOURCE_HASH,
            {"B": autotune.bucket_pow2(x.shape[0]), "C": x.shape[1], "L": x.shape[-1]},
            configs_for(16, 32, 64),
            DEFAULT,
            lambda cfg: None,
            x.device,
        )
        return self.linear(x.transpose(1, -1)).transpose(1, -1)


def build_stub_model() -> torch.nn.Module:
    return torch.nn.Sequential(BLStubLayer(3), torch.nn.ReLU(), BLStubLayer(3))


def test_cli_tune_runs_forward_backward(capsys):
    timed = []
    autotune.set_timer(lambda fn: (fn(), timed.append(1), 1.0)[-1])
    model_ref = f"{__name__}:build_stub_model"
    argv = ["tune", "--model", model_ref, "--input-shape", "5,3,7", "--device", "cpu"]
    assert run_cli(*argv, "--tune-on-cpu", "--no-progress") == 0
    out = capsys.readouterr().out.splitlines()
    first = json.loads(out[-2])
    assert first["misses"] == 1 and first["timings"] == 3 and first["hits"] == 1
    assert out[-1] == f"cache file: {cache_path()}"
    new_process()
    assert run_cli(*argv, "--tune-on-cpu", "--no-progress") == 0
    second = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert second["timings"] == 0 and second["disk_hits"] == 1
    assert len(timed) == 3


def test_cli_tune_demo_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "bltriton.demo.models", None)
    with pytest.raises(UsageError, match=r"bltriton\.demo\.models"):
        run_cli("tune", "--demo", "fcn", "--input-shape", "2,1,16", "--device", "cpu")


def test_cli_tune_rejects_bad_shape():
    with pytest.raises(SystemExit):
        run_cli("tune", "--demo", "fcn", "--input-shape", "2,x")


def test_cli_tune_without_timing_names_no_cache_file(capsys):
    """On the CPU without --tune-on-cpu nothing is timed: tune must not print a cache file path
    it did not write."""
    autotune.configure(tune_on_cpu=False)
    argv = ["tune", "--model", f"{__name__}:build_stub_model", "--input-shape", "5,3,7", "--device", "cpu"]
    assert run_cli(*argv, "--no-progress") == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-2])["timings"] == 0
    assert out[-1].startswith("cache file: none") and str(cache_path()) not in out[-1]
    assert not cache_path().exists()
