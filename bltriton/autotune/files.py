"""File-system rules of the autotune cache: what the cache may open, write, replace and delete.

* **Reading** opens only regular files, never follows a symbolic link in the file's own name
  (``O_NOFOLLOW``), never blocks on a FIFO (``O_NONBLOCK`` for the open, ``fstat`` before the
  read) and reads at most :data:`MAX_FILE_BYTES`. A symlink, FIFO, device or socket at the cache
  path is left where it is: the tuner reads nothing from it, writes nothing over it and tunes in
  memory (one warning). Point ``BLTRITON_CACHE_DIR`` at a shared folder instead of linking files.
* **Ownership**: a file owned by another user is never renamed aside or replaced; if it can be
  read its entries are used, and this process keeps its own new choices in memory.
* **Modes**: files are created ``0666 & ~umask``, like other caches (``mkstemp`` alone gives
  ``0600``, which other users of a shared folder cannot read).
* **Temporary files** are named ``.<file>.<host>-<pid>.<random>.tmp``: a writer killed before its
  ``os.replace`` leaves one, and the next write on the same host removes those whose process is
  gone (any host's after :data:`STALE_TEMP_AGE_S`).
* **Deleting** (``cache clear``): only files whose name has one of the patterns below and, for
  cache files, whose content carries the schema marker and kernel-named entries.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

#: Largest cache file read (a cache of a few thousand keys is about 5 MB): a link to /dev/zero or
#: a runaway file is refused instead of read into memory.
MAX_FILE_BYTES = 64 << 20

#: A temporary file this old is a dead writer's whatever its host (a write takes milliseconds).
STALE_TEMP_AGE_S = 3600.0

#: Marker in the names of files set aside; ``cache clear`` removes them too.
CORRUPT_MARKER = ".corrupt-"

_NAME = r"[A-Za-z0-9._-]+\.json"
_CACHE_NAME = re.compile(rf"(?!\.)({_NAME})")
_ASIDE_NAME = re.compile(rf"({_NAME}){re.escape(CORRUPT_MARKER)}\d{{8}}T\d{{6}}-\d+(-\d+)?")
# New temporary names carry host and pid; older ones (``.<file>.<random>.tmp``) only the random part.
_TEMP_NAME = re.compile(rf"\.({_NAME})\.(?:([A-Za-z0-9_-]+)-(\d+)\.)?[A-Za-z0-9_]+\.tmp")


class NotRegularFile(Exception):
    """The path is a symlink, FIFO, device or socket: leave it alone; ``str(self)`` says what."""


def kind_of(mode: int) -> str | None:
    """None for a regular file or a folder, else what the path is (for messages)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link (the cache never follows or replaces one)"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def foreign_owner(st: os.stat_result) -> int | None:
    """The owner's uid when a file belongs to another user, else None."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or st.st_uid == geteuid():
        return None
    return st.st_uid


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path``, read without following links or blocking.

    Raises:
        FileNotFoundError: no such file.
        NotRegularFile: a symlink, FIFO, device or socket (nothing was read).
        OSError: the file could not be opened or read (a folder, no permission) or is larger
            than :data:`MAX_FILE_BYTES`.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise NotRegularFile(kind_of(stat.S_IFLNK)) from err
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        kind = kind_of(st.st_mode)
        if kind is not None:
            raise NotRegularFile(kind)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES} bytes ({st.st_size})", str(path))
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES} bytes", str(path))
    return data


# -- writing -----------------------------------------------------------------------------------


def _umask() -> int:
    # /proc gives the umask without changing it (os.umask sets it, racing other threads).
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname())[:40] or "host"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then ``os.replace`` it over ``path``.

    The file gets mode ``0666 & ~umask``. The temporary file is removed if anything fails.
    """
    prefix = f".{path.name}.{_host()}-{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def stale_temp_files(path: Path, *, now: float | None = None) -> list[Path]:
    """Temporary files of ``path``'s writers that died before renaming them into place.

    A file counts when its writer ran on this host and its pid is gone, or when it is older than
    :data:`STALE_TEMP_AGE_S` (another host's, or the older name without a pid).
    """
    now = time.time() if now is None else now
    host, found = _host(), []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = _TEMP_NAME.fullmatch(entry.name)
            if match is None or match.group(1) != path.name:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or foreign_owner(st) is not None:
                continue
            pid = int(match.group(3)) if match.group(3) else None
            dead = pid is not None and match.group(2) == host and pid != os.getpid() and not _alive(pid)
            if dead or now - st.st_mtime > STALE_TEMP_AGE_S:
                found.append(Path(entry.path))
    return found


# -- what ``cache clear`` may delete -----------------------------------------------------------


def is_cache_document(raw: Any) -> bool:
    """True for the parsed content of a bltriton cache file of any schema: an integer
    ``schema``, the ``bltriton`` version marker, and ``entries`` whose every key names a kernel."""
    if not isinstance(raw, dict):
        return False
    schema, entries = raw.get("schema"), raw.get("entries")
    if isinstance(schema, bool) or not isinstance(schema, int) or not isinstance(raw.get("bltriton"), str):
        return False
    if not isinstance(entries, dict) or not entries:
        return False
    for entry in entries.values():
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, dict) or not isinstance(key.get("kernel"), str):
            return False
    return True


def is_cache_file(path: Path) -> bool:
    """True if ``path`` is a regular file named like a cache file whose content is one (see
    :func:`is_cache_document`); a file that is not proven ours is never deleted."""
    if _CACHE_NAME.fullmatch(path.name) is None:
        return False
    try:
        raw = json.loads(read_regular(path).decode("utf-8"))
    except (OSError, NotRegularFile, UnicodeDecodeError, ValueError):
        return False
    return is_cache_document(raw)


def byproducts_of(cache_name: str, folder: Path) -> list[Path]:
    """Set-aside copies and temporary files of the cache file ``cache_name`` in ``folder``
    (regular files matching the exact name patterns the cache writes)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _ASIDE_NAME.fullmatch(entry.name) or _TEMP_NAME.fullmatch(entry.name)
            if match is None or match.group(1) != cache_name:
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
    return sorted(found)


def cache_names_in(folder: Path) -> list[str]:
    """Names of the cache files that ``folder`` holds or held (from the cache files, set-aside
    copies and temporary files present), sorted."""
    names = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            for pattern in (_CACHE_NAME, _ASIDE_NAME, _TEMP_NAME):
                match = pattern.fullmatch(entry.name)
                if match is not None:
                    names.add(match.group(1))
                    break
    return sorted(names)
