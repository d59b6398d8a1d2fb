"""mapsim import/export: exact round trips, geometry rules, collisions, images, bad files (exit 2, no output)."""

import json

import numpy as np
import pytest

pytest.importorskip("ase")
pytest.importorskip("tifffile")

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402

from mapsim.cli import main  # noqa: E402
from mapsim.errors import MapsimError  # noqa: E402
from mapsim.exchange import export_dataset, import_files  # noqa: E402
from mapsim.exchange.images import PNG_COLOURS  # noqa: E402
from mapsim.lattice import MC_CLASSES, Dataset, load_dataset, save_dataset  # noqa: E402


def _dataset(shape=(3, 7, 11), n_classes=3, seed=0, density=(0.6, 0.25, 0.15)):
    rng = np.random.default_rng(seed)
    p = np.asarray(density[:n_classes], float)
    grids = rng.choice(n_classes, size=shape, p=p / p.sum()).astype(np.uint8)
    grids[0, 0, :] = 0  # an empty first row and column: empty pixels must stay empty, borders included
    grids[0, :, 0] = 0
    return Dataset(grids, MC_CLASSES[:n_classes], {"generator": "test"})


def _listing(path):
    return sorted(p.name for p in path.iterdir())


# ---------------------------------------------------------------------------
# exact round trips


@pytest.mark.parametrize("pixel", [1.0, 0.37, 2.5])
def test_grid_extxyz_grid_is_exact(tmp_path, pixel):
    ds = _dataset()
    export_dataset(ds, tmp_path / "x", "extxyz", pixel_size=pixel)
    files = sorted((tmp_path / "x").iterdir())
    assert [f.name for f in files] == ["sample_00000.extxyz", "sample_00001.extxyz", "sample_00002.extxyz"]
    back, report = import_files(files)
    assert back.classes == ds.classes
    np.testing.assert_array_equal(back.grids, ds.grids)
    assert report["collisions"] == 0 and back.metadata["pixel_size_rule"] == "file"
    assert [s["file"] for s in back.metadata["sources"]] == [str(f) for f in files]
    # what a user sees in ASE: cell W a x H a, atoms at pixel centres, one per non-empty pixel
    atoms = ase.io.read(files[1])
    h, w = ds.shape
    np.testing.assert_allclose(atoms.cell.lengths()[:2], [w * pixel, h * pixel])
    assert len(atoms) == np.count_nonzero(ds.grids[1])
    assert atoms.info["mapsim_classes"] == "empty,particle,solvent"
    assert set(atoms.get_chemical_symbols()) <= {"Au", "O"}


def test_classes_without_atoms_survive_extxyz(tmp_path):
    grids = np.zeros((2, 4, 5), np.uint8)
    grids[1, 2, 3] = 1  # sample 0 is all empty; class 'solvent' never occurs
    ds = Dataset(grids, MC_CLASSES, {})
    export_dataset(ds, tmp_path / "x", "extxyz")
    back, _ = import_files(sorted((tmp_path / "x").iterdir()))
    assert back.classes == MC_CLASSES
    np.testing.assert_array_equal(back.grids, grids)


def test_grid_xyz_grid_with_given_pixel_size_and_cell(tmp_path, capsys):
    ds = _dataset(shape=(2, 6, 9))
    save_dataset(tmp_path / "d.npz", ds)
    assert main(["export", str(tmp_path / "d.npz"), "--format", "xyz", "--out", str(tmp_path / "x"),
                 "--pixel-size", "0.37", "--species-map", "particle=Ag,solvent=C"]) == 0
    assert "pixel 0.37" in capsys.readouterr().out
    files = sorted(str(p) for p in (tmp_path / "x").iterdir())
    assert main(["import", *files, "--pixel-size", "0.37", "--cell", f"{9 * 0.37},{6 * 0.37}",
                 "--species-map", "Ag=particle,C=solvent", "--out", str(tmp_path / "back.npz")]) == 0
    back = load_dataset(tmp_path / "back.npz")
    assert back.classes == ds.classes
    np.testing.assert_array_equal(back.grids, ds.grids)


