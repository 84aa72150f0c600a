"""Datasets for the demo: a reader for the UCR/UEA ``.ts`` format and the bundled sets.

Bundled (converted once by ``scripts/make_demo_data.py``, shipped as ``.npz`` in
``bltriton/demo/data/``, see the README there for sources and licences):

=================  ==========  =====  ==========  =======  ========
name               kind        train  test        classes  shape
=================  ==========  =====  ==========  =======  ========
GunPoint           UCR series  50     150         2        [1, 150]
ArrowHead          UCR series  36     175         3        [1, 251]
ItalyPowerDemand   UCR series  67     1029        2        [1, 24]
digits             8x8 images  1347   450         10       [1, 8, 8]
=================  ==========  =====  ==========  =======  ========

Normalisation (``load_dataset(..., normalize=True)``, the default):

* time series: each series is z-normalised per channel over time (subtract its mean, divide by
  its standard deviation; a constant series becomes zeros), as is usual for the UCR archive;
  missing values (NaN) are ignored by the statistics and stay NaN;
* images: one scalar mean and standard deviation taken from the training split are applied to
  both splits.

Missing values: ``?`` (and ``NaN``) in a ``.ts`` file are read as NaN and kept. A network fed NaN
produces NaN, so ``load_dataset`` takes ``missing="keep" | "zero" | "error"``: keep them, replace
them by zero after normalisation (the series mean), or raise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

#: Bundled sets: canonical name -> file in ``DATA_DIR``.
BUNDLED: dict[str, str] = {
    "GunPoint": "GunPoint.npz",
    "ArrowHead": "ArrowHead.npz",
    "ItalyPowerDemand": "ItalyPowerDemand.npz",
    "digits": "digits.npz",
}

#: The three UCR development sets of the demo.
DEV_SETS: tuple[str, ...] = ("GunPoint", "ArrowHead", "ItalyPowerDemand")

_BOOLEAN_TAGS = ("timestamps", "missing", "univariate", "equallength", "targetlabel")
_MISSING_TOKENS = ("?", "nan")


class TsFile(NamedTuple):
    """What :func:`load_ts` returns.

    Attributes:
        X: float32 ``[n, channels, length]``; NaN where the file has ``?``/``NaN`` and, for files
            declaring ``@equalLength false``, after the end of each shorter series.
        y: int64 ``[n]``, index into ``class_names`` (in the order ``@classLabel`` declares them);
            ``-1`` for every case when the file says ``@classLabel false``.
        class_names: the declared labels as strings (empty for ``@classLabel false``).
    """

    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]


def _bool_tag(path: Path, lineno: int, tag: str, tokens: list[str]) -> bool:
    if len(tokens) != 2 or tokens[1].lower() not in ("true", "false"):
        raise ValueError(f"{path}:{lineno}: @{tag} takes one value, 'true' or 'false'")
    return tokens[1].lower() == "true"


def _int_tag(path: Path, lineno: int, tag: str, tokens: list[str]) -> int:
    if len(tokens) != 2 or not tokens[1].isdigit() or int(tokens[1]) < 1:
        raise ValueError(f"{path}:{lineno}: @{tag} takes one positive integer")
    return int(tokens[1])


def _parse_value(path: Path, lineno: int, token: str, dim: int, pos: int) -> float:
    token = token.strip()
    if token.lower() in _MISSING_TOKENS:
        return math.nan
    try:
        return float(token)
    except ValueError:
        where = f"dimension {dim + 1}, value {pos + 1}"
        raise ValueError(f"{path}:{lineno}: bad number {token!r} ({where})") from None


def load_ts(path: str | Path) -> TsFile:
    """Read a UCR/UEA ``.ts`` classification file.

    Understood header tags (case-insensitive): ``@problemName``, ``@timeStamps false``,
    ``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
    ``@classLabel true <labels...>`` / ``@classLabel false``, then ``@data``. Lines starting with
    ``#`` or ``%`` and blank lines are skipped; unknown tags are ignored. Each data line holds one case:
    the channels separated by ``:``, the values of a channel by ``,``, and (when labelled) the
    label after the last ``:``. ``?`` and ``NaN`` are missing values and become NaN.

    Args:
        path: the ``.ts`` file.

    Returns:
        :class:`TsFile` ``(X, y, class_names)``; ``X`` is float32 ``[n, channels, length]``.

    Raises:
        ValueError: naming the file and line for malformed input: a bad number, a label that
            ``@classLabel`` does not declare, a missing ``@data``, channel counts or lengths that
            disagree with each other or with the header, an empty file, or a feature this reader
            does not support (``@timeStamps true``, regression targets).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()

    header: dict[str, object] = {"univariate": None, "equallength": True, "labels": None}
    data_start = None
    for i, raw in enumerate(lines):
        lineno = i + 1
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not line.startswith("@"):
            raise ValueError(
                f"{path}:{lineno}: expected a header tag (@...) or @data before the data, got {line[:40]!r}"
            )
        tokens = re.split(r"\s+", line)
        tag = tokens[0][1:].lower()
        if tag == "data":
            if len(tokens) != 1:
                raise ValueError(f"{path}:{lineno}: @data takes no value")
            data_start = i + 1
            break
        if tag in _BOOLEAN_TAGS:
            value = _bool_tag(path, lineno, tag, tokens)
            if tag == "timestamps" and value:
                raise ValueError(f"{path}:{lineno}: @timeStamps true is not supported")
            if tag == "targetlabel" and value:
                raise ValueError(
                    f"{path}:{lineno}: @targetLabel true (regression) is not supported; "
                    "this reader loads classification files"
                )
            header[tag] = value
        elif tag in ("dimensions", "serieslength"):
            header[tag] = _int_tag(path, lineno, tag, tokens)
        elif tag == "classlabel":
            if len(tokens) < 2 or tokens[1].lower() not in ("true", "false"):
                raise ValueError(f"{path}:{lineno}: @classLabel must be 'true <labels...>' or 'false'")
            if tokens[1].lower() == "true":
                if len(tokens) == 2:
                    raise ValueError(f"{path}:{lineno}: @classLabel true must list the labels")
                labels = tokens[2:]
                if len(set(labels)) != len(labels):
                    raise ValueError(f"{path}:{lineno}: @classLabel lists a label twice")
                header["labels"] = tuple(labels)
            else:
                header["labels"] = ()
        elif tag == "problemname":
            header[tag] = " ".join(tokens[1:])
        # other tags: ignored (forward compatible with new header fields)
    if data_start is None:
        raise ValueError(f"{path}:{len(lines)}: no @data line (end of file reached in the header)")

    labels: tuple[str, ...] | None = header["labels"]  # type: ignore[assignment]
    if labels is None:
        raise ValueError(
            f"{path}:{data_start}: no @classLabel tag before @data; "
            "this reader needs '@classLabel true <labels...>' or '@classLabel false'"
        )
    label_index = {name: k for k, name in enumerate(labels)}
    labelled = bool(labels)
    equal_length = bool(header["equallength"])
    n_dims = header.get("dimensions")
    if header["univariate"] is True:
        if n_dims not in (None, 1):
            raise ValueError(f"{path}: @univariate true contradicts @dimensions {n_dims}")
        n_dims = 1
    series_length = header.get("serieslength") if equal_length else None

    cases: list[np.ndarray] = []
    ys: list[int] = []
    first_lineno = None
    for i in range(data_start, len(lines)):
        lineno = i + 1
        line = lines[i].strip()
        if not line or line.startswith(("#", "%")):
            continue
        parts = line.split(":")
        if labelled:
            if len(parts) < 2:
                raise ValueError(f"{path}:{lineno}: no ':<label>' at the end of the case")
            label = parts[-1].strip()
            if label not in label_index:
                declared = " ".join(labels)
                raise ValueError(
                    f"{path}:{lineno}: label {label!r} is not declared by @classLabel ({declared})"
                )
            ys.append(label_index[label])
            parts = parts[:-1]
        else:
            ys.append(-1)
        if n_dims is None:
            n_dims = len(parts)
            first_lineno = lineno
        elif len(parts) != n_dims:
            where = f"line {first_lineno}" if first_lineno else "the header"
            raise ValueError(f"{path}:{lineno}: {len(parts)} channel(s), but {where} says {n_dims}")
        channels = []
        for d, part in enumerate(parts):
            if not part.strip():
                raise ValueError(f"{path}:{lineno}: dimension {d + 1} is empty")
            tokens = part.split(",")
            channels.append([_parse_value(path, lineno, t, d, p) for p, t in enumerate(tokens)])
        lengths = {len(c) for c in channels}
        if len(lengths) != 1:
            raise ValueError(
                f"{path}:{lineno}: the channels of one case have different lengths "
                f"{[len(c) for c in channels]}"
            )
        length = lengths.pop()
        if equal_length:
            if series_length is None:
                series_length = length
            elif length != series_length:
                raise ValueError(
                    f"{path}:{lineno}: series length {length}, expected {series_length} "
                    "(the file declares equal lengths; say '@equalLength false' for ragged data)"
                )
        cases.append(np.asarray(channels, dtype=np.float64))
    if not cases:
        raise ValueError(f"{path}:{len(lines)}: no cases after @data")

    max_len = max(c.shape[1] for c in cases)
    X = np.full((len(cases), n_dims, max_len), np.nan, dtype=np.float32)
    for k, c in enumerate(cases):
        X[k, :, : c.shape[1]] = c
    return TsFile(X, np.asarray(ys, dtype=np.int64), tuple(labels))


