"""FLOP and byte counts for the roofline columns of the benchmarks and the GPU report.

Conventions (docs/design.md §5): a complex multiply-accumulate is 8 real FLOPs; "fewest bytes" counts each
operand read once and each result written once, complex64 = 8 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MacCount:
    flops: float
    bytes: float

    def tflops(self, seconds: float) -> float:
        return self.flops / seconds / 1e12

    def gbps(self, seconds: float) -> float:
        return self.bytes / seconds / 1e9

    @property
    def intensity(self) -> float:
        """FLOPs per byte."""
        return self.flops / self.bytes


def mac_count(mode: str, f: int, b: int, c: int, o: int, groups: int, elem_bytes: int = 8) -> MacCount:
    """Counts for one band contraction over ``f`` kept frequencies (see ``band_mac``)."""
    cg, og = c // groups, o // groups
    macs = f * b * og * cg * groups
    x, w, g = f * b * c, f * o * cg, f * b * o
    moved = {"fwd": x + w + g, "dx": g + w + x, "dw": x + g + w}[mode]
    return MacCount(flops=8.0 * macs, bytes=float(moved * elem_bytes))


def roofline_fraction(count: MacCount, seconds: float, peak_tflops: float, peak_gbps: float) -> float:
    """Achieved fraction of the binding roofline: time the better of compute and memory would
    need at peak, divided by the measured time."""
    ideal = max(count.flops / (peak_tflops * 1e12), count.bytes / (peak_gbps * 1e9))
    return ideal / seconds
