"""Device launches of one band-limited layer call on the CUDA code path: ``python -m bench.launches``.

Without a GPU the CUDA path is forced on the CPU: the triton backend under ``TRITON_INTERPRET=1``
(set here before triton is imported) with every Triton launch stubbed out (counted, not run:
the counts do not depend on what the kernels compute, and the interpreter would take minutes at
this size). Counted per fwd+bwd, after one warm-up call that builds the plans:

* aten ops that launch device work, recorded with a ``TorchDispatchMode``: every op except
  views, metadata and allocations (``empty``, ``empty_strided``), which launch nothing on CUDA;
* Triton launches, counted at the kernels' ``run`` (what ``kernel[grid](...)`` calls).

With ``--device cuda`` the kernels run for real and ``torch.profiler`` counts the device
kernels instead (one warm-up call first). Layer: ``--shape`` of ``bench.shapes`` (default the 3x3
C64 32x32 layer of the issue, batch ``--batch``), rate ``--rate``. The last line reads
``launches per fwd+bwd: spectral N (fwd A, bwd B), spatial M``; ``tests/test_launches.py`` pins N.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

if "torch" not in sys.modules and os.environ.get("TRITON_INTERPRET") is None:
    import torch as _torch_probe  # decides whether the interpreter is needed

    if not _torch_probe.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops that launch nothing on a CUDA device (allocations, metadata, views are filtered by
#: the op's tags and this list).
NO_LAUNCH = {
    "empty.memory_format",
    "empty_strided.default",
    "new_empty.default",
    "new_empty_strided.default",
    "empty_like.default",
    "detach.default",
    "alias.default",
    "lift_fresh.default",
    "_local_scalar_dense.default",
    "sym_size.int",
    "sym_stride.int",
    "sym_numel.default",
    "sym_storage_offset.default",
    "is_same_size.default",
    "_has_compatible_shallow_copy_type.default",
}


def _is_view(func) -> bool:
    return (
        bool(func.is_view)
        or torch.Tag.view_copy in getattr(func, "tags", ())
        or func._schema.name
        in (
            "aten::view",
            "aten::_unsafe_view",
        )
    )


class AtenLaunches(TorchDispatchMode):
    """Records the aten ops that launch device work (see :data:`NO_LAUNCH`); ``host_tensors``
    lists the ops that made a tensor on another device than ``device`` or copied between
    devices."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.all_ops: list[str] = []
        self.host_tensors: list[str] = []
        self.device = device

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        self.all_ops.append(name)
        if not _is_view(func) and name not in NO_LAUNCH:
            self.ops.append(name)
        if self.device is not None:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for t in outs:
                if isinstance(t, torch.Tensor) and t.device != self.device:
                    self.host_tensors.append(name)
            if name.startswith(("_to_copy", "copy_")):
                srcs = [a for a in args if isinstance(a, torch.Tensor)]
                if any(s.device != self.device for s in srcs):
                    self.host_tensors.append(name)
        return out


class TritonLaunches:
    """Counts (and with ``stub`` skips) every launch of the pipeline's Triton kernels and of the
    older contraction kernel, by patching each ``@triton.jit`` object's ``run``."""

    def __init__(self, stub: bool) -> None:
        self.stub = stub
        self.names: list[str] = []
        self._patched: list[tuple[object, object]] = []

    def __enter__(self) -> TritonLaunches:
        from bltriton.kernels import band_mac, tap_mac, transform

        for module in (transform, tap_mac, band_mac):
            for name, obj in vars(module).items():
                if hasattr(obj, "run") and hasattr(obj, "fn") and callable(obj.run):
                    self._patch(obj, name)
        return self

    def _patch(self, kernel, name: str) -> None:
        real = kernel.run

        def run(*args, **kwargs):
            self.names.append(name)
            return None if self.stub else real(*args, **kwargs)

        kernel.run = run
        self._patched.append((kernel, real))

    def __exit__(self, *exc) -> None:
        for kernel, real in self._patched:
            kernel.run = real


def fwd_bwd(layer, x: torch.Tensor):
    """One forward and backward of ``layer`` on ``x`` (a fresh output gradient of ones)."""

    def step():
        y = layer(x)
        y.backward(torch.ones_like(y))

    return step


