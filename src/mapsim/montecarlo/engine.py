"""Run Monte Carlo samples: initial state, sweeps with schedules, parallel samples.

Sample ``k`` of a run with seed ``s`` uses ``SeedSequence(s, spawn_key=(k,))``
alone (its first child places the particles, its second seeds the kernel's
xoshiro256** stream), so a dataset does not depend on the number of workers,
on whether a process pool or a Dask cluster ran the samples, or on a run being
interrupted and resumed from its partial directory (:mod:`.partial`).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from mapsim.errors import MapsimError
from mapsim.lattice import MC_CLASSES, Dataset
from mapsim.montecarlo import kernels as K
from mapsim.montecarlo.equilibration import equilibration_verdict, trace_sweeps
from mapsim.montecarlo.hamiltonian import Hamiltonian
from mapsim.montecarlo.params import (
    PROTOCOL_PRESETS,
    SimParams,
    has_schedule,
    mu_schedule,
    preset_params,
    temperature_schedule,
)
from mapsim.montecarlo.rng import sample_seed_sequence, xoshiro_state

if TYPE_CHECKING:
    from mapsim.montecarlo.partial import PartialRun

__all__ = ["LatticeState", "simulate", "run_sample", "check_size", "run_verdict", "HAMILTONIAN",
           "DASK_CONNECT_TIMEOUT"]

#: The Hamiltonian as recorded in the metadata of canonical runs (grand ones add ``+ mu_n*sum_i n_i``).
HAMILTONIAN = Hamiltonian().formula(with_mu_n=False)

#: Largest ``nl_cut`` of the kernels: every particle move non-local.
_ALL_NONLOCAL = 1 << 32

#: |ΔE| below ``TOL_REL * energy_scale`` counts as ΔE = 0 (only matters at T = 0).
TOL_REL = 1e-9

#: Seconds to wait for a Dask scheduler given by address.
DASK_CONNECT_TIMEOUT = 20


def check_size(height: int, width: int, periodic: bool) -> None:
    """Raise MapsimError unless the lattice size suits the boundary kind."""
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise MapsimError(f"lattice {name}: expected a positive integer, found {v!r}")
    if periodic and min(height, width) < 3:
        raise MapsimError(
            f"lattice size {height}x{width}: periodic boundaries need at least 3 sites per direction "
            "(use periodic=false for smaller lattices)")
    if height * width >= 2**31 - 1:
        raise MapsimError(f"lattice size {height}x{width}: too many sites (at most 2**31 - 2)")


@dataclass
class LatticeState:
    """The mutable state of one run, in the kernels' flat encoding.

    Attributes
    ----------
    params : SimParams
    height, width : int
    nbr : int32 array (N, 4)
        Neighbour table (:func:`kernels.neighbour_table`).
    state : uint8 array
        Site codes: without solvent the lattice-gas codes, shape (N,); with solvent
        0/1/2 plus the wall entry N, shape (N + 1,) (see :mod:`kernels`).
    pos : int32 array (n_particles,)
        Site of each particle (local moves of a canonical run; else a copy of ``order[:n]``
        after each :meth:`run`).
    rng : uint64 array (4,)
        xoshiro256** state.
    order, slot : int32 arrays (N,) or None
        Particles-first site order and its inverse, kept by the non-local and
        grand-canonical kernels (:func:`kernels.site_order`); made on their first use.
    counts : int64 array (8,)
        Attempts and accepted moves so far: local, non-local, insertion/removal, solvent flips
        (non-local and grand-canonical runs; local canonical runs count in :meth:`run`'s result).
    """

    params: SimParams
    height: int
    width: int
    nbr: np.ndarray
    state: np.ndarray
    pos: np.ndarray
    rng: np.ndarray
    order: np.ndarray | None = None
    slot: np.ndarray | None = None
    counts: np.ndarray = field(default_factory=lambda: np.zeros(8, np.int64))

    @property
    def general(self) -> bool:
        """Whether this run uses the non-local / grand-canonical kernels (else the paper's local ones)."""
        return self.params.moves != "local" or self.params.ensemble == "grand"

    @classmethod
    def from_grid(cls, grid: np.ndarray, params: SimParams, rng_state: np.ndarray) -> "LatticeState":
        """Wrap a given (H, W) grid of 0/1/2 states (2 only with solvent).

        Particles get ids in raster order.
        """
        g = np.asarray(grid)
        if g.ndim != 2:
            raise MapsimError(f"grid: expected shape (H, W), found {g.shape}")
        h, w = g.shape
        check_size(h, w, params.periodic)
        top = 2 if params.solvent else 1
        if g.dtype.kind not in "uib" or (g.size and (g.min() < 0 or g.max() > top)):
            raise MapsimError(f"grid: expected integer site states 0..{top}, found dtype {g.dtype} "
                              f"values {g.min()}..{g.max()}")
        flat = g.ravel().astype(np.uint8)
        nbr = K.neighbour_table(h, w, params.periodic)
        pos = np.flatnonzero(flat == K.PARTICLE).astype(np.int32)
        if params.solvent:
            state = np.empty(flat.size + 1, np.uint8)
            state[:-1] = flat
            state[-1] = K.WALL
        else:
            state = K.lg_encode(flat, nbr, w)
        return cls(params, h, w, nbr, state, pos, np.array(rng_state, np.uint64).copy())

    @classmethod
    def initial(cls, params: SimParams, height: int, width: int, ss: np.random.SeedSequence) -> "LatticeState":
        """Particles at uniformly random distinct sites; with solvent, every other site liquid."""
        check_size(height, width, params.periodic)
        init_ss, kernel_ss = ss.spawn(2)
        n = height * width
        n_part = params.n_particles(n)
        sites = np.random.default_rng(init_ss).permutation(n)[:n_part]
        grid = np.full(n, K.SOLVENT if params.solvent else K.EMPTY, np.uint8)
        grid[sites] = K.PARTICLE
        st = cls.from_grid(grid.reshape(height, width), params, xoshiro_state(kernel_ss))
        st.pos = sites.astype(np.int32)  # ids in placement order
        return st

    def grid(self, keep_solvent: bool | None = None) -> np.ndarray:
        """Current configuration as class ids, uint8 (H, W); solvent -> empty unless kept."""
        n = self.height * self.width
        if self.params.solvent:
            g = self.state[:n].copy()
            keep = self.params.keep_solvent if keep_solvent is None else keep_solvent
            if not keep:
                g[g == K.SOLVENT] = K.EMPTY
        else:
            g = self.state[:n] & np.uint8(1)
        return g.reshape(self.height, self.width)

    def run(self, T: np.ndarray, mu: np.ndarray | None = None, mobility: int | None = None) -> tuple[int, int]:
        """Run ``len(T)`` sweeps at the given per-sweep temperatures (and mu).

        Returns
        -------
        (accepted_flips, accepted_hops)
            Accepted particle moves count local hops and non-local jumps.
        """
        flips, hops, _ = self.run_traced(T, mu, np.array([0, len(T)]), mobility)
        return flips, hops

    def run_traced(self, T: np.ndarray, mu: np.ndarray | None, at: np.ndarray,
                   mobility: int | None = None) -> tuple[int, int, np.ndarray]:
        """Run ``len(T)`` sweeps, recording the energy terms after sweeps ``at``.

        Parameters
        ----------
        T, mu : float64 arrays (sweeps,)
            Temperature and solvent mu of each sweep (``mu`` None: the parameters' value).
        at : int array (n_points,)
            Increasing sweep counts from 0 to ``len(T)``; the terms are recorded after that many sweeps.
        mobility : int, optional
            Overrides the parameters' mobility.

        Returns
        -------
        accepted_flips, accepted_hops : int
        terms : int64 array (n_points, 5)
            Counts of :data:`mapsim.montecarlo.hamiltonian.TERMS` at each point
            (``Hamiltonian.energy_of_terms`` turns them into energies).
        """
        p = self.params
        T = np.ascontiguousarray(T, np.float64)
        mu = np.full(T.size, p.mu) if mu is None else np.ascontiguousarray(mu, np.float64)
        at = np.ascontiguousarray(at, np.int64)
        if at.size == 0 or at[0] != 0 or at[-1] != T.size or np.any(np.diff(at) < 0):
            raise ValueError(f"run_traced: at must rise from 0 to {T.size}, found {at.tolist()}")
        mob = p.mobility if mobility is None else int(mobility)
        tol = TOL_REL * p.energy_scale
        terms = np.zeros((at.size, 5), np.int64)
        dE_move = Hamiltonian.from_mapping(p).move_deltas(K._Z)
        if self.general:
            flips, hops = self._run_general(T, mu, at, mob, tol, terms)
        elif p.solvent:
            flips, hops = K.sv_run_traced(self.state, self.nbr, self.pos, dE_move, p.e_ll, p.e_nl, T, mu, at, mob,
                                          tol, self.rng, terms)
        else:
            flips, hops = 0, K.lg_run_traced(self.state, self.width, p.periodic, self.pos, dE_move, T, at, mob, tol,
                                             self.rng, terms)
        return int(flips), int(hops), terms

    def _run_general(self, T: np.ndarray, mu: np.ndarray, at: np.ndarray, mobility: int, tol: float,
                     terms: np.ndarray) -> tuple[int, int]:
        p = self.params
        if self.order is None:
            self.order, self.slot = K.site_order(self.pos, self.height * self.width)
        ham = Hamiltonian.from_mapping(p)
        nl_cut = {"local": 0, "nonlocal": _ALL_NONLOCAL,
                  "mixed": min(int(round(p.nonlocal_frac * _ALL_NONLOCAL)), _ALL_NONLOCAL)}[p.moves]
        before = self.counts.copy()
        n_part = K.general_run_traced(
            self.state, self.width, self.nbr, p.periodic, p.solvent, self.order, self.slot, self.pos.size,
            ham.move_deltas(K._Z), ham.insertion_deltas(K._Z), T, mu, at, p.e_ll, p.e_nl, mobility, nl_cut,
            p.ensemble == "grand", tol, self.rng, self.counts, terms)
        self.pos = self.order[:n_part].copy()
        d = self.counts - before
        return int(d[7]), int(d[1] + d[3])

    def energy(self, mu: float | None = None) -> float:
        """Energy of the current configuration (with ``mu`` in place of the parameters' value if given)."""
        terms = np.zeros(5, np.int64)
        if self.params.solvent:
            K.sv_terms(self.state, self.nbr, terms)
        else:
            K.lg_terms(self.state, self.pos, terms)
        return float(Hamiltonian.from_mapping(self.params).energy_of_terms(terms, mu))


def run_sample(params: SimParams, height: int, width: int, seed: int,
               k: int) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    """Simulate sample ``k`` of a run with ``seed``.

    Returns
    -------
    grid : uint8 array (H, W)
        Class ids (0 empty, 1 particle, 2 solvent if ``keep_solvent``).
    stats : dict
        Acceptance ratios: ``hop_acceptance`` (local particle moves), ``flip_acceptance``
        (with solvent), ``nonlocal_acceptance`` (moves nonlocal or mixed) and
        ``exchange_acceptance`` (ensemble grand).
    trace : float64 array (n_points,)
        Energy per site after each sweep of :func:`trace_sweeps` ``(sweeps, trace_points)``,
        with the mu of the sweep just run (of sweep 0 for the starting configuration).
        Recording reads the lattice between sweeps and draws no random numbers, so the
        configuration does not depend on ``trace_points``.
    """
    st = LatticeState.initial(params, height, width, sample_seed_sequence(seed, k))
    T_all, mu_all = temperature_schedule(params), mu_schedule(params)
    at = trace_sweeps(params.sweeps, params.trace_points)
    n_sites = height * width
    n_start = st.pos.size
    flips, hops, terms = st.run_traced(T_all, mu_all, at)
    mu_at = mu_all[np.maximum(at - 1, 0)] if params.sweeps else params.mu
    trace = Hamiltonian.from_mapping(params).energy_of_terms(terms, mu_at) / n_sites
    if st.general:
        stats = K.acceptance_ratios(params, st.counts)
    else:
        n_hop_attempts = params.sweeps * params.mobility * n_start  # local canonical hops keep the number
        stats = {"hop_acceptance": hops / n_hop_attempts if n_hop_attempts else 0.0}
    if params.solvent:
        n_flip = params.sweeps * n_sites
        stats["flip_acceptance"] = flips / n_flip if n_flip else 0.0
    return st.grid(), {key: float(v) for key, v in stats.items()}, trace


def _task(params_dict: dict, height: int, width: int, seed: int, k: int, depth: int | None = None):
    if depth is not None:
        from mapsim.montecarlo.cubic import run_sample_3d

        return k, *run_sample_3d(SimParams.from_dict(params_dict), (depth, height, width), seed, k)
    return k, *run_sample(SimParams.from_dict(params_dict), height, width, seed, k)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on a tiny lattice."""
    ss = np.random.SeedSequence(0)
    for solvent in (False, True):
        for extra in ({}, {"moves": "mixed", "ensemble": "grand"}):
            p = SimParams(e_nn=-1.0, e_ll=-1.0 if solvent else 0.0, e_nl=-1.0 if solvent else 0.0,
                          mu=1.0 if solvent else 0.0, density=0.3, sweeps=1, solvent=solvent, **extra)
            st = LatticeState.initial(p, 3, 3, ss)
            st.run(temperature_schedule(p), mu_schedule(p))


def corner_window(ds: Dataset, size: int) -> Dataset:
    """The corner window of side ``size`` of every sample of a simulated dataset, as open samples.

    A conserved-particle run fixes the density of its periodic box; the window of a larger
    box has the fluctuations of the material instead.  The metadata record the window as
    open (``params.periodic`` False) and the box it came from (``window_of_box``).

    Parameters
    ----------
    ds : Dataset
        Grids (n, H, W) or (n, D, H, W) from :func:`simulate`, every side at least ``size``.
    size : int

    Returns
    -------
    Dataset
        Grids (n, size, size) or (n, size, size, size).
    """
    ndim = ds.grids.ndim - 1
    params = ds.metadata.get("params", {})
    axes = {"rows": [0, size], "cols": [0, size], **({"planes": [0, size]} if ndim == 3 else {})}
    meta = dict(ds.metadata, height=size, width=size, **({"depth": size} if ndim == 3 else {}),
                params={**params, "periodic": False},
                window_of_box={"box": list(ds.grids.shape[1:]), "box_periodic": bool(params.get("periodic", True)),
                               **axes})
    return Dataset(np.ascontiguousarray(ds.grids[(slice(None),) + (slice(0, size),) * ndim]), ds.classes, meta)


def simulate(
    params_or_preset: SimParams | str,
    n_samples: int,
    height: int,
    width: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], object] | None = None,
    *,
    preset: str | None = None,
    dask: Any = None,
    checkpoint: str | Path | PartialRun | None = None,
    depth: int | None = None,
) -> Dataset:
    """Independent Monte Carlo samples, in parallel processes or on a Dask cluster.

    Parameters
    ----------
    params_or_preset : SimParams or str
        Parameters, or the name of a preset in :data:`PRESETS` (with its defaults).
    n_samples : int, >= 1
    height, width : int
        Lattice size; ``width`` defaults to ``height``.
    seed : int, >= 0
        Sample ``k`` depends only on ``(seed, k)``.
    workers : int, optional
        Worker processes (default ``os.cpu_count()``); 1 runs in this process.
        The output does not depend on it.
    progress : callable, optional
        Called with 1 each time a sample finishes (e.g. a tqdm bar's ``update``);
        samples taken from ``checkpoint`` are reported once at the start.
    preset : str, optional
        Preset name to record in the metadata when ``params_or_preset`` is a
        SimParams derived from it.
    dask : str or distributed.Client, optional
        Run the samples on this Dask cluster (scheduler address such as
        ``tcp://host:8786``, or a connected client) instead of local processes;
        ``workers`` is then ignored. The workers need mapsim installed. Results come
        back to this process, which stores them.
    checkpoint : path-like or PartialRun, optional
        Directory for per-sample files written as samples finish; samples already
        there from an interrupted run with the same parameters, seed and size are
        reused instead of run again (other settings: MapsimError). The caller
        removes it (``PartialRun.remove``) once the dataset is saved.
    depth : int, optional
        Simulate on a ``depth x height x width`` simple cubic lattice (6 neighbours;
        :mod:`mapsim.montecarlo.cubic`; particle-only systems); None: the square lattice.

    Returns
    -------
    Dataset
        ``grids`` uint8 (n_samples, H, W) (with ``depth``: (n_samples, D, H, W)); classes ``("empty", "particle")``, or
        ``("empty", "particle", "solvent")`` with ``keep_solvent``; metadata with the
        generator, every parameter, seed, size, package version, ``trace_sweeps`` (list of
        n_points sweep numbers) and ``equilibration`` (:func:`run_verdict` as a dict, or None);
        extra array ``energy_trace`` float64 (n_samples, n_points), the energy per site of
        each sample at those sweeps (:func:`run_sample`).
    """
    from mapsim import __version__

    if isinstance(params_or_preset, str):
        preset = params_or_preset
        params = preset_params(params_or_preset)
    elif isinstance(params_or_preset, SimParams):
        params = params_or_preset
    else:
        raise MapsimError(f"simulate: expected SimParams or a preset name, found {type(params_or_preset).__name__}")
    width = height if width is None else width
    if depth is not None:
        from mapsim.montecarlo.cubic import check_params_3d, check_size_3d

        check_params_3d(params)
        check_size_3d(depth, height, width, params.periodic)
        depth = int(depth)
    else:
        check_size(height, width, params.periodic)
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise MapsimError(f"number of samples: expected a positive integer, found {n_samples!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise MapsimError(f"seed: expected a non-negative integer, found {seed!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise MapsimError(f"workers: expected a positive integer, found {workers!r}")
    workers = int(workers)

    shape = (height, width) if depth is None else (depth, height, width)
    grids = np.empty((n_samples, *shape), np.uint8)
    at = trace_sweeps(params.sweeps, params.trace_points)
    traces = np.empty((n_samples, at.size))
    stats: list[dict[str, float]] = [{}] * n_samples
    store = None
    if checkpoint is not None:
        from mapsim.montecarlo.partial import PartialRun, run_key

        key = run_key(params.to_dict(), int(seed), int(height), int(width), depth)
        store = checkpoint if isinstance(checkpoint, PartialRun) else PartialRun(checkpoint, key)
        if not store.matches(key):
            raise MapsimError(f"{store.path}: partial run opened for other settings than this simulation")
        done = store.load(n_samples)
        for k, (g, s, t) in done.items():
            grids[k], stats[k], traces[k] = g, s, t
        if done and progress is not None:
            progress(len(done))
        todo = [k for k in range(n_samples) if k not in done]
    else:
        todo = list(range(n_samples))

    def finish(k: int, g: np.ndarray, s: dict[str, float], t: np.ndarray) -> None:
        grids[k], stats[k], traces[k] = g, s, t
        if store is not None:
            store.put(k, g, s, t)
        if progress is not None:
            progress(1)

    if todo and dask is not None:
        _run_dask(dask, params, height, width, int(seed), todo, finish, depth)
    elif todo:
        if depth is None:
            warm_up()  # compile once here so worker processes load the kernels from numba's cache
        else:
            from mapsim.montecarlo.cubic import warm_up_3d

            warm_up_3d()
        workers = min(workers, len(todo))
        if workers == 1:
            for k in todo:
                finish(*_task(params.to_dict(), height, width, int(seed), k, depth))
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_task, params.to_dict(), height, width, int(seed), k, depth) for k in todo]
                try:
                    for fut in cf.as_completed(futures):
                        finish(*fut.result())
                except BaseException:  # e.g. Ctrl-C: drop queued samples instead of finishing them
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise

    classes = MC_CLASSES if params.keep_solvent else MC_CLASSES[:2]
    metadata = {
        "generator": "mapsim.montecarlo",
        "preset": preset,
        "params": params.to_dict(),
        "seed": int(seed),
        "height": int(height),
        "width": int(width),
        **({} if depth is None else {"depth": depth, "lattice": "simple cubic, 6 neighbours"}),
        "n_samples": int(n_samples),
        "mapsim_version": __version__,
        "hamiltonian": HAMILTONIAN if params.ensemble == "canonical" else Hamiltonian().formula(with_mu_n=True),
        "acceptance": {key: float(np.mean([s[key] for s in stats])) for key in stats[0]},
        "trace_sweeps": at.tolist(),
    }
    verdict = run_verdict(params, preset, traces, at)
    metadata["equilibration"] = None if verdict is None else verdict.to_dict()
    return Dataset(grids, classes, metadata, {"energy_trace": traces})


def run_verdict(params: SimParams, preset: str | None, trace: np.ndarray, sweeps_at: np.ndarray):
    """The equilibration verdict of a run, or None for runs that are not meant to be stationary.

    Runs with a schedule (annealing, a mu ramp) and runs of a protocol preset
    (:data:`~mapsim.montecarlo.params.PROTOCOL_PRESETS`) get None.

    Parameters
    ----------
    params : SimParams
    preset : str or None
    trace : ndarray, shape (n_samples, n_points)
    sweeps_at : ndarray of int, shape (n_points,)

    Returns
    -------
    mapsim.montecarlo.equilibration.Verdict or None
    """
    if preset in PROTOCOL_PRESETS or has_schedule(params):
        return None
    return equilibration_verdict(trace, sweeps_at, moves=params.moves)


def _run_dask(dask: Any, params: SimParams, height: int, width: int, seed: int, todo: list[int],
              finish: Callable[[int, np.ndarray, dict, np.ndarray], None], depth: int | None = None) -> None:
    """Run samples ``todo`` on a Dask cluster, handing each result to ``finish`` as it arrives."""
    from mapsim.cluster import run_tasks

    p = params.to_dict()
    args = [(p, height, width, seed, k, depth) for k in todo]
    for k, g, s, t in run_tasks(dask, _task, args, timeout=DASK_CONNECT_TIMEOUT):
        finish(k, np.asarray(g, np.uint8), s, np.asarray(t, np.float64))
