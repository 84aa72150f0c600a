"""Host-side autotuner: time candidate launch configs once per key, remember the fastest.

Launchers call :func:`get_config` on every launch. The first call for a key in a process looks
the key up in the on-disk cache (:mod:`bltriton.autotune.cache`), times only the configs that
have no stored timing, stores the timings and returns the fastest config; later calls are a dict
lookup. Decisions:

==========================================  =====================================================
situation                                   result
==========================================  =====================================================
``BLTRITON_AUTOTUNE=0``                     ``default``; no timing, no cache read or write
CPU / ``TRITON_INTERPRET=1`` / not CUDA     ``default``; no timing (unless
                                            ``configure(tune_on_cpu=True)``)
all configs timed before (memory or disk)   fastest of them (hit); no timing
some configs never timed                    time those only, store, fastest (miss)
``BLTRITON_FORCE_RETUNE=1``                 stored timings ignored for keys not yet decided in
                                            this process: time all, store
a CUDA graph is being captured              fastest known config, else ``default``; no timing
every config failed (raised)                ``default``
a config raised a Triton resource or        stored as failed (``null``), not timed again
compile error                               until ``BLTRITON_FORCE_RETUNE=1``
a config raised anything else (CUDA OOM,    failed in this process only; the next process
a launcher bug)                             times it again
==========================================  =====================================================
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bltriton import _env
from bltriton.autotune.cache import CacheFile, canonical_json

Config = dict[str, Any]
#: ``timer(fn) -> ms``: runs ``fn`` (one launch) as often as it likes and returns milliseconds.
Timer = Callable[[Callable[[], object]], float]
#: ``prune(configs, key, device) -> configs`` drops configs the device cannot run.
Prune = Callable[[list[Config], Mapping[str, Any], Any], Sequence[Config]]

CPU_DEVICE_NAME = "cpu-interpreter"


# -- settings, timer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Process-wide tuner settings (change with :func:`configure`).

    Attributes:
        tune_on_cpu: time configs on CPU / under the Triton interpreter too (tests use it); off
            by default because interpreter timings say nothing about a GPU.
        warmup_ms: ``do_bench`` warm-up budget per config on CUDA, in milliseconds.
        rep_ms: ``do_bench`` measuring budget per config on CUDA, in milliseconds.
        cpu_reps: runs per config for the CPU timer (median of them, after one warm-up run).
        lock_timeout_s: seconds to wait for the cache file lock before skipping a write.
    """

    tune_on_cpu: bool = False
    warmup_ms: float = 5.0
    rep_ms: float = 20.0
    cpu_reps: int = 5
    lock_timeout_s: float = 60.0


_settings = Settings()
_timer: Timer | None = None


def configure(**changes: Any) -> dict[str, Any]:
    """Change tuner settings for this process, e.g. ``configure(tune_on_cpu=True)``.

    Args:
        **changes: fields of :class:`Settings` (``tune_on_cpu``, ``warmup_ms``, ``rep_ms``,
            ``cpu_reps``, ``lock_timeout_s``).

    Returns:
        The previous settings as a dict, so ``configure(**old)`` restores them.

    Raises:
        TypeError: an unknown setting name.
    """
    global _settings
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown autotune setting(s) {sorted(unknown)}; known: {sorted(known)}")
    with _lock:
        old = asdict(_settings)
        _settings = replace(_settings, **changes)
        # Memoized decisions may depend on the settings (tune_on_cpu): decide again.
        _decided.clear()
    return old


def settings() -> Settings:
    """The current :class:`Settings`."""
    return _settings


def set_timer(timer: Timer | None) -> Timer | None:
    """Replace how configs are timed (tests pass a stub); None restores the default.

    Args:
        timer: ``timer(fn) -> float`` where ``fn()`` launches the kernel once with the config
            under test; returns milliseconds (``inf``/NaN/negative count as failed). Exceptions
            from ``fn`` may propagate out of the timer: the config is then recorded as failed.

    Returns:
        The previous timer (None for the default).
    """
    global _timer
    old, _timer = _timer, timer
    return old


@contextlib.contextmanager
def use_timer(timer: Timer | None) -> Iterator[None]:
    """Context manager form of :func:`set_timer`; restores the previous timer on exit."""
    old = set_timer(timer)
    try:
        yield
    finally:
        set_timer(old)


