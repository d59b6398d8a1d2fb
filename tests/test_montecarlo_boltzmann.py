"""Long runs on tiny periodic lattices reproduce the exact Boltzmann distribution.

Every state of a 3x3 lattice (periodic; one case open) is enumerated and weighted by
exp(-H/T) with the brute-force ``total_energy``; the visit counts of a long
chain (recorded every few sweeps, thinned so records are nearly independent)
are compared with a chi-square test. Significance: the test fails if p < 1e-3.
Runs use fixed seeds, so they are deterministic; a wrong ΔE or a broken
detailed balance gives p values far below 1e-30 at these sample sizes.
"""

import itertools

import numpy as np
import pytest
from scipy import stats

from mapsim.montecarlo import LatticeState, SimParams, total_energy
from mapsim.montecarlo.rng import sample_seed_sequence, xoshiro_state

ALPHA = 1e-3
L = 3


def _states(n_particles, solvent, fixed_particles=None, n_sites=L * L):
    """All grids (flat) with the given particle count (or particle sites; ``n_particles=None``: any count)."""
    sites = range(n_sites)
    out = []
    if fixed_particles is not None:
        placements = [fixed_particles]
    elif n_particles is None:
        placements = itertools.chain.from_iterable(itertools.combinations(sites, k) for k in range(n_sites + 1))
    else:
        placements = itertools.combinations(sites, n_particles)
    for part in placements:
        free = [s for s in sites if s not in part]
        fills = itertools.product((0, 2), repeat=len(free)) if solvent else [(0,) * len(free)]
        for fill in fills:
            g = np.zeros(n_sites, np.uint8)
            g[list(part)] = 1
            g[free] = fill
            out.append(g)
    return np.array(out)


def _code(flat):
    return int(np.dot(flat.astype(np.int64), 3 ** np.arange(flat.size)))


def _boltzmann(params, states, shape=(L, L)):
    e = total_energy(states.reshape(-1, *shape), params)
    w = np.exp(-(e - e.min()) / params.T)
    return w / w.sum()


def _chi2_against_boltzmann(params, states, start, n_records, sweeps_between, seed, shape=(L, L)):
    expected_p = _boltzmann(params, states, shape)
    index = {_code(s): i for i, s in enumerate(states)}
    st = LatticeState.from_grid(start.reshape(shape), params, xoshiro_state(sample_seed_sequence(seed, 0)))
    T = np.full(sweeps_between, params.T)
    counts = np.zeros(len(states), np.int64)
    st.run(np.full(50, params.T))  # burn-in
    for _ in range(n_records):
        st.run(T)
        counts[index[_code(st.grid(keep_solvent=True).ravel())]] += 1
    expected = expected_p * n_records
    return _chi2_p(counts, expected), counts, expected


def _chi2_p(counts, expected):
    """Chi-square p value, states expected fewer than 5 times merged into one bin (validity)."""
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp).pvalue


CANONICAL = SimParams(e_nn=-1.0, T=0.8, mobility=1)


@pytest.fixture(scope="module")
def canonical_run():
    # 3 attractive particles on 3x3 periodic: C(9,3) = 84 states; records 40 sweeps
    # (120 hop attempts) apart: closer records are correlated enough to bias chi-square
    states = _states(3, solvent=False)
    return states, _chi2_against_boltzmann(CANONICAL, states, states[0], 40_000, 40, seed=1)


def test_canonical_particle_hops_sample_boltzmann(canonical_run):
    _, (p, counts, expected) = canonical_run
    assert p > ALPHA, (p, counts[:10], expected[:10])


def test_canonical_repulsive_particles_sample_boltzmann():
    params = SimParams(e_nn=1.3, T=1.0, mobility=2)
    states = _states(4, solvent=False)  # 126 states
    p, _, _ = _chi2_against_boltzmann(params, states, states[0], 40_000, 10, seed=2)
    assert p > ALPHA


def test_open_boundaries_sample_boltzmann():
    # the same with open edges (hops into the wall are rejected; edge sites have fewer bonds)
    params = SimParams(e_nn=-1.0, T=0.8, mobility=1, periodic=False)
    states = _states(3, solvent=False)
    p, _, _ = _chi2_against_boltzmann(params, states, states[0], 40_000, 40, seed=5)
    assert p > ALPHA