def count_cpu(layer, x: torch.Tensor, stub: bool = True) -> dict:
    """Launch counts of one fwd+bwd of ``layer`` with the CUDA code path forced on the CPU, after
    one warm-up call: ``{"fwd": n, "bwd": n, "aten": [...], "triton": [...]}``."""
    from bltriton import autograd

    step = fwd_bwd(layer, x)
    with TritonLaunches(stub), _as_eager(autograd):
        step()  # warm-up: plans built
        layer.zero_grad(set_to_none=True)  # as an optimizer's zero_grad: no accumulation below
        x.grad = None
        modes = {}
        for phase in ("fwd", "bwd"):
            modes[phase] = (AtenLaunches(), TritonLaunches(stub))
        aten_f, tri_f = modes["fwd"]
        with tri_f, aten_f:
            y = layer(x)
        g = torch.ones_like(y)
        aten_b, tri_b = modes["bwd"]
        with tri_b, aten_b:
            y.backward(g)
    return {
        "fwd": len(aten_f.ops) + len(tri_f.names),
        "bwd": len(aten_b.ops) + len(tri_b.names),
        "aten_fwd": aten_f.ops,
        "aten_bwd": aten_b.ops,
        "triton_fwd": tri_f.names,
        "triton_bwd": tri_b.names,
    }


@contextlib.contextmanager
def _as_eager(autograd_module):
    """Keep the plain-eager path while a recording dispatch mode is active (the mode only
    records; without this the ops would take their registered-op route, which eager calls skip)."""
    real = autograd_module._eager
    autograd_module._eager = lambda: not torch.compiler.is_compiling()
    try:
        yield
    finally:
        autograd_module._eager = real


def count_cuda(layer, x: torch.Tensor) -> dict:
    """Device kernels of one fwd+bwd on a GPU, counted by ``torch.profiler`` after a warm-up (one
    profiling session for the forward, one for the backward)."""
    from torch.profiler import ProfilerActivity, profile

    def kernels(prof) -> int:
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)

    step = fwd_bwd(layer, x)
    step()
    layer.zero_grad(set_to_none=True)
    x.grad = None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as fwd:
        y = layer(x)
        torch.cuda.synchronize()
    g = torch.ones_like(y)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as bwd:
        y.backward(g)
        torch.cuda.synchronize()
    return {"fwd": kernels(fwd), "bwd": kernels(bwd)}


def main(argv: list[str] | None = None) -> int:
    from bench.shapes import SHAPES_1D, SHAPES_2D, SHAPES_HOST, make_layer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default="cifar3x3", help="a bench.shapes name")
    parser.add_argument("--batch", type=int, default=None, help="batch (default: the shape's)")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--verbose", action="store_true", help="list the ops and kernels")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    by_name = {s.name: s for s in SHAPES_2D + SHAPES_1D + SHAPES_HOST}
    if args.shape not in by_name:
        parser.error(f"--shape must be one of {sorted(by_name)}; got {args.shape!r}")
    shape = by_name[args.shape]
    batch = args.batch or shape.n
    x = torch.randn(batch, shape.c, *shape.size, device=device, requires_grad=True)
    counts = {}
    for impl in ("triton", "spatial"):
        layer = make_layer(shape, impl, args.rate, device)
        if impl == "spatial":
            layer.backend = "triton"
        counts[impl] = count_cuda(layer, x) if device.type == "cuda" else count_cpu(layer, x)
        c = counts[impl]
        print(f"{impl}: fwd {c['fwd']}, bwd {c['bwd']}")
        if args.verbose and "aten_fwd" in c:
            for phase in ("fwd", "bwd"):
                print(f"  {phase} aten:   {c['aten_' + phase]}")
                print(f"  {phase} triton: {c['triton_' + phase]}")
    s, p = counts["triton"], counts["spatial"]
    cuda = device.type == "cuda"
    where = f"torch.profiler on {torch.cuda.get_device_name()}" if cuda else "CPU, CUDA path forced"
    print(f"# {shape.name} batch {batch} r={args.rate} ({where})")
    print(
        f"launches per fwd+bwd: spectral {s['fwd'] + s['bwd']} (fwd {s['fwd']}, bwd {s['bwd']}), "
        f"spatial {p['fwd'] + p['bwd']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
