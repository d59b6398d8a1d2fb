"""Monte Carlo of particle-only systems on a simple cubic lattice (6 neighbours per site).

The 3-D counterpart of :class:`mapsim.montecarlo.engine.LatticeState` for the lattice gas and
the fluid presets: the same parameters, move rules, sweeps, seeding (sample ``k`` uses
``SeedSequence(seed, spawn_key=(k,))``: its first child places the particles, its second seeds
the kernel stream) and energy traces; the kernels are :mod:`.kernels_nd`. Systems with solvent
(the drying preset) are 2-D only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mapsim.errors import MapsimError
from mapsim.montecarlo import kernels_nd as KN
from mapsim.montecarlo.hamiltonian import Hamiltonian, neighbour_count
from mapsim.montecarlo.kernels import PARTICLE, acceptance_ratios, site_order
from mapsim.montecarlo.params import SimParams, temperature_schedule
from mapsim.montecarlo.rng import sample_seed_sequence, xoshiro_state

__all__ = ["CubicState", "check_size_3d", "check_params_3d", "run_sample_3d"]

#: Largest ``nl_cut`` of the kernels: every particle move non-local.
_ALL_NONLOCAL = 1 << 32
#: |ΔE| below ``TOL_REL * energy_scale`` counts as ΔE = 0 (only matters at T = 0); as in 2-D.
TOL_REL = 1e-9


def check_size_3d(depth: int, height: int, width: int, periodic: bool) -> None:
    """Raise MapsimError unless a ``depth x height x width`` lattice suits the boundary kind."""
    for name, v in (("depth", depth), ("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise MapsimError(f"lattice {name}: expected a positive integer, found {v!r}")
    if periodic and min(depth, height, width) < 3:
        raise MapsimError(f"lattice size {depth}x{height}x{width}: periodic boundaries need at least 3 sites per "
                          "direction (use periodic=false for smaller lattices)")
    if depth * height * width >= 2**31 - 1:
        raise MapsimError(f"lattice size {depth}x{height}x{width}: too many sites (at most 2**31 - 2)")


def check_params_3d(params: SimParams) -> None:
    """Raise MapsimError for parameters the cubic lattice does not simulate (solvent)."""
    if params.solvent:
        raise MapsimError("parameter solvent=true: the cubic lattice (--depth) simulates particles only "
                          "(lattice-gas and the fluid presets); systems with solvent, such as drying, are 2-D")


@dataclass
class CubicState:
    """The mutable state of one run on a (D, H, W) lattice, in the kernels' encoding.

    Attributes
    ----------
    params : SimParams
    shape : (D, H, W)
    nbr : int32 array (N, 6)
        :func:`kernels_nd.neighbour_table_nd`.
    state : uint8 array (N + 1,)
        0 empty, 1 particle, then the wall.
    order, slot : int32 arrays (N,)
        Particles first (:func:`kernels.site_order`).
    n_part : int
    rng : uint64 array (4,)
    counts : int64 array (8,)
        Attempts and accepted: local, non-local, insertion/removal, (solvent flips: unused).
    """

    params: SimParams
    shape: tuple[int, int, int]
    nbr: np.ndarray
    state: np.ndarray
    order: np.ndarray
    slot: np.ndarray
    n_part: int
    rng: np.ndarray
    counts: np.ndarray = field(default_factory=lambda: np.zeros(8, np.int64))

    @classmethod
    def from_grid(cls, grid: np.ndarray, params: SimParams, rng_state: np.ndarray,
                  pos: np.ndarray | None = None) -> "CubicState":
        """Wrap a (D, H, W) grid of 0/1 site states; ``pos`` (int (n,)) orders the particles (default raster)."""
        g = np.asarray(grid)
        if g.ndim != 3:
            raise MapsimError(f"grid: expected shape (D, H, W), found {g.shape}")
        check_params_3d(params)
        check_size_3d(*g.shape, params.periodic)
        if g.dtype.kind not in "uib" or (g.size and (g.min() < 0 or g.max() > 1)):
            raise MapsimError(f"grid: expected site states 0..1, found dtype {g.dtype} values {g.min()}..{g.max()}")
        nbr = KN.neighbour_table_nd(g.shape, params.periodic)
        state = KN.nd_encode(g)
        if pos is None:
            pos = np.flatnonzero(g.ravel() == PARTICLE)
        order, slot = site_order(np.asarray(pos, np.int32), g.size)
        return cls(params, tuple(int(v) for v in g.shape), nbr, state, order, slot, int(len(pos)),
                   np.array(rng_state, np.uint64).copy())

    @classmethod
    def initial(cls, params: SimParams, shape: tuple[int, int, int], ss: np.random.SeedSequence) -> "CubicState":
        """Particles at uniformly random distinct sites (as :meth:`LatticeState.initial`)."""
        check_params_3d(params)
        check_size_3d(*shape, params.periodic)
        init_ss, kernel_ss = ss.spawn(2)
        n = int(np.prod(shape))
        sites = np.random.default_rng(init_ss).permutation(n)[:params.n_particles(n)]
        grid = np.zeros(n, np.uint8)
        grid[sites] = PARTICLE
        return cls.from_grid(grid.reshape(shape), params, xoshiro_state(kernel_ss), pos=sites)

    def grid(self) -> np.ndarray:
        """Current configuration, uint8 (D, H, W): 0 empty, 1 particle."""
        return self.state[:-1].copy().reshape(self.shape)

    def run_traced(self, T: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Run ``len(T)`` sweeps at the given temperatures, recording the energy terms after sweeps ``at``.

        Returns
        -------
        terms : int64 array (n_points, 5)
            Counts of :data:`mapsim.montecarlo.hamiltonian.TERMS`.
        """
        p = self.params
        T = np.ascontiguousarray(T, np.float64)
        at = np.ascontiguousarray(at, np.int64)
        if at.size == 0 or at[0] != 0 or at[-1] != T.size or np.any(np.diff(at) < 0):
            raise ValueError(f"run_traced: at must rise from 0 to {T.size}, found {at.tolist()}")
        z = neighbour_count(3)
        ham = Hamiltonian.from_mapping(p)
        nl_cut = {"local": 0, "nonlocal": _ALL_NONLOCAL,
                  "mixed": min(int(round(p.nonlocal_frac * _ALL_NONLOCAL)), _ALL_NONLOCAL)}[p.moves]
        terms = np.zeros((at.size, 5), np.int64)
        self.n_part = int(KN.nd_run_traced(
            self.state, self.nbr, self.order, self.slot, self.n_part, ham.move_deltas(z), ham.insertion_deltas(z),
            T, at, p.mobility, nl_cut, p.ensemble == "grand", TOL_REL * p.energy_scale, self.rng, self.counts,
            terms))
        return terms

    def run(self, T: np.ndarray) -> None:
        """Run ``len(T)`` sweeps (no trace)."""
        self.run_traced(T, np.array([0, len(T)]))

    def energy(self) -> float:
        """Energy of the current configuration (from the kernel's bond count)."""
        terms = np.zeros(5, np.int64)
        KN.nd_terms(self.state, self.nbr, self.order, self.n_part, terms)
        return float(Hamiltonian.from_mapping(self.params).energy_of_terms(terms))


def run_sample_3d(params: SimParams, shape: tuple[int, int, int], seed: int,
                  k: int) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    """Simulate sample ``k`` of a 3-D run with ``seed`` (returns as :func:`engine.run_sample`, grid (D, H, W))."""
    from mapsim.montecarlo.equilibration import trace_sweeps

    st = CubicState.initial(params, shape, sample_seed_sequence(seed, k))
    at = trace_sweeps(params.sweeps, params.trace_points)
    terms = st.run_traced(temperature_schedule(params), at)
    trace = Hamiltonian.from_mapping(params).energy_of_terms(terms) / float(np.prod(shape))
    stats = acceptance_ratios(params, st.counts)
    return st.grid(), {key: float(v) for key, v in stats.items()}, trace


def warm_up_3d() -> None:
    """Compile (or load from numba's cache) the 3-D kernels on a tiny lattice."""
    p = SimParams(e_nn=-1.0, density=0.3, sweeps=1, moves="mixed", ensemble="grand", periodic=False)
    st = CubicState.initial(p, (2, 2, 2), np.random.SeedSequence(0))
    st.run(temperature_schedule(p))
