"""Triton kernels of bltriton (installed as ``bltriton.kernels``).

Only ``@triton.jit`` kernels and their typed launchers live here: no autograd, no modules.
"""
