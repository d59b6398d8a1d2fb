"""Comparison distances and their noise floor, on synthetic data with known answers."""

import math

import numpy as np
import pytest

from scipy.stats import wasserstein_distance

from mapsim.analysis.compare import DISTANCES, STATS, compare_datasets, crop_grid, model_context_range
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset

CLASSES = ("empty", "particle")


def ideal_gas(rng, n, h, w, rho):
    return (rng.random((n, h, w)) < rho).astype(np.uint8)


def blocks(rng, n, h, w, p=0.03):
    """Periodic 2x2 blocks at Bernoulli(p) corners (overlaps merge): density 1-(1-p)^4."""
    s = rng.random((n, h, w)) < p
    occ = s | np.roll(s, 1, axis=1) | np.roll(s, 1, axis=2) | np.roll(s, (1, 1), axis=(1, 2))
    return occ.astype(np.uint8)


def ds(grids, periodic=True, **meta):
    return Dataset(grids, CLASSES, {"params": {"periodic": periodic}, **meta})


def ratios(c):
    return {s: c.summary[f"{s}_ratio"] for s in STATS}


def test_dataset_against_itself_is_zero_distance():
    rng = np.random.default_rng(0)
    ref = ds(blocks(rng, 20, 24, 24))
    c = compare_datasets(ref, ref, n_bootstrap=20)
    for s in STATS:
        assert c.summary[f"{s}_distance"] == 0.0
        assert c.summary[f"{s}_noise"] > 0
        assert c.summary[f"{s}_ratio"] == 0.0 and c.summary[f"{s}_verdict"] == "within noise"


def test_independent_samplings_of_one_distribution_are_within_noise():
    rng = np.random.default_rng(1)
    ref = ds(blocks(rng, 40, 32, 32))
    same = ds(blocks(rng, 40, 32, 32))
    r = ratios(compare_datasets(ref, same, seed=0))
    assert all(v < 2 for v in r.values()), r
    # generated-like: fewer, larger, open samples whose first rows are dropped
    big = ds(blocks(rng, 6, 70, 64), periodic=False, context_range=3)
    c = compare_datasets(ref, big, seed=0)
    assert c.summary["skip_rows"] == 6 and c.summary["generated_crops"] == 6 * 2 * 2
    assert all(v < 2 for v in ratios(c).values()), ratios(c)


def test_clearly_different_distributions_exceed_noise():
    rng = np.random.default_rng(2)
    ref = ds(blocks(rng, 40, 32, 32))  # density ~ 0.115, particles in 2x2 blocks
    gas = ds(ideal_gas(rng, 40, 32, 32, 0.115))
    c = compare_datasets(ref, gas)
    r = ratios(c)
    for s in ("g_r", "neighbours4", "neighbours8", "clusters4", "clusters8"):
        assert r[s] > 5, r
        assert c.summary[f"{s}_verdict"] == "exceeds noise"
    thin = ds(ideal_gas(rng, 40, 32, 32, 0.10))
    dense = ds(ideal_gas(rng, 40, 32, 32, 0.13))
    assert compare_datasets(thin, dense).summary["density_ratio"] > 5


def test_noise_floor_is_calibrated_to_the_comparison():
    """Over independent same-distribution comparisons the mean ratio is ~1.

    Two reference halves hold half the data of each side of a 30-against-30
    comparison, so unscaled their distance would be sqrt(2) too large and the
    mean ratio ~0.71.  With the rescaled noise the mean g(r) ratio over 24
    comparisons is 1 within 0.1 (its standard error is ~0.025); the other
    distances fluctuate more (standard error ~0.1 each), so their average over
    the six statistics is checked to within 0.2.
    """
    rng = np.random.default_rng(3)
    rows = []
    for t in range(24):
        ref = ds(ideal_gas(rng, 30, 20, 20, 0.15))
        gen = ds(ideal_gas(rng, 30, 20, 20, 0.15))
        c = compare_datasets(ref, gen, n_bootstrap=30, seed=t)
        rows.append([c.summary[f"{s}_ratio"] for s in STATS])
        assert c.summary["g_r_noise_scale"] == pytest.approx(math.sqrt(0.5))
    mean = np.mean(rows, axis=0)
    assert abs(mean[STATS.index("g_r")] - 1) < 0.1, mean
    assert abs(mean.mean() - 1) < 0.2, mean


