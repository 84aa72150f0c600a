"""How the tuner times a config: settings, the CUDA and CPU timers, which errors are a config's
own fault, and whether a CUDA graph is being captured (no timing then)."""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from bltriton import _env

#: ``timer(fn) -> ms``: runs ``fn`` (one launch) as often as it likes and returns milliseconds.
Timer = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Settings:
    """Process-wide tuner settings (change with :func:`configure`).

    Attributes:
        tune_on_cpu: time configs on CPU / under the Triton interpreter too (tests use it); off
            by default because interpreter timings say nothing about a GPU.
        warmup_ms: ``do_bench`` warm-up budget per config on CUDA, in milliseconds.
        rep_ms: ``do_bench`` measuring budget per config on CUDA, in milliseconds.
        cpu_reps: runs per config for the CPU timer (median of them, after one warm-up run).
        lock_timeout_s: seconds to wait for the cache file lock (once per process: after one
            timeout the lock is no longer waited for, see :class:`CacheFile`).
    """

    tune_on_cpu: bool = False
    warmup_ms: float = 5.0
    rep_ms: float = 20.0
    cpu_reps: int = 5
    lock_timeout_s: float = 60.0


_settings = Settings()
_timer: Timer | None = None


def settings() -> Settings:
    """The current :class:`Settings`."""
    return _settings


def replace_settings(**changes: Any) -> Settings:
    """Replace the settings (names checked by the caller); returns the previous ones."""
    global _settings
    old, _settings = _settings, replace(_settings, **changes)
    return old


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


def capturing() -> bool:
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


def config_error_types() -> tuple[type[BaseException], ...]:
    """Triton's errors that are a property of the config on this device (too much shared memory,
    too many registers, a compile error for these tile sizes): safe to remember on disk. The
    same list ``triton.autotune`` treats as a failed config."""
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


def time_config(
    run: Callable[[], object], *, can_time: bool, stats: Any, label: Callable[[], str]
) -> tuple[float, bool]:
    """Time one launch of one config.

    Args:
        run: launches the kernel once with the config under test.
        can_time: True on a device whose timings mean something (the CUDA timer), else the
            CPU timer.
        stats: counters with ``timings`` and ``failed`` attributes, incremented here.
        label: text naming kernel and config for ``BLTRITON_PRINT_AUTOTUNING`` (called only then).

    Returns:
        ``(ms, True)``; a failure gives ``(inf, config_failure)`` where ``config_failure`` says
        whether the error is the config's own (stored on disk) or may be transient (kept in
        memory only).
    """
    timer = _timer or (cuda_timer if can_time else cpu_timer)
    stats.timings += 1
    try:
        ms = float(timer(run))
    except Exception as err:  # OutOfResources, compile errors, launch errors of this config
        stats.failed += 1
        if _env.print_autotuning():
            print(f"[bltriton autotune] {label()} failed: {type(err).__name__}: {str(err)[:200]}", flush=True)
        return math.inf, isinstance(err, config_error_types())
    if not math.isfinite(ms) or ms < 0:
        stats.failed += 1
        return math.inf, False
    return ms, True
