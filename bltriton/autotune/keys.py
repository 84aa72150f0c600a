"""What the tuner's cache key is made of: the launcher's bucketed shape key, the device's
identity, the kernel's source hash and the bltriton and Triton versions."""

from __future__ import annotations

import functools
import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bltriton import _env

CPU_DEVICE_NAME = "cpu-interpreter"


def bucket_pow2(n: int) -> int:
    """Smallest power of two ≥ ``n`` (1 for ``n ≤ 1``); launchers bucket the batch dim with it.

    Args:
        n: an integer (Python or NumPy int; not a float or bool).

    Returns:
        ``1, 1, 2, 4, 4, 8, ...`` for ``n = 0, 1, 2, 3, 4, 5, ...``.
    """
    if isinstance(n, bool):
        raise TypeError(f"bucket_pow2 expects an int, got {n!r}")
    n = operator.index(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class DeviceIdentity:
    """What the cache key knows about a device.

    Attributes:
        name: driver name (``"NVIDIA H100 80GB HBM3"``) or ``"cpu-interpreter"``.
        capability: CUDA compute capability ``(major, minor)``, None off CUDA.
        can_time: True where timings mean something (CUDA, not the interpreter).
    """

    name: str
    capability: tuple[int, int] | None
    can_time: bool


def device_type_index(device: Any) -> tuple[str, int | None]:
    if device is None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return "cuda", torch.cuda.current_device()
        return "cpu", None
    dev_type = getattr(device, "type", None)
    if dev_type is not None:
        return dev_type, getattr(device, "index", None)
    text = str(device)
    dev_type, _, index = text.partition(":")
    return dev_type, int(index) if index else None


def device_identity(device: Any = None) -> DeviceIdentity:
    """Name and capability of ``device`` for the cache key.

    Args:
        device: ``torch.device``, a string like ``"cuda:0"``/``"cpu"``, or None (the current
            CUDA device when CUDA is available, else the CPU).

    Returns:
        The :class:`DeviceIdentity`. CPU, the Triton interpreter and devices other than CUDA
        report ``can_time=False``; CPU and the interpreter are named ``"cpu-interpreter"``.
    """
    dev_type, index = device_type_index(device)
    if dev_type == "cuda" and not _env.triton_interpret():
        import torch

        if index is None:
            index = torch.cuda.current_device()
        return _cuda_identity(index)
    if dev_type in ("cpu", "cuda"):
        return DeviceIdentity(CPU_DEVICE_NAME, None, False)
    return DeviceIdentity(dev_type, None, False)


@functools.cache
def _cuda_identity(index: int) -> DeviceIdentity:
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return DeviceIdentity(torch.cuda.get_device_name(index), (int(major), int(minor)), True)


@functools.lru_cache(maxsize=1)
def bltriton_version() -> str:
    """Version of bltriton in the key: ``bltriton.__version__``, else the installed
    distribution's version, else ``"0+unknown"``."""
    version = getattr(sys.modules.get("bltriton"), "__version__", None)
    if isinstance(version, str) and version:
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("bltriton")
    except Exception:
        return "0+unknown"


def triton_version() -> str:
    """Version of Triton in the key (``"none"`` without Triton)."""
    return _triton_version()


@functools.lru_cache(maxsize=1)
def _triton_version() -> str:
    triton = sys.modules.get("triton")
    version = getattr(triton, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("triton")
    except Exception:
        return "none"


def full_key(kernel: str, source_hash: str, key: Mapping[str, Any], ident: DeviceIdentity) -> dict[str, Any]:
    """The complete cache key as a JSON object.

    Args:
        kernel: kernel name, e.g. ``"band_cmac"``.
        source_hash: hash of the kernel source (computed by the launcher).
        key: the launcher's shape/precision key (batch already bucketed with
            :func:`bucket_pow2`; other entries exact).
        ident: the device's :class:`DeviceIdentity`.

    Returns:
        ``{"kernel", "source_hash", "bltriton", "triton", "device", "capability", "key"}``; its
        :func:`canonical_json` text names the cache entry.
    """
    return {
        "kernel": kernel,
        "source_hash": source_hash,
        "bltriton": bltriton_version(),
        "triton": triton_version(),
        "device": ident.name,
        "capability": list(ident.capability) if ident.capability is not None else None,
        "key": dict(key),
    }


def clear_caches() -> None:
    """Forget the device names and versions read so far (a fresh process reads them again)."""
    _cuda_identity.cache_clear()
    bltriton_version.cache_clear()
    _triton_version.cache_clear()
