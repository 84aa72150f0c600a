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

Everything the tuner remembers lives in one :class:`TunerState` (and the counters in one
:class:`Stats`); :func:`clear_memory` and :func:`reset_stats` replace them whole. Design and the
comparison with ``triton.autotune``: ``docs/tuner.md``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from bltriton import _env
from bltriton.autotune import keys as _keys
from bltriton.autotune import timing
from bltriton.autotune.cache import CacheFile, canonical_json
from bltriton.autotune.keys import (
    CPU_DEVICE_NAME,
    DeviceIdentity,
    bltriton_version,
    bucket_pow2,
    device_identity,
    full_key,
    triton_version,
)
from bltriton.autotune.state import Config, Decision, Stats, TunerState, as_dict, copy_config, freeze
from bltriton.autotune.timing import Settings, cpu_timer, cuda_timer, set_timer, settings, use_timer

__all__ = [
    "CPU_DEVICE_NAME",
    "DeviceIdentity",
    "Settings",
    "Stats",
    "TunerState",
    "bltriton_version",
    "bucket_pow2",
    "cache_dir",
    "cache_file_for",
    "clear_memory",
    "configure",
    "cpu_timer",
    "cuda_timer",
    "device_identity",
    "full_key",
    "get_config",
    "reset_stats",
    "set_timer",
    "settings",
    "stats",
    "triton_version",
    "use_timer",
]

#: ``prune(configs, key, device) -> configs`` drops configs the device cannot run.
Prune = Callable[[list[Config], Mapping[str, Any], Any], Sequence[Config]]

_lock = threading.RLock()


# -- settings, timer ---------------------------------------------------------------------------


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
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown autotune setting(s) {sorted(unknown)}; known: {sorted(known)}")
    with _lock:
        old = asdict(timing.replace_settings(**changes))
        # Memoized decisions may depend on the settings (tune_on_cpu): decide again.
        _state.decided = {}
    return old


# -- process state -----------------------------------------------------------------------------


_state = TunerState()
_stats = Stats()


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
    out = {name: value for name, value in asdict(_stats).items() if name != "tuned_keys"}
    out["tuned_keys"] = len(_stats.tuned_keys)
    return out


def reset_stats() -> None:
    """Zero the counters of :func:`stats` (keeps the remembered choices)."""
    global _stats
    _stats = Stats()


def clear_memory() -> None:
    """Forget every in-process choice and timing (as in a fresh process); the disk stays."""
    global _state
    with _lock:
        _state = TunerState()
        _keys.clear_caches()


def cache_dir() -> Path:
    """The cache folder in use (``BLTRITON_CACHE_DIR`` or ``~/.cache/bltriton``)."""
    return _env.cache_dir()


def cache_file_for(ident: DeviceIdentity) -> CacheFile:
    """The :class:`CacheFile` of ``ident`` under the current ``BLTRITON_CACHE_DIR``."""
    folder = str(_env.cache_dir())
    handle = _state.files.get((folder, ident.name))
    if handle is None or handle.lock_timeout_s != settings().lock_timeout_s:
        handle = CacheFile(
            folder, ident.name, lock_timeout_s=settings().lock_timeout_s, version=bltriton_version()
        )
        _state.files[(folder, ident.name)] = handle
    return handle


