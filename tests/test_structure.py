"""Structure statistics against exact answers: enumeration, brute force, closed forms."""

import itertools
from collections import deque

import numpy as np
import pytest

from mapsim.analysis.structure import (
    ClusterSizes,
    Hamiltonian,
    NeighbourCounts,
    PairCorrelation,
    StructureFactor,
    autocorrelation,
    available_pairs,
    bond_counts,
    check_r_max,
    energy_per_site,
    is_periodic,
    lattice_r2,
    nn_pair_density,
    pooled_g,
)
from mapsim.analysis.blockwise import analyze
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset
from mapsim.montecarlo import hamiltonian as mc_hamiltonian


def checkerboard(h=8, w=8):
    return (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0)[None]


def square_lattice(h=8, w=8):
    occ = np.zeros((1, h, w), bool)
    occ[0, ::2, ::2] = True
    return occ


# --------------------------------------------------------------------------- g(r)


def test_lattice_r2_are_sums_of_two_squares():
    assert lattice_r2(4).tolist() == [1, 2, 4, 5, 8, 9, 10, 13, 16]
    assert 3 not in lattice_r2(10) and 7 not in lattice_r2(10) and 100 in lattice_r2(10)


@pytest.mark.parametrize("periodic", [True, False])
def test_fft_autocorrelation_matches_brute_force(periodic):
    rng = np.random.default_rng(3)
    x = rng.random((3, 7, 9)) < 0.4
    r_max = 3
    ac = autocorrelation(x, periodic, r_max)
    n, h, w = x.shape
    for s in range(n):
        for dy in range(-r_max, r_max + 1):
            for dx in range(-r_max, r_max + 1):
                c = 0
                for i in range(h):
                    for j in range(w):
                        ii, jj = i + dy, j + dx
                        if periodic:
                            ii, jj = ii % h, jj % w
                        elif not (0 <= ii < h and 0 <= jj < w):
                            continue
                        c += x[s, i, j] and x[s, ii, jj]
                assert ac[s, r_max + dy, r_max + dx] == pytest.approx(c, abs=1e-9)


def test_available_pairs_open_is_autocorrelation_of_the_mask():
    a = available_pairs((6, 9), periodic=False, r_max=4)
    d = np.arange(-4, 5)
    assert np.array_equal(a, np.outer(6 - np.abs(d), 9 - np.abs(d)))
    assert np.all(available_pairs((6, 9), periodic=True, r_max=3) == 54)


