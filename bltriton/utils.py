"""Small measuring helpers shared by tests, benchmarks and the demo, and one process setting."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Let glibc's malloc keep freed memory in the process instead of handing it back to the OS.

    CPU training frees most of a step's memory at its end; glibc's default returns it to the OS
    and the next step faults it in again page by page. On the 2-core benchmark VM a CIFAR
    ResNet-18 step at batch 32 took 33 000 such faults with ``nn.Conv2d`` and 57 000
    band-limited (~1.3 us each); with this setting, under a thousand (bench/NOTES.md). The same
    as starting the process with ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` set,
    but callable from a running process (a notebook).

    Process-wide and not undone: the process keeps up to ``trim_threshold`` bytes of freed memory
    mapped, and allocations below ``mmap_threshold`` (at most 32 MiB) come from the heap. Nothing
    in bltriton calls it; it affects every library in the process alike.

    Args:
        trim_threshold: freed memory at the top of the heap kept before trimming (bytes, < 2 GiB).
        mmap_threshold: allocations at least this large are mapped separately (bytes,
            at most 32 MiB).

    Returns:
        True when glibc took both settings; False elsewhere (another C library, another OS).

    Raises:
        ValueError: a threshold outside the range glibc accepts.
    """
    if not 0 < trim_threshold < 1 << 31:
        raise ValueError(f"trim_threshold must be in (0, 2**31) bytes; got {trim_threshold!r}")
    if not 0 < mmap_threshold <= 32 << 20:
        raise ValueError(f"mmap_threshold must be in (0, 32 MiB] bytes; got {mmap_threshold!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting either fixes both (glibc stops adjusting them itself).
    return mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1


class SavedTensorBytes:
    """Context manager that adds up the bytes autograd saves for backward inside it.

    Each saved tensor is counted once per save, by its storage size (``untyped_storage().nbytes()``
    of a view counts the whole storage it keeps alive), de-duplicated by storage pointer so a
    tensor saved twice is counted once.

    Example::

        with SavedTensorBytes() as saved:
            loss = layer(x).sum()
        print(saved.nbytes)
    """

    def __init__(self) -> None:
        self.nbytes = 0
        self._seen: set[tuple[int, int]] = set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ident = (storage.data_ptr(), storage.nbytes())
        if ident not in self._seen:
            self._seen.add(ident)
            self.nbytes += storage.nbytes()
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
