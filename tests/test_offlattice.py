"""Off-lattice data (issue 16): offsets in the format, import/export of positions, MC, atom statistics."""

import json
import math
import re

import numpy as np
import pytest

from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.lattice import (
    Dataset,
    atom_positions,
    grid_geometry,
    interior,
    largest_collision_free_pixel,
    load_dataset,
    periodic_axes,
    pixel_index,
    rasterize,
    save_dataset,
)
from mapsim.montecarlo.offlattice import (
    henderson_hard_disk_z,
    hard_disk_contact_pressure,
    offlattice_params,
    potential_energy,
    run_sample,
    simulate_offlattice,
    to_dataset,
)

# Reference energy per particle of lj-liquid (N = 256, rho = 0.75, T = 1.0, cut 2.5 sigma, shifted):
# 4 independent runs of 100 000 sweeps (seed 12345, samples 0-3), energy every 10 sweeps of the second
# half; runs -1.88849, -1.88737, -1.88571, -1.88689; mean -1.88711, standard error 0.00058.
LJ_REFERENCE_ENERGY = -1.88711
LJ_REFERENCE_SEM = 0.00058


def _lj(seed, n_samples=6, sweeps=400, atoms=256):
    return simulate_offlattice(offlattice_params("lj-liquid", {"atoms": atoms, "sweeps": sweeps}), n_samples, seed)


@pytest.fixture(scope="module")
def lj_sets():
    return _lj(1), _lj(2)


# ---------------------------------------------------------------------------------------------
# format


def _tiny(offsets=True, pixel=True):
    grids = np.zeros((1, 3, 4), np.uint8)
    grids[0, 1, 2] = 1
    grids[0, 0, 0] = 1
    off = np.full((1, 3, 4, 2), np.nan, np.float32)
    off[0, 1, 2] = (0.25, 0.75)
    off[0, 0, 0] = (0.0, 0.5)
    meta = {"pixel_size": [2.0, 1.0], "length_unit": "nm"} if pixel else {}
    return grids, off if offsets else None, meta


def test_offsets_give_positions_and_pixel_size_per_axis(tmp_path):
    grids, off, meta = _tiny()
    ds = Dataset(grids, ("empty", "particle"), meta, {"offsets": off})
    save_dataset(tmp_path / "d.npz", ds)
    back = load_dataset(tmp_path / "d.npz")
    xy, cls = atom_positions(back, 0)
    # (x, y) = ((j + off_x) a_x, (i + off_y) a_y), raster order
    np.testing.assert_allclose(xy, [[0.5, 0.0], [2.75, 2.5]])
    assert cls.tolist() == [1, 1]


