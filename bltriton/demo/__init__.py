"""Band-limited training on real bundled data: the demo and experiments of bltriton.

``python -m bltriton demo`` (or ``python -m bltriton.demo demo``) trains the FCN of Wang et al.
on the UCR sets GunPoint, ArrowHead and ItalyPowerDemand at several compress rates and reports
test accuracy, measured kept fraction, time per epoch and saved-for-backward memory against the
band. Modules: :mod:`~bltriton.demo.data` (the ``.ts`` reader and bundled sets),
:mod:`~bltriton.demo.models` (FCN, small ResNet), :mod:`~bltriton.demo.train` (training,
measuring, reporting), :mod:`~bltriton.demo.cli` (the subcommands).
"""

from __future__ import annotations

from bltriton.demo.data import DEV_SETS, Dataset, bundled_names, load_dataset, load_ts

__all__ = ["DEV_SETS", "Dataset", "bundled_names", "load_dataset", "load_ts"]
