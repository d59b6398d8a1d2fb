"""Non-local and grand-canonical moves: bookkeeping, conservation, traces (ΔE: test_montecarlo.py)."""

import numpy as np
import pytest

from mapsim.montecarlo import LatticeState, SimParams, preset_params, simulate, total_energy
from mapsim.montecarlo import kernels as K
from mapsim.montecarlo.rng import sample_seed_sequence

RNG0 = np.array([1, 2, 3, 4], np.uint64)


def _check_bookkeeping(s_, n_expected=None):
    g = s_.grid(keep_solvent=True).ravel()
    parts = np.flatnonzero(g == K.PARTICLE)
    np.testing.assert_array_equal(np.sort(s_.pos), parts)  # positions match the grid
    if n_expected is not None:
        assert s_.pos.size == n_expected
    np.testing.assert_array_equal(np.sort(s_.order[: parts.size]), parts)  # particles first ...
    np.testing.assert_array_equal(s_.slot[s_.order], np.arange(g.size))  # ... and slot its inverse
    if not s_.params.solvent:
        np.testing.assert_array_equal(s_.state, K.lg_encode(g, s_.nbr, s_.width))  # neighbour counts exact
    else:
        assert s_.state[-1] == K.WALL


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("solvent", [False, True])
@pytest.mark.parametrize("moves", ["nonlocal", "mixed"])
def test_canonical_moves_conserve_particles(periodic, solvent, moves):
    extra = dict(e_ll=-1.0, e_nl=-1.5, mu=2.0, solvent=True) if solvent else {}
    p = SimParams(e_nn=-1.0, T=1.2, density=0.3, mobility=3, periodic=periodic, moves=moves, **extra)
    s_ = LatticeState.initial(p, 7, 9, sample_seed_sequence(3, 0))
    n0 = s_.pos.size
    flips, moved = s_.run(np.full(200, p.T))
    assert moved > 0 and (flips > 0 or not solvent)
    assert s_.counts[2] > 0 and (s_.counts[0] > 0) == (moves == "mixed")
    _check_bookkeeping(s_, n0)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("solvent", [False, True])
def test_grand_canonical_moves_keep_the_books(periodic, solvent):
    extra = dict(e_ll=-1.0, e_nl=-1.5, mu=0.5, solvent=True) if solvent else {}
    p = SimParams(e_nn=-1.0, T=1.2, density=0.3, mu_n=1.0, ensemble="grand", moves="mixed", periodic=periodic,
                  **extra)
    s_ = LatticeState.initial(p, 7, 9, sample_seed_sequence(4, 0))
    sizes = set()
    for _ in range(20):
        s_.run(np.full(10, p.T))
        sizes.add(s_.pos.size)
        _check_bookkeeping(s_)
    assert len(sizes) > 1  # the particle number does change
    assert s_.counts[5] > 0


def test_nonlocal_jumps_reach_far_sites():
    # one particle on an empty periodic lattice: every jump has dE = 0; local hops move it by one site
    p = SimParams(e_nn=1.0, T=1.0, density=0.0, moves="nonlocal")
    s_ = LatticeState.from_grid(np.pad([[1]], 4).astype(np.uint8), p, RNG0)
    far = 0
    for _ in range(200):
        before = int(s_.pos[0])
        s_.run(np.ones(1))
        (y0, x0), (y1, x1) = divmod(before, 9), divmod(int(s_.pos[0]), 9)
        far += min(abs(y1 - y0), 9 - abs(y1 - y0)) + min(abs(x1 - x0), 9 - abs(x1 - x0)) > 1
    assert far > 150  # 72 of 80 other sites are not neighbours


@pytest.mark.parametrize("over", [{}, {"moves": "mixed"}, {"moves": "mixed", "ensemble": "grand", "mu_n": "2"}])
def test_configuration_does_not_depend_on_trace_points(over):
    a = simulate(preset_params("lattice-gas", {"sweeps": 40, "trace_points": 3, **over}), 2, 8, seed=3, workers=1)
    b = simulate(preset_params("lattice-gas", {"sweeps": 40, "trace_points": 40, **over}), 2, 8, seed=3, workers=1)
    np.testing.assert_array_equal(a.grids, b.grids)
    assert a.extras["energy_trace"].shape == (2, 4) and b.extras["energy_trace"].shape == (2, 41)
    assert a.metadata["trace_sweeps"] == [0, 13, 27, 40]
    np.testing.assert_array_equal(a.extras["energy_trace"][:, [0, -1]], b.extras["energy_trace"][:, [0, -1]])


@pytest.mark.parametrize("name,over", [("lattice-gas", {"ensemble": "grand", "mu_n": "1.5"}),
                                       ("drying", {"sweeps": 30, "keep_solvent": "true"}),
                                       ("fluid-hot-attractive", {})])
def test_trace_ends_at_the_energy_of_the_sample(name, over):
    p = preset_params(name, over)
    ds = simulate(p, 3, 10, seed=2, workers=1)
    tr = ds.extras["energy_trace"]
    assert tr.shape == (3, len(ds.metadata["trace_sweeps"])) and ds.metadata["trace_sweeps"][-1] == p.sweeps
    if "solvent" in ds.classes or not p.solvent:
        np.testing.assert_allclose(tr[:, -1], total_energy(ds.grids, p) / 100, rtol=1e-12, atol=1e-12)
