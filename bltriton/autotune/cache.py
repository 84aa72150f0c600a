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
concurrent writers lose no entries. A file of ours that cannot be used (corrupt, truncated, empty,
unreadable, not a dict, another schema) is renamed aside (``<file>.corrupt-<time>-<pid>``) with one
:class:`BLTritonCacheWarning` and rebuilt. A folder that cannot be written, a symlink/FIFO/device
at the path or another user's file gives one warning per process and the tuner keeps its choices
in memory; a lock held past its timeout is not waited for again (the choices are written later or
at exit). What may be opened, replaced and deleted: :mod:`bltriton.autotune.files`.

(Longer than 400 lines: the file format and the one class that reads and writes it belong
together; the file-system rules live in ``files.py``.)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import time
import warnings
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

from bltriton.autotune import files
from bltriton.autotune.files import CORRUPT_MARKER, read_regular

#: Version of the file layout above. A file with another value is set aside and rebuilt.
SCHEMA_VERSION = 1

#: Seconds to wait for another process's lock before giving up on a write (the choice is kept in
#: memory). Writes hold the lock for milliseconds, so this only trips on a stuck process.
DEFAULT_LOCK_TIMEOUT_S = 60.0

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
    """The cache file exists but cannot be used and may be set aside; ``str(self)`` says why."""


class _Untouchable(Exception):
    """Something at the cache path that the cache must not read, replace or rename (a symlink, a
    FIFO, a device, another user's file it cannot use); ``str(self)`` says what."""


