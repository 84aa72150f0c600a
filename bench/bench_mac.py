"""The band MAC kernels alone (CUDA), with achieved TFLOP/s and GB/s in ``extra_info``.

Band sizes are those of the benchmark layers at rate 0.5, batch 128.
"""

from __future__ import annotations

import pytest
import torch

from bench.roofline import mac_count

CUDA = torch.cuda.is_available()

# (id, F, B, C, O, groups): the CIFAR 3x3 layer (n=36, r=0.5 -> 325 kept), the wide one (n=18 ->
# 91), the 7x7 layer (n=40 -> 378), a depthwise layer, and the FCN k5 layer (1D, n=160 -> 40).
MAC_SHAPES = [
    ("cifar3x3-b128", 325, 128, 64, 64, 1),
    ("cifar3x3-wide-b128", 91, 128, 128, 128, 1),
    ("k7-b128", 378, 128, 64, 64, 1),
    ("depthwise-b128", 325, 128, 64, 64, 64),
    ("fcn-k5-b64", 40, 64, 128, 256, 1),
]


@pytest.mark.skipif(not CUDA, reason="the MAC kernels are timed on CUDA only")
@pytest.mark.parametrize("precision", ["ieee", "tf32", "bf16"])
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
@pytest.mark.parametrize("shape", [pytest.param(s[1:], id=s[0]) for s in MAC_SHAPES])
def test_band_mac(benchmark, shape, mode, precision):
    from bltriton.kernels.band_mac import band_mac

    from bltriton import autotune

    f, b, c, o, g = shape
    x = torch.randn(f, b, c, dtype=torch.complex64, device="cuda")
    w = torch.randn(f, o, c // g, dtype=torch.complex64, device="cuda")
    gr = torch.randn(f, b, o, dtype=torch.complex64, device="cuda")
    a, bb = {"fwd": (x, w), "dx": (gr, w), "dw": (x, gr)}[mode]
    _, cfg = band_mac(mode, a, bb, g, precision=precision, tune=autotune.get_config, return_config=True)

    def run():  # tuned outside the timed region
        band_mac(mode, a, bb, g, precision=precision, config=cfg)
        torch.cuda.synchronize()

    benchmark.group = f"mac-{mode}"
    benchmark.pedantic(run, rounds=50, warmup_rounds=5, iterations=1)
    count = mac_count(mode, f, b, c, o, g)
    seconds = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(
        {
            "tflops": count.tflops(seconds),
            "gbps": count.gbps(seconds),
            "flops": count.flops,
            "bytes": count.bytes,
        }
    )
