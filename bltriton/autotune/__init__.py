"""Host-side autotuner with a persistent on-disk cache (design: ``docs/tuner.md``).

Launchers ask for a launch config per call::

    from bltriton import autotune

    cfg = autotune.get_config(
        kernel="band_cmac",
        source_hash=SOURCE_HASH,
        key={"mode": "fwd", "B": autotune.bucket_pow2(B), "M": M, ...},
        configs=CONFIGS,
        default=heuristic_config(...),
        run=lambda cfg: _launch(cfg),
        device=x.device,
    )

The first call for a key times the configs (``triton.testing.do_bench`` on CUDA), stores every
timing in ``$BLTRITON_CACHE_DIR/<device>.json`` and returns the fastest; later calls in the
process are a dict lookup, and later processes read the file instead of timing.
"""

from __future__ import annotations

from bltriton.autotune import tuner as _tuner
from bltriton.autotune.cache import (
    SCHEMA_VERSION,
    BLTritonCacheWarning,
    CacheFile,
    cache_file_path,
    canonical_json,
    list_cache_files,
    sanitize_device_name,
)
from bltriton.autotune.tuner import *  # noqa: F403  (the tuner's public names: its __all__)

__all__ = [
    "SCHEMA_VERSION",
    "BLTritonCacheWarning",
    "CacheFile",
    "cache_file_path",
    "canonical_json",
    "list_cache_files",
    "sanitize_device_name",
    *_tuner.__all__,
]
