"""The fidelity verdict: permutation p-values, max-T adjustment, fixed-N references, drift, bad input.

Data are synthetic with known answers: an ideal lattice gas (independent
Bernoulli sites) is stationary, has no drift and no dependence between
samples, so any two sets of it are one distribution; 2x2 blocks at the same
density differ from it in every correlation statistic.
"""

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from mapsim.analysis.compare import RESULT_KEYS, STATS, compare_datasets, model_context_range, tile_windows
from mapsim.analysis.permutation import Statistic, maxt_stepdown, rank_scale, relabellings
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset

CLASSES = ("empty", "particle")


def ideal_gas(rng, n, h, w, rho):
    return (rng.random((n, h, w)) < rho).astype(np.uint8)


def canonical_gas(rng, n, h, w, count):
    """Exactly ``count`` particles per sample at uniformly random sites (a fixed-N reference)."""
    g = np.zeros((n, h * w), np.uint8)
    for s in range(n):
        g[s, rng.choice(h * w, count, replace=False)] = 1
    return g.reshape(n, h, w)


def blocks(rng, n, h, w, p=0.03):
    """Periodic 2x2 blocks at Bernoulli(p) corners (overlaps merge): density 1-(1-p)^4."""
    s = rng.random((n, h, w)) < p
    occ = s | np.roll(s, 1, axis=1) | np.roll(s, 1, axis=2) | np.roll(s, (1, 1), axis=(1, 2))
    return occ.astype(np.uint8)


def ds(grids, periodic=True, **meta):
    return Dataset(grids, CLASSES, {"params": {"periodic": periodic}, **meta})


def test_dataset_against_itself_is_not_rejected():
    rng = np.random.default_rng(0)
    ref = ds(blocks(rng, 20, 24, 24))
    s = compare_datasets(ref, ref, n_permutations=200).summary
    assert s["family_reject"] is False and s["rejected"] == []
    for st in s["statistics"]:
        assert s[f"{st}_distance"] == 0.0 and s[f"{st}_p"] == 1.0 and s[f"{st}_p_adjusted"] == 1.0
        assert s[f"{st}_noise"] > 0 and s[f"{st}_effect"] == s[f"{st}_ratio"] == 0.0
    for key in ("alpha", "permutations", "rejected", "family_reject"):
        assert key in s
    assert "g_r_noise_resolution" not in s  # the one-count resolution term is gone


