"""Benchmark configuration: ``pytest --benchmark-only`` from the repository root runs this suite.

Without CUDA the Triton kernels would run on the interpreter (far too slow to time), so the CPU
run times the torch path against torch's own convolutions; the triton rows appear on CUDA.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
