"""What every ``python -m bltriton`` command shares: the usage error and flag parsers.

A command that finds a user mistake raises :class:`UsageError` with a message that starts with the
flag (``"--device: ..."``); :func:`bltriton.__main__.run` prints it as one line on stderr and
exits with 2, like argparse does for its own errors. No traceback for a user mistake.
"""

from __future__ import annotations

from typing import Any


class UsageError(ValueError):
    """A command-line mistake; the message names the flag and the expected form."""


def parse_device(text: str | None, flag: str = "--device") -> Any:
    """``torch.device`` for a ``--device`` value that exists here.

    Args:
        text: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; None means CUDA when available, else CPU.
        flag: the flag's name for the message.

    Returns:
        The ``torch.device``.

    Raises:
        UsageError: not a device name torch knows, a device type this library does not run on,
            or a CUDA device that is not available.
    """
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError) as err:
        raise UsageError(f"{flag}: {text!r} is not a device (expected cpu, cuda or cuda:N)") from err
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{flag}: {text!r}: only cpu and cuda devices are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag}: {text!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{flag}: {text!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_backend(backend: str | None, device: Any, flag: str = "--backend") -> None:
    """Refuse ``--backend triton`` where the Triton kernels cannot run.

    Raises:
        UsageError: ``backend == "triton"`` on a device other than CUDA without
            ``TRITON_INTERPRET=1``.
    """
    from bltriton import _env

    if backend == "triton" and device.type != "cuda" and not _env.triton_interpret():
        raise UsageError(
            f"{flag} triton: the Triton kernels need a CUDA device (or TRITON_INTERPRET=1 to run "
            f"them on the CPU interpreter); the device is {device}"
        )


def resolve_device(device: str) -> Any:
    """``auto`` → CUDA when available, else CPU; otherwise ``torch.device(device)`` (shared by the
    demo and ``calibrate``).

    Raises:
        ValueError: a CUDA device where CUDA is not available.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here")
    return dev