def test_grand_canonical_solvent_flips_sample_boltzmann():
    # particles fixed (mobility 0) at two sites; 7 free sites liquid/vapour: 128 states
    params = SimParams(e_nn=-1.0, e_ll=-1.0, e_nl=-0.7, mu=1.6, T=1.0, mobility=0, solvent=True)
    states = _states(2, solvent=True, fixed_particles=(0, 4))
    p, counts, _ = _chi2_against_boltzmann(params, states, states[-1], 40_000, 10, seed=3)
    assert p > ALPHA
    assert np.all((states[np.nonzero(counts)][:, [0, 4]] == 1))  # particles never moved


def test_combined_hops_and_flips_sample_boltzmann():
    # 1 particle + solvent with both move types: 9 * 2**8 = 2304 states
    params = SimParams(e_nn=-1.0, e_ll=-0.6, e_nl=-0.9, mu=1.0, T=1.5, mobility=3, solvent=True)
    states = _states(1, solvent=True)
    p, _, _ = _chi2_against_boltzmann(params, states, states[0], 150_000, 3, seed=4)
    assert p > ALPHA


@pytest.mark.parametrize("wrong", [{"e_nn": -0.9}, {"T": 0.85}])
def test_chi_square_detects_a_wrong_distribution(canonical_run, wrong):
    # the same counts judged against slightly wrong Boltzmann weights must fail: the test has power
    states, (_, counts, _) = canonical_run
    bad = SimParams(**{**CANONICAL.to_dict(), **wrong})
    e = total_energy(states.reshape(-1, L, L), bad)
    w = np.exp(-(e - e.min()) / bad.T)
    assert stats.chisquare(counts, w / w.sum() * counts.sum()).pvalue < 1e-6


# ---------------------------------------------------------------------------
# non-local and grand-canonical moves, alone and mixed with local ones (issue 12)
#
# Each case is also judged against slightly wrong weights (one coupling or T changed by 10 %,
# or mu_n by 0.12-0.2 / T), which must fail at p < 1e-6: the sample sizes have power.

MOVE_CASES = {
    # name: (params, states, shape, records, sweeps between records, wrong parameter change)
    "nonlocal": (SimParams(e_nn=-1.0, T=0.8, moves="nonlocal"), lambda: _states(3, False), (3, 3),
                 30_000, 4, {"e_nn": -0.9}),
    "mixed-open": (SimParams(e_nn=-1.0, T=0.8, moves="mixed", nonlocal_frac=0.3, periodic=False),
                   lambda: _states(3, False), (3, 3), 30_000, 6, {"T": 0.88}),
    "grand-local": (SimParams(e_nn=-1.0, mu_n=1.2, T=1.0, ensemble="grand"), lambda: _states(None, False), (3, 3),
                    40_000, 5, {"mu_n": 1.32}),
    "grand-mixed-open": (SimParams(e_nn=1.3, mu_n=-1.5, T=1.0, ensemble="grand", moves="mixed", periodic=False),
                         lambda: _states(None, False), (3, 3), 40_000, 3, {"e_nn": 1.43}),
    "solvent-nonlocal": (SimParams(e_nn=-1.0, e_ll=-0.6, e_nl=-0.9, mu=1.0, T=1.5, moves="nonlocal", solvent=True,
                                   periodic=False, mobility=2),
                         lambda: _states(2, True, n_sites=6), (2, 3), 30_000, 3, {"e_nl": -0.99}),
    "solvent-grand-mixed": (SimParams(e_nn=-1.0, e_ll=-0.6, e_nl=-0.9, mu=1.0, mu_n=0.5, T=1.5, moves="mixed",
                                      ensemble="grand", solvent=True, periodic=False),
                            lambda: _states(None, True, n_sites=6), (2, 3), 60_000, 3, {"mu_n": 0.7}),
}


@pytest.mark.parametrize("case", list(MOVE_CASES))
def test_new_moves_sample_boltzmann_and_wrong_weights_fail(case):
    params, make_states, shape, n_records, between, wrong = MOVE_CASES[case]
    states = make_states()
    start = states[len(states) // 2]
    p, counts, _ = _chi2_against_boltzmann(params, states, start, n_records, between, seed=11, shape=shape)
    assert p > ALPHA, (case, p)
    if params.ensemble == "canonical":
        n_part = (states == 1).sum(axis=1)
        assert np.all(n_part[counts > 0] == n_part[0])  # the particle number never changed
    bad = SimParams(**{**params.to_dict(), **wrong})
    assert _chi2_p(counts, _boltzmann(bad, states, shape) * counts.sum()) < 1e-6, (case, wrong)
