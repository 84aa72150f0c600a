"""Bound launches: a plan's kernel launches with everything but their tensors fixed.

A kernel launcher (``kernels.transform.to_band`` and the like) checks its arguments, works out
strides, addressing modes, index width and grid, and builds the kernel's argument list: tens of
microseconds of host time per launch, the same at every call of one layer shape. A
:class:`Launches` does that once per *call signature* (the plan's key for one call: batch size,
the strides of the tensors the caller hands in, which outputs are asked for) through the
launcher's own argument function, and keeps the result as a :class:`Bound` launch: the kernel,
the grid, the constant arguments, and for each tensor argument which of the call's tensors it is
(or its ``view_as_real``). A later call with the same signature substitutes its tensors and
launches.

The checks therefore run on a signature's first call only; a later call with the same signature
passes tensors of the same shapes, dtypes and strides by construction (the plan allocates every
output itself, and the signature holds the strides of what it does not allocate).
"""

from __future__ import annotations

import contextlib
from types import ModuleType

import torch

__all__ = ["Bound", "Launches"]

#: Bound launches kept per plan (signatures: a few batch sizes and input layouts in practice).
MAX_SIGNATURES = 64
_MISSING = object()


#: Launch options of ``JITFunction.run`` that are not kernel parameters.
_OPTIONS = ("num_warps", "num_stages", "maxnreg", "num_ctas")


class Bound:
    """One prepared launch: ``kernel.run(*args, grid=grid, warmup=False, **options)`` (what
    ``kernel[grid](...)`` calls) with the tensor arguments replaced by the call's tensors
    (``slots``: ``(position, source index, view_as_real)``). Every kernel parameter, constexprs
    included, is passed by position in the kernel's order (binding a few dozen keyword arguments
    cost most of a launch's host time); the launch options stay keywords."""

    __slots__ = ("args", "kernel", "lock", "options", "slots")

    def __init__(self, kernel, grid, args, options: dict, sources: list, lock) -> None:
        self.kernel, self.lock = kernel, lock
        names = list(kernel.arg_names)
        by_name = dict(args) if isinstance(args, dict) else dict(zip(names, args))
        by_name.update({k: v for k, v in options.items() if k not in _OPTIONS})
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RuntimeError(f"bltriton: a launch leaves kernel parameters unset: {missing}")
        self.args = [by_name[n] for n in names]
        self.options = {k: v for k, v in options.items() if k in _OPTIONS}
        self.options.update(grid=grid, warmup=False)
        slots = []
        for pos, value in enumerate(self.args):
            if isinstance(value, torch.Tensor):
                slots.append((pos, *_source_of(value, sources)))
                self.args[pos] = None  # the first call's tensors are not kept, only their places
        self.slots = tuple(slots)

    def __call__(self, sources: list) -> None:
        args = self.args.copy()
        reals: dict[int, torch.Tensor] = {}
        for pos, index, as_real in self.slots:
            if not as_real:
                args[pos] = sources[index]
            elif index in reals:
                args[pos] = reals[index]
            else:
                args[pos] = reals[index] = torch.view_as_real(sources[index])
        with self.lock:
            self.kernel.run(*args, **self.options)


def _mac_configs() -> ModuleType:
    """The config helpers of the contraction kernels (the same keys as ``band_mac``'s)."""
    from bltriton.kernels import configs

    return configs


def _source_of(value: torch.Tensor, sources: list) -> tuple[int, bool]:
    for i, s in enumerate(sources):
        if value is s:
            return i, False
    ptr = value.data_ptr()
    for i, s in enumerate(sources):
        if s is not None and s.is_complex() and ptr == s.data_ptr() and value.dim() == s.dim() + 1:
            return i, True
    raise RuntimeError("bltriton: a launch argument is none of the call's tensors (a launcher changed)")