@pytest.mark.parametrize("periodic, shape, n_part, r_max", [(True, (4, 4), 3, 2), (False, (3, 4), 4, 2)])
def test_g_is_exactly_one_over_all_placements_of_n_particles(periodic, shape, n_part, r_max):
    """Pooled over every placement of N particles (the ideal gas at fixed N), g(r) = 1 exactly."""
    h, w = shape
    configs = []
    for sites in itertools.combinations(range(h * w), n_part):
        occ = np.zeros(h * w, bool)
        occ[list(sites)] = True
        configs.append(occ.reshape(h, w))
    g = PairCorrelation(r_max, periodic).compute(np.array(configs)).g
    np.testing.assert_allclose(g, 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("periodic", [True, False])
def test_ideal_gas_g_is_one_at_every_r(periodic):
    """Random occupation, density 0.3, 150 samples of 32x32.

    Tolerance per bin: 5 standard errors, sqrt(2 / expected pairs) (ordered pairs
    come in mirror-image twins, so the independent count is half the total).
    """
    rng = np.random.default_rng(11)
    occ = rng.random((150, 32, 32)) < 0.3
    pc = PairCorrelation(10, periodic).compute(occ)
    tol = 5 * np.sqrt(2 / pc.expected_counts.sum(axis=0))
    assert np.all(tol < 0.05)
    assert pc.r2.size == lattice_r2(10).size
    assert np.all(np.abs(pc.g - 1) < tol), (pc.g - 1) / tol


def test_checkerboard_periodic_g_exact():
    # N = 32 of M = 64: same-sublattice displacements (r² even) hold N pairs each,
    # the ideal gas N(N-1)/(M-1): g = (M-1)/(N-1) = 63/31; odd r² never.
    pc = PairCorrelation(4, periodic=True).compute(checkerboard())
    expected = np.where(pc.r2 % 2 == 0, 63 / 31, 0.0)
    np.testing.assert_allclose(pc.g, expected, rtol=1e-12)


def test_square_lattice_periodic_g_exact():
    # N = 16 of 64, particles where dy and dx are both even: g = 63/15 at r² = 4, 8, 16.
    pc = PairCorrelation(4, periodic=True).compute(square_lattice())
    assert pc.r2.tolist() == [1, 2, 4, 5, 8, 9, 10, 13, 16]
    np.testing.assert_allclose(pc.g, [0, 0, 4.2, 0, 4.2, 0, 0, 0, 4.2], rtol=1e-12)


def test_open_g_matches_direct_pair_counting():
    rng = np.random.default_rng(5)
    occ = rng.random((4, 9, 11)) < 0.35
    occ[0] = checkerboard(9, 11)[0]
    pc = PairCorrelation(5, periodic=False).compute(occ)
    n, h, w = occ.shape
    m = h * w
    r2s = lattice_r2(5).tolist()
    num = np.zeros(len(r2s))
    den = np.zeros(len(r2s))
    pts = [np.argwhere(o) for o in occ]
    for s in range(n):
        N = len(pts[s])
        for a in pts[s]:
            for b in pts[s]:
                d2 = int(((a - b) ** 2).sum())
                if d2 in r2s:
                    num[r2s.index(d2)] += 1
        for dy in range(-5, 6):
            for dx in range(-5, 6):
                d2 = dy * dy + dx * dx
                if 0 < d2 <= 25:
                    den[r2s.index(d2)] += (h - abs(dy)) * (w - abs(dx)) * N * (N - 1) / (m * (m - 1))
    np.testing.assert_allclose(pc.g, num / den, rtol=1e-12)
    np.testing.assert_allclose(pc.pair_counts.sum(axis=0), num)


def test_pooled_g_of_subsets_and_nan_without_pairs():
    rng = np.random.default_rng(1)
    occ = rng.random((6, 10, 10)) < 0.2
    occ[5] = False
    pc = PairCorrelation(3, True).compute(occ)
    sub = np.array([True, False, True, False, False, True])
    np.testing.assert_allclose(pooled_g(pc.pair_counts, pc.expected_counts, sub),
                               PairCorrelation(3, True).compute(occ[sub]).g)
    assert np.all(np.isnan(PairCorrelation(3, True).compute(occ[5:]).g))
    assert np.all(np.isnan(pc.g_per_sample[5]))


def test_r_max_limits():
    assert check_r_max(None, (8, 30), True) == 4
    assert check_r_max(None, (64, 64), False) == 10
    with pytest.raises(MapsimError, match="at most 4"):
        check_r_max(5, (8, 30), True)
    with pytest.raises(MapsimError, match="at least 1"):
        check_r_max(0, (8, 8), False)
    with pytest.raises(RuntimeError, match="compute"):
        PairCorrelation().g


# --------------------------------------------------------------------------- neighbours


def test_neighbour_counts_of_perfect_lattices():
    nc = NeighbourCounts(periodic=True).compute(checkerboard())
    assert nc.counts4.tolist() == [[32, 0, 0, 0, 0]]
    assert nc.counts8.tolist() == [[0, 0, 0, 0, 32, 0, 0, 0, 0]]
    nc = NeighbourCounts(periodic=True).compute(square_lattice())
    assert nc.hist4.tolist() == [1, 0, 0, 0, 0] and nc.hist8[0] == 1
    full = NeighbourCounts(periodic=True).compute(np.ones((2, 5, 6), bool))
    assert full.counts4[:, 4].tolist() == [30, 30] and full.counts8[:, 8].tolist() == [30, 30]


def test_open_neighbour_counts_use_interior_particles_only():
    nc = NeighbourCounts(periodic=False).compute(checkerboard())
    # interior 6x6 holds 18 particles of the checkerboard; border particles are not counted
    assert nc.counts4.tolist() == [[18, 0, 0, 0, 0]]
    assert nc.counts8.tolist() == [[0, 0, 0, 0, 18, 0, 0, 0, 0]]
    assert nc.sites_per_sample == 36
    block = np.zeros((1, 6, 6), bool)
    block[0, 2:4, 2:4] = True
    nc = NeighbourCounts(periodic=False).compute(block)
    assert nc.counts4.tolist() == [[0, 0, 4, 0, 0]]
    assert nc.counts8.tolist() == [[0, 0, 0, 4, 0, 0, 0, 0, 0]]


def test_periodic_neighbours_wrap():
    occ = np.zeros((1, 5, 5), bool)
    occ[0, 0, 0] = occ[0, 4, 0] = occ[0, 4, 4] = True  # mutual neighbours only across edges
    nc = NeighbourCounts(periodic=True).compute(occ)
    # (0,0)-(4,0) and (4,0)-(4,4) are 4-neighbours across an edge, (0,0)-(4,4) diagonal across the corner
    assert nc.counts4.tolist() == [[0, 2, 1, 0, 0]]
    assert nc.counts8.tolist() == [[0, 0, 3, 0, 0, 0, 0, 0, 0]]


# --------------------------------------------------------------------------- clusters


def bfs_cluster_sizes(grid, connectivity, periodic):
    h, w = grid.shape
    offs = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    if connectivity == 8:
        offs += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    seen = np.zeros_like(grid, bool)
    sizes = []
    for i in range(h):
        for j in range(w):
            if grid[i, j] and not seen[i, j]:
                q, size = deque([(i, j)]), 0
                seen[i, j] = True
                while q:
                    a, b = q.popleft()
                    size += 1
                    for dy, dx in offs:
                        y, x = a + dy, b + dx
                        if periodic:
                            y, x = y % h, x % w
                        elif not (0 <= y < h and 0 <= x < w):
                            continue
                        if grid[y, x] and not seen[y, x]:
                            seen[y, x] = True
                            q.append((y, x))
                sizes.append(size)
    return sorted(sizes)


def test_known_cluster_layout_open():
    g = np.zeros((1, 8, 8), bool)
    g[0, 0, 0] = True  # monomer
    g[0, 2, 2:4] = True  # dimer
    g[0, 5, 5] = g[0, 6, 5] = g[0, 6, 6] = True  # L-trimer
    g[0, 0, 5] = g[0, 1, 6] = True  # diagonal pair: 2 monomers (4), one dimer (8)
    assert sorted(ClusterSizes(4).compute(g).sizes.tolist()) == [1, 1, 1, 2, 3]
    assert sorted(ClusterSizes(8).compute(g).sizes.tolist()) == [1, 2, 2, 3]
    assert ClusterSizes(4).compute(g).size_counts.tolist() == [0, 3, 1, 1]


def test_clusters_wrapping_periodic_edges():
    g = np.zeros((1, 6, 7), bool)
    g[0, 2, [5, 6, 0, 1]] = True  # a bar across the left/right edge
    assert ClusterSizes(4, periodic=True).compute(g).sizes.tolist() == [4]
    assert ClusterSizes(4, periodic=False).compute(g).sizes.tolist() == [2, 2]
    c = np.zeros((1, 6, 7), bool)
    c[0, [0, 0, 5, 5], [0, 6, 0, 6]] = True  # the four corners: one square across both edges
    assert ClusterSizes(4, periodic=True).compute(c).sizes.tolist() == [4]
    d = np.zeros((1, 6, 7), bool)
    d[0, 0, 0] = d[0, 5, 6] = True  # diagonal across the corner
    assert ClusterSizes(8, periodic=True).compute(d).sizes.tolist() == [2]
    assert ClusterSizes(4, periodic=True).compute(d).sizes.tolist() == [1, 1]
    ring = np.zeros((1, 5, 5), bool)
    ring[0, 3, :] = True  # winds round the torus, touches itself
    ring[0, :, 1] = True
    assert ClusterSizes(4, periodic=True).compute(ring).sizes.tolist() == [9]


def test_clusters_never_merge_across_samples():
    g = np.zeros((3, 4, 4), bool)
    g[:, 1:3, 1:3] = True
    g[1] = False
    cs = ClusterSizes(8, periodic=True).compute(g)
    assert cs.sizes.tolist() == [4, 4]
    assert cs.sample_index.tolist() == [0, 2]
    assert [a.tolist() for a in cs.per_sample()] == [[4], [], [4]]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("periodic", [True, False])
def test_clusters_match_breadth_first_search(connectivity, periodic):
    rng = np.random.default_rng(connectivity + 10 * periodic)
    occ = rng.random((6, 9, 12)) < 0.45
    cs = ClusterSizes(connectivity, periodic).compute(occ)
    for s, sizes in enumerate(cs.per_sample()):
        assert sorted(sizes.tolist()) == bfs_cluster_sizes(occ[s], connectivity, periodic)
    assert cs.sizes.sum() == occ.sum()


# --------------------------------------------------------------------------- bonds, energy, S(k)


def brute_energy(grid, ham, periodic, pid=1, sid=2):
    h, w = grid.shape
    e = ham.mu * np.sum(grid == sid)
    for i in range(h):
        for j in range(w):
            for dy, dx in ((0, 1), (1, 0)):
                y, x = i + dy, j + dx
                if periodic:
                    y, x = y % h, x % w
                elif y >= h or x >= w:
                    continue
                a, b = grid[i, j], grid[y, x]
                e += ham.e_nn * (a == pid and b == pid) + ham.e_ll * (a == sid and b == sid)
                e += ham.e_nl * ((a == pid and b == sid) + (a == sid and b == pid))
    return e / (h * w)


@pytest.mark.parametrize("periodic", [True, False])
def test_energy_per_site_matches_brute_force(periodic):
    rng = np.random.default_rng(2)
    grids = rng.integers(0, 3, (3, 5, 6)).astype(np.uint8)
    ham = Hamiltonian(e_nn=-4.0, e_ll=-2.0, e_nl=-20.0, mu=11.0)
    got = energy_per_site(grids, ham, periodic)
    np.testing.assert_allclose(got, [brute_energy(g, ham, periodic) for g in grids], rtol=1e-12)


def test_energy_agrees_with_monte_carlo_hamiltonian():
    rng = np.random.default_rng(4)
    grids = rng.integers(0, 3, (2, 6, 7)).astype(np.uint8)
    params = {"e_nn": 1.5, "e_ll": -2.0, "e_nl": -20.0, "mu": 11.0}
    for periodic in (True, False):
        ours = energy_per_site(grids, Hamiltonian.from_mapping(params), periodic) * grids[0].size
        theirs = [float(mc_hamiltonian.total_energy(g, {**params, "periodic": periodic})) for g in grids]
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_nn_pair_density_exact():
    assert nn_pair_density(checkerboard(), True).tolist() == [0.0]
    assert nn_pair_density(np.ones((1, 4, 5), bool), True).tolist() == [2.0]
    assert nn_pair_density(np.ones((1, 4, 5), bool), False).tolist() == [(4 * 4 + 3 * 5) / 20]
    a = np.zeros((1, 3, 3), bool)
    a[0, 0, :] = True
    assert bond_counts(a, a, False).tolist() == [4]  # 2 bonds, each counted from both ends


def shell_sizes(h: int, w: int) -> np.ndarray:
    """Wave vectors k != 0 in each |k| shell of width 2 pi / min(h, w), as StructureFactor bins them."""
    kk = np.hypot(2 * np.pi * np.fft.fftfreq(h)[:, None], 2 * np.pi * np.fft.fftfreq(w)[None, :])
    dk = 2 * np.pi / min(h, w)
    edges = np.arange(0.5 * dk, np.pi * np.sqrt(2) + dk, dk)
    cnt = np.histogram(kk.ravel(), edges)[0]
    return cnt[cnt > 0]


def test_structure_factor_ideal_gas_and_checkerboard():
    """Ideal gas: S(k) = 1 - rho, with a calibrated tolerance per shell.

    For independent sites each sample's |rho(k)|^2 / N is (1 - rho) times an exponential
    variable, shared by k and -k (a real Fourier coefficient, as at k = (pi, 0), is chi^2 with
    one degree of freedom), so every wave vector of a shell adds shape 1/2 per sample and a
    shell of c wave vectors over n samples has S / (1 - rho) ~ Gamma(n c / 2, 2 / (n c)).
    Every shell must lie within its two-sided quantiles at 1e-3 / (number of shells)
    (Bonferroni: false-alarm budget 1e-3 for the whole check).
    """
    from scipy.stats import gamma

    rng = np.random.default_rng(8)
    rho, n, size = 0.2, 100, 32
    sk = StructureFactor().compute(rng.random((n, size, size)) < rho)
    cnt = shell_sizes(size, size)
    assert cnt.shape == sk.S.shape
    a = n * cnt / 2
    alpha = 1e-3 / cnt.size
    lo, hi = gamma.ppf(alpha / 2, a, scale=1 / a), gamma.ppf(1 - alpha / 2, a, scale=1 / a)
    ratio = sk.S / (1 - rho)
    assert np.all((lo <= ratio) & (ratio <= hi)), np.c_[cnt, lo, ratio, hi][(ratio < lo) | (ratio > hi)]
    cb = StructureFactor().compute(checkerboard(16, 16))
    assert cb.S[-1] == pytest.approx(cb.S.max()) and cb.S[-1] > 10  # Bragg peak at (pi, pi)
    assert np.allclose(cb.S[:-1], 0)


# --------------------------------------------------------------------------- metadata, analyze


def test_is_periodic_from_metadata_and_override():
    assert is_periodic({"params": {"periodic": True}}) is True
    assert is_periodic({"params": {"periodic": False}, "periodic": True}) is False
    assert is_periodic({"periodic": True}) is True
    assert is_periodic({}) is False
    assert is_periodic({"params": {"periodic": True}}, override=False) is False


def test_analyze_dataset_reports_every_statistic():
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 3, (5, 16, 16)).astype(np.uint8)
    ds = Dataset(grids, ("empty", "particle", "solvent"),
                 {"params": {"periodic": True, "e_nn": 1.0, "e_nl": -2.0, "mu": 0.5}})
    out = analyze(ds)
    assert out["class"] == "particle" and out["periodic"] is True and out["r_max"] == 8
    assert out["density_mean"] == pytest.approx(np.mean(grids == 1))
    assert out["energy_per_site"] == pytest.approx(
        np.mean([brute_energy(g, Hamiltonian(1.0, 0.0, -2.0, 0.5), True) for g in grids]))
    assert out["cluster_sizes4"].sum() > 0 and out["g_r"].shape == out["r"].shape
    assert analyze(ds, "solvent", periodic=False, r_max=3)["class"] == "solvent"
    with pytest.raises(MapsimError, match="class 'nope' not found"):
        analyze(ds, "nope")
