"""3-D import/export: structures voxelised in x, y, z, TIFF stacks as volumes, round trips (issue 19)."""

import numpy as np
import pytest

pytest.importorskip("ase")
pytest.importorskip("tifffile")

import ase.io  # noqa: E402
import tifffile  # noqa: E402
from ase import Atoms  # noqa: E402

from mapsim.cli import main  # noqa: E402
from mapsim.errors import MapsimError  # noqa: E402
from mapsim.exchange import export_dataset, import_files  # noqa: E402
from mapsim.lattice import Dataset, atom_positions, load_dataset, save_dataset  # noqa: E402


def _frames(n_frames=3, seed=0, periodic=True):
    rng = np.random.default_rng(seed)
    a, side = 2.5, 6
    out = []
    for _ in range(n_frames):
        sites = np.argwhere(rng.random((side, side, side)) < 0.3)  # (z, y, x) sites
        pos = (sites[:, ::-1] + 0.5) * a + rng.uniform(-0.4, 0.4, sites.shape)
        out.append(Atoms(["Ar"] * len(pos), positions=pos, cell=[side * a] * 3, pbc=periodic))
    return out


def test_structures_voxelised_in_xyz_keep_positions_and_round_trip(tmp_path):
    frames = _frames()
    ase.io.write(tmp_path / "f.extxyz", frames)
    ds, report = import_files([tmp_path / "f.extxyz"], three_d=True, species_map={"Ar": "particle"},
                              length_unit="Å")
    assert ds.ndim == 3 and ds.grids.shape[0] == 3 and report["atoms_lost"] == 0
    assert ds.metadata["periodic"] == [True, True, True] and len(ds.metadata["pixel_size"]) == 3
    for k, atoms in enumerate(frames):
        xyz, _ = atom_positions(ds, k)
        got = np.sort(np.round(np.mod(xyz, 15.0), 3), axis=0)
        want = np.sort(np.round(np.mod(atoms.positions, 15.0), 3), axis=0)
        np.testing.assert_allclose(got, want, atol=2e-3)
    out = tmp_path / "ex"
    export_dataset(ds, out, "extxyz")
    back, _ = import_files(sorted(out.glob("*.extxyz")), three_d=True)
    np.testing.assert_array_equal(back.grids, ds.grids)
    np.testing.assert_allclose(back.offsets[ds.grids > 0], ds.offsets[ds.grids > 0], atol=1e-5)
    assert back.metadata["length_unit"] == "Å" and back.classes == ds.classes


def test_voxel_centres_on_export_and_open_axes(tmp_path):
    g = np.zeros((1, 2, 3, 4), np.uint8)
    g[0, 1, 2, 3] = 1
    ds = Dataset(g, ("empty", "particle"), {"pixel_size": [2.0, 1.0, 1.0], "periodic": [False, True, True]})
    export_dataset(ds, tmp_path / "o", "extxyz")
    atoms = ase.io.read(tmp_path / "o" / "sample_00000.extxyz")
    np.testing.assert_allclose(atoms.positions, [[3.5, 2.5, 3.0]])  # z = (k + 1/2) a_z
    assert atoms.pbc.tolist() == [True, True, False]
    back, _ = import_files([tmp_path / "o" / "sample_00000.extxyz"], three_d=True)
    np.testing.assert_array_equal(back.grids, g)  # the recorded grid, open z axis included


def test_without_3d_z_is_dropped_as_before(tmp_path):
    ase.io.write(tmp_path / "f.extxyz", _frames(1))
    ds, _ = import_files([tmp_path / "f.extxyz"], species_map={"Ar": "particle"}, pixel_size=0.5)
    assert ds.ndim == 2


def test_tiff_stacks_are_volumes_with_3d_and_pages_without(tmp_path):
    rng = np.random.default_rng(1)
    stacks = [(rng.random((4, 5, 6)) < 0.4).astype(np.uint8) * 255 for _ in range(2)]
    paths = []
    for i, st in enumerate(stacks):
        paths.append(tmp_path / f"s{i}.tif")
        tifffile.imwrite(paths[-1], st, photometric="minisblack")
    vol, report = import_files(paths, three_d=True)
    assert vol.grids.shape == (2, 4, 5, 6) and report["kind"] == "image-3d"
    np.testing.assert_array_equal(vol.grids, np.stack(stacks) // 255)
    flat, _ = import_files(paths)
    assert flat.grids.shape == (8, 5, 6)
    np.testing.assert_array_equal(flat.grids, np.concatenate(stacks) // 255)


def test_3d_bad_input_one_line_nothing_written(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 4, 4), np.uint8) + np.eye(4, dtype=np.uint8) * 255, photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((2, 4, 4), np.uint8) + np.eye(4, dtype=np.uint8) * 255, photometric="minisblack")
    with pytest.raises(MapsimError, match="b.tif is 2x4x4"):
        import_files([tmp_path / "a.tif", tmp_path / "b.tif"], three_d=True)
    v = tmp_path / "v.npz"
    save_dataset(v, Dataset(np.ones((1, 2, 2, 2), np.uint8), ("empty", "particle")))
    for argv, fragment in (
        (["export", str(v), "--format", "png", "--out", str(tmp_path / "p")], "PNG holds one plane"),
        (["export", str(v), "--format", "extxyz", "--interior", "--out", str(tmp_path / "p")], "3-D samples"),
        (["import", str(tmp_path / "a.tif"), "--3d", "--crop", "2x2", "--out", str(tmp_path / "x.npz")], "--crop"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "v.npz"]
    assert main(["export", str(v), "--format", "xyz", "--out", str(tmp_path / "x")]) == 0
    assert load_dataset(v).ndim == 3