class Launches:
    """The bound launches of one plan, keyed by ``(launch name, call signature)``.

    A launch without a config asks the tuner for one when its signature is first seen (which
    times the menu on CUDA, and returns the heuristic default on the interpreter unless it is
    configured to tune there, or with ``BLTRITON_AUTOTUNE=0``); ``tune = False`` skips it.

    Args:
        transform: ``bltriton.kernels.transform`` (or the naive module: then every launch goes
            through the public launcher, unbound).
        tap_mac: ``bltriton.kernels.tap_mac`` (or the naive module).
        device: the plan's device (CPU: the Triton interpreter, whose launches are serialised).
    """

    tune: bool | None = None

    def __init__(self, transform: ModuleType, tap_mac: ModuleType, device: torch.device) -> None:
        self.transform, self.tap_mac = transform, tap_mac
        self.bindable = hasattr(transform, "to_band_args") and hasattr(tap_mac, "launch_args")
        self.interpret = device.type != "cuda"
        self.device = device
        self._lock = contextlib.nullcontext()
        if self.interpret and self.bindable:
            from bltriton.kernels.band_mac import _INTERPRETER_LOCK

            self._lock = _INTERPRETER_LOCK
        self._bound: dict[tuple, Bound | None] = {}

    def _get(self, key: tuple, prepare) -> Bound | None:
        if len(self._bound) >= MAX_SIGNATURES:
            self._bound.clear()
        bound = self._bound[key] = prepare()
        return bound

    def to_band(self, key: tuple | None, jobs: list, precision: str, config=None, wrap=None) -> None:
        """``transform.to_band(jobs)``; ``key``: the call signature (``None``: not bound)."""
        if key is not None and wrap is None:
            bound = self._bound.get(("to_band", key), _MISSING)
            if bound is not _MISSING:
                if bound is not None:
                    bound([t for job in jobs for t in job])
                return
        if key is None or wrap is not None or not self.bindable:
            self.transform.to_band(jobs, precision=precision, config=config, wrap=wrap)
        else:
            self._transform("to_band", key, jobs, precision, config)

    def from_band(self, key: tuple | None, jobs: list, precision: str, config=None, wrap=None) -> None:
        """``transform.from_band(jobs)``, as :meth:`to_band`."""
        if key is not None and wrap is None:
            bound = self._bound.get(("from_band", key), _MISSING)
            if bound is not _MISSING:
                if bound is not None:
                    bound([t for job in jobs for t in job])
                return
        if key is None or wrap is not None or not self.bindable:
            self.transform.from_band(jobs, precision=precision, config=config, wrap=wrap)
        else:
            self._transform("from_band", key, jobs, precision, config)

    def _transform(self, kind: str, key: tuple, jobs: list, precision: str, config) -> None:
        bound = self._get((kind, key), lambda: self._prepare_transform(kind, jobs, precision, config))
        if bound is not None:
            bound([t for job in jobs for t in job])

    def _prepare_transform(self, kind: str, jobs: list, precision: str, config) -> Bound | None:
        tr = self.transform
        (tr._check_to_band if kind == "to_band" else tr._check_from_band)(jobs)
        sources = [t for job in jobs for t in job]
        args_fn = tr.to_band_args if kind == "to_band" else tr.from_band_args
        kernel = tr.to_band_kernel if kind == "to_band" else tr.from_band_kernel

        def bind(cfg) -> Bound | None:
            grid, args = args_fn(jobs, cfg, precision, self.interpret)
            if grid is None:
                return None
            options = {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
            return Bound(kernel, grid, args, options, sources, self._lock)

        if config is None:
            dims = ";".join("x".join(map(str, (*job.op.shape, *job.out.shape))) for job in jobs)
            key = {"kind": kind, "jobs": dims, "precision": precision, "dtype": str(jobs[0].op.dtype)}
            default = tr.default_config_for(kind, jobs, precision)
            f, m, p = tr.largest_job(kind, jobs)
            menu = tr.candidate_configs(kind, f, m, p, precision, jobs[0].op.dtype)
            as_config = lambda d: tr.as_config(kind, d)
            config = self._tuned(
                kind,
                tr.SOURCE_HASH,
                key,
                menu,
                default,
                lambda c: tr.as_dict(kind, c),
                as_config,
                bind,
                sources,
            )
        elif not hasattr(config, "kwargs"):
            config = tr.as_config(kind, config)
        return bind(config)

    def _tuned(self, name, source_hash, key, menu, default, to_dict, to_config, bind, sources):
        """The tuner's config for one launch, asked once, when its signature is first seen."""
        if self.tune is False:
            return default
        from bltriton import autotune

        def run(cfg_dict) -> None:
            bound = bind(to_config(cfg_dict))
            if bound is not None:
                bound(sources)

        chosen = autotune.get_config(
            kernel=name,
            source_hash=source_hash,
            key=key,
            configs=[to_dict(c) for c in menu],
            default=to_dict(default),
            run=run,
            device=self.device,
        )
        return to_config(chosen)

    def mac(
        self,
        key: tuple | None,
        mode: str,
        a,
        b,
        out,
        *,
        taps_op,
        groups,
        precision,
        db=None,
        config=None,
        wrap=None,
    ):
        """``tap_mac.mac(mode, a, b, out, ...)``, as :meth:`to_band`."""
        if key is not None and wrap is None:
            bound = self._bound.get((mode, key), _MISSING)
            if bound is not _MISSING:
                if bound is not None:
                    bound([a, b, out, taps_op, db])
                elif db is not None:
                    db.zero_()  # nothing to contract: an empty sum
                return
        tm = self.tap_mac
        if key is None or wrap is not None or not self.bindable:
            kw = dict(taps_op=taps_op, groups=groups, precision=precision, db=db, config=config, wrap=wrap)
            tm.mac(mode, a, b, out, **kw)
            return
        sources = [a, b, out, taps_op, db]

        def bind(cfg) -> Bound | None:
            planned = tm.launch_args(mode, a, b, out, taps_op, groups, precision, db, cfg, self.interpret)
            if planned is None:
                return None
            grid, args, constexprs, cfg = planned
            options = {**constexprs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
            if hasattr(tm, "MAXNREG"):  # the register ceiling its direct launches take
                options["maxnreg"] = tm.MAXNREG
            return Bound(tm.tap_cmac_kernel, grid, args, options, sources, self._lock)

        def prepare() -> Bound | None:
            cfg = config
            if cfg is None and out.numel():
                m, n, k, f = tm.gemm_dims(mode, a, b, groups)
                taps = 0 if taps_op is None else taps_op.shape[-1]
                dtype = a.dtype
                default = tm.default_config(mode, m, n, k, f, taps, precision, dtype, groups)
                menu = tm.candidate_configs(mode, m, n, k, f, taps, precision, dtype, groups)
                key = {"mode": mode, "M": m, "N": n, "K": k, "F": f, "taps": taps, "groups": groups}
                key.update(precision=precision, dtype=str(dtype))
                cfg = self._tuned(
                    "tap_cmac",
                    tm.SOURCE_HASH,
                    key,
                    menu,
                    default,
                    _mac_configs().as_dict,
                    _mac_configs().as_config,
                    bind,
                    sources,
                )
            return bind(cfg)

        bound = self._get((mode, key), prepare)
        if bound is None:
            if db is not None:
                db.zero_()  # nothing to contract: an empty sum
            return
        bound(sources)