@dataclass
class Dataset:
    """A train/test split ready for training.

    Attributes:
        name: the set's name.
        X_train: float32 ``[n_train, channels, length]`` (series) or ``[n_train, 1, H, W]`` (images).
        y_train: int64 ``[n_train]`` in ``0..num_classes-1``.
        X_test: float32, like ``X_train``.
        y_test: int64 ``[n_test]``.
        class_names: label of each class index.
        source: where the data came from (a bundled file or a path).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    info: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def spatial_dims(self) -> int:
        """1 for time series ``[n, C, L]``, 2 for images ``[n, C, H, W]``."""
        return self.X_train.ndim - 2

    def describe(self) -> str:
        shape = "x".join(str(s) for s in self.X_train.shape[1:])
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test, "
            f"{self.num_classes} classes, sample shape {shape}"
        )


def znormalize(X: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Z-normalise each series over its last axis, ignoring NaN; constant series become 0.

    Args:
        X: float ``[..., length]``.

    Returns:
        float32, same shape; NaN stays NaN.
    """
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        finite = ~np.isnan(X)
        count = finite.sum(axis=-1, keepdims=True)
        mean = np.where(finite, X, 0.0).sum(axis=-1, keepdims=True) / np.maximum(count, 1)
        centred = X - mean
        var = np.where(finite, centred**2, 0.0).sum(axis=-1, keepdims=True) / np.maximum(count, 1)
        std = np.sqrt(var)
        out = centred / np.where(std > eps, std, 1.0)
    return out.astype(np.float32)


