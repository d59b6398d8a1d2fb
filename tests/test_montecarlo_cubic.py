"""Monte Carlo on the simple cubic lattice (``--depth``): exact Boltzmann sampling, ΔE, bookkeeping.

χ² against exact enumeration as in tests/test_montecarlo_boltzmann.py: open 2×2×2 and 3×3×2
lattices and a periodic 3×3×3 one (a periodic axis needs 3 sites), every move set; each case is
also judged against slightly wrong weights, which must fail (the sample sizes have power).
Fixed seeds, so the tests are deterministic; ALPHA = 1e-3.
"""

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_montecarlo_boltzmann import _chi2_p

from mapsim.errors import MapsimError
from mapsim.montecarlo import SimParams, preset_params, simulate
from mapsim.montecarlo import kernels_nd as KN
from mapsim.montecarlo.cubic import CubicState
from mapsim.montecarlo.hamiltonian import Hamiltonian
from mapsim.montecarlo.rng import sample_seed_sequence, xoshiro_state

ALPHA = 1e-3
RNG0 = np.array([1, 2, 3, 4], np.uint64)


def _states(n_sites, n_particles=None):
    """All 0/1 configurations (flat) with ``n_particles`` particles (None: any number)."""
    counts = range(n_sites + 1) if n_particles is None else [n_particles]
    out = []
    for k in counts:
        for part in itertools.combinations(range(n_sites), k):
            g = np.zeros(n_sites, np.uint8)
            g[list(part)] = 1
            out.append(g)
    return np.array(out)


def _energy(params, grids):
    return Hamiltonian.from_mapping(params).energy(grids, params.periodic, ndim=3)


def _boltzmann(params, states, shape):
    e = _energy(params, states.reshape(-1, *shape))
    w = np.exp(-(e - e.min()) / params.T)
    return w / w.sum()


