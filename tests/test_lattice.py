"""Dataset file format: round trip, validation, atomic writes."""

import json
import zipfile

import numpy as np
import pytest

from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, load_dataset, save_dataset


def _ds(n=3, h=4, w=5, classes=("empty", "particle")):
    rng = np.random.default_rng(0)
    return Dataset(rng.integers(0, len(classes), (n, h, w)).astype(np.uint8), classes, {"generator": "test", "seed": 0})


def test_round_trip_with_extras(tmp_path):
    ds = _ds()
    ds.extras["log_probs"] = np.full((3, 4, 5), -0.5, np.float32)
    p = save_dataset(tmp_path / "d.npz", ds)
    back = load_dataset(p)
    assert np.array_equal(back.grids, ds.grids)
    assert back.classes == ("empty", "particle")
    assert back.metadata == {"generator": "test", "seed": 0}
    assert np.array_equal(back.extras["log_probs"], ds.extras["log_probs"])
    assert [x.name for x in tmp_path.iterdir()] == ["d.npz"]  # no temporary left behind


def _write_raw(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


GOOD = dict(grids=np.zeros((2, 3, 3), np.uint8), classes=np.array(["empty", "particle"]),
            metadata=np.array(json.dumps({"a": 1})))


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"grids": np.zeros((2, 3, 3), np.int64)}, "uint8"),
        ({"grids": np.zeros((3, 3), np.uint8)}, "rank 2"),
        ({"grids": np.zeros((0, 3, 3), np.uint8)}, "no samples"),
        ({"grids": np.full((2, 3, 3), 2, np.uint8)}, "class id 2"),
        ({"classes": np.array([0, 1])}, "string"),
        ({"metadata": np.array("{not json")}, "not valid JSON"),
        ({"metadata": np.array('{"x": NaN}')}, "JSON"),
        ({"metadata": np.array(["{}"])}, "0-d"),
    ],
)
def test_invalid_contents_are_named(tmp_path, change, fragment):
    p = tmp_path / "bad.npz"
    _write_raw(p, **{**GOOD, **change})
    with pytest.raises(MapsimError) as exc:
        load_dataset(p)
    assert str(p) in str(exc.value) and fragment in str(exc.value)


def test_missing_key(tmp_path):
    p = tmp_path / "bad.npz"
    _write_raw(p, grids=GOOD["grids"], classes=GOOD["classes"])
    with pytest.raises(MapsimError, match="missing key"):
        load_dataset(p)


def test_truncated_and_foreign_files(tmp_path):
    good = save_dataset(tmp_path / "good.npz", _ds())
    data = good.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(MapsimError, match="truncated or corrupt"):
        load_dataset(trunc)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(MapsimError, match="text.npz"):
        load_dataset(text)
    with pytest.raises(MapsimError, match="not found"):
        load_dataset(tmp_path / "absent.npz")


def test_failed_write_leaves_nothing(tmp_path):
    ds = _ds()
    ds.extras["grids"] = np.zeros(1)  # clashes with a required key
    with pytest.raises(MapsimError):
        save_dataset(tmp_path / "x.npz", ds)
    assert list(tmp_path.iterdir()) == []


def test_nan_metadata_rejected_in_memory():
    with pytest.raises(MapsimError, match="non-finite"):
        Dataset(np.zeros((1, 2, 2), np.uint8), ("a", "b"), {"T": float("nan")})
