"""The autotuner's on-disk cache: one JSON file per device.

File layout (``<cache_dir>/<sanitized device name>.json``)::

    {
      "schema": 1,
      "bltriton": "0.1.0",
      "entries": {
        "<canonical key>": {
          "key": {...},                       # the full key, as a JSON object
          "timings": {"<config json>": 0.0123, "<config json>": null, ...},
          "best": {...} | null,               # fastest config over all stored timings
          "best_ms": 0.0123 | null,
          "updated": "2025-01-01T00:00:00+00:00"
        }
      }
    }

A timing of ``null`` records a config that failed with a Triton resource or compile error (it
cannot run on this device); in memory it is ``float("inf")``. Strict JSON only: no pickle, no
``eval``, no ``NaN``/``Infinity`` literals.

Writes are read-merge-write under a ``filelock.FileLock`` (``<file>.lock``) into a temporary file in
the same folder, then ``os.replace`` (atomic), so readers never see a half-written file and
concurrent writers lose no entries. A file that cannot be used (corrupt, truncated, empty,
unreadable, not a dict, another schema) is renamed aside (``<file>.corrupt-<time>-<pid>``) with one
:class:`BLTritonCacheWarning` and rebuilt. A folder that cannot be written gives one warning per
process and the tuner keeps its choices in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

#: Version of the file layout above. A file with another value is set aside and rebuilt.
SCHEMA_VERSION = 1

#: Seconds to wait for another process's lock before giving up on a write (the choice is kept in
#: memory). Writes hold the lock for milliseconds, so this only trips on a stuck process.
DEFAULT_LOCK_TIMEOUT_S = 60.0

#: Marker in the names of files set aside; ``cache clear`` removes them too.
CORRUPT_MARKER = ".corrupt-"

Entries = dict[str, dict[str, Any]]


class BLTritonCacheWarning(UserWarning):
    """The autotune cache could not be read or written; tuning goes on without it."""


def canonical_json(obj: Any) -> str:
    """Canonical JSON text of a key or config: sorted keys, no spaces, strict (no NaN).

    Args:
        obj: a JSON-like value (dicts with string keys, lists/tuples, str, int, float, bool,
            None). ``torch.dtype`` and ``torch.device`` values are written as their ``str``.

    Returns:
        The same text for equal values, whatever the dict order.

    Raises:
        TypeError: a value that has no JSON form (named in the message).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    module = type(value).__module__
    if module.startswith("torch") and type(value).__name__ in ("dtype", "device"):
        return str(value)
    raise TypeError(
        f"autotune key/config values must be JSON values (str, int, float, bool, None, lists, "
        f"dicts); got {value!r} of type {type(value).__name__}"
    )


def sanitize_device_name(name: str) -> str:
    """File-name-safe form of a device name: ``NVIDIA H100 80GB HBM3`` → ``NVIDIA_H100_80GB_HBM3``.

    Args:
        name: device name as reported by the driver (any characters).

    Returns:
        A non-empty name made of ``[A-Za-z0-9._-]``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return safe or "unknown-device"


def cache_file_path(directory: str | os.PathLike[str], device_name: str) -> Path:
    """Path of the cache file for ``device_name`` under ``directory``."""
    return Path(directory) / f"{sanitize_device_name(device_name)}.json"


def decode_timing(value: Any) -> float | None:
    """A stored timing as milliseconds (``inf`` for a failed config); None if not a timing."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if math.isnan(value) or value < 0:
        return None
    return value


def best_of(timings: Mapping[str, float]) -> tuple[dict[str, Any] | None, float | None]:
    """Fastest config among ``timings`` (config json → ms) as ``(config, ms)``; ``(None, None)``
    when every timing failed. Ties go to the smallest config text, so the choice is stable."""
    finite = [(ms, cfg) for cfg, ms in timings.items() if math.isfinite(ms)]
    if not finite:
        return None, None
    ms, cfg = min(finite)
    return json.loads(cfg), ms


def _validate_entries(raw: Any) -> Entries | None:
    """Entries of a parsed file, or None when the file is not a cache of this schema.

    Single bad entries (a foreign tool writing in the file, a hand edit) are dropped without a
    warning: the rest of the file is still good.
    """
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA_VERSION:
        return None
    entries = raw.get("entries")
    if not isinstance(entries, dict):
        return None
    good: Entries = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            continue
        key, timings = entry.get("key"), entry.get("timings")
        if not isinstance(key, dict) or not isinstance(timings, dict):
            continue
        decoded: dict[str, float] = {}
        for cfg, ms in timings.items():
            value = decode_timing(ms)
            if value is not None:
                decoded[cfg] = value
        good[name] = {**entry, "timings": decoded}
    return good


def _encode_entries(entries: Entries) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, entry in entries.items():
        timings = {cfg: (ms if math.isfinite(ms) else None) for cfg, ms in entry["timings"].items()}
        out[name] = {**entry, "timings": timings}
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _BadFile(Exception):
    """The cache file exists but cannot be used; ``str(self)`` says why."""