class CacheFile:
    """One device's cache file: read (with a parse cache keyed on the file's stat) and merge-write.

    Never raises for I/O problems: they become :class:`BLTritonCacheWarning` s (at most one per
    kind of problem, file and process) and an empty or in-memory-only cache. File-system rules
    (regular files only, ownership, modes, temporary files): :mod:`bltriton.autotune.files`.

    Args:
        directory: the cache folder (created on first write).
        device_name: device name; the file is ``<directory>/<sanitized name>.json``.
        lock_timeout_s: seconds to wait for the file lock. After the first timeout this object
            stops waiting: later writes try the lock without waiting and keep what they could
            not write in memory, for the next write or the process's exit.
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
        self._warned: set[str] = set()
        #: True once the lock timed out: never wait for it again in this process.
        self.lock_stuck = False
        #: Updates not yet written because the lock was held (written by a later write or at exit).
        self.pending: Entries = {}

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> Entries:
        """All entries of the file (``{}`` if it does not exist or cannot be used).

        A file that exists but cannot be used is set aside with one warning (under the lock, after
        a second look, so that of several processes only one renames it). A symlink, FIFO or
        device at the path, or another user's file that cannot be used, is left alone.
        """
        try:
            return self._read_unlocked()
        except _Untouchable as err:
            self._warn_once("io", f"bltriton autotune cache {self.path} is {err}; leaving it alone")
            return {}
        except _BadFile as bad:
            reason = str(bad)
        try:
            with self._lock():
                return self._read_locked_or_set_aside()
        except (OSError, filelock.Timeout, _Untouchable) as err:
            # No lock (read-only folder, timeout): leave the file alone, tune in memory.
            if isinstance(err, filelock.Timeout):
                self.lock_stuck = True
            self._warn_once(
                "io",
                f"bltriton autotune cache {self.path} cannot be used ({reason}) and cannot be "
                f"set aside ({err!r}); tuning without it",
            )
            return {}

    def peek(self) -> tuple[Entries, str | None]:
        """Entries without side effects: ``(entries, None)``, or ``({}, reason)`` for a file that
        cannot be used (left where it is, no warning). For ``cache show``."""
        try:
            return self._read_unlocked(), None
        except (_BadFile, _Untouchable) as bad:
            return {}, str(bad)

    def _read_unlocked(self) -> Entries:
        try:
            st = os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):  # no file, or no folder to hold one
            self._parsed = None
            return {}
        except OSError as err:
            raise _BadFile(f"cannot stat: {err!r}") from err
        kind = files.kind_of(st.st_mode)
        if kind is not None:
            raise _Untouchable(kind)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._parsed is not None and self._parsed[0] == stamp:
            return self._parsed[1]
        try:
            entries = self._parse(read_regular(self.path))
        except FileNotFoundError:  # replaced or removed between the stat and the open
            self._parsed = None
            return {}
        except files.NotRegularFile as err:  # replaced by a link or FIFO since the stat
            raise _Untouchable(str(err)) from err
        except (OSError, _BadFile) as err:
            reason = str(err) if isinstance(err, _BadFile) else f"unreadable: {err!r}"
            owner = files.foreign_owner(st)
            if owner is not None:
                raise _Untouchable(f"owned by another user (uid {owner}) and unusable ({reason})") from err
            raise _BadFile(reason) from err
        # The stat before the read may be older than the content read (a writer replaced the file
        # in between); that only costs one re-parse next time.
        self._parsed = (stamp, entries)
        return entries

    @staticmethod
    def _parse(data: bytes) -> Entries:
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
            True if written. False (after one warning per kind of problem, file and process) if
            the folder cannot be written, the path holds something the cache must not replace,
            or the lock is held: then the updates wait in :attr:`pending` for the next write or
            the process's exit.
        """
        self.pending = _merge_updates(self.pending, updates, _now())
        return self.flush()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write :attr:`pending` (see :meth:`merge_write`); True when nothing is left to write.

        Args:
            timeout_s: seconds to wait for the lock; default ``lock_timeout_s``, or 0 once the
                lock has timed out in this process.
        """
        if not self.pending:
            return True
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock(timeout_s):
                entries = dict(self._read_locked_or_set_aside())
                owner = self._foreign_owner()
                if owner is not None:
                    raise _Untouchable(f"owned by another user (uid {owner})")
                for name, entry in self.pending.items():
                    entries[name] = _merged_entry(entries.get(name), entry)
                for stale in files.stale_temp_files(self.path):
                    with contextlib.suppress(OSError):
                        stale.unlink()
                self._write_atomic(entries)
            self.pending = {}
            return True
        except filelock.Timeout as err:
            if not self.lock_stuck:
                self.lock_stuck = True
                _exit_flush.add(self)
            self._warn_once(
                "lock",
                f"bltriton autotune cache lock {self.lock_path} was held by another process for "
                f"more than {self.lock_timeout_s:g} s ({err!r}); not waiting for it again in this "
                f"process: new choices are kept in memory and written once the lock is free "
                f"(at the latest when the process exits)",
            )
        except _Untouchable as err:
            self.pending = {}
            self._warn_once(
                "io",
                f"bltriton autotune cache {self.path} is {err}; not writing it, tuning results "
                f"are kept in memory for this process only",
            )
        except OSError as err:
            self.pending = {}
            self._warn_once(
                "io",
                f"bltriton autotune cache folder {self.directory} cannot be written ({err!r}); "
                f"tuning results are kept in memory for this process only",
            )
        return False

    def _foreign_owner(self) -> int | None:
        try:
            return files.foreign_owner(os.lstat(self.path))
        except FileNotFoundError:
            return None

    def _write_atomic(self, entries: Entries) -> None:
        doc = {
            "schema": SCHEMA_VERSION,
            "bltriton": self.version,
            "entries": _encode_entries(entries),
        }
        files.write_atomic(self.path, json.dumps(doc, sort_keys=True, indent=1, allow_nan=False))
        st = os.lstat(self.path)
        self._parsed = ((st.st_mtime_ns, st.st_size, st.st_ino), entries)

    def _lock(self, timeout_s: float | None = None) -> filelock.BaseFileLock:
        if timeout_s is None:
            timeout_s = 0.0 if self.lock_stuck else self.lock_timeout_s
        return filelock.FileLock(str(self.lock_path), timeout=timeout_s)

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            _warn(message)


def _merge_updates(pending: Entries, updates: Entries, now: str) -> Entries:
    """``pending`` with ``updates`` merged in (timings unioned, the newer key and time kept)."""
    out = dict(pending)
    for name, update in updates.items():
        old = out.get(name)
        timings = {**(old["timings"] if old else {}), **update["timings"]}
        out[name] = {"key": update["key"], "timings": timings, "updated": now}
    return out


def _merged_entry(stored: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    timings = {**(stored["timings"] if stored else {}), **update["timings"]}
    best, best_ms = best_of(timings)
    return {
        "key": update["key"],
        "timings": timings,
        "best": best,
        "best_ms": best_ms,
        "updated": update["updated"],
    }


class _ExitFlush:
    """Cache files whose lock timed out: their pending updates get one last try at exit."""

    def __init__(self) -> None:
        self._files: weakref.WeakSet[CacheFile] = weakref.WeakSet()
        self._registered = False

    def add(self, cache_file: CacheFile) -> None:
        self._files.add(cache_file)
        if not self._registered:
            self._registered = True
            atexit.register(self.run)

    def run(self) -> None:
        for cache_file in list(self._files):
            if cache_file.pending and not cache_file.flush(min(cache_file.lock_timeout_s, 1.0)):
                _warn(
                    f"bltriton autotune: {len(cache_file.pending)} tuned key(s) could not be "
                    f"written to {cache_file.path} (its lock is still held)"
                )


_exit_flush = _ExitFlush()


def _warn(message: str) -> None:
    warnings.warn(message, BLTritonCacheWarning, stacklevel=4)


def is_cache_file(path: Path) -> bool:
    """True if ``path`` is a bltriton cache file (name pattern, schema marker, kernel-named
    entries); ``cache clear`` deletes nothing else."""
    return files.is_cache_file(Path(path))


def list_cache_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The bltriton cache files in ``directory`` (see :func:`is_cache_file`), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if is_cache_file(p))
