"""Every ``BLTRITON_*`` environment variable is read here, and only here.

The README lists the same table. Values are read at call time (not import time) so that tests and
users can change them within a process.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Backend names, here because BLTRITON_BACKEND is parsed here; every other place imports them.
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

#: name -> (default, description). The README's table is generated from the same facts.
VARIABLES: dict[str, tuple[str, str]] = {
    "BLTRITON_BACKEND": (
        "auto",
        "default backend: 'auto' (triton on CUDA when it imports, else torch), 'torch', 'triton'",
    ),
    "BLTRITON_CACHE_DIR": ("~/.cache/bltriton", "folder of the autotuner's JSON cache files"),
    "BLTRITON_AUTOTUNE": ("1", "0 = never time configs, use the heuristic default"),
    "BLTRITON_FORCE_RETUNE": ("0", "1 = ignore cached choices and time again"),
    "BLTRITON_PRINT_AUTOTUNING": ("0", "1 = print each tuning decision"),
    "BLTRITON_CHECK_FINITE": (
        "0",
        "1 = raise a ValueError when an input, weight or bias holds inf/NaN (one host sync per call)",
    ),
}


def _flag(name: str) -> bool:
    value = os.environ.get(name, VARIABLES[name][0]).strip().lower()
    return value not in ("", "0", "false", "no", "off")


def backend() -> str:
    value = os.environ.get("BLTRITON_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"BLTRITON_BACKEND must be one of {BACKENDS}; got {value!r}")
    return value


def cache_dir() -> Path:
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


def triton_interpret() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")
