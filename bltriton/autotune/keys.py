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
from bltriton.spectral import next_pow2

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
    return next_pow2(operator.index(n))


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


#: CPU features that change which algorithm is faster (vector width, complex/bf16 units).
_ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "neon", "sve",
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                name, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name with its family/model/stepping numbers (a hypervisor may show one
    generic name, ``Intel(R) Xeon(R) Processor``, for several generations), e.g.
    ``"Intel(R) Xeon(R) Processor (cpu family 6 model 167 stepping 1)"``; ``platform.processor()``
    off Linux."""
    info = _cpuinfo()
    name = info.get("model name") or info.get("Model") or info.get("Hardware")
    if not name:
        import platform

        name = platform.processor() or platform.machine() or "unknown-cpu"
    numbers = [f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if info.get(k)]
    return f"{name} ({' '.join(numbers)})" if numbers else name


def cpu_isa() -> str:
    """The vector ISA torch dispatches to (``torch.backends.cpu.get_cpu_capability()``: ``AVX2``,
    ``AVX512``, ...) and the features of :data:`_ISA_FLAGS` the CPU reports, e.g.
    ``"AVX512 avx2 fma avx512f amx_tile"``."""
    import torch

    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return " ".join([torch.backends.cpu.get_cpu_capability(), *(f for f in _ISA_FLAGS if f in flags)])


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
    _cpuinfo.cache_clear()
    bltriton_version.cache_clear()
    _triton_version.cache_clear()