def high_frequency_set(n_train: int = 120, n_test: int = 300, length: int = 256, seed: int = 0) -> Dataset:
    """A generated set whose classes differ only in high-frequency content (``HighFreq``).

    Each series is a smooth random walk (most of the energy, at low frequencies) plus one burst
    (a Hann-windowed sinusoid, 24 to 48 samples long, at a random position and amplitude) whose
    frequency tells the class: 0.28, 0.36 or 0.44 cycles per sample (Nyquist is 0.5), plus white
    noise. A fixed band that drops the upper half of the spectrum drops the label; the energy
    held by the band varies from batch to batch with the bursts' amplitudes. Deterministic for
    a given ``seed``; not normalised (``load_dataset`` does that).

    Returns:
        :class:`Dataset` with ``[n, 1, length]`` float32 series and 3 classes.
    """
    rng = np.random.default_rng(seed)
    freqs = (0.28, 0.36, 0.44)
    n = n_train + n_test
    y = np.arange(n) % len(freqs)
    rng.shuffle(y)
    walk = np.cumsum(rng.normal(size=(n, length)), axis=1)
    walk = np.apply_along_axis(lambda r: np.convolve(r, np.ones(9) / 9, mode="same"), 1, walk)
    X = walk / walk.std(axis=1, keepdims=True)
    t = np.arange(length)
    for i in range(n):
        width = int(rng.integers(24, 49))
        start = int(rng.integers(0, length - width))
        amp = rng.uniform(0.3, 1.5)
        burst = amp * np.hanning(width) * np.sin(2 * np.pi * freqs[y[i]] * t[:width] + rng.uniform(0, 6.3))
        X[i, start : start + width] += burst
    X += 0.05 * rng.normal(size=X.shape)
    X = X[:, None, :].astype(np.float32)
    return Dataset(
        name="HighFreq",
        X_train=X[:n_train],
        y_train=y[:n_train].astype(np.int64),
        X_test=X[n_train:],
        y_test=y[n_train:].astype(np.int64),
        class_names=tuple(f"{f} cycles/sample" for f in freqs),
        source=f"generated (high_frequency_set, seed {seed})",
    )


