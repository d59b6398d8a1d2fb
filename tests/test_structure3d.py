"""3-D statistics against exact answers: enumeration of tiny lattices, brute force, known clusters."""

import itertools

import numpy as np
import pytest
from scipy import stats

from mapsim.analysis.structure3d import (
    ClusterSizes3D,
    NeighbourCounts3D,
    PairCorrelation3D,
    StructureFactor3D,
    analyze3d,
    lattice_r2_3d,
)
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset


def _all_configs(shape, n_part):
    m = int(np.prod(shape))
    out = np.zeros((sum(1 for _ in itertools.combinations(range(m), n_part)), m), bool)
    for row, sites in enumerate(itertools.combinations(range(m), n_part)):
        out[row, list(sites)] = True
    return out.reshape(-1, *shape)


def test_lattice_distances_skip_sums_that_are_not_three_squares():
    assert lattice_r2_3d(3).tolist() == [1, 2, 3, 4, 5, 6, 8, 9]


@pytest.mark.parametrize("shape, periodic, n_part", [
    ((3, 3, 3), True, 2),            # every configuration of 2 particles on the 27-site torus
    ((2, 2, 3), False, 3),           # open window
    ((3, 2, 3), (True, False, False), 3),  # periodic along z only
])
def test_ideal_gas_g_is_exactly_one_over_all_configurations(shape, periodic, n_part):
    occ = _all_configs(shape, n_part)
    pc = PairCorrelation3D(1, periodic).compute(occ)
    g = pc.g
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, 1.0, rtol=0, atol=1e-12)


