"""The measured algorithm choice: ``algorithm='auto'`` times the algorithms that can win on the
call's own shapes, once per machine, and keeps the fastest (docs/tuner.md, "Algorithm choice").

The cost estimate of :func:`bltriton.spatial.estimate` has fixed throughputs fitted on one
machine; on another CPU, thread count or library version it picks wrong (issue 25: 1.4x apart
where the estimate saw a tie). So the first call of each layer shape (and grad mode) runs every
candidate the estimate does not rule out, forward and backward as the model runs it (the forward
alone for inference), and the fastest goes to the tuner's cache file of this machine. Later
calls in the process hit the call memo of :mod:`bltriton.functional`; a later process reads the
file and times nothing.

==========================================  =====================================================
situation                                   result
==========================================  =====================================================
``algorithm`` not ``'auto'``, or            that algorithm (``save='band'``: spectral)
``save='band'``
``BLTRITON_AUTOTUNE=0``                     the estimate's pick; no timing, no cache read/write
``torch.compile`` tracing                   the estimate's pick (no key, no file: dynamo traces it)
functorch transforms, CUDA graph capture,   this process's pick where one exists, else the
fake or meta tensors, the Triton            estimate's; no timing
interpreter
the energy mode (a band per call)           the estimate's pick
one candidate estimated over                the other, untimed (:attr:`Settings.prune_ratio`)
``prune_ratio`` × the best estimate
a cached timing for this key                the fastest cached; no timing
(``BLTRITON_FORCE_RETUNE=1``: ignored)
otherwise                                   time the candidates (bounded: ``layer_calls`` calls
                                            of the layer, ``budget_s`` per process), store, pick
==========================================  =====================================================

The key holds everything that makes a timing valid elsewhere: the device (CPU model with its
family/model numbers and vector ISA, or the GPU's name and capability), the thread count, the
torch, Triton and bltriton versions, the CPU GEMM provider settings, and the call (input and weight
shapes, dtypes, memory format, stride, dilation, groups, folded padding, the band, grad mode and
which gradients are needed). An entry of another machine or version has another key: it is never
read for this one.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from bltriton import _env, spatial
from bltriton.autotune import keys as _keys
from bltriton.autotune import timing as _timing
from bltriton.autotune.cache import CacheFile, canonical_json
from bltriton.autotune.keys import bltriton_version, device_identity, triton_version

__all__ = [
    "KERNEL",
    "Settings",
    "clear_memory",
    "configure",
    "decisions",
    "interleaved_timer",
    "layer_label",
    "measured",
    "set_layer_label",
    "set_timer",
    "settings",
    "stats",
    "use_timer",
]

#: The ``kernel`` of the cache entries (``cache show`` and ``cache clear`` know them by it).
KERNEL = "algorithm"
CANDIDATES = ("spectral", "spatial")

#: ``timer(runs, layer_calls) -> {name: ms}``: times each ``runs[name]()`` (one call of the
#: layer by that algorithm), spending about ``layer_calls`` calls of the fastest in all; a
#: missing or non-finite value is a failed candidate. Tests pass a fake one.
Timer = Callable[[Mapping[str, Callable[[], object]], float], Mapping[str, float]]


@dataclass(frozen=True)
class Settings:
    """Process-wide settings of the choice (change with :func:`configure`).

    Attributes:
        prune_ratio: a candidate whose estimate exceeds this multiple of the best estimate is not
            timed. 3, not 2: the estimate's error reaches 2.6x on another CPU (issue 25: a 7x7
            depthwise layer, b8 C192 20², spectral 22.9 ms against spatial 60.0 ms measured on
            a Zen 3, where the rule estimates the two within 1.1-1.2x of each other here).
        layer_calls: timing one layer stops before its timed rounds cost more than this many
            calls of the layer (the fastest candidate's time); each candidate's one warm-up run,
            which builds its plans and operands, comes on top.
        max_rounds: interleaved timed runs per candidate at most (the best is kept).
        budget_s: seconds of timing per process; past it the estimate decides (not stored).
            :func:`bltriton.tune` lifts it.
    """

    prune_ratio: float = 3.0
    layer_calls: float = 10.0
    max_rounds: int = 3
    budget_s: float = 60.0


@dataclass
class _State:
    """What the choice remembers in a process; :func:`clear_memory` replaces it whole."""

    picks: dict[str, str] = field(default_factory=dict)  # canonical key -> algorithm
    spent_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)
    files: dict[tuple[str, str], CacheFile] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"timed": 0, "cache_hits": 0, "estimated": 0, "pruned": 0}
    )


_settings = Settings()
_state = _State()
_timer: Timer | None = None
_lock = threading.RLock()
_label = threading.local()


def settings() -> Settings:
    return _settings


def configure(**changes: Any) -> dict[str, Any]:
    """Change the :class:`Settings` of this process; returns the previous ones as a dict (so
    ``configure(**old)`` restores them).

    Raises:
        TypeError: an unknown setting (named).
        ValueError: a value that is not a positive number (named).
    """
    global _settings
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"choice.configure: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    for name, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"choice.configure: {name} must be a positive number; got {value!r}")
    old = asdict(_settings)
    _settings = replace(_settings, **changes)
    return old


def set_timer(timer: Timer | None) -> Timer | None:
    """Replace how candidates are timed (None: :func:`interleaved_timer`); returns the old one."""
    global _timer
    old, _timer = _timer, timer
    return old


@contextlib.contextmanager
def use_timer(timer: Timer | None) -> Iterator[None]:
    """:func:`set_timer` for a ``with`` block."""
    old = set_timer(timer)
    try:
        yield
    finally:
        set_timer(old)


def clear_memory() -> None:
    """Forget this process's picks, records, counters and the time spent (the disk stays)."""
    global _state
    with _lock:
        _state = _State()


def stats() -> dict[str, Any]:
    """``timed`` (keys timed here), ``cache_hits`` (keys read from the cache file),
    ``estimated`` (picks by the estimate: tuning off, tracing, budget spent, ...), ``pruned``
    (one candidate left by the estimate) and ``spent_s`` (seconds of timing)."""
    return {**_state.counts, "spent_s": _state.spent_s}


def decisions() -> list[dict[str, Any]]:
    """Every decision of this process, oldest first: ``{"layer", "key", "training", "pick",
    "ms" ({algorithm: ms} of the timed or cached candidates), "how"}``."""
    return [dict(r) for r in _state.records]


def set_layer_label(name: str | None) -> str | None:
    """Name the layer whose calls decide from now on in this thread (the ``"layer"`` of
    :func:`decisions` and of the printed lines); returns the previous name."""
    old = getattr(_label, "name", None)
    _label.name = name
    return old


@contextlib.contextmanager
def layer_label(name: str | None) -> Iterator[None]:
    """:func:`set_layer_label` for a ``with`` block."""
    old = set_layer_label(name)
    try:
        yield
    finally:
        set_layer_label(old)


# -- timing ------------------------------------------------------------------------------------


def interleaved_timer(runs: Mapping[str, Callable[[], object]], layer_calls: float) -> dict[str, float]:
    """One warm-up run of each candidate (plans and operands are built there, once per process
    whatever the choice), then interleaved rounds, one run of each per round, while another
    round keeps the rounds at most ``layer_calls`` runs of the fastest candidate (one round at least,
    :attr:`Settings.max_rounds` at most); the best time per candidate, in ms. Best times, as the
    CPU GEMM providers' probes take: on a shared machine a busy moment only ever slows a run, and
    one must not decide."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, math.inf)
    start = time.perf_counter()
    for _ in range(max(1, _settings.max_rounds)):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
        if time.perf_counter() - start + sum(best.values()) > layer_calls * min(best.values()):
            break
    return {name: t * 1e3 for name, t in best.items()}


def _runner(algorithm: str, spec, x_pad, weight, bias, training: bool, filter_cache) -> Callable[[], None]:
    """One call of the layer by ``algorithm`` as the model runs it: forward and the gradients
    the call needs (on detached copies: no ``.grad`` is touched), or the forward alone without
    autograd (with a fresh filter-band cache where the caller keeps one: eval mode)."""
    from bltriton import ops
    from bltriton.autograd import band_conv

    spec = replace(spec, algorithm=algorithm)
    sync = torch.cuda.synchronize if x_pad.device.type == "cuda" else (lambda: None)
    if not training:
        cache = ops.FilterBandCache() if filter_cache is not None else None

        def infer() -> None:
            with torch.no_grad():
                band_conv(x_pad, weight, bias, spec, cache)
            sync()

        return infer
    need = [x_pad.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad]
    leaves = [
        None if t is None else t.detach().requires_grad_(n) for t, n in zip((x_pad, weight, bias), need)
    ]
    wanted = [t for t, n in zip(leaves, need) if n]
    grad_out: list[torch.Tensor] = []

    def train() -> None:
        with torch.enable_grad():
            y = band_conv(leaves[0], leaves[1], leaves[2], spec)
            if not grad_out:  # ones, not randn: the caller's random stream must not move
                grad_out.append(torch.ones_like(y))
            torch.autograd.grad(y, wanted, grad_out[0])
        sync()

    return train


# -- the decision ------------------------------------------------------------------------------


def _why_not_timed(spec, x_pad: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why this call may not time anything (``None``: it may)."""
    if torch._C._are_functorch_transforms_active():
        return "functorch transform"
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return "jit tracing"
    if x_pad.device.type not in ("cpu", "cuda") or x_pad.numel() == 0 or weight.numel() == 0:
        return f"no values to time on {x_pad.device.type}"
    if isinstance(x_pad, torch._subclasses.FakeTensor) or isinstance(weight, torch._subclasses.FakeTensor):
        return "fake tensors"
    if _timing.capturing():
        return "CUDA graph capture"
    if spec.backend == "triton" and _env.triton_interpret():
        return "the Triton interpreter (its times say nothing)"
    return None


def _device_fields(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        ident = device_identity(device)
        return {"device": ident.name, "capability": list(ident.capability or ()), "threads": None}
    # The GEMM providers as set (BLTRITON_CPU_GEMM/CGEMM), not the probes' answers under 'auto':
    # those are timings too, and flipped between two processes of the loaded development CPU
    # (oneDNN in one, torch.mm in the next), which made every cached choice miss.
    return {
        "device": "cpu " + _keys.cpu_model(),
        "isa": _keys.cpu_isa(),
        "threads": torch.get_num_threads(),
        "gemm": _env.cpu_gemm(),
        "cgemm": _env.cpu_cgemm(),
    }


def _memory_format(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def call_key(spec, x_pad: torch.Tensor, weight: torch.Tensor, bias, training: bool, eval_cache: bool) -> dict:
    """The full cache key of one call's choice (a JSON object; see the module docstring)."""
    band = spec.band
    return {
        "kernel": KERNEL,
        "bltriton": bltriton_version(),
        "triton": triton_version(),
        "torch": torch.__version__,
        **_device_fields(x_pad.device),
        "key": {
            "x": list(x_pad.shape),
            "w": list(weight.shape),
            "bias": bias is not None,
            "dtype": str(x_pad.dtype),
            "out_dtype": None if spec.out_dtype is None else str(spec.out_dtype),
            "precision": spec.precision,
            "format": _memory_format(x_pad),
            "stride": list(spec.stride),
            "dilation": list(spec.dilation),
            "groups": spec.groups,
            "pad": list(spec.pad),
            "band": [list(band.n), band.rows_top, band.rows_bottom, band.cols],
            "backend": spec.backend,
            "training": training,
            "grads": [bool(x_pad.requires_grad), bool(weight.requires_grad)] if training else [],
            "eval_cache": eval_cache,
        },
    }


def _cache_file(name: str) -> CacheFile:
    folder = str(_env.cache_dir())
    handle = _state.files.get((folder, name))
    if handle is None:
        timeout = _timing.settings().lock_timeout_s
        handle = CacheFile(folder, name, lock_timeout_s=timeout, version=bltriton_version())
        _state.files[(folder, name)] = handle
    return handle


def cache_file_name(device: torch.device) -> str:
    """The cache file (device name) that holds this device's choices: the GPU's own file (beside
    its kernel configs), or ``cpu <model>`` on the CPU (the kernel configs' CPU file is the
    interpreter's, ``cpu-interpreter``)."""
    return _device_fields(device)["device"]


def _record(key: dict | None, pick: str, ms: Mapping[str, float], how: str, training: bool) -> None:
    shape = key["key"] if key else {}
    record = {
        "layer": getattr(_label, "name", None),
        "key": shape,
        "training": training,
        "pick": pick,
        "ms": dict(ms),
        "how": how,
    }
    _state.records.append(record)
    del _state.records[:-4096]
    if _env.print_autotuning():
        timed = ", ".join(f"{a} {t:.3f} ms" for a, t in ms.items() if math.isfinite(t)) or "not timed"
        where = f" {record['layer']}" if record["layer"] else ""
        print(
            f"[bltriton autotune] {KERNEL}{where} x{shape.get('x')} w{shape.get('w')} "
            f"{'train' if training else 'infer'} -> {pick} ({timed}; {how}; "
            f"{_state.spent_s:.2f} s timed in this process)",
            flush=True,
        )


def measured(
    prior: str,
    spec,
    x_pad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    training: bool,
    filter_cache: object | None = None,
    *,
    measure: bool = True,
) -> str:
    """The algorithm of an ``algorithm='auto'`` call (the first of its shapes and grad mode: the
    call memo of :mod:`bltriton.functional` keeps the answer), asked by
    :func:`bltriton.spatial.choose_algorithm`.

    Args:
        prior: the estimate's pick (``"spectral"`` or ``"spatial"``).
        spec: the call's :class:`~bltriton.autograd.ConvSpec` (``save_input`` set).
        x_pad: ``[B, C, *L]`` the op's input; weight ``[O, C/groups, *k]``; bias ``[O]`` or None.
        training: the call records gradients (forward and backward are timed), else the forward.
        filter_cache: the layer's filter-band cache where it passes one (eval mode).
        measure: False where the band changes per call (the energy mode): the estimate decides.

    Returns:
        The fastest measured (or cached) candidate, or ``prior`` where nothing may be timed (see
        the module docstring).
    """
    if torch.compiler.is_compiling() or not _env.autotune_enabled():
        return prior
    with _lock:
        return _decide(prior, spec, x_pad, weight, bias, training, filter_cache, measure)


def _decide(prior: str, spec, x_pad, weight, bias, training: bool, filter_cache, measure: bool) -> str:
    why = _why_not_timed(spec, x_pad, weight)
    key = name = None
    # e.g. symbolic sizes (no JSON form), or a memory format a transform cannot be asked for
    with contextlib.suppress(TypeError, ValueError, RuntimeError):
        key = call_key(spec, x_pad, weight, bias, training, filter_cache is not None)
        name = canonical_json(key)
    if name is not None and name in _state.picks:
        return _state.picks[name]
    if why is not None or not measure or name is None:
        _state.counts["estimated"] += 1
        _record(key, prior, {}, f"estimate: {why or 'the band changes per call'}", training)
        return prior
    shapes = (tuple(x_pad.shape), tuple(weight.shape))
    estimates = dict(zip(CANDIDATES, spatial.estimate(spec, *shapes, x_pad.device, training)))
    candidates = [a for a in CANDIDATES if estimates[a] <= _settings.prune_ratio * min(estimates.values())]
    if len(candidates) == 1:
        _state.counts["pruned"] += 1
        _state.picks[name] = candidates[0]
        _record(key, candidates[0], {}, f"estimate: the other over {_settings.prune_ratio:g}x", training)
        return candidates[0]
    cache_file = _cache_file(key["device"])
    stored = None if _env.force_retune() else cache_file.read().get(name)
    labels = {a: canonical_json({KERNEL: a}) for a in candidates}
    if stored is not None and all(labels[a] in stored["timings"] for a in candidates):
        _state.counts["cache_hits"] += 1
        ms = {a: stored["timings"][labels[a]] for a in candidates}
        how = "cache hit"
    elif _state.spent_s >= _settings.budget_s:
        _state.counts["estimated"] += 1
        _record(key, prior, {}, f"estimate: the timing budget of {_settings.budget_s:g} s is spent", training)
        return prior
    else:
        runs = {a: _runner(a, spec, x_pad, weight, bias, training, filter_cache) for a in candidates}
        t0 = time.perf_counter()
        try:
            measured = dict((_timer or interleaved_timer)(runs, _settings.layer_calls))
        finally:
            _state.spent_s += time.perf_counter() - t0
        ms = {a: _finite(measured.get(a)) for a in candidates}
        _state.counts["timed"] += 1
        how = f"timed {len(candidates)} candidates"
        cache_file.merge_write({name: {"key": key, "timings": {labels[a]: t for a, t in ms.items()}}})
    finite = {a: t for a, t in ms.items() if math.isfinite(t)}
    pick = min(finite, key=finite.get) if finite else prior
    _state.picks[name] = pick
    _record(key, pick, ms, how, training)
    return pick


def _finite(value: object) -> float:
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.inf
    return value if math.isfinite(value) and value >= 0 else math.inf