#: Generated sets ``load_dataset`` knows by name (not real data: for the energy mode's tests and
#: measurements, where a fixed band fails).
GENERATED = {"HighFreq": high_frequency_set}


def bundled_names() -> list[str]:
    """Names of the bundled sets (``load_dataset`` accepts them case-insensitively)."""
    return list(BUNDLED)


def _bundled_key(name: str) -> str | None:
    lower = {k.lower(): k for k in BUNDLED}
    return lower.get(name.strip().lower())


def load_npz(path: str | Path, name: str | None = None) -> Dataset:
    """Load a converted set (the format ``scripts/make_demo_data.py`` writes), unnormalised.

    Keys: ``X_train``, ``y_train``, ``X_test``, ``y_test``, ``class_names`` and optional string
    keys ``name``, ``source``, ``license``.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        missing = {"X_train", "y_train", "X_test", "y_test", "class_names"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a bltriton demo dataset, missing keys {sorted(missing)}")
        info = {k: str(z[k]) for k in ("name", "source", "license") if k in z.files}
        return Dataset(
            name=name or info.get("name", path.stem),
            X_train=z["X_train"].astype(np.float32),
            y_train=z["y_train"].astype(np.int64),
            X_test=z["X_test"].astype(np.float32),
            y_test=z["y_test"].astype(np.int64),
            class_names=tuple(str(c) for c in z["class_names"]),
            source=str(path),
            info=info,
        )


def _ts_pair(path: Path) -> tuple[str, Path, Path]:
    """``(name, train_file, test_file)`` for a ``_TRAIN.ts``/``_TEST.ts`` file or a folder."""
    if path.is_dir():
        trains = sorted(path.glob("*_TRAIN.ts"))
        preferred = path / f"{path.name}_TRAIN.ts"
        if preferred in trains:
            train = preferred
        elif len(trains) == 1:
            train = trains[0]
        elif not trains:
            raise ValueError(f"{path}: folder holds no <Name>_TRAIN.ts file")
        else:
            names = ", ".join(t.name for t in trains)
            raise ValueError(f"{path}: several *_TRAIN.ts files ({names}); pass one of them")
    elif path.name.upper().endswith("_TRAIN.TS"):
        train = path
    elif path.name.upper().endswith("_TEST.TS"):
        train = path.with_name(path.name[: -len("_TEST.ts")] + "_TRAIN.ts")
    else:
        raise ValueError(
            f"{path}: expected a <Name>_TRAIN.ts file, a folder holding <Name>_TRAIN.ts and "
            f"<Name>_TEST.ts, a converted .npz, or one of the bundled names {bundled_names()}"
        )
    name = train.name[: -len("_TRAIN.ts")]
    test = train.with_name(name + "_TEST.ts")
    for f in (train, test):
        if not f.is_file():
            raise ValueError(f"{f}: file not found (a .ts set needs both _TRAIN.ts and _TEST.ts)")
    return name, train, test


def _load_ts_pair(path: Path) -> Dataset:
    name, train_file, test_file = _ts_pair(path)
    train = load_ts(train_file)
    test = load_ts(test_file)
    if not train.class_names:
        raise ValueError(f"{train_file}: unlabelled (@classLabel false); training needs labels")
    index = {c: k for k, c in enumerate(train.class_names)}
    remap = np.array([index.get(c, -1) for c in test.class_names], dtype=np.int64)
    y_test = remap[test.y]
    if (y_test < 0).any():
        unknown = sorted({test.class_names[k] for k in test.y[y_test < 0]})
        raise ValueError(f"{test_file}: labels {unknown} do not occur in {train_file.name}")
    if train.X.shape[1] != test.X.shape[1]:
        raise ValueError(
            f"{test_file}: {test.X.shape[1]} channel(s), but {train_file.name} has {train.X.shape[1]}"
        )
    X_train, X_test = train.X, test.X
    if X_train.shape[2] != X_test.shape[2]:  # ragged sets: pad both to the same length
        length = max(X_train.shape[2], X_test.shape[2])
        X_train, X_test = (_pad_nan(a, length) for a in (X_train, X_test))
    return Dataset(
        name=name,
        X_train=X_train,
        y_train=train.y,
        X_test=X_test,
        y_test=y_test,
        class_names=train.class_names,
        source=str(train_file),
    )


def _pad_nan(X: np.ndarray, length: int) -> np.ndarray:
    out = np.full((*X.shape[:2], length), np.nan, dtype=np.float32)
    out[:, :, : X.shape[2]] = X
    return out


def load_dataset(name_or_path: str | Path, *, normalize: bool = True, missing: str = "keep") -> Dataset:
    """Load a bundled set by name, or a UCR set from disk.

    Args:
        name_or_path: a bundled name (case-insensitive: ``GunPoint``, ``ArrowHead``,
            ``ItalyPowerDemand``, ``digits``), the generated ``HighFreq``
            (:func:`high_frequency_set`); or a path to a ``<Name>_TRAIN.ts`` (its
            ``<Name>_TEST.ts`` must sit next to it), to a folder holding both, or to a converted
            ``.npz``.
        normalize: z-normalise each series (images: standardise with the training mean/std).
        missing: what to do with NaN in the data: ``"keep"``, ``"zero"`` (replace by 0 after
            normalisation) or ``"error"`` (raise ``ValueError``).

    Returns:
        :class:`Dataset`.
    """
    if missing not in ("keep", "zero", "error"):
        raise ValueError(f"missing must be 'keep', 'zero' or 'error'; got {missing!r}")
    key = _bundled_key(str(name_or_path)) if isinstance(name_or_path, str) else None
    generated = {k.lower(): k for k in GENERATED}
    gen_key = generated.get(name_or_path.strip().lower()) if isinstance(name_or_path, str) else None
    if gen_key is not None:
        ds = GENERATED[gen_key]()
    elif key is not None:
        file = DATA_DIR / BUNDLED[key]
        if not file.is_file():
            raise ValueError(
                f"bundled set {key!r} is missing ({file}); regenerate it with scripts/make_demo_data.py"
            )
        ds = load_npz(file, name=key)
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise ValueError(
                f"{str(name_or_path)!r} is neither a bundled set {bundled_names()} nor an existing path"
            )
        ds = load_npz(path) if path.suffix == ".npz" else _load_ts_pair(path)

    if normalize:
        if ds.spatial_dims == 1:
            ds.X_train, ds.X_test = znormalize(ds.X_train), znormalize(ds.X_test)
        else:
            mean = float(np.nanmean(ds.X_train))
            std = float(np.nanstd(ds.X_train)) or 1.0
            ds.X_train = ((ds.X_train - mean) / std).astype(np.float32)
            ds.X_test = ((ds.X_test - mean) / std).astype(np.float32)

    n_nan = int(np.isnan(ds.X_train).sum() + np.isnan(ds.X_test).sum())
    if n_nan:
        if missing == "error":
            raise ValueError(
                f"{ds.name}: {n_nan} missing values (NaN); pass missing='zero' to replace them "
                "or missing='keep' to handle them yourself"
            )
        if missing == "zero":
            ds.X_train = np.nan_to_num(ds.X_train, nan=0.0)
            ds.X_test = np.nan_to_num(ds.X_test, nan=0.0)
        ds.info["missing_values"] = str(n_nan)
    return ds