def _visits(params, states, shape, n_records, between, seed):
    index = {s.tobytes(): i for i, s in enumerate(states)}
    start = states[len(states) // 2].reshape(shape)
    st_ = CubicState.from_grid(start, params, xoshiro_state(sample_seed_sequence(seed, 0)))
    st_.run(np.full(50, params.T))
    T = np.full(between, params.T)
    counts = np.zeros(len(states), np.int64)
    for _ in range(n_records):
        st_.run(T)
        counts[index[st_.grid().ravel().tobytes()]] += 1
    return counts


CASES = {
    # name: (params, shape, particles (None: grand), records, sweeps between, wrong change)
    "local-open-2x2x2": (SimParams(e_nn=-1.0, T=0.8, periodic=False), (2, 2, 2), 3, 30_000, 6, {"e_nn": -0.9}),
    "mixed-open-3x3x2": (SimParams(e_nn=-1.0, T=0.7, moves="mixed", nonlocal_frac=0.3, periodic=False),
                         (3, 3, 2), 2, 30_000, 4, {"T": 0.77}),
    "nonlocal-open-3x3x2-repulsive": (SimParams(e_nn=1.3, T=1.0, moves="nonlocal", periodic=False), (3, 3, 2), 2,
                                      150_000, 2, {"e_nn": 1.43}),
    "grand-mixed-open-2x2x2": (SimParams(e_nn=1.3, mu_n=-1.5, T=1.0, ensemble="grand", moves="mixed",
                                         periodic=False), (2, 2, 2), None, 40_000, 2, {"mu_n": -1.7}),
    "local-periodic-3x3x3": (SimParams(e_nn=-1.0, T=0.6, mobility=2), (3, 3, 3), 2, 30_000, 8, {"e_nn": -0.9}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cubic_moves_sample_boltzmann_and_wrong_weights_fail(case):
    params, shape, n_part, n_records, between, wrong = CASES[case]
    states = _states(int(np.prod(shape)), n_part)
    counts = _visits(params, states, shape, n_records, between, seed=7)
    p = _chi2_p(counts, _boltzmann(params, states, shape) * n_records)
    assert p > ALPHA, (case, p)
    bad = SimParams(**{**params.to_dict(), **wrong})
    assert _chi2_p(counts, _boltzmann(bad, states, shape) * n_records) < 1e-6, (case, wrong)


# ---------------------------------------------------------------------------
# ΔE of every move against the brute-force energy (both boundary kinds)


@st.composite
def cubic_systems(draw):
    periodic = draw(st.booleans())
    lo = 3 if periodic else 1
    shape = tuple(draw(st.integers(lo, 4)) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    grid = (rng.random(shape) < rng.uniform(0.1, 0.9)).astype(np.uint8)
    coupling = st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 3))
    return grid, SimParams(e_nn=draw(coupling), mu_n=draw(coupling), ensemble="grand", moves="mixed",
                           periodic=periodic)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cubic_systems())
def test_every_cubic_move_delta_e_matches_brute_force(system):
    grid, p = system
    s_ = CubicState.from_grid(grid, p, RNG0)
    ham = Hamiltonian.from_mapping(p)
    moves, inserts = ham.move_deltas(6), ham.insertion_deltas(6)
    flat = grid.ravel()
    e0 = _energy(p, grid)
    tol = 1e-9 * (1 + p.energy_scale)
    for s in np.flatnonzero(flat == 1):
        for t in np.flatnonzero(flat == 0):  # every jump, neighbours (local hops) included
            adj = KN.nd_adjacent(s_.nbr, s, t)
            g2 = flat.copy()
            g2[s], g2[t] = 0, 1
            assert moves[KN.nd_move_index(s_.state, s_.nbr, s, t, adj)] == pytest.approx(
                _energy(p, g2.reshape(grid.shape)) - e0, abs=tol)
    for s in range(flat.size):
        g2 = flat.copy()
        g2[s] ^= 1
        assert inserts[KN.nd_insertion_index(s_.state, s_.nbr, s)] == pytest.approx(
            _energy(p, g2.reshape(grid.shape)) - e0, abs=tol)


def test_neighbour_table_against_index_arithmetic():
    shape = (3, 4, 5)
    for periodic in (True, False):
        nbr = KN.neighbour_table_nd(shape, periodic)
        n = int(np.prod(shape))
        assert nbr.shape == (n, 6)
        for s in range(n):
            z, y, x = np.unravel_index(s, shape)
            for d in range(6):
                axis, step = divmod(d, 2)
                idx = [z, y, x]
                idx[axis] += 1 if step else -1
                if periodic:
                    idx[axis] %= shape[axis]
                elif not 0 <= idx[axis] < shape[axis]:
                    assert nbr[s, d] == n
                    continue
                assert nbr[s, d] == np.ravel_multi_index(tuple(idx), shape)


@pytest.mark.parametrize("over", [{}, {"ensemble": "grand", "mu_n": "2", "periodic": "false"}])
def test_3d_runs_keep_the_books_and_trace_ends_at_the_energy(over):
    p = preset_params("lattice-gas", {"sweeps": 20, "trace_points": 5, **over})
    ds = simulate(p, 2, 4, 5, seed=3, workers=1, depth=3)
    assert ds.grids.shape == (2, 3, 4, 5) and ds.ndim == 3 and ds.spatial_shape == (3, 4, 5)
    assert ds.metadata["depth"] == 3
    e = _energy(p, ds.grids) / 60
    np.testing.assert_allclose(ds.extras["energy_trace"][:, -1], e, rtol=0, atol=1e-12)
    if p.ensemble == "canonical":
        assert np.all(ds.grids.reshape(2, -1).sum(1) == round(0.5 * 60))
    again = simulate(p, 2, 4, 5, seed=3, workers=1, depth=3)
    np.testing.assert_array_equal(again.grids, ds.grids)  # sample k depends on (seed, k) only
    one = simulate(p, 1, 4, 5, seed=3, workers=1, depth=3)
    np.testing.assert_array_equal(one.grids[0], ds.grids[0])


def test_zero_temperature_cubic_never_climbs():
    p = preset_params("fluid-cold-repulsive", {"sweeps": 30})
    ds = simulate(p, 1, 6, 6, seed=0, workers=1, depth=6)
    trace = ds.extras["energy_trace"][0]
    assert np.all(np.diff(trace) <= 1e-12)


@pytest.mark.parametrize("over, depth, fragment", [
    ({"periodic": "true"}, 2, "at least 3 sites"),
    ({}, 0, "depth"),
])
def test_bad_3d_sizes(over, depth, fragment):
    p = preset_params("lattice-gas", over)
    with pytest.raises(MapsimError, match=fragment):
        simulate(p, 1, 4, 4, seed=0, workers=1, depth=depth)


def test_solvent_is_refused_in_3d():
    with pytest.raises(MapsimError, match="solvent"):
        simulate(preset_params("drying"), 1, 4, 4, seed=0, workers=1, depth=4)


def test_table_kernels_on_a_square_lattice_give_onsager_energy():
    # the cubic lattice has no exact energy; the same kernels on a 4-neighbour table have Onsager's
    # (2D Ising through the lattice gas: e_nn = -4, so J = 1; grand canonical at mu_n = -2 e_nn, field-free)
    from mapsim.montecarlo.cubic import _ALL_NONLOCAL
    from mapsim.montecarlo.exact import onsager_energy
    from mapsim.montecarlo.kernels import site_order

    L, T, sweeps, n = 48, 3.0, 300, 24
    ham = Hamiltonian(e_nn=-4.0, mu_n=8.0)
    nbr = KN.neighbour_table_nd((L, L), True)
    at = np.arange(0, sweeps + 1, 3)
    u = []
    for k in range(n):
        init_ss, kernel_ss = sample_seed_sequence(5, k).spawn(2)
        grid = (np.random.default_rng(init_ss).random(L * L) < 0.5).astype(np.uint8)
        pos = np.flatnonzero(grid).astype(np.int32)
        order, slot = site_order(pos, L * L)
        terms = np.zeros((at.size, 5), np.int64)
        KN.nd_run_traced(KN.nd_encode(grid), nbr, order, slot, pos.size, ham.move_deltas(4), ham.insertion_deltas(4),
                         np.full(sweeps, T), at, 1, int(0.8 * _ALL_NONLOCAL), True, 1e-8, xoshiro_state(kernel_ss),
                         np.zeros(8, np.int64), terms)
        e = ham.energy_of_terms(terms)[at >= sweeps // 2] / (L * L)
        u.append(e.mean() + 4.0 / 2 - 8.0 / 2)  # Ising energy per site (m terms cancel at mu_n = -2 e_nn)
    u = np.asarray(u)
    se = u.std(ddof=1) / np.sqrt(n)
    assert abs(u.mean() - onsager_energy(T)) <= 4.5 * se, (u.mean(), se, onsager_energy(T))


def test_3d_runs_resume_from_their_partial_directory(tmp_path):
    from mapsim.montecarlo.partial import PartialRun, run_key

    p = preset_params("fluid-hot-attractive", {"sweeps": 5})
    key = run_key(p.to_dict(), 4, 5, 6, depth=3)
    full = simulate(p, 3, 5, 6, seed=4, workers=1, depth=3)
    part = PartialRun(tmp_path / "run.partial", key)
    part.put(1, full.grids[1], {"hop_acceptance": 0.5}, full.extras["energy_trace"][1])
    assert list(part.load(3)) == [1]
    again = simulate(p, 3, 5, 6, seed=4, workers=1, depth=3, checkpoint=part)
    np.testing.assert_array_equal(again.grids, full.grids)
    with pytest.raises(MapsimError, match="other settings"):
        PartialRun(tmp_path / "run.partial", run_key(p.to_dict(), 4, 5, 6, depth=4))
