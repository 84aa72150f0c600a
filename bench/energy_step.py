"""Cost of an energy-mode training step against fixed-rate steps (CPU or CUDA).

For each data set, times one training step (forward, backward, Adam) of the demo's model in:

* ``r=0``: the full band;
* ``matched``: fixed per-layer rates giving the band the energy mode used most often
  (``bltriton.spectral.rate_for_band``): the fixed-band step with the same kept fraction;
* ``E exact``: the energy mode searching every call without quantisation (the old behaviour);
* ``E every=k``: the energy mode of :mod:`bltriton.energy` with ``levels`` and several ``k``.

Steps cycle over shuffled training batches (the band moves between batches); each mode runs
``--steps`` steps per round, rounds interleave the modes (A, B, C, A, B, C, ...), and the table
gives each mode's median step time (process CPU time on the CPU, wall time on CUDA) and its
ratio to ``matched`` and ``r=0``.

    python bench/energy_step.py --sets GunPoint,HighFreq --rounds 5
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
from torch import nn

from bltriton.demo.data import load_dataset
from bltriton.demo.models import build_model
from bltriton.energy import band_limited_layers, set_energy
from bltriton.spectral import rate_for_band


def _model(ds, width: float, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ds.spatial_dims, ds.in_channels, ds.num_classes, width=width, **kw)


def _batches(ds, batch: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    X = torch.from_numpy(ds.X_train).to(device)
    y = torch.from_numpy(ds.y_train).to(device)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    return [(X[perm[i : i + batch]], y[perm[i : i + batch]]) for i in range(0, len(y) - batch + 1, batch)]


class Stepper:
    """One model and optimizer; :meth:`run` times ``steps`` training steps."""

    def __init__(self, model: nn.Module, batches, device: str) -> None:
        self.model = model.to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches = batches
        self.i = 0
        self.device = device
        self.times: list[float] = []
        self.bands: collections.Counter = collections.Counter()

    def step(self) -> None:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(x), y).backward()
        self.opt.step()
        self.bands[tuple(m.last_band for _, m in band_limited_layers(self.model))] += 1

    def run(self, steps: int) -> None:
        for _ in range(steps):
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            self.step()
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            # On a loaded CPU, process CPU time is the steadier measure (wall time counts the
            # time other processes hold the cores); on CUDA the wall time is what counts.
            cpu = self.device == "cpu"
            self.times.append(time.process_time() - c0 if cpu else time.perf_counter() - t0)


def bench_set(name: str, args) -> list[str]:
    ds = load_dataset(name)
    batches = _batches(ds, args.batch, args.device)
    modes: dict[str, Stepper] = {}
    modes["r=0"] = Stepper(_model(ds, args.width, compress_rate=0.0), batches, args.device)
    exact = _model(ds, args.width, compress_rate=0.0)
    set_energy(exact, args.energy, every=1, levels=None)
    modes["E exact"] = Stepper(exact, batches, args.device)
    for k in args.every:
        m = _model(ds, args.width, compress_rate=0.0)
        set_energy(m, args.energy, every=k, levels=args.levels)
        modes[f"E every={k}"] = Stepper(m, batches, args.device)
    # warm-up: every mode sees every batch once (DFT operands of the bands it meets get built)
    for s in modes.values():
        s.run(len(batches))
        s.times.clear()
    ref = modes[f"E every={args.every[0]}"]
    common = ref.bands.most_common(1)[0][0]
    rates = {n: rate_for_band(b) for (n, _), b in zip(band_limited_layers(ref.model), common)}
    modes["matched"] = Stepper(_model(ds, args.width, compress_rate=rates), batches, args.device)
    modes["matched"].run(len(batches))
    modes["matched"].times.clear()
    for _ in range(args.rounds):
        for s in modes.values():
            s.run(args.steps)
    med = {k: statistics.median(s.times) for k, s in modes.items()}
    lines = [f"{name}: matched rates {rates}; kept {[round(b.kept_fraction, 3) for b in common]}"]
    for k, s in modes.items():
        shapes = len(s.bands)
        lines.append(
            f"  {k:14s} {1e3 * med[k]:8.2f} ms  x{med[k] / med['matched']:.2f} matched  "
            f"x{med[k] / med['r=0']:.2f} r=0  band tuples seen {shapes}"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="GunPoint,ArrowHead,ItalyPowerDemand,HighFreq,digits")
    p.add_argument("--energy", type=float, default=0.99)
    p.add_argument("--every", default="1,4,8,16")
    p.add_argument("--levels", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU time = work)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.every = [int(k) for k in args.every.split(",")]
    for name in args.sets.split(","):
        print("\n".join(bench_set(name, args)), flush=True)


if __name__ == "__main__":
    main()