def _null_run(n_comparisons, seed):
    """p-values of same-distribution comparisons: periodic 12 x 16^2 against taller open 12 x 32x16."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_comparisons):
        ref = ds(ideal_gas(rng, 12, 16, 16, 0.15))
        gen = ds(ideal_gas(rng, 12, 32, 16, 0.15), periodic=False, context_range=1)
        rows.append(compare_datasets(ref, gen, seed=t, n_permutations=200).summary)
    return rows


def test_p_values_are_calibrated_under_the_null():
    """P(p ≤ α) ≤ α + 3 SE for every statistic and for the family, at α = 0.01, 0.05, 0.1.

    Permutation p-values are discrete (multiples of 1/201 here), so this counts
    rejections instead of testing uniformity.  The comparisons include windows
    cropped from taller generated samples, and the drift trend tests.
    """
    n = 400
    rows = _null_run(n, seed=11)
    stats = rows[0]["statistics"]
    assert "trend_density" in stats and "g_r" in stats and rows[0]["window_shape"] == [16, 14]
    for alpha in (0.01, 0.05, 0.1):
        bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)
        for st in stats:
            rate = np.mean([r[f"{st}_p"] <= alpha for r in rows])
            assert rate <= bound, (st, alpha, rate)
        family = np.mean([min(r[f"{st}_p_adjusted"] for st in stats) <= alpha for r in rows])
        assert family <= bound, (alpha, family)
    # and not calibrated by being useless: the continuous statistics reject near their level
    raw = np.mean([[r[f"{st}_p"] <= 0.1 for st in ("g_r", "S_k")] for r in rows])
    assert raw > 0.05, raw


def test_shifted_distributions_are_rejected():
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        ref = ds(blocks(rng, 30, 24, 24))  # density ~ 0.115 in 2x2 blocks
        gas = ds(ideal_gas(rng, 30, 24, 24, 0.115))
        s = compare_datasets(ref, gas, seed=seed, n_permutations=200).summary
        assert s["family_reject"]
        assert {"g_r", "neighbours4", "neighbours8", "clusters4", "clusters8", "S_k"} <= set(s["rejected"]), s
        thin = ds(ideal_gas(rng, 30, 24, 24, 0.10))
        dense = ds(ideal_gas(rng, 30, 24, 24, 0.13))
        s = compare_datasets(thin, dense, seed=seed, n_permutations=200).summary
        assert "density" in s["rejected"] and s["density_p"] <= 1 / 201 + 1e-12


def test_max_t_step_down_on_a_hand_worked_example():
    t_obs = np.array([3.0, 1.0, 2.0])
    t_null = np.array([[1.0, 0.5, 2.5],  # max over all 2.5; over {0, 1}: 1.0; {1}: 0.5
                       [0.2, 1.5, 0.1],
                       [3.5, 0.0, 0.0]])
    p_raw, p_adj = maxt_stepdown(t_obs, t_null)
    assert p_raw.tolist() == pytest.approx([2 / 4, 2 / 4, 2 / 4])
    # rank 1 (stat 0, T=3): max over all per draw = 2.5, 1.5, 3.5 -> one ≥ 3 -> 2/4
    # rank 2 (stat 2, T=2): max over {2, 1} = 2.5, 1.5, 0.0 -> one ≥ 2 -> 2/4
    # rank 3 (stat 1, T=1): {1} = 0.5, 1.5, 0.0 -> one ≥ 1 -> 2/4; monotone
    assert p_adj.tolist() == pytest.approx([2 / 4, 2 / 4, 2 / 4])
    # one statistic alone: adjusted = raw
    p_raw, p_adj = maxt_stepdown(np.array([1.0]), np.array([[0.5], [2.0], [1.0], [0.1]]))
    assert p_raw[0] == p_adj[0] == pytest.approx(3 / 5)
    # perfectly dependent copies need no correction (Holm would multiply by 3)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(999, 1))
    _, p_adj = maxt_stepdown(np.full(3, 2.0), np.repeat(np.abs(z), 3, axis=1))
    p1, _ = maxt_stepdown(np.array([2.0]), np.abs(z))
    assert p_adj == pytest.approx(np.full(3, p1[0]))


def test_rank_scale_balances_statistics_with_different_null_shapes():
    """A light-tailed statistic keeps its power beside a heavy-tailed one on the p-value scale."""
    rng = np.random.default_rng(4)
    B = 1999
    light = 1 + 0.05 * np.abs(rng.normal(size=B))  # like g(r): RMS over many bins, concentrated
    heavy = np.abs(rng.standard_cauchy(size=B))
    t_null = np.column_stack([light, heavy])
    t_obs = np.array([np.quantile(light, 0.998), 0.1])
    p_raw, p_adj = maxt_stepdown(*rank_scale(t_obs, t_null))
    assert p_raw == pytest.approx(maxt_stepdown(t_obs, t_null)[0])  # raw p-values unchanged
    assert p_raw[0] < 0.005 and p_adj[0] <= 2 * p_raw[0] + 1e-12  # at most a Bonferroni factor of 2
    assert maxt_stepdown(t_obs, t_null)[1][0] > 0.2  # on the raw scale the heavy tail would swamp it


def test_relabellings_keep_group_sizes_and_are_seeded():
    a = relabellings(5, 3, 50, 1)
    assert a.shape == (50, 8) and set(a.sum(axis=1)) == {3.0}
    assert np.array_equal(a, relabellings(5, 3, 50, 1)) and not np.array_equal(a, relabellings(5, 3, 50, 2))


def test_distances_on_known_inputs():
    rng = np.random.default_rng(9)
    u, v = rng.integers(1, 30, 500), rng.integers(1, 12, 77)
    support = np.unique(np.concatenate([u, v]))
    hu = np.array([(u == x).sum() for x in support], float) / u.size
    hv = np.array([(v == x).sum() for x in support], float) / v.size
    w1 = Statistic("c", "w1", np.zeros((1, support.size)), np.ones((1, 1)), support.astype(float))
    assert w1.distance(hu, hv) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    tv = Statistic("n", "tv", np.zeros((1, 3)), np.ones((1, 1)))
    assert tv.distance(np.array([1.0, 0, 0]), np.array([0.5, 0.5, 0])) == pytest.approx(0.5)
    rms = Statistic("g", "rms", np.zeros((1, 3)), np.ones((1, 3)))
    assert rms.distance(np.array([1.0, 2.0, np.nan]), np.array([1.0, 4.0, 3.0])) == pytest.approx(math.sqrt(2))
    # relabelling: group sums by matrix product equal direct pooling
    num, den = rng.random((6, 4)), rng.random((6, 4)) + 0.5
    st = Statistic("x", "rms", num, den)
    lab = np.array([[0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0.0]])
    direct = [float(st.distance(st.pooled(np.flatnonzero(1 - l)), st.pooled(np.flatnonzero(l)))) for l in lab]
    assert st.two_sample(lab) == pytest.approx(direct)


def test_fixed_number_reference():
    """Canonical reference (every sample holds N particles): density judged by the generated spread.

    Half the comparisons skip 2 generated rows, so the reference windows are 14 x 16 crops whose
    densities do vary, though far less than a grand-canonical window's; the density is still tested
    on its mean (two-sample, Welch-studentised), so a grand-canonical set of the right mean density
    passes at the nominal rate, and so does a canonical one (whose crops are as noisy as the reference's).
    """
    n_cmp, alpha = 120, 0.05
    rng = np.random.default_rng(21)
    rejected = 0
    for t in range(n_cmp):
        ref = ds(canonical_gas(rng, 12, 16, 16, 38))
        gen = ds(ideal_gas(rng, 12, 16, 16, 38 / 256))  # grand canonical at the same mean density
        s = compare_datasets(ref, gen, seed=t, n_permutations=200, skip_rows=2 * (t % 2)).summary
        # whole windows: the reference value is exact (one-sample); crops: the means are compared two-sample
        kind = "two-sample permutation of the mean" if t % 2 else "one-sample"
        assert s["reference_fixed_count"] and s["density_test"].startswith(kind)
        assert s["window_shape"] == [16 - 2 * (t % 2), 16]
        assert math.isfinite(s["density_noise"]) and s["density_noise"] > 0
        rejected += s["density_p"] <= alpha
    assert rejected / n_cmp <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_cmp)
    # both sides canonical, windows cropped (the reference mean is then noisy too): still calibrated
    rejected = 0
    for t in range(n_cmp):
        ref = ds(canonical_gas(rng, 12, 16, 16, 38))
        gen = ds(canonical_gas(rng, 12, 16, 16, 38))
        s = compare_datasets(ref, gen, seed=t, n_permutations=200, skip_rows=2).summary
        assert s["density_test"].startswith("two-sample permutation of the mean")
        rejected += s["density_p"] <= alpha
    assert rejected / n_cmp <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_cmp), rejected
    # 10 % more particles on average: rejected
    ref = ds(canonical_gas(rng, 20, 16, 16, 38))
    gen = ds(ideal_gas(rng, 20, 16, 16, 1.1 * 38 / 256))
    s = compare_datasets(ref, gen, n_permutations=200).summary
    assert "density" in s["rejected"]
    # the same fixed N on both sides: distance 0, nothing divided by zero
    s = compare_datasets(ref, ds(canonical_gas(rng, 20, 16, 16, 38)), n_permutations=200).summary
    assert s["density_distance"] == 0 and s["density_p"] == 1.0 and s["density_ratio"] == 0.0


def test_no_particles_or_one_particle_generated_is_rejected():
    rng = np.random.default_rng(3)
    ref = ds(ideal_gas(rng, 10, 16, 16, 0.1))
    one = np.zeros((10, 16, 16), np.uint8)
    one[4, 7, 9] = 1
    for grids in (one, np.zeros_like(one)):
        s = compare_datasets(ref, ds(grids), n_permutations=200).summary
        assert s["family_reject"] and "g_r" in s["rejected"]
        assert s["g_r_p"] is None and s["g_r_verdict"].startswith("rejected")


def test_drift_from_the_top_boundary_is_found():
    """Generated samples whose density relaxes from 0.3 at the top to 0.1 fail the trend test."""
    rng = np.random.default_rng(5)
    ref = ds(ideal_gas(rng, 20, 16, 16, 0.1))
    rows = np.arange(64)
    rho = 0.1 + 0.2 * np.exp(-rows / 16)[None, :, None]
    gen = ds((rng.random((20, 64, 16)) < rho).astype(np.uint8), periodic=False, context_range=2)
    c = compare_datasets(ref, gen, n_permutations=200)
    s = c.summary
    assert s["skip_rows"] == 4 and s["skip_cols"] == 2 and "trend_density" in s["rejected"]
    d = c.drift
    assert d["band_rows"] == 2 and len(d["band_centre"]) == 32
    assert d["generated"]["density"][0] > 0.2 and abs(d["reference"]["density"] - 0.1) < 0.02


def test_windows_units_and_seeds():
    g = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    w = tile_windows(g, (2, 3))
    assert w.shape == (2, 4, 2, 3)
    assert np.array_equal(w[0, 1], g[0, 0:2, 3:6]) and np.array_equal(w[1, 2], g[1, 2:4, 0:3])
    assert model_context_range({"model": {"context_range": 4}}) == 4 and model_context_range({}) is None
    rng = np.random.default_rng(6)
    ref = ds(ideal_gas(rng, 8, 16, 16, 0.2))
    gen = ds(ideal_gas(rng, 5, 40, 40, 0.2), periodic=False)
    s = compare_datasets(ref, gen, skip_rows=6, skip_cols=2, n_permutations=100, seed=4).summary
    # interior 34 x 36: two rows x two columns of 16 x 16 windows, but the reference carries one per sample
    assert s["window_shape"] == [16, 16] and s["windows_per_sample"] == 1 and s["windows_periodic"] is False
    assert s == compare_datasets(ref, gen, skip_rows=6, skip_cols=2, n_permutations=100, seed=4).summary
    other = compare_datasets(ref, gen, skip_rows=6, skip_cols=2, n_permutations=100, seed=5).summary
    assert other["g_r_p"] != s["g_r_p"] or other["g_r_distance"] != s["g_r_distance"]
    # whole periodic samples on both sides stay periodic; one skipped row makes both open
    assert compare_datasets(ref, ref, n_permutations=100).summary["windows_periodic"] is True
    assert compare_datasets(ref, ref, skip_rows=1, n_permutations=100).summary["windows_periodic"] is False
    for st in STATS[:-1]:
        assert all(f"{st}_{k}" in s for k in RESULT_KEYS)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"n_permutations": 99}, "at least 100"),
    ({"skip_rows": 16}, "leaves nothing"), ({"skip_cols": 8}, "leaves nothing"), ({"r_max": 40}, "too large"),
])
def test_bad_comparisons_raise(kwargs, fragment):
    rng = np.random.default_rng(7)
    ref = ds(ideal_gas(rng, 4, 16, 16, 0.2))
    with pytest.raises(MapsimError, match=fragment):
        compare_datasets(ref, ref, **kwargs)


def test_bad_datasets_raise():
    rng = np.random.default_rng(8)
    ref = ds(ideal_gas(rng, 4, 16, 16, 0.2))
    empty = ds(np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(MapsimError, match="no site holds"):
        compare_datasets(empty, ref)
    with pytest.raises(MapsimError, match="at least 2 samples"):
        compare_datasets(ds(ref.grids[:1]), ref)
    with pytest.raises(MapsimError, match="do not match"):
        compare_datasets(ref, Dataset(ref.grids, ("empty", "solvent"), {}))


def test_energy_needs_every_class_of_the_hamiltonian():
    rng = np.random.default_rng(9)
    ref = Dataset(ideal_gas(rng, 6, 12, 12, 0.2), CLASSES, {"params": {"periodic": True, "e_nn": -1.0}})
    s = compare_datasets(ref, ref, n_permutations=100).summary
    assert "energy" in s["statistics"] and s["hamiltonian"]["e_nn"] == -1.0
    s = compare_datasets(ref, ref, n_permutations=100, hamiltonian={"e_nn": 1.0, "mu": 2.0}).summary
    assert "energy" not in s["statistics"] and "solvent" in s["energy_note"]
