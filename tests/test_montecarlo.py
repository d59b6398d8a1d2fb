"""Monte Carlo engine: ΔE of every move against brute force, bookkeeping, RNG, parameters, datasets."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mapsim.errors import MapsimError
from mapsim.lattice import load_dataset, save_dataset
from mapsim.montecarlo import (
    PRESETS,
    LatticeState,
    SimParams,
    mu_schedule,
    preset_params,
    simulate,
    temperature_schedule,
    total_energy,
)
from mapsim.montecarlo import kernels as K
from mapsim.montecarlo.hamiltonian import Hamiltonian
from mapsim.montecarlo.rng import random_u64, sample_seed_sequence, xoshiro_state

RNG0 = np.array([1, 2, 3, 4], np.uint64)


# ---------------------------------------------------------------------------
# brute-force energy


def test_total_energy_counts_each_bond_once():
    full = np.ones((3, 4), np.uint8)
    assert total_energy(full, e_nn=1.0) == 24  # periodic: 2 bonds per site
    assert total_energy(full, e_nn=1.0, periodic=False) == 3 * 3 + 2 * 4
    g = np.array([[1, 2, 0], [2, 2, 0], [0, 0, 0]], np.uint8)
    # open: bonds (1,2) right and down -> 2 n-l; (2,2) bonds: (0,1)-(1,1), (1,0)-(1,1) -> 2 l-l; 3 liquid sites
    assert total_energy(g, {"e_nl": 1.0, "e_ll": 10.0, "mu": 100.0, "periodic": False}) == 2 + 20 + 300
    batch = np.stack([g, full[:3, :3]])
    np.testing.assert_allclose(total_energy(batch, e_nn=1.0, periodic=False), [0.0, 12.0])


# ---------------------------------------------------------------------------
# ΔE of every move equals the brute-force energy difference


@st.composite
def systems(draw):
    h = draw(st.integers(3, 6))
    w = draw(st.integers(3, 6))
    periodic = draw(st.booleans())
    solvent = draw(st.booleans())
    coupling = st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3 if solvent else 2))
    grid = rng.choice(len(probs), size=(h, w), p=probs).astype(np.uint8)
    if solvent:
        p = SimParams(e_nn=draw(coupling), e_ll=draw(coupling), e_nl=draw(coupling), mu=draw(coupling),
                      periodic=periodic, solvent=True)
    else:
        p = SimParams(e_nn=draw(coupling), periodic=periodic)
    return grid, p


def _moved(grid, s, t, solvent):
    g = grid.ravel().copy()
    g[s], g[t] = (K.SOLVENT if solvent else K.EMPTY), K.PARTICLE
    return g.reshape(grid.shape)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(systems())
def test_every_move_delta_e_matches_brute_force(system):
    grid, p = system
    s_ = LatticeState.from_grid(grid, p, RNG0)
    n = grid.size
    e0 = total_energy(grid, p)
    tol = 1e-9 * (1 + p.energy_scale)
    flat = grid.ravel()
    checked = 0
    if not p.solvent:
        table = K.lg_delta_table(Hamiltonian.from_mapping(p).move_deltas(4))
        off, wrap = K.lg_steps(grid.shape[1], n)
        for s in np.flatnonzero(flat == K.PARTICLE):
            for d in range(4):
                if K.lg_edge(s_.state[s], d) and not p.periodic:  # the kernel rejects steps off the lattice
                    assert s_.nbr[s, d] == n
                    continue
                t = K.lg_neighbour(s, s_.state[s], d, off, wrap)
                assert t == s_.nbr[s, d]  # edge bits give the same neighbours as the table
                dE = table[K.lg_index(s_.state[t], s_.state[s])]
                if flat[t] != K.EMPTY:  # occupied: never accepted
                    assert dE == math.inf
                    continue
                assert dE == pytest.approx(total_energy(_moved(grid, s, t, False), p) - e0, abs=tol)
                checked += 1
    else:
        hop = Hamiltonian.from_mapping(p).move_deltas(4)
        for s in np.flatnonzero(flat == K.PARTICLE):
            for d in range(4):
                t = s_.nbr[s, d]
                if t == n or flat[t] != K.SOLVENT:  # the kernel rejects these before the table
                    continue
                dE = hop[K.sv_move_index(s_.state, s_.nbr, s, t, 1)]
                assert dE == pytest.approx(total_energy(_moved(grid, s, t, True), p) - e0, abs=tol)
                checked += 1
        flip = K.sv_flip_delta_table(p.e_ll, p.e_nl, p.mu)
        for s in np.flatnonzero(flat != K.PARTICLE):
            g2 = flat.copy()
            g2[s] ^= 2  # liquid <-> vapour
            dE = flip[K.sv_flip_index(s_.state, s_.nbr, s)]
            assert dE == pytest.approx(total_energy(g2.reshape(grid.shape), p) - e0, abs=tol)
            checked += 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(systems(), st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 3)))
def test_nonlocal_and_insertion_delta_e_match_brute_force(system, mu_n):
    grid, p = system
    p = dataclasses.replace(p, ensemble="grand", moves="nonlocal", mu_n=mu_n)
    s_ = LatticeState.from_grid(grid, p, RNG0)
    ham = Hamiltonian.from_mapping(p)
    moves, inserts = ham.move_deltas(4), ham.insertion_deltas(4)
    flat = grid.ravel()
    e0 = total_energy(grid, p)
    tol = 1e-9 * (1 + p.energy_scale)
    target = K.SOLVENT if p.solvent else K.EMPTY
    checked = 0
    # every particle to every site it may jump to (neighbours included: the adjacent case)
    for s in np.flatnonzero(flat == K.PARTICLE):
        for t in np.flatnonzero(flat == target):
            if p.solvent:
                adj = K.sv_adjacent(s_.nbr, s, t)
                k = K.sv_move_index(s_.state, s_.nbr, s, t, adj)
            else:
                adj = K._lg_adjacent(s, s_.state[s], t, p.periodic, *K.lg_steps(grid.shape[1], flat.size))
                k = K.lg_move_index(s_.state[s], s_.state[t], adj)
            assert adj == int(t in s_.nbr[s])
            g2 = flat.copy()
            g2[s], g2[t] = target, K.PARTICLE
            assert moves[k] == pytest.approx(total_energy(g2.reshape(grid.shape), p) - e0, abs=tol)
            checked += 1
    # insertion at every empty site, removal of every particle (solvent sites are never proposed)
    for s in np.flatnonzero(flat != K.SOLVENT):
        k = K.sv_insertion_index(s_.state, s_.nbr, s) if p.solvent else K.lg_insertion_index(s_.state[s])
        g2 = flat.copy()
        g2[s] ^= 1
        assert inserts[k] == pytest.approx(total_energy(g2.reshape(grid.shape), p) - e0, abs=tol)
        checked += 1
    assume(checked > 0)  # an all-solvent lattice has no move to check: not a counted example


def test_acceptance_tables_encode_metropolis():
    dE = np.array([-3.0, 0.0, 1e-12, 0.5, 2.0, 30.0, np.inf])
    hi, lo = K.acceptance_tables(dE, 0.7, 1e-9)
    p = K.acceptance_probability(hi, lo)
    expected = np.minimum(1.0, np.exp(-np.maximum(dE, 0) / 0.7))
    expected[2] = 1.0  # within tol of 0
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=2.0**-90)  # fixed point: 2**-94 resolution
    # T = 0: dE <= 0 (up to tol) accepted, dE > 0 rejected
    hi0, lo0 = K.acceptance_tables(dE, 0.0, 1e-9)
    np.testing.assert_array_equal(K.acceptance_probability(hi0, lo0), [1, 1, 1, 0, 0, 0, 0])


# ---------------------------------------------------------------------------
# kernel bookkeeping, conservation, T = 0


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("solvent", [False, True])
def test_sweeps_conserve_particles_and_keep_codes_consistent(periodic, solvent):
    extra = dict(e_ll=-1.0, e_nl=-1.5, mu=2.0) if solvent else {}
    p = SimParams(e_nn=-1.0, T=1.2, density=0.3, mobility=3, periodic=periodic, solvent=solvent, **extra)
    s_ = LatticeState.initial(p, 7, 9, sample_seed_sequence(3, 0))
    before = np.sort(s_.pos.copy())
    flips, hops = s_.run(np.full(200, p.T))
    assert hops > 0 and (flips > 0 or not solvent)
    g = s_.grid(keep_solvent=True).ravel()
    assert s_.pos.size == before.size == p.n_particles(63)
    np.testing.assert_array_equal(np.sort(s_.pos), np.flatnonzero(g == K.PARTICLE))  # positions match the grid
    if not solvent:
        np.testing.assert_array_equal(s_.state, K.lg_encode(g, s_.nbr, 9))  # neighbour counts stay exact
    else:
        assert s_.state[-1] == K.WALL


def test_zero_temperature_accepts_flat_moves_and_never_climbs():
    # one particle alone: every hop has dE = 0 and must be accepted at T = 0
    p = SimParams(e_nn=1.0, T=0.0, density=0.0)
    s_ = LatticeState.from_grid(np.pad([[1]], 2).astype(np.uint8), p, RNG0)
    _, hops = s_.run(np.zeros(50))
    assert hops == 50
    # attractive pairs at T = 0: the energy never increases
    p = SimParams(e_nn=-1.0, T=0.0, density=0.2)
    s_ = LatticeState.initial(p, 10, 10, sample_seed_sequence(0, 0))
    energies = []
    for _ in range(30):
        s_.run(np.zeros(5))
        energies.append(total_energy(s_.grid(), p))
    assert np.all(np.diff(energies) <= 0)
    assert energies[-1] < 0


def test_xoshiro_reference_values_and_seeding():
    # xoshiro256** from state (1, 2, 3, 4): published first outputs
    np.testing.assert_array_equal(random_u64(RNG0.copy(), 3), np.array([11520, 0, 1509978240], np.uint64))
    a = xoshiro_state(sample_seed_sequence(7, 3))
    b = xoshiro_state(np.random.SeedSequence(7).spawn(4)[3])
    np.testing.assert_array_equal(a, b)  # sample k is the k-th spawned child of the run's seed
    assert not np.array_equal(a, xoshiro_state(sample_seed_sequence(7, 4)))


# ---------------------------------------------------------------------------
# parameters and presets


def test_schedules():
    p = preset_params("drying", {"sweeps": "10", "T_start": "3", "anneal_frac": "0.5", "mu_start": "1", "mu_ramp_frac": 1})
    np.testing.assert_allclose(temperature_schedule(p), [3.0, 2.6, 2.2, 1.8, 1.4, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(mu_schedule(p), 1 + 10 * np.arange(10) / 10)
    q = preset_params("lattice-gas", {"sweeps": 4})
    np.testing.assert_array_equal(temperature_schedule(q), [1.0] * 4)  # T_start = none: no annealing


@pytest.mark.parametrize(
    "name, overrides, fragment",
    [
        ("nope", {}, "unknown preset 'nope'"),
        ("lattice-gas", {"densty": "0.1"}, "did you mean 'density'"),
        ("lattice-gas", {"density": "1.5"}, "density"),
        ("lattice-gas", {"density": "abc"}, "parameter density: expected a finite number, found 'abc'"),
        ("lattice-gas", {"T": "-1"}, "parameter T"),
        ("lattice-gas", {"T": "nan"}, "finite"),
        ("lattice-gas", {"sweeps": "-1"}, "parameter sweeps"),
        ("lattice-gas", {"sweeps": "1.5"}, "expected an integer"),
        ("lattice-gas", {"periodic": "maybe"}, "expected true or false"),
        ("lattice-gas", {"mu": "1"}, "solvent=false"),
        ("fluid-hot-repulsive", {"keep_solvent": "true"}, "keep_solvent"),
        ("drying", {"anneal_frac": "2"}, "anneal_frac"),
        ("drying", {"T_start": "-2"}, "T_start"),
    ],
)
def test_bad_parameters_name_the_parameter(name, overrides, fragment):
    with pytest.raises(MapsimError, match=None) as exc:
        preset_params(name, overrides)
    assert fragment in str(exc.value)


def test_overrides_convert_types():
    p = preset_params("drying", {"sweeps": "1e3", "periodic": "false", "T_start": "none", "e_nn": -3})
    assert (p.sweeps, p.periodic, p.T_start, p.e_nn) == (1000, False, None, -3.0)
    assert preset_params("lattice-gas", {"solvent": "true", "mu": "1"}).solvent
    assert SimParams.from_dict(p.to_dict()) == p


def test_lattice_size_checks():
    with pytest.raises(MapsimError, match="at least 3 sites"):
        simulate("lattice-gas", 1, 2, 8, workers=1)
    ds = simulate(preset_params("lattice-gas", {"periodic": "false", "sweeps": 3}), 1, 1, 2, workers=1)
    assert ds.grids.shape == (1, 1, 2)
    with pytest.raises(MapsimError, match="seed"):
        simulate("lattice-gas", 1, 4, seed=-1, workers=1)


# ---------------------------------------------------------------------------
# simulate(): datasets


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_makes_a_valid_dataset(name, tmp_path):
    ds = simulate(name, 2, 16, 12, seed=1, workers=1)
    p = PRESETS[name]
    assert ds.grids.shape == (2, 16, 12) and ds.grids.dtype == np.uint8
    assert ds.classes == ("empty", "particle")
    np.testing.assert_array_equal((ds.grids == 1).sum(axis=(1, 2)), p.n_particles(16 * 12))
    assert ds.metadata["params"] == p.to_dict() and ds.metadata["preset"] == name
    assert ds.metadata["seed"] == 1 and ds.metadata["mapsim_version"]
    back = load_dataset(save_dataset(tmp_path / "d.npz", ds))
    np.testing.assert_array_equal(back.grids, ds.grids)
    assert back.metadata == ds.metadata


def test_keep_solvent_adds_the_solvent_class():
    p = preset_params("drying", {"sweeps": 50, "keep_solvent": True})
    ds = simulate(p, 1, 12, seed=0, workers=1)
    assert ds.classes == ("empty", "particle", "solvent")
    assert (ds.grids == 2).any()
    plain = simulate(preset_params("drying", {"sweeps": 50}), 1, 12, seed=0, workers=1)
    np.testing.assert_array_equal(np.where(ds.grids == 2, 0, ds.grids), plain.grids)  # same run, solvent dropped


def test_output_depends_on_seed_and_k_only():
    p = preset_params("drying", {"sweeps": 40})
    one = simulate(p, 3, 10, seed=5, workers=1)
    two = simulate(p, 3, 10, seed=5, workers=2)
    np.testing.assert_array_equal(one.grids, two.grids)
    assert one.metadata == two.metadata
    np.testing.assert_array_equal(simulate(p, 2, 10, seed=5, workers=1).grids, one.grids[:2])
    assert not np.array_equal(simulate(p, 3, 10, seed=6, workers=1).grids, one.grids)
    assert not np.array_equal(one.grids[0], one.grids[1])


def test_progress_callback_counts_samples():
    seen = []
    simulate(preset_params("fluid-hot-repulsive", {"sweeps": 2}), 4, 8, seed=0, workers=1, progress=seen.append)
    assert seen == [1, 1, 1, 1]