def _brute_pairs(occ, periodic, r_max):
    """Ordered pair counts per exact r² bin by a loop over all voxel pairs."""
    per = periodic if isinstance(periodic, tuple) else (periodic,) * 3
    shape = occ.shape
    r2s = lattice_r2_3d(r_max)
    out = np.zeros(r2s.size)
    pts = np.argwhere(occ)
    for a in pts:
        for b in pts:
            if np.array_equal(a, b):
                continue
            d = b - a
            for ax in range(3):
                if per[ax]:
                    d[ax] = (d[ax] + shape[ax] // 2) % shape[ax] - shape[ax] // 2
            if np.any(np.abs(d) > r_max):
                continue
            r2 = int((d**2).sum())
            if 0 < r2 <= r_max**2:
                out[np.searchsorted(r2s, r2)] += 1
    return out


@pytest.mark.parametrize("periodic", [True, False, (False, True, True)])
def test_pair_counts_match_brute_force(periodic):
    rng = np.random.default_rng(3)
    occ = rng.random((2, 5, 5, 6)) < 0.3  # odd periodic sides: every lag <= 2 is its own minimum image
    pc = PairCorrelation3D(2, periodic).compute(occ)
    for s in range(2):
        np.testing.assert_allclose(pc.pair_counts[s], _brute_pairs(occ[s], periodic, 2), atol=1e-9)


def test_neighbour_histogram_exact_on_the_torus_and_binomial_for_an_ideal_gas():
    # all configurations of 4 particles on 3x3x3: each particle's other 3 lie uniformly among 26 sites
    nb = NeighbourCounts3D(True).compute(_all_configs((3, 3, 3), 4))
    np.testing.assert_allclose(nb.hist6, stats.hypergeom(26, 3, 6).pmf(np.arange(7)), atol=1e-12)
    assert nb.hist26[3] == 1.0  # the 26 neighbours are all other sites
    # independent sites with probability rho: Binomial(6, rho) and Binomial(26, rho)
    rho = 0.3
    occ = np.random.default_rng(0).random((24, 16, 16, 16)) < rho
    nb = NeighbourCounts3D(True).compute(occ)
    n_part = nb.counts6.sum()
    for hist, k in ((nb.hist6, 6), (nb.hist26, 26)):
        p = stats.binom(k, rho).pmf(np.arange(k + 1))
        se = np.sqrt(p * (1 - p) / n_part)
        assert np.all(np.abs(hist - p) < 6 * se + 1e-4), (k, hist - p)
    # open: only particles whose 3x3x3 block is inside count
    nbo = NeighbourCounts3D(False).compute(occ)
    assert nbo.counts6.sum() == occ[:, 1:-1, 1:-1, 1:-1].sum()
    assert nbo.sites_per_sample == 14**3


def test_clusters_of_a_known_configuration():
    occ = np.zeros((1, 5, 5, 5), bool)
    occ[0, 0, 0, 0] = occ[0, 0, 0, 4] = True     # a face pair across the x wrap
    occ[0, 1, 2, 2] = occ[0, 2, 3, 3] = True     # a corner (body-diagonal) pair inside
    occ[0, 4, 4, 4] = True                       # touches (0,0,0) across 3 wraps, (0,0,4) across 2
    sizes = lambda conn, per: sorted(ClusterSizes3D(conn, per).compute(occ).sizes.tolist())  # noqa: E731
    assert sizes(6, False) == [1, 1, 1, 1, 1]
    assert sizes(6, True) == [1, 1, 1, 2]
    assert sizes(26, False) == [1, 1, 1, 2]
    assert sizes(26, True) == [2, 3]             # (3,3,3) joins the wrapped pair through the corner
    assert sizes(26, (False, True, True)) == [1, 2, 2]  # no wrap along z: the corner link is cut
    assert sizes(6, (False, False, True)) == [1, 1, 1, 2]


def _brute_clusters(occ, conn, per):
    shape = occ.shape
    pts = [tuple(p) for p in np.argwhere(occ)]
    parent = {p: p for p in pts}

    def find(p):
        while parent[p] != p:
            p = parent[p]
        return p

    offs = [o for o in itertools.product((-1, 0, 1), repeat=3) if any(o) and (conn == 26 or sum(map(abs, o)) == 1)]
    for p in pts:
        for o in offs:
            q = list(p)
            ok = True
            for a in range(3):
                q[a] += o[a]
                if per[a]:
                    q[a] %= shape[a]
                elif not 0 <= q[a] < shape[a]:
                    ok = False
            if ok and occ[tuple(q)]:
                parent[find(p)] = find(tuple(q))
    roots = [find(p) for p in pts]
    return sorted(np.unique(roots, axis=0, return_counts=True)[1].tolist()) if pts else []


@pytest.mark.parametrize("conn", [6, 26])
@pytest.mark.parametrize("per", [(True, True, True), (False, False, False), (True, False, True)])
def test_clusters_match_union_find(conn, per):
    occ = np.random.default_rng(conn).random((3, 4, 5, 6)) < 0.25
    cl = ClusterSizes3D(conn, per).compute(occ)
    for s in range(3):
        assert sorted(cl.sizes[cl.sample_index == s].tolist()) == _brute_clusters(occ[s], conn, per)


def test_structure_factor_of_an_ideal_gas():
    rho = 0.2
    occ = np.random.default_rng(1).random((16, 12, 12, 12)) < rho
    sk = StructureFactor3D().compute(occ)
    assert sk.k.max() <= np.pi * np.sqrt(3) + 1e-9
    np.testing.assert_allclose(sk.S, 1 - rho, atol=0.12)  # the smallest shells hold few k vectors
    assert abs(np.mean(sk.S) - (1 - rho)) < 0.01


def test_analyze3d_reports_and_refuses_2d():
    occ = (np.random.default_rng(2).random((3, 6, 6, 6)) < 0.3).astype(np.uint8)
    ds = Dataset(occ, ("empty", "particle"), {"params": {"periodic": True, "e_nn": -1.0}})
    out = analyze3d(ds)
    assert out["shape"] == [6, 6, 6] and out["periodic"] is True and out["r_max"] == 3
    assert len(out["neighbours6"]) == 7 and len(out["neighbours26"]) == 27
    assert out["energy_per_site"] == pytest.approx(-out["nn_pairs_per_site"])
    with pytest.raises(MapsimError, match="2-D"):
        analyze3d(Dataset(occ[:, 0], ("empty", "particle")))