class CacheFile:
    """One device's cache file: read (with a parse cache keyed on the file's stat) and merge-write.

    Never raises for I/O problems: they become :class:`BLTritonCacheWarning` s and an empty or
    in-memory-only cache.

    Args:
        directory: the cache folder (created on first write).
        device_name: device name; the file is ``<directory>/<sanitized name>.json``.
        lock_timeout_s: seconds to wait for the file lock before skipping a write.
        version: bltriton version written at the top of the file (informational).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        device_name: str,
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        version: str = "0+unknown",
    ) -> None:
        self.directory = Path(directory)
        self.path = cache_file_path(self.directory, device_name)
        self.lock_path = Path(str(self.path) + ".lock")
        self.lock_timeout_s = lock_timeout_s
        self.version = version
        self._parsed: tuple[tuple[int, int, int], Entries] | None = None
        # One warning per file and process for a folder that cannot be read or written.
        self._io_warned = False

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> Entries:
        """All entries of the file (``{}`` if it does not exist or cannot be used).

        A file that exists but cannot be used is set aside with one warning (under the lock, after
        a second look, so that of several processes only one renames it).
        """
        try:
            return self._read_unlocked()
        except _BadFile as bad:
            reason = str(bad)
        try:
            with self._lock():
                return self._read_locked_or_set_aside()
        except (OSError, filelock.Timeout) as err:
            # No lock (read-only folder, timeout): leave the file alone, tune in memory.
            if not self._io_warned:
                self._io_warned = True
                _warn(
                    f"bltriton autotune cache {self.path} cannot be used ({reason}) and cannot be "
                    f"set aside ({err!r}); tuning without it"
                )
            return {}

    def peek(self) -> tuple[Entries, str | None]:
        """Entries without side effects: ``(entries, None)``, or ``({}, reason)`` for a file that
        cannot be used (left where it is, no warning). For ``cache show``."""
        try:
            return self._read_unlocked(), None
        except _BadFile as bad:
            return {}, str(bad)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):  # no file, or no folder to hold one
            return None
        except OSError as err:
            raise _BadFile(f"cannot stat: {err!r}") from err
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_unlocked(self) -> Entries:
        stamp = self._stat()
        if stamp is None:
            self._parsed = None
            return {}
        if self._parsed is not None and self._parsed[0] == stamp:
            return self._parsed[1]
        try:
            data = _read_bytes(self.path)
        except FileNotFoundError:  # replaced or removed between the stat and the open
            self._parsed = None
            return {}
        entries = self._parse(data)
        # The stat before the read may be older than the content read (a writer replaced the file
        # in between); that only costs one re-parse next time.
        self._parsed = (stamp, entries)
        return entries

    @staticmethod
    def _parse(data: bytes | BaseException) -> Entries:
        if isinstance(data, BaseException):
            raise _BadFile(f"unreadable: {data!r}")
        if not data.strip():
            raise _BadFile("empty file")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _BadFile(f"not valid JSON ({err})") from err
        entries = _validate_entries(raw)
        if entries is None:
            schema = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
            raise _BadFile(f"not a bltriton cache of schema {SCHEMA_VERSION} (found {schema!r})")
        return entries

    def _read_locked_or_set_aside(self) -> Entries:
        """Read under the lock; a bad file is renamed aside (one warning) and ``{}`` returned."""
        try:
            return self._read_unlocked()
        except _BadFile as bad:
            aside = self._set_aside()
            _warn(
                f"bltriton autotune cache {self.path} was unusable ({bad}); moved it to {aside} "
                f"and starting a fresh cache"
            )
            self._parsed = None
            return {}

    def _set_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for attempt in range(100):
            suffix = f"{CORRUPT_MARKER}{stamp}-{os.getpid()}" + (f"-{attempt}" if attempt else "")
            aside = self.path.with_name(self.path.name + suffix)
            if not os.path.lexists(aside):
                os.replace(self.path, aside)
                return aside
        raise OSError(f"no free name to set {self.path} aside")

    # -- writing -------------------------------------------------------------------------------

    def merge_write(self, updates: Entries) -> bool:
        """Merge ``updates`` into the file: read, union the timings, write atomically.

        Args:
            updates: canonical key → ``{"key": dict, "timings": {config json: ms}}``. New timings
                replace stored ones for the same config; other configs' timings and other keys'
                entries (from other processes) are kept.

        Returns:
            True if written; False (after one warning per file and process) if the folder cannot
            be written or the lock not taken.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock():
                entries = dict(self._read_locked_or_set_aside())
                now = _now()
                for name, update in updates.items():
                    old = entries.get(name)
                    timings = dict(old["timings"]) if old else {}
                    timings.update(update["timings"])
                    best, best_ms = best_of(timings)
                    entries[name] = {
                        "key": update["key"],
                        "timings": timings,
                        "best": best,
                        "best_ms": best_ms,
                        "updated": now,
                    }
                self._write_atomic(entries)
            return True
        except (OSError, filelock.Timeout) as err:
            if not self._io_warned:
                self._io_warned = True
                _warn(
                    f"bltriton autotune cache folder {self.directory} cannot be written "
                    f"({err!r}); tuning results are kept in memory for this process only"
                )
            return False

    def _write_atomic(self, entries: Entries) -> None:
        doc = {
            "schema": SCHEMA_VERSION,
            "bltriton": self.version,
            "entries": _encode_entries(entries),
        }
        text = json.dumps(doc, sort_keys=True, indent=1, allow_nan=False)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        stamp = self._stat()
        self._parsed = (stamp, entries) if stamp is not None else None

    def _lock(self) -> filelock.BaseFileLock:
        return filelock.FileLock(str(self.lock_path), timeout=self.lock_timeout_s)


def _read_bytes(path: Path) -> bytes | BaseException:
    """The file's bytes, or the OSError that reading it raised (a directory, no permission)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        return err


def _warn(message: str) -> None:
    warnings.warn(message, BLTritonCacheWarning, stacklevel=4)


def is_cache_file(path: Path) -> bool:
    """True if ``path`` parses as a bltriton cache file of any schema (used by ``cache clear`` so
    that it never deletes a JSON file it did not write)."""
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(raw, dict) and "schema" in raw and isinstance(raw.get("entries"), dict)


def list_cache_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The bltriton cache files (``*.json`` that parse as caches) in ``directory``, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if p.is_file() and is_cache_file(p))
