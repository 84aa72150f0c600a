"""Regenerate the datasets bundled in ``bltriton/demo/data/``.

The demo needs neither ``aeon`` nor ``scikit-learn`` at run time: this script converts their
bundled data once into small compressed ``.npz`` files.

* UCR sets (GunPoint, ArrowHead, ItalyPowerDemand): read from the ``.ts`` files inside the
  ``aeon`` wheel (``aeon/datasets/data/<Name>/<Name>_TRAIN.ts`` / ``_TEST.ts``) with bltriton's own
  ``.ts`` reader, values stored as given (unnormalised), labels as indices into the declared
  label order, the archive's train/test split kept.
* digits: ``sklearn.datasets.load_digits`` (8x8 images, values 0..16), split once into 1347 train
  and 450 test images, stratified by class, ``random_state=0``.

Usage (from the repository root)::

    pip download --no-deps aeon -d /tmp/aeon      # or let the script do it (needs pip + index)
    python scripts/make_demo_data.py --aeon /tmp/aeon/aeon-*.whl
    python scripts/make_demo_data.py               # aeon: installed, else downloaded to a temp dir

``--aeon`` takes a wheel, or a folder holding an unpacked/installed ``aeon`` package (the folder
that contains ``aeon/datasets/data``, or ``aeon/`` itself). scikit-learn must be importable for
the digits. ``--only NAME`` converts one set.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bltriton.demo.data import DATA_DIR, load_ts  # noqa: E402

UCR_SETS = ("GunPoint", "ArrowHead", "ItalyPowerDemand")
UCR_SOURCE = (
    "UCR Time Series Classification Archive (Dau et al. 2018), {name}, as shipped in the "
    "aeon {version} wheel (aeon/datasets/data/{name}/{name}_TRAIN.ts, _TEST.ts)"
)
UCR_LICENSE = (
    "UCR archive: free for research use, cite Dau et al., 'The UCR Time Series Classification "
    "Archive', 2018, https://www.cs.ucr.edu/~eamonn/time_series_data_2018/ ; aeon: BSD-3-Clause"
)
DIGITS_SOURCE = (
    "UCI ML Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), 8x8 version via "
    "scikit-learn {version} load_digits; split stratified, 450 test images, random_state=0"
)
DIGITS_LICENSE = "UCI dataset: CC BY 4.0; scikit-learn: BSD-3-Clause"


def _find_aeon(spec: str | None, tmp: Path) -> tuple[Path, str]:
    """Return (folder containing ``aeon/datasets/data``, aeon version)."""
    if spec is None:
        try:
            import aeon  # type: ignore[import-not-found]

            return Path(aeon.__file__).resolve().parents[1], str(aeon.__version__)
        except ImportError:
            print("aeon is not installed: pip download --no-deps aeon", file=sys.stderr)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "aeon", "-d", str(tmp)]
            subprocess.run(cmd, check=True)
            spec = str(next(tmp.glob("aeon-*.whl")))
    path = Path(spec)
    if path.is_file() and path.suffix == ".whl":
        version = path.name.split("-")[1]
        out = tmp / "aeon_unpacked"
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if any(f"aeon/datasets/data/{n}/" in m for n in UCR_SETS)]
            z.extractall(out, members)
        return out, version
    if (path / "datasets" / "data").is_dir():
        path = path.parent
    if not (path / "aeon" / "datasets" / "data").is_dir():
        raise SystemExit(f"{spec}: no aeon/datasets/data inside; pass the aeon wheel or its folder")
    version = "unknown"
    for dist in path.glob("aeon-*.dist-info"):
        version = dist.name.split("-")[1]
    return path, version


def _save(stem: str, **arrays: object) -> Path:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    out = DATA_DIR / f"{stem}.npz"
    np.savez_compressed(out, **arrays)
    return out


def convert_ucr(name: str, aeon_root: Path, version: str) -> Path:
    folder = aeon_root / "aeon" / "datasets" / "data" / name
    train = load_ts(folder / f"{name}_TRAIN.ts")
    test = load_ts(folder / f"{name}_TEST.ts")
    if train.class_names != test.class_names:
        raise SystemExit(f"{name}: train and test declare different labels")
    return _save(
        name,
        X_train=train.X.astype(np.float32),
        y_train=train.y,
        X_test=test.X.astype(np.float32),
        y_test=test.y,
        class_names=np.array(train.class_names),
        name=np.array(name),
        source=np.array(UCR_SOURCE.format(name=name, version=version)),
        license=np.array(UCR_LICENSE),
    )


def convert_digits() -> Path:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = digits.images.astype(np.float32)[:, None]  # [1797, 1, 8, 8], values 0..16
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=450, random_state=0, stratify=y)
    return _save(
        "digits",
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        class_names=np.array([str(k) for k in range(10)]),
        name=np.array("digits"),
        source=np.array(DIGITS_SOURCE.format(version=sklearn.__version__)),
        license=np.array(DIGITS_LICENSE),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aeon", help="aeon wheel or folder (default: installed, else download)")
    parser.add_argument("--only", choices=[*UCR_SETS, "digits"], help="convert one set")
    args = parser.parse_args(argv)

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        ucr = [n for n in UCR_SETS if args.only in (None, n)]
        if ucr:
            root, version = _find_aeon(args.aeon, Path(tmp))
            written += [convert_ucr(n, root, version) for n in ucr]
        if args.only in (None, "digits"):
            written.append(convert_digits())
    for path in written:
        with np.load(path) as z:
            shapes = ", ".join(f"{k} {z[k].shape}" for k in ("X_train", "X_test"))
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.1f} KiB; {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