def cuda_timer(fn: Callable[[], object]) -> float:
    """Default timer on CUDA: median of ``triton.testing.do_bench`` (modest warm-up/rep budgets
    from :class:`Settings`), in milliseconds."""
    from triton.testing import do_bench

    s = _settings
    return float(do_bench(fn, warmup=s.warmup_ms, rep=s.rep_ms, return_mode="median"))


def cpu_timer(fn: Callable[[], object]) -> float:
    """Default timer with ``tune_on_cpu``: one warm-up run, then the median ``perf_counter`` time
    of ``Settings.cpu_reps`` runs, in milliseconds."""
    fn()
    times = []
    for _ in range(max(1, _settings.cpu_reps)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# -- keys --------------------------------------------------------------------------------------


def bucket_pow2(n: int) -> int:
    """Smallest power of two ≥ ``n`` (1 for ``n ≤ 1``); launchers bucket the batch dim with it.

    Args:
        n: an integer (Python or NumPy int; not a float or bool).

    Returns:
        ``1, 1, 2, 4, 4, 8, ...`` for ``n = 0, 1, 2, 3, 4, 5, ...``.
    """
    if isinstance(n, bool):
        raise TypeError(f"bucket_pow2 expects an int, got {n!r}")
    n = operator.index(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class DeviceIdentity:
    """What the cache key knows about a device.

    Attributes:
        name: driver name (``"NVIDIA H100 80GB HBM3"``) or ``"cpu-interpreter"``.
        capability: CUDA compute capability ``(major, minor)``, None off CUDA.
        can_time: True where timings mean something (CUDA, not the interpreter).
    """

    name: str
    capability: tuple[int, int] | None
    can_time: bool


def _device_type_index(device: Any) -> tuple[str, int | None]:
    if device is None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return "cuda", torch.cuda.current_device()
        return "cpu", None
    dev_type = getattr(device, "type", None)
    if dev_type is not None:
        return dev_type, getattr(device, "index", None)
    text = str(device)
    dev_type, _, index = text.partition(":")
    return dev_type, int(index) if index else None


def device_identity(device: Any = None) -> DeviceIdentity:
    """Name and capability of ``device`` for the cache key.

    Args:
        device: ``torch.device``, a string like ``"cuda:0"``/``"cpu"``, or None (the current
            CUDA device when CUDA is available, else the CPU).

    Returns:
        The :class:`DeviceIdentity`. CPU, the Triton interpreter and devices other than CUDA
        report ``can_time=False``; CPU and the interpreter are named ``"cpu-interpreter"``.
    """
    dev_type, index = _device_type_index(device)
    if dev_type == "cuda" and not _env.triton_interpret():
        import torch

        if index is None:
            index = torch.cuda.current_device()
        return _cuda_identity(index)
    if dev_type in ("cpu", "cuda"):
        return DeviceIdentity(CPU_DEVICE_NAME, None, False)
    return DeviceIdentity(dev_type, None, False)


@functools.cache
def _cuda_identity(index: int) -> DeviceIdentity:
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return DeviceIdentity(torch.cuda.get_device_name(index), (int(major), int(minor)), True)


@functools.lru_cache(maxsize=1)
def bltriton_version() -> str:
    """Version of bltriton in the key: ``bltriton.__version__``, else the installed
    distribution's version, else ``"0+unknown"``."""
    version = getattr(sys.modules.get("bltriton"), "__version__", None)
    if isinstance(version, str) and version:
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("bltriton")
    except Exception:
        return "0+unknown"


def triton_version() -> str:
    """Version of Triton in the key (``"none"`` without Triton)."""
    return _triton_version()


@functools.lru_cache(maxsize=1)
def _triton_version() -> str:
    triton = sys.modules.get("triton")
    version = getattr(triton, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("triton")
    except Exception:
        return "none"


def full_key(kernel: str, source_hash: str, key: Mapping[str, Any], ident: DeviceIdentity) -> dict[str, Any]:
    """The complete cache key as a JSON object.

    Args:
        kernel: kernel name, e.g. ``"band_cmac"``.
        source_hash: hash of the kernel source (computed by the launcher).
        key: the launcher's shape/precision key (batch already bucketed with
            :func:`bucket_pow2`; other entries exact).
        ident: the device's :class:`DeviceIdentity`.

    Returns:
        ``{"kernel", "source_hash", "bltriton", "triton", "device", "capability", "key"}``; its
        :func:`canonical_json` text names the cache entry.
    """
    return {
        "kernel": kernel,
        "source_hash": source_hash,
        "bltriton": bltriton_version(),
        "triton": triton_version(),
        "device": ident.name,
        "capability": list(ident.capability) if ident.capability is not None else None,
        "key": dict(key),
    }


# -- process state -----------------------------------------------------------------------------

_lock = threading.RLock()
#: fast key → (config, kind) with kind "hit" (tuned/cached) or "default" (no tuning allowed).
_decided: dict[Any, tuple[Config, str]] = {}
#: canonical key → timings (config json → ms) known in this process (measured or read).
_timings: dict[str, dict[str, float]] = {}
#: canonical keys decided in this process (FORCE_RETUNE applies to the others only).
_decided_keys: set[str] = set()
#: canonical key → configs whose failure may be transient (not written to disk).
_transient: dict[str, set[str]] = {}
#: (folder, device name) → CacheFile (keeps the parse cache and the warn-once flags).
_files: dict[tuple[str, str], CacheFile] = {}
_printed: set[Any] = set()

_STAT_NAMES = ("hits", "disk_hits", "misses", "timings", "failed", "defaults", "capture_skips")
_stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
_tuned_keys: set[str] = set()


def stats() -> dict[str, int]:
    """Counters since the last :func:`reset_stats`.

    Returns:
        ``hits``: get_config calls answered without timing (memory or disk, tuned choices);
        ``disk_hits``: of those, first decisions in this process that needed the disk cache;
        ``misses``: decisions that timed at least one config; ``timings``: configs timed;
        ``failed``: timed configs that raised or gave no valid time; ``defaults``: calls answered
        with ``default`` because tuning is off (``BLTRITON_AUTOTUNE=0``, CPU) or all configs
        failed; ``capture_skips``: calls during CUDA graph capture that would have timed;
        ``tuned_keys``: distinct keys for which this process timed something.
    """
    out = dict(_stats)
    out["tuned_keys"] = len(_tuned_keys)
    return out


def reset_stats() -> None:
    """Zero the counters of :func:`stats` (keeps the remembered choices)."""
    with _lock:
        for name in _STAT_NAMES:
            _stats[name] = 0
        _tuned_keys.clear()


def clear_memory() -> None:
    """Forget every in-process choice and timing (as in a fresh process); the disk stays."""
    with _lock:
        _decided.clear()
        _frozen_configs.clear()
        _timings.clear()
        _transient.clear()
        _decided_keys.clear()
        _files.clear()
        _printed.clear()
        _cuda_identity.cache_clear()
        bltriton_version.cache_clear()
        _triton_version.cache_clear()


def cache_file_for(ident: DeviceIdentity) -> CacheFile:
    """The :class:`CacheFile` of ``ident`` under the current ``BLTRITON_CACHE_DIR``."""
    folder = str(_env.cache_dir())
    handle = _files.get((folder, ident.name))
    if handle is None or handle.lock_timeout_s != _settings.lock_timeout_s:
        handle = CacheFile(
            folder,
            ident.name,
            lock_timeout_s=_settings.lock_timeout_s,
            version=bltriton_version(),
        )
        _files[(folder, ident.name)] = handle
    return handle


# -- the decision ------------------------------------------------------------------------------


def _freeze(d: Mapping[str, Any]) -> tuple:
    # Hashable stand-in for a flat dict (fast path). Unhashable values (lists) raise TypeError and
    # the caller falls back to JSON text. 1 == 1.0 == True here: a launcher that passes both
    # spellings for one key shares the decision, which is harmless for tile sizes.
    return tuple(sorted(d.items()))


#: id(configs) → (configs, len, frozen): launchers pass the same module-level config list on every
#: call, and freezing 16 configs each call cost ~15 µs of the ~23 µs per cached lookup (CPU,
#: measured). Holding a reference keeps the id from being reused; the length check catches a list
#: grown in place. Treat a config list as immutable once passed (build a new one to change it).
_frozen_configs: dict[int, tuple[Sequence[Config], int, tuple]] = {}


def _freeze_configs(configs: Sequence[Config]) -> tuple:
    known = _frozen_configs.get(id(configs))
    if known is not None and known[0] is configs and known[1] == len(configs):
        return known[2]
    frozen = tuple(_freeze(c) for c in configs)
    if len(_frozen_configs) >= 256:
        _frozen_configs.clear()
    _frozen_configs[id(configs)] = (configs, len(configs), frozen)
    return frozen


def _fast_key(
    kernel: str, source_hash: str, key: Mapping[str, Any], configs: Sequence[Config], device: Any
) -> Any:
    dev = _device_type_index(device)
    try:
        return (kernel, source_hash, dev, _env.triton_interpret(), _freeze(key), _freeze_configs(configs))
    except TypeError:
        return (
            kernel,
            source_hash,
            dev,
            _env.triton_interpret(),
            canonical_json(dict(key)),
            canonical_json([dict(c) for c in configs]),
        )


def _capturing() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        # No CUDA context (or a forked child's unusable one) means nothing is being captured;
        # checking first also keeps the query from touching CUDA in CPU-only work.
        if not torch.cuda.is_initialized():
            return False
        return bool(torch.cuda.is_current_stream_capturing())
    except Exception:  # CPU-only builds raise here
        return False


def _report(kernel: str, key: Mapping[str, Any], cfg: Config, ms: float | None, how: str) -> None:
    if not _env.print_autotuning():
        return
    shown = "n/a" if ms is None or not math.isfinite(ms) else f"{ms:.4f} ms"
    key_text = canonical_json(dict(key))
    print(
        f"[bltriton autotune] {kernel} {key_text} -> {canonical_json(cfg)} {shown} ({how})",
        flush=True,
    )


def get_config(
    kernel: str,
    source_hash: str,
    key: Mapping[str, Any],
    configs: Sequence[Config],
    default: Config,
    run: Callable[[Config], object],
    device: Any = None,
    *,
    prune: Prune | None = None,
) -> Config:
    """Launch config for one kernel call: tuned once per key and process, cached on disk.

    Args:
        kernel: kernel name, e.g. ``"band_cmac"``.
        source_hash: hash of the kernel's source text (a changed kernel is a new key).
        key: shape/precision key, a flat dict of JSON values, e.g. ``{"mode": "fwd", "B": 64,
            "M": 32, "N": 64, "K": 64, "F": 300, "groups": 1, "precision": "tf32"}``. Bucket the
            batch with :func:`bucket_pow2` first; the rest is matched exactly.
        configs: candidate configs, each a flat dict such as ``{"BLOCK_M": 32, "BLOCK_N": 64,
            "BLOCK_K": 32, "num_warps": 4, "num_stages": 3}``.
        default: heuristic config, returned without timing when tuning is off, on CPU, or when
            every candidate fails. Need not be among ``configs``.
        run: ``run(cfg)`` launches the kernel once with ``cfg``; it must fully overwrite its
            outputs, so that running it several times is harmless. Exceptions (out of resources,
            compile errors) mark that config as failed.
        device: the device the kernel runs on (``tensor.device``); None for the current one.
        prune: optional ``prune(configs, key, device) -> configs`` that drops configs the device
            cannot run, before any timing.

    Returns:
        A fresh dict: the fastest config, or ``default``.
    """
    if not _env.autotune_enabled():
        _stats["defaults"] += 1
        if _env.print_autotuning():
            marker = ("off", kernel, canonical_json(dict(key)))
            if marker not in _printed:
                _printed.add(marker)
                _report(kernel, key, default, None, "default: BLTRITON_AUTOTUNE=0")
        return dict(default)
    if not isinstance(configs, (list, tuple)):
        configs = list(configs)  # read twice below
    fast = _fast_key(kernel, source_hash, key, configs, device)
    known = _decided.get(fast)
    if known is not None:
        cfg, kind = known
        _stats["hits" if kind == "hit" else "defaults"] += 1
        return dict(cfg)
    with _lock:
        return dict(_decide(fast, kernel, source_hash, key, configs, default, run, device, prune))


def _decide(
    fast: Any,
    kernel: str,
    source_hash: str,
    key: Mapping[str, Any],
    configs: Sequence[Config],
    default: Config,
    run: Callable[[Config], object],
    device: Any,
    prune: Prune | None,
) -> Config:
    ident = device_identity(device)
    if not (ident.can_time or _settings.tune_on_cpu):
        _decided[fast] = (dict(default), "default")
        _stats["defaults"] += 1
        _report(kernel, key, default, None, f"default: no tuning on {ident.name}")
        return default

    entry_key = full_key(kernel, source_hash, key, ident)
    name = canonical_json(entry_key)
    candidates = [dict(c) for c in configs]
    if prune is not None:
        candidates = [dict(c) for c in prune(candidates, key, device)]
    by_json: dict[str, Config] = {}
    for cfg in candidates:
        by_json.setdefault(canonical_json(cfg), cfg)

    force = _env.force_retune() and name not in _decided_keys
    timings = {} if force else dict(_timings.get(name, {}))
    from_disk = False
    missing = [c for c in by_json if c not in timings]
    if missing and not force:
        stored = cache_file_for(ident).read().get(name)
        if stored is not None:
            for cfg_json, ms in stored["timings"].items():
                timings.setdefault(cfg_json, ms)
            from_disk = any(c in stored["timings"] for c in missing)
            missing = [c for c in by_json if c not in timings]

    if missing and _capturing():
        # Timing would launch kernels into the graph being captured: answer from what is known
        # and decide for real after the capture.
        _stats["capture_skips"] += 1
        cfg, ms = _fastest(by_json, timings, default)
        _report(kernel, key, cfg, ms, "graph capture: no timing")
        return cfg

    if missing:
        transient = _transient.setdefault(name, set())
        for cfg_json in missing:
            ms, config_failure = _time_config(run, by_json[cfg_json], ident, kernel)
            timings[cfg_json] = ms
            if math.isinf(ms) and not config_failure:
                transient.add(cfg_json)
            else:
                transient.discard(cfg_json)
        _stats["misses"] += 1
        _tuned_keys.add(name)
        # Failures that may not be the config's fault (CUDA OOM, a launcher bug) stay in memory
        # only: a later process tries those configs again.
        stored = {c: ms for c, ms in timings.items() if c not in transient}
        cache_file_for(ident).merge_write({name: {"key": entry_key, "timings": stored}})
        how = f"miss: timed {len(missing)} of {len(by_json)} configs"
    else:
        _stats["hits"] += 1
        if from_disk:
            _stats["disk_hits"] += 1
        how = "disk hit" if from_disk else "memory hit"

    _timings[name] = timings
    _decided_keys.add(name)
    cfg, ms = _fastest(by_json, timings, default)
    if ms is None:
        how += "; every config failed, using the default"
        _stats["defaults"] += 1
    _decided[fast] = (dict(cfg), "hit")
    _report(kernel, key, cfg, ms, how)
    return cfg


def _fastest(
    by_json: Mapping[str, Config], timings: Mapping[str, float], default: Config
) -> tuple[Config, float | None]:
    """Fastest candidate with a finite timing (first listed on ties), else ``(default, None)``."""
    best, best_ms = None, math.inf
    for cfg_json, cfg in by_json.items():
        ms = timings.get(cfg_json, math.inf)
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        return default, None
    return best, best_ms


def _config_error_types() -> tuple[type[BaseException], ...]:
    """Triton's errors that are a property of the config on this device (too much shared memory,
    too many registers, a compile error for these tile sizes): safe to remember on disk."""
    found: list[type[BaseException]] = []
    for module_name, names in (
        ("triton.runtime.errors", ("OutOfResources", "PTXASError")),
        ("triton.compiler.errors", ("CompilationError",)),
    ):
        module = sys.modules.get(module_name)
        for attr in names:
            cls = getattr(module, attr, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def _time_config(
    run: Callable[[Config], object], cfg: Config, ident: DeviceIdentity, kernel: str
) -> tuple[float, bool]:
    """Time one config: ``(ms, True)``; a failure gives ``(inf, config_failure)`` where
    ``config_failure`` says whether the error is the config's own (stored on disk) or may be
    transient (kept in memory only)."""
    timer = _timer or (cuda_timer if ident.can_time else cpu_timer)
    _stats["timings"] += 1
    try:
        ms = float(timer(lambda: run(dict(cfg))))
    except Exception as err:  # OutOfResources, compile errors, launch errors of this config
        _stats["failed"] += 1
        if _env.print_autotuning():
            print(
                f"[bltriton autotune] {kernel} config {canonical_json(cfg)} failed: "
                f"{type(err).__name__}: {str(err)[:200]}",
                flush=True,
            )
        return math.inf, isinstance(err, _config_error_types())
    if not math.isfinite(ms) or ms < 0:
        _stats["failed"] += 1
        return math.inf, False
    return ms, True


def cache_dir() -> Path:
    """The cache folder in use (``BLTRITON_CACHE_DIR`` or ``~/.cache/bltriton``)."""
    return _env.cache_dir()
