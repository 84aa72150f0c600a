"""The UCR ``.ts`` reader and the bundled datasets of the demo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bltriton.demo.data import (
    BUNDLED,
    DATA_DIR,
    bundled_names,
    load_dataset,
    load_npz,
    load_ts,
    znormalize,
)

UNIVARIATE = """\
# a comment
% another comment
@problemName Tiny
@timeStamps false
@missing true
@univariate true
@equalLength true
@seriesLength 4
@classLabel true a b c

@data
1.0,2.0,3.0,4.0:b
0.5,?,1.5,NaN:a
-1,-2e-1,3,4:c
"""

MULTIVARIATE = """\
@problemName Multi
@timeStamps false
@univariate false
@dimensions 2
@equalLength true
@classLabel true Up Down
@data
1,2,3:4,5,6:Down
7,8,9:10,11,12:Up
"""

RAGGED = """\
@problemName Ragged
@univariate true
@equalLength false
@classLabel true 1 2
@data
1,2,3:1
4,5:2
"""


def write(tmp_path, text, name="Tiny_TRAIN.ts"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_univariate_with_missing_values(tmp_path):
    X, y, names = load_ts(write(tmp_path, UNIVARIATE))
    assert X.dtype == np.float32 and X.shape == (3, 1, 4)
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 2]
    assert names == ("a", "b", "c")
    np.testing.assert_allclose(X[0, 0], [1, 2, 3, 4])
    np.testing.assert_allclose(X[2, 0], [-1, -0.2, 3, 4], rtol=1e-6)
    assert np.isnan(X[1, 0, 1]) and np.isnan(X[1, 0, 3])
    assert X[1, 0, 0] == 0.5


def test_multivariate(tmp_path):
    X, y, names = load_ts(write(tmp_path, MULTIVARIATE))
    assert X.shape == (2, 2, 3)
    np.testing.assert_array_equal(X[0], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(X[1], [[7, 8, 9], [10, 11, 12]])
    assert y.tolist() == [1, 0] and names == ("Up", "Down")


def test_unequal_length_padded_with_nan(tmp_path):
    X, _, _ = load_ts(write(tmp_path, RAGGED))
    assert X.shape == (2, 1, 3)
    np.testing.assert_array_equal(X[1, 0, :2], [4, 5])
    assert np.isnan(X[1, 0, 2])


def test_unlabelled(tmp_path):
    text = "@univariate true\n@classLabel false\n@data\n1,2,3\n4,5,6\n"
    X, y, names = load_ts(write(tmp_path, text))
    assert X.shape == (2, 1, 3) and y.tolist() == [-1, -1] and names == ()


HEADER = "@problemName Bad\n@univariate true\n@classLabel true 1 2\n@data\n"  # data on line 5


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(HEADER + "1,2,3:1\n1,x,3:2\n", 6, "bad number 'x'", id="bad-number"),
        pytest.param(HEADER + "1,2,3:1\n1,,3:2\n", 6, "bad number ''", id="empty-value"),
        pytest.param(HEADER + "1,2,3:3\n", 5, "not declared", id="undeclared-label"),
        pytest.param(HEADER + "1,2,3:1\n1,2:2\n", 6, "series length 2", id="length"),
        pytest.param(HEADER + "1,2,3\n", 5, "no ':<label>'", id="no-label"),
        pytest.param(HEADER + "1,2,3:4,5,6:1\n", 5, "channel", id="univariate-two-channels"),
        pytest.param("@classLabel true 1 2\n@data\n1,2:3,4:1\n1,2:1\n", 4, "channel", id="channel-count"),
        pytest.param("@classLabel true 1 2\n@data\n1,2:3,4,5:1\n", 3, "different lengths", id="ragged-case"),
        pytest.param("@problemName X\n@classLabel true 1 2\n", 2, "no @data", id="no-data"),
        pytest.param(HEADER, 4, "no cases", id="no-cases"),
        pytest.param("@classLabel true\n@data\n1:1\n", 1, "must list", id="no-labels"),
        pytest.param("@univariate maybe\n@data\n", 1, "'true' or 'false'", id="bad-boolean"),
        pytest.param("1,2,3:1\n", 1, "header tag", id="data-before-header"),
        pytest.param("@timeStamps true\n@data\n", 1, "not supported", id="timestamps"),
        pytest.param("@univariate true\n@data\n1,2:1\n", 2, "no @classLabel", id="no-classlabel-tag"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, text, line, words):
    path = write(tmp_path, text, "Bad_TRAIN.ts")
    with pytest.raises(ValueError) as info:
        load_ts(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert words in message, message


def test_znormalize_per_series_ignores_nan():
    X = np.array([[[1.0, 2.0, 3.0, np.nan]], [[5.0, 5.0, 5.0, 5.0]]], dtype=np.float32)
    Z = znormalize(X)
    np.testing.assert_allclose(np.nanmean(Z[0]), 0, atol=1e-6)
    np.testing.assert_allclose(np.nanstd(Z[0]), 1, rtol=1e-5)
    assert np.isnan(Z[0, 0, 3])
    np.testing.assert_array_equal(Z[1], 0)  # a constant series becomes zeros


EXPECTED = {  # name: (n_train, n_test, sample shape, classes)
    "GunPoint": (50, 150, (1, 150), 2),
    "ArrowHead": (36, 175, (1, 251), 3),
    "ItalyPowerDemand": (67, 1029, (1, 24), 2),
    "digits": (1347, 450, (1, 8, 8), 10),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bundled_sets(name):
    n_train, n_test, shape, classes = EXPECTED[name]
    raw = load_npz(DATA_DIR / BUNDLED[name])
    ds = load_dataset(name.upper())  # names are case-insensitive
    assert ds.name == name
    for d in (raw, ds):
        assert d.X_train.dtype == np.float32 and d.X_test.dtype == np.float32
        assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
        assert d.X_train.shape == (n_train, *shape)
        assert d.X_test.shape == (n_test, *shape)
        assert d.num_classes == classes
        for y in (d.y_train, d.y_test):
            assert y.min() == 0 and y.max() == classes - 1
        assert np.isfinite(d.X_train).all() and np.isfinite(d.X_test).all()
    assert "license" in raw.info and "source" in raw.info
    if ds.spatial_dims == 1:  # z-normalised per series
        np.testing.assert_allclose(ds.X_train.mean(axis=-1), 0, atol=1e-5)
        np.testing.assert_allclose(ds.X_train.std(axis=-1), 1, atol=1e-3)
    else:  # standardised with the training mean/std
        assert math.isclose(float(ds.X_train.mean()), 0, abs_tol=1e-4)


def test_data_folder_is_small():
    total = sum(p.stat().st_size for p in DATA_DIR.iterdir())
    assert total < 1_000_000
    assert set(bundled_names()) == set(BUNDLED)
    assert (DATA_DIR / "README.md").is_file()


def test_load_dataset_from_ts_files(tmp_path):
    folder = tmp_path / "Tiny"
    folder.mkdir()
    write(folder, UNIVARIATE, "Tiny_TRAIN.ts")
    # the test file declares the labels in another order: indices follow the training file
    write(folder, UNIVARIATE.replace("true a b c", "true c b a"), "Tiny_TEST.ts")
    for path in (folder, folder / "Tiny_TRAIN.ts", folder / "Tiny_TEST.ts"):
        ds = load_dataset(path)
        assert ds.name == "Tiny"
        assert ds.y_train.tolist() == [1, 0, 2]
        assert ds.y_test.tolist() == [1, 0, 2]
        assert np.isnan(ds.X_train).sum() == 2  # missing values kept by default
    ds = load_dataset(folder, missing="zero")
    assert np.isfinite(ds.X_train).all()
    with pytest.raises(ValueError, match="missing values"):
        load_dataset(folder, missing="error")


def test_load_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a bundled set"):
        load_dataset("NoSuchSet")
    write(tmp_path, UNIVARIATE, "Lonely_TRAIN.ts")
    with pytest.raises(ValueError, match=r"Lonely_TEST\.ts: file not found"):
        load_dataset(tmp_path / "Lonely_TRAIN.ts")
    other = tmp_path / "other.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"expected a <Name>_TRAIN\.ts"):
        load_dataset(other)
    folder = tmp_path / "Labels"
    folder.mkdir()
    write(folder, UNIVARIATE, "Labels_TRAIN.ts")
    write(folder, UNIVARIATE.replace("true a b c", "true a b c d").replace(":c", ":d"), "Labels_TEST.ts")
    with pytest.raises(ValueError, match=r"labels \['d'\] do not occur"):
        load_dataset(folder)
    with pytest.raises(ValueError, match="missing must be"):
        load_dataset("GunPoint", missing="drop")