@pytest.mark.parametrize("bad, message", [
    ("range", "outside [0, 1)"), ("nan_on_atom", "NaN on occupied"), ("number_on_empty", "number on empty"),
    ("no_pixel", "no metadata pixel_size"), ("shape", "shape"),
])
def test_bad_offsets_are_one_line_errors_naming_the_file(tmp_path, capsys, bad, message):
    grids, off, meta = _tiny()
    if bad == "range":
        off[0, 1, 2, 1] = 1.0
    elif bad == "nan_on_atom":
        off[0, 0, 0, 0] = np.nan
    elif bad == "number_on_empty":
        off[0, 2, 3] = 0.5
    elif bad == "no_pixel":
        meta = {}
    elif bad == "shape":
        off = off[..., :1]
    path = tmp_path / "bad.npz"
    np.savez(path, grids=grids, classes=np.array(["empty", "particle"]), metadata=np.array(json.dumps(meta)),
             offsets=off)
    with pytest.raises(MapsimError, match=re.escape(message)) as err:
        load_dataset(path)
    assert str(path) in str(err.value)
    assert main(["export", str(path), "--format", "extxyz", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]


def test_periodic_axes_reads_old_and_new_metadata():
    assert periodic_axes({"params": {"periodic": True}}) == (True, True)  # Monte Carlo lattice data
    assert periodic_axes({"periodic": False}) == (False, False)  # older files: one bool
    assert periodic_axes({"periodic": [True, False]}) == (True, False)
    assert periodic_axes({}) == (False, False)
    assert periodic_axes({"periodic": True}, override=False) == (False, False)
    with pytest.raises(MapsimError, match="periodic"):
        periodic_axes({"periodic": [True]})


def test_interior_defaults_from_the_models_context_range():
    inner = interior({"model": {"context_range": 3}}, (40, 30))
    assert (inner.skip_rows, inner.skip_cols) == (6, 3) and inner.rows == slice(6, 40) and inner.cols == slice(3, 27)
    assert inner.periodic == (False, False)
    whole = interior({"periodic": [True, True]}, (8, 8))
    assert whole.periodic == (True, True) and whole.rows == slice(0, 8)
    with pytest.raises(MapsimError, match="leaves nothing"):
        interior({"context_range": 5}, (8, 40))


# ---------------------------------------------------------------------------------------------
# rasterising and the collision-free pixel


def test_rasterize_counts_lost_atoms_and_keeps_the_highest_class():
    geom = grid_geometry(np.zeros((0, 2)), (4.0, 4.0), 1.0)
    xy = np.array([[0.2, 0.2], [0.7, 0.7], [1.5, 0.5], [1.52, 0.52]])
    r = rasterize(xy, np.array([1, 1, 1, 2]), geom)
    assert r.lost == 2 and r.conflicts == 1 and r.kept.tolist() == [0, 3]
    assert r.grid[0, 0] == 1 and r.grid[0, 1] == 2
    np.testing.assert_allclose(r.offsets[0, 1], [0.52, 0.52], atol=1e-6)
    assert np.isnan(r.offsets[1, 1]).all()


def test_largest_collision_free_pixel_is_free_and_a_step_larger_is_not(lj_sets):
    res = lj_sets[0]
    L = res.box
    frames = [(res.positions[k], (L, L)) for k in range(res.positions.shape[0])]
    a, rule = largest_collision_free_pixel(frames)
    assert "collision-free" in rule

    def lost(p):
        return sum(rasterize(xy, np.ones(len(xy), int), grid_geometry(xy, c, p)).lost for xy, c in frames)

    assert lost(a) == 0
    assert lost(a / (1 - 0.005)) > 0  # the scan stopped at the first free pixel
    d_min = 0.9  # LJ at T = 1 never comes much closer; the bound d_min / sqrt(2) is far below the result
    assert a > d_min / math.sqrt(2)


# ---------------------------------------------------------------------------------------------
# Monte Carlo checks


@pytest.mark.parametrize("eta", [0.3, 0.5])
def test_hard_disk_pressure_from_contact_value_matches_henderson(eta):
    # Z = 1 + (pi/2) rho g(1+) against Henderson (1975); a 20 000-sweep run of 400 disks gave
    # 2.066 (eta 0.3, Henderson 2.064) and 4.129 +- 0.016 (eta 0.5, Henderson 4.125)
    rho = 4 * eta / math.pi
    p = offlattice_params("hard-disks", {"density": rho, "atoms": 256, "sweeps": 6000})
    confs = []
    run_sample(p, 7, 0, observe=lambda pos, t: confs.append(pos.copy()), observe_every=10)
    z = hard_disk_contact_pressure(np.array(confs), p.box, rho)["Z"]
    assert z == pytest.approx(henderson_hard_disk_z(eta), rel=0.03)
    assert math.isfinite(potential_energy(confs[-1], np.zeros(256, int), p))  # no overlap


def test_lj_energy_per_particle_matches_the_long_reference_run():
    p = offlattice_params("lj-liquid", {"atoms": 256, "sweeps": 2400})
    es = []
    run_sample(p, 99, 0, observe=lambda pos, t: es.append(potential_energy(pos, t, p) / p.atoms), observe_every=10)
    # a 1200-sweep average fluctuates by about 0.006 (block analysis of the reference runs)
    assert np.mean(es) == pytest.approx(LJ_REFERENCE_ENERGY, abs=0.02)


def test_samples_depend_on_seed_and_index_only():
    p = offlattice_params("lj-mixture", {"atoms": 100, "sweeps": 20, "density": 0.9})
    a = simulate_offlattice(p, 2, 5)
    b = simulate_offlattice(p, 1, 5)
    np.testing.assert_array_equal(a.positions[0], b.positions[0])
    assert not np.array_equal(a.positions[0], a.positions[1])
    assert (a.types == 1).sum(axis=1).tolist() == [35, 35]


# ---------------------------------------------------------------------------------------------
# import -> export round trip and the off-lattice verdict


def test_structures_import_export_keeps_every_atom_and_position(tmp_path, lj_sets):
    pytest.importorskip("ase")
    import glob

    import ase.io

    from mapsim.analysis.atoms import AtomStatistics, samples_from_structures

    res = lj_sets[0]
    assert main(["simulate", "lj-liquid", "--atoms", "256", "--samples", "2", "--set", "sweeps=200",
                 "--structures", str(tmp_path / "md"), "--out", str(tmp_path / "mc.npz")]) == 0
    src = sorted(glob.glob(str(tmp_path / "md" / "*.extxyz")))
    assert main(["import", *src, "--out", str(tmp_path / "d.npz")]) == 0
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.metadata["length_unit"] == "sigma" and ds.metadata["atoms_lost"] == 0
    assert ds.metadata["periodic"] == [True, True]
    assert main(["export", str(tmp_path / "d.npz"), "--format", "extxyz", "--out", str(tmp_path / "x")]) == 0
    for k, f in enumerate(src):
        a = ase.io.read(f)
        b = ase.io.read(tmp_path / "x" / f"sample_{k:05d}.extxyz")
        assert len(a) == len(b)
        L = a.cell.lengths()[:2]
        pa, pb = a.positions[:, :2], b.positions[:, :2]
        # match atoms by nearest position (export goes in raster order), minimum image
        d = pa[:, None, :] - pb[None, :, :]
        d -= L * np.round(d / L)
        dist = np.sqrt((d ** 2).sum(-1)).min(1)
        assert dist.max() < 1e-4
    ref, _ = samples_from_structures(src)
    back, _ = samples_from_structures(sorted(glob.glob(str(tmp_path / "x" / "*.extxyz"))))
    st = AtomStatistics().fit(ref)
    s1, s2 = st.compute(ref), st.compute(back)
    for key in s1:
        np.testing.assert_allclose(s1[key].num, s2[key].num, rtol=1e-6, atol=1e-6, err_msg=key)
    assert res.positions.shape[1] == 256


def test_two_mc_sets_pass_and_the_lattice_round_trip_fails(tmp_path, lj_sets):
    pytest.importorskip("ase")
    from mapsim.analysis.atoms import AtomStatistics, atom_verdict, samples_from_dataset
    from mapsim.exchange import import_files, write_structures

    a, b = (to_dataset(r) for r in lj_sets)
    st = AtomStatistics().fit(samples_from_dataset(a))
    ra = st.compute(samples_from_dataset(a))
    v = atom_verdict(ra, st.compute(samples_from_dataset(b)), n_perm=499, seed=0)
    assert v.passed, v.rows
    # today's default: no offsets, nearest-neighbour-median pixel, atoms at pixel centres
    r = lj_sets[1]
    write_structures(tmp_path / "b", r.positions, r.types, (r.box, r.box), ["Ar"])
    lat, report = import_files(sorted((tmp_path / "b").glob("*.extxyz")), offsets=False)
    assert report["pixel_size_rule"] == "nearest-neighbour median" and report["atoms_lost"] > 0
    w = atom_verdict(ra, st.compute(samples_from_dataset(lat)), n_perm=499, seed=0)
    assert "psi6" in w.rejected and "g_r" in w.rejected
    assert w.rows["psi6"]["generated"] < w.rows["psi6"]["reference"] - 0.1  # the square lattice imprinted


def test_open_samples_use_only_atoms_far_from_open_edges(lj_sets):
    from mapsim.analysis.atoms import AtomStatistics, samples_from_dataset

    ds = to_dataset(lj_sets[0])
    periodic = samples_from_dataset(ds)
    ds.metadata["periodic"] = [False, False]
    ds.metadata["params"]["periodic"] = False
    opened = samples_from_dataset(ds)
    st = AtomStatistics(r_max=3.0).fit(periodic)
    gp, go = st.compute(periodic)["g_r"], st.compute(opened)["g_r"]
    # open: fewer query atoms, the same g(r) (no pair is missed or wrapped)
    assert go.den.sum() < 0.6 * gp.den.sum()
    with np.errstate(invalid="ignore"):
        g_open, g_per = go.num.sum(0) / go.den.sum(0), gp.num.sum(0) / gp.den.sum(0)
    far = slice(60, 100)  # r > 1.8 sigma, where g is near 1 and well sampled
    assert np.sqrt(np.mean((g_open[far] - g_per[far]) ** 2)) < 0.08


def test_mixture_has_partial_g_and_cli_refuses_mixed_units(tmp_path, capsys):
    pytest.importorskip("ase")
    from mapsim.analysis.atoms import AtomStatistics, samples_from_dataset

    p = offlattice_params("lj-mixture", {"atoms": 150, "sweeps": 100})
    ds = to_dataset(simulate_offlattice(p, 2, 0))
    st = AtomStatistics(r_max=2.5).fit(samples_from_dataset(ds))
    keys = set(st.compute(samples_from_dataset(ds)))
    assert {"g_r:1-1", "g_r:1-2", "g_r:2-1", "g_r:2-2"} <= keys
    save_dataset(tmp_path / "a.npz", ds)
    ds.metadata["length_unit"] = "nm"
    save_dataset(tmp_path / "b.npz", ds)
    assert main(["compare-atoms", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "length unit" in err[0] and "b.npz" in err[0]
    assert not (tmp_path / "r").exists()


def test_simulate_offlattice_bad_parameters_exit_2(tmp_path, capsys):
    assert main(["simulate", "lj-liquid", "--set", "density=-1", "--out", str(tmp_path / "a.npz")]) == 2
    assert main(["simulate", "hard-disks", "--set", "density=0.95", "--out", str(tmp_path / "a.npz")]) == 2
    assert main(["simulate", "lattice-gas", "--atoms", "10", "--out", str(tmp_path / "a.npz")]) == 2
    assert not list(tmp_path.iterdir())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "density" in err[0] and "packing fraction" in err[1]


def test_pixel_index_wraps_periodic_and_clips_open_axes():
    geom = grid_geometry(np.array([[0.0, 0.0], [2.9, 1.0]]), (None, 3.0), 1.0)
    rows, cols, off = pixel_index(np.array([[2.9, 3.2], [-0.4, -0.1]]), geom)
    # open x: 4 columns from -0.5 (first centred on the lowest atom); periodic y: 3 rows wrapping
    assert rows.tolist() == [0, 2] and cols.tolist() == [3, 0] and geom.shape == (3, 4)
    assert np.all((off >= 0) & (off < 1))


def test_export_interior_keeps_positions_and_provenance(tmp_path, lj_sets):
    pytest.importorskip("ase")
    import ase.io

    from mapsim.lattice import data_provenance

    src = to_dataset(lj_sets[0])
    # a stand-in for generated data: the training data's provenance, a model with L_c = 2, open edges
    meta = {"context_range": 2, **data_provenance(src.metadata, src.classes)}
    gen = Dataset(src.grids[:2], src.classes, meta, {"offsets": src.offsets[:2]})
    assert gen.metadata["periodic"] == [False, False] and gen.metadata["length_unit"] == "sigma"
    report = _export_interior(tmp_path, gen)
    assert report["interior"] == {"skip_rows": 4, "skip_cols": 2, "shape": [gen.shape[0] - 4, gen.shape[1] - 4]}
    atoms = ase.io.read(tmp_path / "x" / "sample_00000.extxyz")
    assert not atoms.pbc[:2].any() and atoms.info["mapsim_length_unit"] == "sigma"
    xy, _ = atom_positions(gen, 0)
    a = gen.metadata["pixel_size"]
    inside = (xy[:, 1] >= 4 * a[0]) & (xy[:, 0] >= 2 * a[1]) & (xy[:, 0] < (gen.shape[1] - 2) * a[1])
    np.testing.assert_allclose(np.sort(atoms.positions[:, 0]), np.sort(xy[inside, 0]), atol=1e-6)
    np.testing.assert_allclose(np.sort(atoms.positions[:, 1]), np.sort(xy[inside, 1]), atol=1e-6)


def _export_interior(tmp_path, ds):
    from mapsim.exchange import export_dataset

    return export_dataset(ds, tmp_path / "x", "extxyz", interior_only=True)


def test_mapsim_compare_takes_md_files_as_the_reference(tmp_path, capsys, lj_sets):
    pytest.importorskip("ase")
    from mapsim.exchange import write_structures

    r = lj_sets[0]
    write_structures(tmp_path / "md", r.positions, r.types, (r.box, r.box), ["Ar"], length_unit="sigma")
    save_dataset(tmp_path / "gen.npz", to_dataset(lj_sets[1]))
    files = sorted(str(p) for p in (tmp_path / "md").glob("*.extxyz"))
    assert main(["compare", *files, str(tmp_path / "gen.npz"), "--species-map", "Ar=particle",
                 "--permutations", "199", "--out", str(tmp_path / "rep"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and result["settings"]["length_unit"] == "sigma"
    assert set(result["statistics"]) >= {"g_r", "coordination", "psi6", "psi4", "close_pairs", "density"}
    assert (tmp_path / "rep" / "compare_atoms.json").exists() and (tmp_path / "rep" / "g_r.png").exists()


def test_split_windows_cuts_large_samples_into_reference_sized_open_windows():
    from mapsim.analysis.atoms import AtomSample, split_windows

    xy = np.array([[1.0, 1.0], [5.0, 1.0], [9.5, 9.5], [3.9, 7.9], [2.0, 3.0]])
    s = AtomSample(xy, np.ones(5, int), np.zeros(2), np.array([10.0, 10.0]), (True, True), "big")
    w = split_windows([s], (4.0, 4.0))
    assert len(w) == 4 and all(x.periodic == (False, False) for x in w)
    # windows (a, b) = x-th and y-th: (0, 0) holds (1, 1) and (2, 3); the atom at x = 9.5 is in the remainder
    assert [len(x.xy) for x in w] == [2, 1, 1, 0]
    assert [len(x.xy) for x in split_windows([s], (6.0, 6.0))] == [5]  # not twice as large: kept whole


def test_energy_trace_through_the_cell_list_equals_brute_force_and_is_judged():
    p = offlattice_params("lj-mixture", {"atoms": 120, "sweeps": 60, "density": 1.0})
    r = simulate_offlattice(p, 3, 4)
    assert r.energy_trace.shape == (3, 61) and r.trace_sweeps[0] == 0 and r.trace_sweeps[-1] == 60
    # the last trace point (cell list) is the final energy (brute force over all pairs)
    np.testing.assert_allclose(r.energy_trace[:, -1], r.energy, rtol=1e-12)
    v = r.equilibration()
    assert v is not None and v.n_chains == 3
    ds = to_dataset(r)
    assert ds.extras["energy_trace"].shape == (3, 61) and ds.metadata["trace_sweeps"][-1] == 60


def test_frames_from_different_cells_keep_their_own_geometry(tmp_path):
    pytest.importorskip("ase")
    import ase.io
    from ase import Atoms

    from mapsim.exchange import export_dataset, import_files

    rng = np.random.default_rng(3)
    frames = []
    for L in (10.0, 10.1):  # an NPT-like pair: the same 40 x 40 grid, slightly different pixels
        site = np.stack(np.meshgrid(np.arange(6), np.arange(5)), -1).reshape(-1, 2) * (L / 6, L / 5)
        pos = np.c_[site + rng.uniform(0, 0.3 * L / 6, site.shape), np.zeros(30)]  # far apart: none lost
        frames.append(Atoms(["Cu"] * 30, positions=pos, cell=[L, L, 5.0], pbc=[True, True, False]))
    ase.io.write(tmp_path / "npt.extxyz", frames)
    ds, report = import_files([tmp_path / "npt.extxyz"], pixel_size=0.25, length_unit="Å")
    assert ds.shape == (40, 40) and report["atoms_lost"] == 0 and ds.metadata["sources"][1]["pixel_size"][0] == pytest.approx(10.1 / 40)
    export_dataset(ds, tmp_path / "x", "extxyz")
    for k, a in enumerate(frames):
        b = ase.io.read(tmp_path / "x" / f"sample_{k:05d}.extxyz")
        np.testing.assert_allclose(np.sort(b.positions[:, 0]), np.sort(a.positions[:, 0]), atol=1e-5)
        np.testing.assert_allclose(b.cell.lengths()[:2], a.cell.lengths()[:2], rtol=1e-12)


def test_lattice_compare_notes_a_majority_class(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        grids = (rng.random((12, 12, 12)) < 0.7).astype(np.uint8)
        save_dataset(tmp_path / f"{name}.npz", Dataset(grids, ("empty", "particle"), {"periodic": True}))
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--permutations", "100",
                 "--out", str(tmp_path / "r"), "--json"]) == 0
    note = json.loads(capsys.readouterr().out)["note"]
    assert re.search(r"fills (69|70|71) %", note) and "--class empty" in note


def test_lattice_compare_refuses_different_length_units(tmp_path, capsys):
    grids = (np.random.default_rng(1).random((6, 10, 10)) < 0.3).astype(np.uint8)
    save_dataset(tmp_path / "a.npz", Dataset(grids, ("empty", "particle"), {"length_unit": "Å", "pixel_size": 2.9}))
    save_dataset(tmp_path / "b.npz", Dataset(grids, ("empty", "particle"), {"length_unit": "nm", "pixel_size": 0.29}))
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.npz" in err[0] and "length unit 'nm'" in err[0]
    assert not (tmp_path / "r").exists()


def test_pixel_centres_version_of_data_with_positions_is_rejected(lj_sets):
    from mapsim.analysis.atoms import AtomStatistics, atom_verdict, pooled_values, samples_from_dataset

    a, b = (to_dataset(r) for r in lj_sets)
    st = AtomStatistics().fit(samples_from_dataset(a))
    ra = st.compute(samples_from_dataset(a))
    rc = st.compute(samples_from_dataset(b, centres=True))
    # every particle kept (collision-free pixel, 0.74 sigma) but moved to its pixel centre: neighbours one pixel
    # apart come far closer than the liquid ever does
    assert pooled_values(rc)["close_pairs"] > 10 * pooled_values(ra)["close_pairs"] > 0.0
    v = atom_verdict(ra, rc, n_perm=199, seed=1)
    assert "g_r" in v.rejected and "close_pairs" in v.rejected


# ---------------------------------------------------------------------------------------------
# lattice statistics with one periodic and one open axis (imported slabs)


def _brute_neighbours(grid, py, px, k):
    """Neighbour histogram by direct loops, each axis with its own rule (open: border particles skipped)."""
    h, w = grid.shape
    offs = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if k == 8 else [])
    hist = np.zeros(k + 1, int)
    for i in range(h):
        for j in range(w):
            if not grid[i, j] or (not py and i in (0, h - 1)) or (not px and j in (0, w - 1)):
                continue
            c = sum(grid[(i + dy) % h, (j + dx) % w] for dy, dx in offs)
            hist[c] += 1
    return hist


@pytest.mark.parametrize("per", [(True, False), (False, True), (True, True), (False, False)])
def test_neighbour_counts_and_clusters_follow_each_axis(per):
    from mapsim.analysis.structure import ClusterSizes, NeighbourCounts

    grid = (np.random.default_rng(5).random((7, 9)) < 0.45).astype(bool)
    nc = NeighbourCounts(per).compute(grid[None])
    for k, counts in ((4, nc.counts4), (8, nc.counts8)):
        np.testing.assert_array_equal(counts[0], _brute_neighbours(grid, *per, k))
    # a bar across the top/bottom edge and one across the left/right edge
    g = np.zeros((6, 6), bool)
    g[0, 2] = g[5, 2] = True  # touch across rows (axis 0)
    g[3, 0] = g[3, 5] = True  # touch across columns (axis 1)
    sizes = sorted(ClusterSizes(4, per).compute(g[None]).sizes.tolist())
    expect = sorted(([2] if per[0] else [1, 1]) + ([2] if per[1] else [1, 1]))
    assert sizes == expect


def test_pair_correlation_with_a_mixed_boundary_is_one_for_random_occupation():
    from mapsim.analysis.structure import PairCorrelation, max_r_allowed

    occ = np.random.default_rng(2).random((300, 12, 20)) < 0.3
    assert max_r_allowed((12, 20), (True, False)) == 6  # rows: 12 // 2; columns: 19
    pc = PairCorrelation(5, (False, True)).compute(occ)
    assert np.all(np.abs(pc.g - 1) < 0.03)


def test_analyze_reads_a_mixed_boundary_from_imported_metadata():
    from mapsim.analysis.blockwise import analyze

    grids = (np.random.default_rng(3).random((4, 10, 12)) < 0.3).astype(np.uint8)
    ds = Dataset(grids, ("empty", "particle"), {"periodic": [False, True]})
    assert analyze(ds)["periodic"] == (False, True)


def test_open_structure_round_trips_through_extxyz_with_its_origin(tmp_path):
    pytest.importorskip("ase")
    import ase.io
    from ase import Atoms

    from mapsim.exchange import export_dataset, import_files

    rng = np.random.default_rng(11)
    site = np.stack(np.meshgrid(np.arange(8), np.arange(6)), -1).reshape(-1, 2) * 1.7
    pos = np.c_[site + rng.uniform(-0.3, 0.3, site.shape) + (-4.2, 13.0), rng.normal(0, 1, len(site))]
    ase.io.write(tmp_path / "open.xyz", Atoms(["Ni"] * len(pos), positions=pos), format="extxyz")  # no cell
    ds, report = import_files([tmp_path / "open.xyz"], length_unit="nm")
    assert ds.metadata["periodic"] == [False, False] and report["atoms_lost"] == 0
    export_dataset(ds, tmp_path / "x", "extxyz")
    again, _ = import_files([tmp_path / "x" / "sample_00000.extxyz"])
    assert again.metadata["pixel_size_rule"] == "file" and again.metadata["length_unit"] == "nm"
    np.testing.assert_array_equal(again.grids, ds.grids)
    np.testing.assert_allclose(again.offsets, ds.offsets, atol=2e-6, equal_nan=True)
    out = ase.io.read(tmp_path / "x" / "sample_00000.extxyz")
    xy = out.positions[:, :2]
    d = np.sqrt(((pos[:, None, :2] - xy[None]) ** 2).sum(-1)).min(1)
    assert d.max() < 1e-4 and np.all(out.positions[:, 2] == 0)  # z projected out
