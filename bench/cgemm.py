"""The CPU complex64 GEMM kernel (``bltriton/csrc/cgemm.cpp``) against ``torch.matmul``,
interleaved, on the contraction and row-stage shapes of ResNet-18 (batch 32, r=0.5) and the FCN.

    python -m bench.cgemm [--rounds 21] [--threads 2]

Prints one markdown row per shape: median ms of each provider (rounds interleaved kernel, torch,
kernel, ...) and real GMAC/s (one complex multiply-add = 4 real ones).
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import print_rows_main

# (id, a's storage shape, b's storage shape, a transposed, b transposed): the three
# contractions of a 64->64 32² layer (F=325 kept frequencies, B=32), the 512->512 4² layer's
# (F=6), the FCN's 128->256 k5 (F=40, B=16), and the 32² transforms' row stages (25 kept rows,
# 13 columns x B·C=2048).
SHAPES = [
    ("fwd 325x[32,64]x[64,64]ᵀ", (325, 32, 64), (325, 64, 64), False, True),
    ("dx 325x[32,64]x[64,64]", (325, 32, 64), (325, 64, 64), False, False),
    ("dw 325x[32,64]ᵀx[32,64]", (325, 32, 64), (325, 32, 64), True, False),
    ("fwd 6x[32,512]x[512,512]ᵀ", (6, 32, 512), (6, 512, 512), False, True),
    ("dw 6x[32,512]ᵀx[32,512]", (6, 32, 512), (6, 32, 512), True, False),
    ("fcn fwd 40x[16,128]x[256,128]ᵀ", (40, 16, 128), (40, 256, 128), False, True),
    ("row fwd [25,32]x[32,26624]", (25, 32), (32, 26624), False, False),
    ("row inv [32,25]x[25,26624]", (32, 25), (25, 26624), False, False),
]


def _operand(shape: tuple[int, ...], transposed: bool) -> torch.Tensor:
    """A contiguous tensor of ``shape``, or its transposed view (how the layers pass Wᵀ and Gᵀ)."""
    t = torch.randn(*shape, dtype=torch.complex64)
    return t.transpose(-1, -2) if transposed else t


def run(rounds: int) -> list[str]:
    import os

    from bltriton import _cgemm

    if not _cgemm.available():
        return [f"kernel not built: {_cgemm._STATE.get('error')}"]
    before = os.environ.get("BLTRITON_CPU_CGEMM")
    rows = [
        "| shape | torch.matmul ms | kernel ms | torch GMAC/s | kernel GMAC/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, sa, sb, ta, tb in SHAPES:
        a, b = _operand(sa, ta), _operand(sb, tb)
        out = torch.empty(*a.shape[:-1], b.shape[-1], dtype=torch.complex64)
        times: dict[str, list[float]] = {"kernel": [], "torch": []}
        for _ in range(3):
            for prov in times:
                os.environ["BLTRITON_CPU_CGEMM"] = prov
                _cgemm.matmul(a, b, out=out)
        for _ in range(rounds):
            for prov in times:
                os.environ["BLTRITON_CPU_CGEMM"] = prov
                t0 = time.perf_counter()
                _cgemm.matmul(a, b, out=out)
                times[prov].append(time.perf_counter() - t0)
        if before is None:
            os.environ.pop("BLTRITON_CPU_CGEMM")
        else:
            os.environ["BLTRITON_CPU_CGEMM"] = before
        med = {k: statistics.median(v) for k, v in times.items()}
        macs = 4 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.dim() == 3 else 1)
        tt, tk = med["torch"], med["kernel"]
        rows.append(
            f"| {name} | {tt * 1e3:.2f} | {tk * 1e3:.2f} | {macs / tt / 1e9:.0f} "
            f"| {macs / tk / 1e9:.0f} | {tt / tk:.2f}× |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    return print_rows_main(__doc__, run, 21, argv)


if __name__ == "__main__":
    raise SystemExit(main())
