"""3-D datasets (grids (n, D, H, W)): loader, geometry, CLI paths and bad input (issue 19)."""

import json

import numpy as np
import pytest

from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, atom_positions, load_dataset, periodic_axes, save_dataset


def _ds3(n=2, shape=(3, 4, 5), seed=0, **meta):
    g = (np.random.default_rng(seed).random((n, *shape)) < 0.3).astype(np.uint8)
    return Dataset(g, ("empty", "particle"), dict(meta))


def test_3d_round_trip_and_dimension(tmp_path):
    ds = _ds3(periodic=[True, False, True], pixel_size=[1.0, 2.0, 3.0])
    p = save_dataset(tmp_path / "v.npz", ds)
    back = load_dataset(p)
    assert back.ndim == 3 and back.spatial_shape == (3, 4, 5) and back.n_samples == 2
    np.testing.assert_array_equal(back.grids, ds.grids)
    assert periodic_axes(back.metadata, ndim=3) == (True, False, True)
    with pytest.raises(MapsimError, match=r"v\.npz: holds 3-D samples"):
        back.shape  # code written for (H, W) refuses instead of unpacking nonsense
    two = load_dataset(save_dataset(tmp_path / "t.npz", Dataset(ds.grids[:, 0], ds.classes)))
    assert two.ndim == 2 and two.shape == (4, 5) == two.spatial_shape


def test_3d_positions_are_x_y_z():
    ds = _ds3(pixel_size=[1.0, 2.0, 3.0])
    xyz, cls = atom_positions(ds, 0)
    z, y, x = np.nonzero(ds.grids[0])
    np.testing.assert_allclose(xyz, np.c_[(x + 0.5) * 3.0, (y + 0.5) * 2.0, (z + 0.5) * 1.0])
    assert np.all(cls == 1)


@pytest.mark.parametrize("grids, fragment", [
    (np.zeros((2, 0, 3, 3), np.uint8), "depth 0"),
    (np.zeros((2, 3, 0, 3), np.uint8), "empty"),
    (np.zeros((2, 2, 3, 3, 3), np.uint8), "rank 5"),
])
def test_bad_grids_name_the_file(tmp_path, grids, fragment):
    p = tmp_path / "bad.npz"
    np.savez(p, grids=grids, classes=np.array(["empty", "particle"]), metadata=np.array("{}"))
    with pytest.raises(MapsimError, match=fragment) as err:
        load_dataset(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_3d_geometry_needs_three_entries():
    with pytest.raises(MapsimError, match=r"\[z, rows, columns\]"):
        _ds3(periodic=[True, False])
    offsets = np.full((2, 3, 4, 5, 3), np.nan, np.float32)
    ds = _ds3()
    offsets[ds.grids == 1] = 0.5
    Dataset(ds.grids, ds.classes, {"pixel_size": 1.0}, {"offsets": offsets})  # valid
    offsets[tuple(np.argwhere(ds.grids == 1)[0])] = np.array([0.5, 0.5, 1.5], np.float32)
    with pytest.raises(MapsimError, match="plane"):
        Dataset(ds.grids, ds.classes, {"pixel_size": 1.0}, {"offsets": offsets})


def test_cli_3d_paths_and_refusals(tmp_path, capsys):
    v = tmp_path / "v.npz"
    assert main(["simulate", "lattice-gas", "--size", "6", "--depth", "5", "--samples", "2", "--workers", "1",
                 "--set", "sweeps=20", "--out", str(v)]) == 0
    assert load_dataset(v).grids.shape == (2, 5, 6, 6)
    capsys.readouterr()
    assert main(["analyze", str(v), "--out", str(tmp_path / "an"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ndim"] == 3 and info["shape"] == [5, 6, 6] and info["energy_per_site"] < 0
    assert (tmp_path / "an" / "slices.png").exists() and (tmp_path / "an" / "g_r.png").exists()
    f = tmp_path / "f.npz"
    save_dataset(f, Dataset(np.zeros((2, 6, 6), np.uint8), ("empty", "particle")))
    for argv, fragment in (
        (["compare", str(f), str(v), "--out", str(tmp_path / "c")], "2-D and 3-D data cannot be mixed"),
        (["simulate", "lattice-gas", "--size", "6", "--depth", "0", "--out", str(tmp_path / "d.npz")], "--depth"),
        (["simulate", "drying", "--size", "6", "--depth", "4", "--out", str(tmp_path / "d.npz")], "solvent"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["an", "f.npz", "v.npz"]  # nothing else written


def test_2d_models_refuse_3d_data(tmp_path, capsys):
    pytest.importorskip("torch")
    v = tmp_path / "v.npz"
    save_dataset(v, Dataset(np.ones((2, 3, 4, 4), np.uint8), ("empty", "particle")))
    m = tmp_path / "ig.pt"
    assert main(["model", "ideal-gas", "--density", "0.1", "--out", str(m)]) == 0
    capsys.readouterr()
    for argv, fragment in ((["score", str(m), str(v)], "is a 2-D model"),
                           (["fit-expansion", str(v), "--range", "1", "--order", "2", "--out", str(tmp_path / "x.pt")], "2-D samples (n, H, W) only")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and str(v) in err and "\n" not in err, err
    assert not (tmp_path / "x.pt").exists()