def test_grid_png_grid_is_exact_and_uses_fixed_colours(tmp_path):
    from PIL import Image

    ds = _dataset(shape=(2, 5, 8))
    save_dataset(tmp_path / "d.npz", ds)
    assert main(["export", str(tmp_path / "d.npz"), "--format", "png", "--out", str(tmp_path / "p")]) == 0
    files = sorted(str(p) for p in (tmp_path / "p").iterdir())
    assert main(["import", *files, "--out", str(tmp_path / "back.npz")]) == 0
    back = load_dataset(tmp_path / "back.npz")
    assert back.classes == ds.classes and back.metadata["class_rule"] == "mapsim colours"
    np.testing.assert_array_equal(back.grids, ds.grids)
    rgb = np.array(Image.open(files[0]).convert("RGB"))
    assert rgb.shape == (5, 8, 3)
    for k in range(3):
        colour = tuple(int(PNG_COLOURS[k][i:i + 2], 16) for i in (1, 3, 5))
        assert np.all(rgb[ds.grids[0] == k] == colour)
    # the same PNGs through an explicit colour map (e.g. after the text chunk was stripped)
    cmap = ",".join(f"{PNG_COLOURS[k]}={c}" for k, c in enumerate(MC_CLASSES))
    assert main(["import", *files, "--class-map", cmap, "--out", str(tmp_path / "b2.npz")]) == 0
    np.testing.assert_array_equal(load_dataset(tmp_path / "b2.npz").grids, ds.grids)


def test_import_then_export_keeps_species_and_pixel(tmp_path):
    atoms = Atoms("Cu2Zn", positions=[[0.6, 0.6, 5], [1.8, 0.6, -3], [0.6, 3.0, 0]], cell=[3.6, 3.6, 10], pbc=True)
    ase.io.write(tmp_path / "s.extxyz", atoms)
    ds, _ = import_files([tmp_path / "s.extxyz"], species_map={"Cu": "particle", "Zn": "solvent"}, pixel_size=1.2)
    assert ds.metadata["pixel_size"] == pytest.approx([1.2, 1.2]) and ds.shape == (3, 3)
    report = export_dataset(ds, tmp_path / "x", "extxyz")
    assert report["species"] == {"particle": "Cu", "solvent": "Zn"} and report["pixel_size"] == pytest.approx([1.2, 1.2])
    again = ase.io.read(tmp_path / "x" / "sample_00000.extxyz")
    np.testing.assert_allclose(again.positions[:, :2], atoms.positions[:, :2])  # z projected out
    assert again.get_chemical_symbols() == ["Cu", "Cu", "Zn"]


# ---------------------------------------------------------------------------
# geometry rules


def test_nearest_neighbour_rule_and_periodic_wrapping(tmp_path):
    # a lattice of spacing 1.5 in a periodic 15 x 12 cell, shifted by whole cells: wrapped back in
    rng = np.random.default_rng(1)
    sites = [(i, j) for i in range(8) for j in range(10) if rng.random() < 0.4] + [(0, 0), (0, 1)]
    sites = sorted(set(sites))
    pos = np.array([[(j + 0.5) * 1.5 + 15 * rng.integers(-2, 3), (i + 0.5) * 1.5 - 12 * rng.integers(-2, 3),
                     rng.normal()] for i, j in sites])
    ase.io.write(tmp_path / "lat.xyz", Atoms(["Ni"] * len(sites), positions=pos, cell=[15, 12, 5], pbc=True),
                 format="extxyz")
    ds, report = import_files([tmp_path / "lat.xyz"], offsets=False)
    assert report["pixel_size_rule"] == "nearest-neighbour median" and "offsets" not in ds.extras
    assert report["pixel_size"] == pytest.approx([1.5, 1.5]) and ds.shape == (8, 10) and ds.classes == ("empty", "Ni")
    expected = np.zeros((8, 10), np.uint8)
    expected[tuple(np.array(sites).T)] = 1
    np.testing.assert_array_equal(ds.grids[0], expected)
    src = ds.metadata["sources"][0]
    assert src["periodic"] == [True, True] and src["file"] == str(tmp_path / "lat.xyz") and src["frame"] == 0
    # the median is robust: an atom stacked in z on another and one close pair do not change the pixel
    extra = np.array([pos[0] + [0, 0, 3.0], pos[1] + [0.3, 0.2, 0]])
    ase.io.write(tmp_path / "lat2.xyz", Atoms(["Ni"] * (len(sites) + 2), positions=np.vstack([pos, extra]),
                                              cell=[15, 12, 5], pbc=True), format="extxyz")
    ds2, report2 = import_files([tmp_path / "lat2.xyz"], offsets=False)
    assert report2["pixel_size"] == pytest.approx([1.5, 1.5]) and report2["collisions"] == 2
    assert report2["atoms_lost"] == 2 and report2["atoms_placed"] == len(sites)
    np.testing.assert_array_equal(ds2.grids[0], expected)


