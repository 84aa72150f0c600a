"""What the tuner remembers in a process, and how configs are compared.

:class:`TunerState` holds every in-process memory of the tuner and :class:`Stats` its counters;
the tuner replaces each as a whole (``clear_memory()``, ``reset_stats()``), so nothing has to be
listed by hand when a field is added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bltriton.autotune.cache import CacheFile, canonical_json

#: A launch config: a flat dict (``{"BLOCK_M": 64, ..., "num_warps": 4}``) or a ``triton.Config``.
Config = Any


@dataclass
class Decision:
    """A remembered answer for one fast key and one config list.

    ``configs`` is the list object it was decided for: launchers pass the same object on every
    call, so an identity check (with the length, for a list grown in place) answers without
    looking at the configs; another object is compared by value (``frozen``).
    """

    configs: Sequence[Config]
    length: int
    frozen: Any
    config: Config
    tuned: bool  # False: the default, because nothing may be timed here


@dataclass
class TunerState:
    """Everything the tuner remembers in a process; :func:`clear_memory` replaces it whole.

    Attributes:
        decided: fast key → decisions (one per config list seen for that key).
        timings: canonical key → timings (config json → ms) known here (measured or read).
        decided_keys: canonical keys decided here (``BLTRITON_FORCE_RETUNE`` applies to others).
        transient: canonical key → configs whose failure may be transient (not written to disk).
        files: (folder, device name) → :class:`CacheFile` (parse cache, warn-once, pending writes).
        printed: messages already printed once.
    """

    decided: dict[Any, list[Decision]] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    decided_keys: set[str] = field(default_factory=set)
    transient: dict[str, set[str]] = field(default_factory=dict)
    files: dict[tuple[str, str], CacheFile] = field(default_factory=dict)
    printed: set[Any] = field(default_factory=set)


@dataclass
class Stats:
    """Counters of :func:`stats` (see there); :func:`reset_stats` replaces them whole."""

    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    timings: int = 0
    failed: int = 0
    defaults: int = 0
    capture_skips: int = 0
    tuned_keys: set[str] = field(default_factory=set)


def as_dict(cfg: Config) -> dict[str, Any]:
    """A config as a flat dict: dicts as they are, a ``triton.Config`` as its ``all_kwargs()``
    (meta-parameters plus ``num_warps``/``num_stages``/...), so both spellings share keys."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    all_kwargs = getattr(cfg, "all_kwargs", None)
    if callable(all_kwargs):
        return dict(all_kwargs())
    raise TypeError(f"autotune configs must be dicts or triton.Config; got {type(cfg).__name__}")


def copy_config(cfg: Config) -> Config:
    # The caller gets its own dict (it may edit it); a triton.Config is passed as it is.
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def freeze(value: Any) -> Any:
    """Hashable stand-in for a flat dict or a list of them (the fast lookup's key).

    Unhashable values (lists inside) fall back to canonical JSON text. ``1 == 1.0 == True``
    here: a launcher that passes both spellings for one key shares the decision, which is
    harmless for tile sizes.
    """
    try:
        if isinstance(value, Mapping):
            frozen: Any = tuple(sorted(value.items()))
        else:
            frozen = tuple(tuple(sorted(as_dict(c).items())) for c in value)
        hash(frozen)
        return frozen
    except TypeError:
        if isinstance(value, Mapping):
            return canonical_json(dict(value))
        return canonical_json([as_dict(c) for c in value])