# -- the decision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """One :func:`get_config` call's arguments (see there)."""

    kernel: str
    source_hash: str
    key: Mapping[str, Any]
    configs: Sequence[Config]
    default: Config
    run: Callable[[Config], object]
    device: Any
    prune: Prune | None


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
            "BLOCK_K": 32, "num_warps": 4, "num_stages": 3}`` or a ``triton.Config`` (stored by
            its ``all_kwargs()``). Pass the same list object for the same shape and do not change
            it afterwards: that keeps the per-call lookup a dict hit.
        default: heuristic config, returned without timing when tuning is off, on CPU, or when
            every candidate fails. Need not be among ``configs``.
        run: ``run(cfg)`` launches the kernel once with ``cfg`` (one of ``configs``); it must
            fully overwrite its outputs, so that running it several times is harmless.
            Exceptions (out of resources, compile errors) mark that config as failed.
        device: the device the kernel runs on (``tensor.device``); None for the current one.
        prune: optional ``prune(configs, key, device) -> configs`` that drops configs the device
            cannot run, before any timing.

    Returns:
        The fastest config, or ``default``: a fresh dict for dict configs, the object itself for
        a ``triton.Config``.
    """
    stats_ = _stats
    if not _env.autotune_enabled():
        _env.check_flags()
        stats_.defaults += 1
        if _env.print_autotuning():
            _report_once(
                ("off", kernel, canonical_json(dict(key))), kernel, key, default, "BLTRITON_AUTOTUNE=0"
            )
        return copy_config(default)
    if not isinstance(configs, (list, tuple)):
        configs = list(configs)  # read more than once below
    fast = (kernel, source_hash, _keys.device_type_index(device), _env.triton_interpret(), freeze(key))
    known = _lookup(_state, fast, configs)
    if known is not None:
        if known.tuned:
            stats_.hits += 1
        else:
            stats_.defaults += 1
        return copy_config(known.config)
    with _lock:
        request = _Request(kernel, source_hash, key, configs, default, run, device, prune)
        return copy_config(_decide(_state, fast, request))


def _lookup(state: TunerState, fast: Any, configs: Sequence[Config]) -> Decision | None:
    decisions = state.decided.get(fast)
    if not decisions:
        return None
    for decision in decisions:
        if decision.configs is configs and decision.length == len(configs):
            return decision
    frozen = freeze(configs)
    for decision in decisions:
        if decision.frozen == frozen:
            return decision
    return None


def _remember(state: TunerState, fast: Any, request: _Request, cfg: Config, tuned: bool) -> None:
    configs = request.configs
    decision = Decision(configs, len(configs), freeze(configs), cfg, tuned)
    others = [d for d in state.decided.get(fast, []) if d.frozen != decision.frozen]
    state.decided[fast] = [*others[-7:], decision]  # a few lists per key at most


def _decide(state: TunerState, fast: Any, request: _Request) -> Config:
    """First decision for ``fast`` in this process: known timings → time the missing → choose."""
    _env.check_flags()
    ident = device_identity(request.device)
    if not (ident.can_time or settings().tune_on_cpu):
        _remember(state, fast, request, request.default, tuned=False)
        _stats.defaults += 1
        _report(request.kernel, request.key, request.default, None, f"default: no tuning on {ident.name}")
        return request.default
    entry_key = full_key(request.kernel, request.source_hash, request.key, ident)
    name = canonical_json(entry_key)
    by_json = _candidates(request)
    timings, from_disk = _known_timings(state, name, by_json, ident)
    missing = [c for c in by_json if c not in timings]
    if missing and timing.capturing():
        # Timing would launch kernels into the graph being captured: answer from what is known,
        # remember nothing, and decide for real after the capture.
        _stats.capture_skips += 1
        cfg, ms = _fastest(by_json, timings, request.default)
        _report(request.kernel, request.key, cfg, ms, "graph capture: no timing")
        return cfg
    if missing:
        _time_missing(state, request, ident, name, entry_key, by_json, missing, timings)
        how = f"miss: timed {len(missing)} of {len(by_json)} configs"
    else:
        _stats.hits += 1
        _stats.disk_hits += from_disk
        how = "disk hit" if from_disk else "memory hit"
    state.timings[name] = timings
    state.decided_keys.add(name)
    return _choose(state, fast, request, by_json, timings, how)


def _candidates(request: _Request) -> dict[str, Config]:
    """Canonical config json → config, after the prune hook, first spelling of duplicates kept."""
    candidates = list(request.configs)
    if request.prune is not None:
        candidates = list(request.prune([copy_config(c) for c in candidates], request.key, request.device))
    by_json: dict[str, Config] = {}
    for cfg in candidates:
        by_json.setdefault(canonical_json(as_dict(cfg)), copy_config(cfg))
    return by_json


def _known_timings(
    state: TunerState, name: str, by_json: Mapping[str, Config], ident: DeviceIdentity
) -> tuple[dict[str, float], bool]:
    """Timings known for the key: this process's, then the cache file's for configs still
    missing. Returns ``(timings, read_from_disk)``; nothing with ``BLTRITON_FORCE_RETUNE=1``
    for a key not yet decided in this process."""
    if _env.force_retune() and name not in state.decided_keys:
        return {}, False
    timings = dict(state.timings.get(name, {}))
    missing = [c for c in by_json if c not in timings]
    if not missing:
        return timings, False
    stored = cache_file_for(ident).read().get(name)
    if stored is None:
        return timings, False
    for cfg_json, ms in stored["timings"].items():
        timings.setdefault(cfg_json, ms)
    return timings, any(c in stored["timings"] for c in missing)


def _time_missing(
    state: TunerState,
    request: _Request,
    ident: DeviceIdentity,
    name: str,
    entry_key: dict[str, Any],
    by_json: Mapping[str, Config],
    missing: Sequence[str],
    timings: dict[str, float],
) -> None:
    """Time the configs in ``missing`` into ``timings`` and merge them into the cache file."""
    transient = state.transient.setdefault(name, set())
    for cfg_json in missing:
        cfg = by_json[cfg_json]
        ms, config_failure = timing.time_config(
            lambda cfg=cfg: request.run(copy_config(cfg)),
            can_time=ident.can_time,
            stats=_stats,
            label=lambda cfg=cfg: f"{request.kernel} config {canonical_json(as_dict(cfg))}",
        )
        timings[cfg_json] = ms
        if math.isinf(ms) and not config_failure:
            transient.add(cfg_json)
        else:
            transient.discard(cfg_json)
    _stats.misses += 1
    _stats.tuned_keys.add(name)
    # Failures that may not be the config's fault (CUDA OOM, a launcher bug) stay in memory
    # only: a later process tries those configs again.
    stored = {c: ms for c, ms in timings.items() if c not in transient}
    cache_file_for(ident).merge_write({name: {"key": entry_key, "timings": stored}})


def _choose(
    state: TunerState,
    fast: Any,
    request: _Request,
    by_json: Mapping[str, Config],
    timings: Mapping[str, float],
    how: str,
) -> Config:
    cfg, ms = _fastest(by_json, timings, request.default)
    if ms is None:
        how += "; every config failed, using the default"
        _stats.defaults += 1
    _remember(state, fast, request, cfg, tuned=True)
    _report(request.kernel, request.key, cfg, ms, how)
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


def _report(kernel: str, key: Mapping[str, Any], cfg: Config, ms: float | None, how: str) -> None:
    if not _env.print_autotuning():
        return
    shown = "n/a" if ms is None or not math.isfinite(ms) else f"{ms:.4f} ms"
    print(
        f"[bltriton autotune] {kernel} {canonical_json(dict(key))} -> "
        f"{canonical_json(as_dict(cfg))} {shown} ({how})",
        flush=True,
    )


def _report_once(marker: Any, kernel: str, key: Mapping[str, Any], cfg: Config, why: str) -> None:
    if marker not in _state.printed:
        _state.printed.add(marker)
        _report(kernel, key, cfg, None, f"default: {why}")