def test_open_boundaries_span_the_atoms():
    atoms = Atoms("Au3", positions=[[1.0, 1.0, 0], [2.5, 1.0, 0], [1.0, 4.0, 0]])  # no cell
    from mapsim.exchange.atoms import atoms_to_grid, frame_geometry

    xy = atoms.positions[:, :2]
    geom = frame_geometry(atoms, xy, 1.5, "test")
    assert geom.shape == (3, 2) and geom.periodic == (False, False)
    grid, coll, _ = atoms_to_grid(xy, np.ones(3, np.int64), geom)
    np.testing.assert_array_equal(grid, [[1, 1], [0, 0], [1, 0]])
    assert coll == 0


def test_non_rectangular_cell_is_refused(tmp_path):
    ase.io.write(tmp_path / "hex.extxyz", Atoms("Au", positions=[[0, 0, 0]], cell=[[3, 0, 0], [1.5, 2.6, 0], [0, 0, 5]],
                                                pbc=True))
    with pytest.raises(MapsimError, match="not rectangular"):
        import_files([tmp_path / "hex.extxyz"], pixel_size=1.0)


def test_lammps_dump_frames_and_types(tmp_path):
    frame = ("ITEM: TIMESTEP\n{t}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n0 4\n0 3\n-1 1\n"
             "ITEM: ATOMS id type x y z\n{rows}")
    text = (frame.format(t=0, n=3, rows="1 1 0.5 0.5 0\n2 2 1.5 2.5 0\n3 1 4.2 1.5 0.3\n")
            + frame.format(t=10, n=1, rows="1 1 3.5 0.5 0\n"))
    (tmp_path / "dump.lammpstrj").write_text(text)
    ds, _ = import_files([tmp_path / "dump.lammpstrj"], fmt="lammps-dump-text", pixel_size=1.0,
                         species_map={"H": "particle", "He": "solvent"})
    np.testing.assert_array_equal(ds.grids[0], [[1, 0, 0, 0], [1, 0, 0, 0], [0, 2, 0, 0]])  # 4.2 wraps to 0.2
    np.testing.assert_array_equal(ds.grids[1], [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert [(s["file"], s["frame"]) for s in ds.metadata["sources"]] == [(str(tmp_path / "dump.lammpstrj"), 0),
                                                                        (str(tmp_path / "dump.lammpstrj"), 1)]
    last, _ = import_files([tmp_path / "dump.lammpstrj"], fmt="lammps-dump-text", frames="-1", pixel_size=1.0,
                           species_map={"H": "particle", "He": "solvent"})
    np.testing.assert_array_equal(last.grids, ds.grids[1:])


def test_many_files_one_dataset(tmp_path):
    cell = dict(cell=[3, 2, 5], pbc=True)
    ase.io.write(tmp_path / "a.extxyz", [Atoms("Cu", positions=[[0.5, 0.5, 0]], **cell),
                                        Atoms("O", positions=[[2.5, 1.5, 0]], **cell)])
    ase.io.write(tmp_path / "b.extxyz", Atoms("CuO", positions=[[1.5, 0.5, 0], [0.5, 1.5, 0]], **cell))
    ds, _ = import_files([tmp_path / "a.extxyz", tmp_path / "b.extxyz"], pixel_size=1.0)
    assert ds.classes == ("empty", "Cu", "O")  # one class per species over all files, sorted
    np.testing.assert_array_equal(ds.grids, [[[1, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 2]], [[0, 1, 0], [2, 0, 0]]])
    assert [(s["file"][-8:], s["frame"]) for s in ds.metadata["sources"]] == [("a.extxyz", 0), ("a.extxyz", 1),
                                                                             ("b.extxyz", 0)]
    from PIL import Image

    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(MapsimError, match="cannot mix images"):
        import_files([tmp_path / "a.extxyz", tmp_path / "c.png"])


# ---------------------------------------------------------------------------
# collisions


def _collide(tmp_path):
    atoms = Atoms("Au2AuAg", positions=[[0.2, 0.2, 0], [0.7, 0.7, 1], [1.5, 0.5, 0], [1.52, 0.52, 0]],
                  cell=[4, 4, 4], pbc=True)
    ase.io.write(tmp_path / "c.extxyz", atoms)
    return tmp_path / "c.extxyz"


def test_collisions_are_counted_and_reported(tmp_path, capsys):
    path = _collide(tmp_path)
    out = tmp_path / "c.npz"
    assert main(["import", str(path), "--pixel-size", "1", "--species-map", "Au=particle,Ag=solvent",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["collisions"] == 2 and report["conflicts"] == 1 and report["samples_with_collisions"] == 1
    ds = load_dataset(out)
    assert ds.metadata["collisions"] == 2 and ds.metadata["sources"][0]["collisions"] == 2
    assert ds.grids[0, 0, 0] == 1 and ds.grids[0, 0, 1] == 2  # Au+Ag on one pixel: highest class id wins
    assert main(["import", str(path), "--pixel-size", "1", "--species-map", "Au=particle,Ag=solvent",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 of 4 atoms placed" in text and "2 atom(s) LOST" in text and "--refine" in text


def test_refine_shrinks_the_pixel_until_no_collisions(tmp_path):
    atoms = Atoms("Au3", positions=[[0.2, 0.2, 0], [0.7, 0.7, 0], [2.5, 2.5, 0]], cell=[4, 4, 4], pbc=True)
    ase.io.write(tmp_path / "r.extxyz", atoms)
    ds, report = import_files([tmp_path / "r.extxyz"], pixel_size=1.0, refine=True)
    assert report["collisions"] == 0 and report["refine_steps"] > 0
    assert ds.metadata["pixel_size_requested"] == pytest.approx(0.9 ** report["refine_steps"])
    n = ds.shape[0]
    assert ds.shape == (n, n) and ds.metadata["pixel_size"] == pytest.approx([4 / n, 4 / n])  # stretched to tile the cell
    assert np.count_nonzero(ds.grids[0]) == 3
    # the pair 0.03 apart cannot be split before the limit (half the start): collisions stay reported
    _, report = import_files([_collide(tmp_path)], pixel_size=1.0, refine=True,
                             species_map={"Au": "particle", "Ag": "particle"})
    assert report["collisions"] == 1 and 0.5 <= report["pixel_size"][0] < 0.5 / 0.9


# ---------------------------------------------------------------------------
# images


def test_grey_png_by_threshold_and_binary(tmp_path):
    from PIL import Image

    grey = np.array([[0, 40, 200], [255, 130, 10]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    ds, _ = import_files([tmp_path / "g.png"], thresholds=[128])
    np.testing.assert_array_equal(ds.grids[0], [[0, 0, 1], [1, 1, 0]])
    ds, _ = import_files([tmp_path / "g.png"], thresholds=[100, 220], invert=True, class_names=["a", "b"])
    assert ds.classes == ("empty", "a", "b")
    np.testing.assert_array_equal(ds.grids[0], [[2, 2, 1], [0, 1, 2]])
    Image.fromarray(np.where(grey > 128, 255, 0).astype(np.uint8)).save(tmp_path / "b.png")
    ds, report = import_files([tmp_path / "b.png"], invert=True)
    assert report["class_rule"] == "binary" and ds.classes == ("empty", "particle")
    np.testing.assert_array_equal(ds.grids[0], [[1, 1, 0], [0, 0, 1]])
    with pytest.raises(MapsimError, match="g.png: 6 grey level"):
        import_files([tmp_path / "g.png"])


def test_tiff_stack_and_class_map(tmp_path):
    import tifffile

    stack = np.array([[[0, 1000], [65535, 0]], [[1000, 1000], [0, 65535]]], np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    ds, _ = import_files([tmp_path / "s.tif"], class_map={"0": "empty", "1000": "solvent", "65535": "particle"})
    assert ds.classes == ("empty", "solvent", "particle") and ds.n_samples == 2
    np.testing.assert_array_equal(ds.grids, [[[0, 1], [2, 0]], [[1, 1], [0, 2]]])
    assert [s["frame"] for s in ds.metadata["sources"]] == [0, 1]
    with pytest.raises(MapsimError, match=r"s.tif frame 0: grey level 1000 on 1 pixel"):
        import_files([tmp_path / "s.tif"], class_map={"0": "empty", "65535": "particle"})


def test_sizes_must_match_or_be_cropped(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 5), np.uint8) + np.uint8(255) * np.eye(4, 5, dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.eye(5, 6, dtype=np.uint8) * 255).save(tmp_path / "b.png")
    with pytest.raises(MapsimError, match=r"a.png frame 0 is 4x5 but .*b.png frame 0 is 5x6.*--crop"):
        import_files([tmp_path / "a.png", tmp_path / "b.png"])
    ds, _ = import_files([tmp_path / "a.png", tmp_path / "b.png"], crop=(4, 5))
    assert ds.grids.shape == (2, 4, 5) and ds.metadata["sources"][1]["cropped_from"] == [5, 6]


# ---------------------------------------------------------------------------
# bad input: one line naming the file, exit 2, nothing written


def _bad_files(tmp_path):
    (tmp_path / "words.xyz").write_text("hello world\nnot a structure\n")
    (tmp_path / "short.xyz").write_text("3\ncomment\nAu 0 0 0\n")
    (tmp_path / "noise.extxyz").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "text.tif").write_text("not an image")
    (tmp_path / "data.unknownext").write_text("1 2 3")
    return ["words.xyz", "short.xyz", "noise.extxyz", "text.png", "text.tif", "data.unknownext", "missing.xyz"]


def test_wrong_or_corrupt_files_give_one_line_naming_the_file(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    names = _bad_files(src)
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        rc = main(["import", str(src / name), "--out", str(out / "d.npz")])
        err = capsys.readouterr().err
        assert rc == 2, name
        assert err.startswith("mapsim: error:") and err.count("\n") == 1 and str(src / name) in err, err
        assert list(out.iterdir()) == []


@pytest.mark.parametrize("argv, fragment", [
    (["--species-map", "Au"], "expected KEY=VALUE"),
    (["--species-map", "Au=particle"], "species ['Ag'] not in the species map"),
    (["--threshold", "3"], "apply to images"),
    (["--cell", "4"], "--cell"),
    (["--pixel-size", "-1"], "--pixel-size"),
    (["--pixel-size", "1", "--crop", "9x9"], "--crop 9x9: "),
])
def test_bad_import_options(tmp_path, capsys, argv, fragment):
    path = _collide(tmp_path)
    rc = main(["import", str(path), *argv, "--out", str(tmp_path / "d.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "d.npz").exists()


def test_export_directory_is_all_or_nothing(tmp_path, monkeypatch, capsys):
    ds = _dataset()
    save_dataset(tmp_path / "d.npz", ds)
    import mapsim.exchange.images as images

    real = images.grid_to_png
    calls = []

    def failing(grid, classes, path, info=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(grid, classes, path, info)

    monkeypatch.setattr(images, "grid_to_png", failing)
    with pytest.raises(OSError):
        export_dataset(ds, tmp_path / "out", "png")
    assert _listing(tmp_path) == ["d.npz"]  # neither the directory nor a temporary one
    monkeypatch.setattr(images, "grid_to_png", real)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    rc = main(["export", str(tmp_path / "d.npz"), "--format", "png", "--out", str(tmp_path / "out")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "d.npz"), "--format", "png", "--out", str(tmp_path / "out"),
                 "--overwrite"]) == 0
    assert _listing(tmp_path / "out") == [f"sample_{k:05d}.png" for k in range(3)]
    assert _listing(tmp_path) == ["d.npz", "out"]


def test_export_bad_input(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["export", str(tmp_path / "bad.npz"), "--format", "xyz", "--out", str(tmp_path / "o")]) == 2
    assert "bad.npz" in capsys.readouterr().err
    save_dataset(tmp_path / "d.npz", _dataset())
    assert main(["export", str(tmp_path / "d.npz"), "--format", "xyz", "--out", str(tmp_path / "o"),
                 "--species-map", "particle=Xx"]) == 2
    assert "not a chemical symbol" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "d.npz"), "--format", "xyz", "--out", str(tmp_path / "o"),
                 "--species-map", "particle=O,solvent=O"]) == 2
    assert "share a species" in capsys.readouterr().err
    assert _listing(tmp_path) == ["bad.npz", "d.npz"]
