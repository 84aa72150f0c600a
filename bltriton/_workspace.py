"""Per-thread scratch: kept buffers for temporaries that do not outlive the call that makes them.

On the CPU, a temporary of a few MB allocated afresh at every call is written to memory the C
allocator has just mapped again, and each first touch of a page faults (about 1.3 us per 4 KiB
page on the benchmark VM): the chunk loops' filter-sized temporaries (12-19 MB in ResNet-18's
512-channel layers) and the transforms' intermediates (6.8 MB each at 32x32, C64, B32) ran up to
2x slower on fresh memory than on warm buffers (bench/NOTES.md). A buffer is kept per
``(name, dtype, device)`` and thread, grown to the largest request, while the thread's buffers
stay within :data:`WORKSPACE_BYTES`; past it a request gets fresh memory. Devices not listed
(CUDA: the caching allocator already reuses memory) keep nothing.

Two temporaries alive at once must use different names.
"""

from __future__ import annotations

import math
import threading

import torch

__all__ = ["WORKSPACE_BYTES", "clear", "scratch"]


class _Workspace(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}


_WORKSPACE = _Workspace()
# Bytes of scratch each thread keeps between calls, by device type. A CIFAR ResNet-18 training
# step at batch 32, r=0.5, asks for 79 MiB in all (the 512-channel layers' filter-gradient sum,
# 18 MiB, is the largest); a 128 MiB cap that holds all of it ran the step no faster (more page
# faults elsewhere: the kept buffers change where the allocator places the rest; bench/NOTES.md).
WORKSPACE_BYTES: dict[str, int] = {"cpu": 64 << 20}


def clear() -> None:
    """Release this thread's kept scratch buffers."""
    _WORKSPACE.buffers.clear()


def scratch(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """A contiguous ``shape`` tensor for a temporary that does not outlive the caller: a view of
    this thread's kept buffer ``name`` (made or grown here), or fresh memory when the buffer
    would pass :data:`WORKSPACE_BYTES`. Its contents are undefined.

    ``None`` where nothing is kept: a device without a budget, or inside a functorch transform
    (``jvp``, ``vmap``, ``grad``), which forbids writing into a tensor made outside it. The
    caller then computes out of place."""
    numel = math.prod(shape)
    limit = WORKSPACE_BYTES.get(device.type, 0)
    if not limit or torch._C._are_functorch_transforms_active():
        return None
    key = (name, dtype, device)
    buffers = _WORKSPACE.buffers
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        # A normal tensor even under inference_mode: a buffer made there would be an inference
        # tensor, and a later call outside inference_mode could not write into it.
        with torch.inference_mode(False):
            buf = torch.empty(numel, dtype=dtype, device=device)
        kept = sum(b.nbytes for k, b in buffers.items() if k != key)
        if kept + buf.nbytes <= limit:
            buffers[key] = buf
        else:
            buffers.pop(key, None)
    return buf[:numel].view(shape)
