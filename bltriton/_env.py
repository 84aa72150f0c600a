"""Every ``BLTRITON_*`` environment variable is read here, and only here.

docs/environment.md lists the same table. Values are read at call time (not import time) so that
tests and users can change them within a process. The first read of any of them checks them all
(:func:`check_all`), and so does every band-limited call whose arguments and shapes are new, so a
typo in a variable the current code path never reads (``BLTRITON_AUTOTUNE`` on the CPU torch path)
is reported too, naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Backend names, here because BLTRITON_BACKEND is parsed here; every other place imports them.
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
#: Algorithm names (BLTRITON_ALGORITHM; bltriton.functional.ALGORITHMS describes them).
ALGORITHM_NAMES: tuple[str, ...] = ("auto", "spectral", "spatial")

#: name -> (default, description). docs/environment.md's table repeats the same facts.
VARIABLES: dict[str, tuple[str, str]] = {
    "BLTRITON_BACKEND": (
        "auto",
        "default backend: 'auto' (triton on CUDA when it imports, else torch), 'torch', 'triton'",
    ),
    "BLTRITON_CACHE_DIR": ("~/.cache/bltriton", "folder of the autotuner's JSON cache files"),
    "BLTRITON_AUTOTUNE": (
        "1",
        "0 = never time anything: kernel configs take the heuristic default, algorithm='auto' the "
        "cost estimate",
    ),
    "BLTRITON_FORCE_RETUNE": ("0", "1 = ignore cached choices and time again"),
    "BLTRITON_PRINT_AUTOTUNING": ("0", "1 = print each tuning decision (configs and algorithms)"),
    "BLTRITON_ALGORITHM": (
        "auto",
        "default algorithm: 'auto' (the faster for each call's shapes, timed at its first call and "
        "cached), 'spectral' (transforms "
        "and band contractions), 'spatial' (band-projected input, library convolution)",
    ),
    "BLTRITON_CPU_GEMM": (
        "auto",
        "real fp32 GEMMs of the CPU transforms: 'auto' (oneDNN where a one-time probe finds it "
        "faster than torch.mm), 'onednn', 'torch'",
    ),
    "BLTRITON_CPU_CGEMM": (
        "auto",
        "complex64 GEMMs of the CPU path (band contractions, transform row stages): 'auto' (the "
        "library's C++ kernel, built on first use, where a one-time probe finds it faster than "
        "torch.matmul), 'kernel', 'torch'",
    ),
    "BLTRITON_CHECK_FINITE": (
        "0",
        "1 = raise a ValueError when an input, weight or bias holds inf/NaN (one host sync per call)",
    ),
}

#: Spellings a boolean variable accepts (case-insensitive); an empty value means unset.
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class EnvVarError(ValueError):
    """A ``BLTRITON_*`` variable holds a value it does not accept (the message names it)."""


#: The on/off variables (those whose default is 0 or 1); :func:`check_flags` parses them all.
_FLAGS = tuple(name for name, (default, _) in VARIABLES.items() if default in ("0", "1"))


def _flag(name: str) -> bool:
    _check_all_once()
    # Strict: a typo such as ``BLTRITON_AUTOTUNE=maybe`` must not silently mean "on".
    raw = os.environ.get(name, "")
    value = raw.strip().lower() or VARIABLES[name][0]
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvVarError(
        f"{name} must be one of 0/1, true/false, yes/no, on/off (any case) or unset; got {raw!r}"
    )


def check_flags() -> None:
    """Parse every boolean variable, so that a typo in one the current code path does not read
    (``BLTRITON_FORCE_RETUNE=ture`` while tuning is off) is reported too. The tuner calls it
    on its slow paths (a key's first decision, tuning off), not on every cached lookup, where
    reading three variables instead of one cost about 40% of the lookup (profiled).

    Raises:
        EnvVarError: the first variable with a value it does not accept.
    """
    for name in _FLAGS:
        _flag(name)


def backend() -> str:
    _check_all_once()
    value = os.environ.get("BLTRITON_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise EnvVarError(f"BLTRITON_BACKEND must be one of {BACKENDS}; got {value!r}")
    return value


def algorithm() -> str:
    _check_all_once()
    value = os.environ.get("BLTRITON_ALGORITHM", "auto").strip().lower() or "auto"
    if value not in ALGORITHM_NAMES:
        raise EnvVarError(f"BLTRITON_ALGORITHM must be one of {ALGORITHM_NAMES}; got {value!r}")
    return value


def backend_raw() -> tuple[str | None, str | None]:
    """The unparsed values of the variables that decide a backend (``BLTRITON_BACKEND``,
    ``TRITON_INTERPRET``): a key for caches of resolved calls."""
    return os.environ.get("BLTRITON_BACKEND"), os.environ.get("TRITON_INTERPRET")


def cache_dir() -> Path:
    """The tuner's folder. Every path is a value: a folder that cannot be created or written is
    the tuner's warning (it then keeps its choices in memory), not an error here."""
    _check_all_once()
    raw = os.environ.get("BLTRITON_CACHE_DIR") or VARIABLES["BLTRITON_CACHE_DIR"][0]
    return Path(raw).expanduser()


def autotune_enabled() -> bool:
    return _flag("BLTRITON_AUTOTUNE")


def force_retune() -> bool:
    return _flag("BLTRITON_FORCE_RETUNE")


def print_autotuning() -> bool:
    return _flag("BLTRITON_PRINT_AUTOTUNING")


def check_finite() -> bool:
    return _flag("BLTRITON_CHECK_FINITE")


CPU_GEMMS: tuple[str, ...] = ("auto", "onednn", "torch")


CPU_CGEMMS: tuple[str, ...] = ("auto", "kernel", "torch")


def _choice(name: str, choices: tuple[str, ...]) -> str:
    _check_all_once()
    value = os.environ.get(name, "auto").strip().lower() or "auto"
    if value not in choices:
        raise EnvVarError(f"{name} must be one of {choices}; got {value!r}")
    return value


def cpu_gemm() -> str:
    return _choice("BLTRITON_CPU_GEMM", CPU_GEMMS)


def cpu_cgemm() -> str:
    return _choice("BLTRITON_CPU_CGEMM", CPU_CGEMMS)


def triton_interpret() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


#: The parser of each variable of :data:`VARIABLES` (each raises :class:`EnvVarError` on a value
#: it does not accept).
PARSERS = {
    "BLTRITON_BACKEND": backend,
    "BLTRITON_CACHE_DIR": cache_dir,
    "BLTRITON_AUTOTUNE": autotune_enabled,
    "BLTRITON_FORCE_RETUNE": force_retune,
    "BLTRITON_PRINT_AUTOTUNING": print_autotuning,
    "BLTRITON_ALGORITHM": algorithm,
    "BLTRITON_CPU_GEMM": cpu_gemm,
    "BLTRITON_CPU_CGEMM": cpu_cgemm,
    "BLTRITON_CHECK_FINITE": check_finite,
}


def check_all() -> None:
    """Parse every ``BLTRITON_*`` variable, in the table's order, whatever the caller reads.

    Called on the first read of any variable in a process and by each band-limited call whose
    static part is new (:func:`bltriton.functional.bl_conv_with_band`; a repeated call is served
    from its memo, where reading ten variables would cost more than the rest of the lookup).

    Raises:
        EnvVarError: the first variable with a value it does not accept (the message names it).
    """
    global _all_checked
    outer = not _all_checked
    _all_checked = True  # the parsers below must not start this check again
    try:
        for name in VARIABLES:
            PARSERS[name]()
    except BaseException:
        if outer:
            _all_checked = False  # not checked yet: the next read checks again
        raise


#: Whether :func:`check_all` has passed once in this process.
_all_checked = False


def _check_all_once() -> None:
    if not _all_checked:
        check_all()
