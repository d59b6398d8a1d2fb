"""The 3-D verdict (compare_volumes, mapsim compare on volumes): windows, interior, calibration, power."""

import json

import numpy as np
import pytest

from mapsim.analysis.compare3d import compare_volumes, tile_windows_3d, volume_interior
from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, save_dataset
from mapsim.montecarlo import preset_params, simulate

CLASSES = ("empty", "particle")


def _gas(n, shape, rho, seed, **meta):
    g = (np.random.default_rng(seed).random((n, *shape)) < rho).astype(np.uint8)
    return Dataset(g, CLASSES, dict(meta))


def test_windows_tile_the_volume():
    g = np.arange(2 * 4 * 6 * 6).reshape(2, 4, 6, 6)
    w = tile_windows_3d(g, (2, 3, 3))
    assert w.shape == (2, 8, 2, 3, 3)
    np.testing.assert_array_equal(w[1, 0], g[1, :2, :3, :3])
    np.testing.assert_array_equal(w[0, 7], g[0, 2:, 3:, 3:])
    assert sorted(w[0].ravel().tolist()) == sorted(g[0].ravel().tolist())  # each voxel once


def test_interior_defaults_from_the_model_context_range():
    gen = _gas(2, (10, 9, 9), 0.1, 0, context_range=2)
    assert volume_interior(gen) == (4, 2, 2)
    assert volume_interior(_gas(2, (10, 9, 9), 0.1, 0)) == (0, 0, 0)
    with pytest.raises(MapsimError, match="leaves nothing"):
        volume_interior(gen, skip_rows=5)


def test_same_distribution_is_rejected_at_the_nominal_rate():
    # ideal-gas volumes (independent sites, so any seed is a fresh pair): family rejections at alpha 0.05
    alpha, n_pairs = 0.05, 200
    rejected = 0
    for s in range(n_pairs):
        ref, gen = _gas(8, (6, 6, 6), 0.2, 2 * s), _gas(8, (6, 6, 6), 0.2, 2 * s + 1)
        rejected += compare_volumes(ref, gen, n_permutations=200, seed=s, alpha=alpha).summary["family_reject"]
    rate = rejected / n_pairs
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / n_pairs), rate
    assert rejected > 0  # not a test that never rejects


@pytest.fixture(scope="module")
def ising():
    # 3-D Ising through the lattice gas (e_nn = -4: J = 1), field-free at mu_n = -3 e_nn = 12, above T_c = 4.51
    def run(T, seed):
        p = preset_params("lattice-gas", {"e_nn": -4, "T": T, "sweeps": 150, "ensemble": "grand", "mu_n": 12})
        return simulate(p, 10, 8, seed=seed, workers=1, depth=8)
    return run(6.0, 1), run(6.0, 2), run(4.8, 3)


def test_monte_carlo_volumes_pass_and_differences_are_found(ising):
    a, b, cold = ising
    same = compare_volumes(a, b, n_permutations=400, seed=0).summary
    assert not same["family_reject"], same["rejected"]
    assert same["windows_periodic"] and "energy" in same["statistics"]
    assert compare_volumes(a, cold, n_permutations=400, seed=0).summary["family_reject"]  # T 4.8 against 6
    ig = _gas(10, (8, 8, 8), a.grids.mean(), 5, periodic=True)
    diff = compare_volumes(a, ig, n_permutations=400, seed=0).summary
    assert {"g_r", "neighbours6", "S_k"} <= set(diff["rejected"]), diff["rejected"]


def test_generated_volumes_are_cut_to_their_interior_and_fixed_n_density_is_one_sample():
    ref = Dataset(np.zeros((6, 6, 6, 6), np.uint8), CLASSES, {"periodic": True})
    rng = np.random.default_rng(0)
    for k in range(6):  # canonical: every sample holds 43 particles
        ref.grids[k].reshape(-1)[rng.permutation(216)[:43]] = 1
    gen = _gas(4, (14, 10, 10), 0.2, 1, context_range=1)
    s = compare_volumes(ref, gen, n_permutations=200, seed=0).summary
    assert (s["skip_planes"], s["skip_rows"], s["skip_cols"]) == (2, 1, 1)
    assert s["window_shape"] == [6, 6, 6] and s["windows_per_sample"] == 1 and not s["windows_periodic"]
    assert s["reference_fixed_count"] and "one-sample" in s["density_test"]


def test_cli_compare_on_volumes(tmp_path, capsys, ising):
    a, b, _ = ising
    ra, rb, flat = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "flat.npz"
    save_dataset(ra, a)
    save_dataset(rb, b)
    save_dataset(flat, Dataset(a.grids[:, 0], CLASSES))
    assert main(["compare", str(ra), str(rb), "--out", str(tmp_path / "rep"), "--permutations", "200", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    api = compare_volumes(a, b, n_permutations=200, seed=0).summary  # the command is the Python verdict
    assert info["ndim"] == 3 and info["rejected"] == api["rejected"]
    assert info["neighbours26_p_adjusted"] == api["neighbours26_p_adjusted"]
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"compare.json", "summary.md", "g_r.png",
                                                             "neighbours.png", "distributions.png", "slices.png"}
    for argv, fragment in ((["compare", str(flat), str(ra)], "cannot be mixed"),
                           (["compare", str(ra), str(rb), "--band-rows", "2"], "--band-rows"),
                           (["compare", str(flat), str(flat), "--skip-planes", "1"], "--skip-planes")):
        assert main(argv + ["--out", str(tmp_path / "no")]) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err, err
    assert not (tmp_path / "no").exists()