def test_noise_scale_matches_amounts_of_data():
    rng = np.random.default_rng(4)
    ref = ds(ideal_gas(rng, 10, 16, 16, 0.2))
    gen = ds(ideal_gas(rng, 3, 40, 33, 0.2), periodic=False)
    c = compare_datasets(ref, gen, skip_rows=8, n_bootstrap=5)
    s = c.summary
    assert s["crop_shape"] == [16, 16] and s["generated_crops"] == 3 * 2 * 2 and s["reference_crops"] == 10
    site = 16 * 16
    expect = math.sqrt((1 / (10 * site) + 1 / (12 * site)) / (2 / (5 * site)))
    assert s["density_noise_scale"] == pytest.approx(expect)
    assert s["clusters4_noise_scale"] == pytest.approx(expect)
    # neighbours: periodic reference counts 16*16 sites per sample, open generated its 30x31 interior
    nb = math.sqrt((1 / (10 * site) + 1 / (3 * 30 * 31)) / (2 / (5 * site)))
    assert s["neighbours4_noise_scale"] == pytest.approx(nb)
    assert s["generated_periodic"] is False and s["clusters_periodic"] is False


def test_seeded_noise_is_reproducible():
    rng = np.random.default_rng(5)
    ref, gen = ds(blocks(rng, 12, 16, 16)), ds(blocks(rng, 12, 16, 16))
    a = compare_datasets(ref, gen, seed=7, n_bootstrap=10).summary
    b = compare_datasets(ref, gen, seed=7, n_bootstrap=10).summary
    c = compare_datasets(ref, gen, seed=8, n_bootstrap=10).summary
    assert a == b
    assert a["g_r_noise"] != c["g_r_noise"]


def test_distances_on_known_inputs():
    rng = np.random.default_rng(9)
    u, v = rng.integers(1, 30, 500), rng.integers(1, 12, 77)
    assert DISTANCES["clusters4"](u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    assert DISTANCES["clusters8"](np.array([1, 1, 2]), np.array([3])) == pytest.approx(5 / 3)
    assert DISTANCES["neighbours4"](np.array([1.0, 0, 0]), np.array([0.5, 0.5, 0])) == pytest.approx(0.5)
    assert DISTANCES["g_r"](np.array([1.0, 2.0, np.nan]), np.array([1.0, 4.0, 3.0])) == pytest.approx(math.sqrt(2))
    assert DISTANCES["density"](np.array([0.1, 0.2]), np.array([0.3])) == pytest.approx(0.15)


def test_crop_grid_tiles_from_the_top_left():
    g = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    crops, sample = crop_grid(g, (2, 3))
    assert crops.shape == (8, 2, 3) and sample.tolist() == [0] * 4 + [1] * 4
    assert np.array_equal(crops[1], g[0, 0:2, 3:6]) and np.array_equal(crops[6], g[1, 2:4, 0:3])


def test_skip_rows_boundaries_and_periodic_clusters():
    rng = np.random.default_rng(6)
    ref = ds(blocks(rng, 6, 16, 16))
    assert model_context_range({"model": {"context_range": 4}}) == 4
    assert model_context_range({}) is None
    c = compare_datasets(ref, ds(blocks(rng, 4, 16, 16)), n_bootstrap=3)
    assert c.summary["clusters_periodic"] is True and c.summary["skip_rows"] == 0
    # periodic per metadata, but dropping rows breaks the wrap: the interior is open
    c = compare_datasets(ref, ds(blocks(rng, 4, 20, 16)), skip_rows=4, n_bootstrap=3)
    assert c.summary["generated_periodic"] is False and c.summary["clusters_periodic"] is False
    # a smaller generated sample: both sides are cropped to it
    c = compare_datasets(ref, ds(blocks(rng, 4, 8, 16), periodic=False), r_max=3, n_bootstrap=3)
    assert c.summary["crop_shape"] == [8, 16] and c.summary["reference_crops"] == 12


@pytest.mark.parametrize(
    "make, kwargs, fragment",
    [
        (lambda r: Dataset(r.grids, ("empty", "solid"), {}), {}, "do not match"),
        (lambda r: r, {"skip_rows": 16}, "leaves nothing"),
        (lambda r: r, {"r_max": 9}, "r_max 9 too large"),
        (lambda r: r, {"class_name": "solvent"}, "not found"),
    ],
)
def test_bad_comparisons_raise(make, kwargs, fragment):
    ref = ds(blocks(np.random.default_rng(7), 4, 16, 16))
    with pytest.raises(MapsimError, match=fragment):
        compare_datasets(ref, make(ref), **kwargs)


def test_reference_needs_two_samples():
    one = ds(blocks(np.random.default_rng(8), 1, 8, 8))
    with pytest.raises(MapsimError, match="at least 2 samples"):
        compare_datasets(one, one)
