"""``mapsim bench montecarlo``: single-core speed of the Monte Carlo kernels.

Figures (best of ``--repeats`` timings, numba compile time excluded by a warm-up):

``lattice_gas_updates_per_s``
    Attempted particle hops per second of the numba kernel, lattice gas at
    ``--size``² (default 256²), density 0.5, T = 3, e_nn = -4, periodic.
``numpy_updates_per_s``, ``ratio_vs_numpy``
    The same system with a straightforward vectorised NumPy implementation
    (:func:`numpy_lattice_gas_sweep`), measured in the same run.
``drying_128_seconds``
    Wall time of one 128² sample of the ``drying`` preset with its defaults.
``nonlocal_updates_per_s``, ``nonlocal_ratio_vs_local``
    Attempted non-local jumps per second (``moves=nonlocal``) on the same lattice gas,
    beside ``lattice_gas_updates_per_s`` (local hops) of the same run (``*_cpu`` twins
    from CPU time).

Equilibrium figures (``--skip-equilibration`` leaves them out), for the 2D Ising model
through the lattice gas (e_nn = -4, J = 1) at ``--equil-size``² (default 128²), with
``--equil-samples`` independent chains (default 32), against Onsager's and Yang's exact results:

``equilibration_sweeps_local``, ``equilibration_sweeps_default``
    Sweeps until the ensemble-mean Ising energy u (mean over chains at one trace point) first
    lies within max(0.3 %, 3 SE) of the exact value at T = 3, density 1/2; local hops against
    the ``lattice-gas`` preset's move set. A local run that has not got there by
    ``--equil-cap`` sweeps reports the cap with ``equilibration_sweeps_local_is_lower_bound``.
``default_u``, ``default_u_se_rel``, ``default_u_error_rel``
    The default move set after 500 sweeps: u averaged over chains and the last half of the
    traces, its standard error and its error relative to the exact value.
``grand_T3_*``, ``grand_T2_*``
    The same for grand-canonical runs at mu_n = 8 (field-free) at T = 3 and, from a full
    lattice, at T = 2 with the mean |m| of the final samples against Yang's value.
``verdict_local_1000``, ``verdict_default``
    The equilibration verdicts of 16 local samples after 1000 sweeps (the run of issue 12)
    and of the default run.

The headline figures are wall-clock; ``*_cpu*`` twins use this process's CPU
time, which is the better single-core figure on a machine shared with other
work. ``load_average_1min`` is reported so that a busy machine can be recognised.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mapsim.argtypes import finite_float, positive_int
from mapsim.errors import MapsimError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=positive_int, default=256, help="lattice-gas side length, a multiple of 4 (default 256)")
    parser.add_argument("--density", type=finite_float, default=0.5, help="lattice-gas density (default 0.5)")
    parser.add_argument("--T", type=finite_float, default=3.0, help="lattice-gas temperature (default 3)")
    parser.add_argument("--e-nn", type=finite_float, default=-4.0, help="lattice-gas coupling e_nn (default -4)")
    parser.add_argument("--attempts", type=positive_int, default=50_000_000,
                        help="hop attempts per numba timing (default 5e7)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timings per figure; the best is kept (default 3)")
    parser.add_argument("--drying-size", type=positive_int, default=128, help="side of the drying sample (default 128)")
    parser.add_argument("--skip-drying", action="store_true", help="skip the drying figure")
    parser.add_argument("--skip-equilibration", action="store_true", help="skip the equilibrium (Onsager) figures")
    parser.add_argument("--equil-size", type=positive_int, default=128, help="side of the equilibrium runs (default 128)")
    parser.add_argument("--equil-samples", type=positive_int, default=32,
                        help="chains per equilibrium run (default 32)")
    parser.add_argument("--equil-cap", type=positive_int, default=20000,
                        help="most sweeps of the local equilibration run (default 20000)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes for the equilibrium runs (default: all cores); speed figures use one core")


# ---------------------------------------------------------------------------
# the NumPy reference implementation


class NumpyLatticeGas:
    """Vectorised NumPy lattice gas: Kawasaki exchanges on non-interacting bond sublattices.

    A hop across bond (s, t) changes the energy through the neighbours of s and
    t only, so bonds of one orientation whose sites are 4 apart along the bond
    and 2 apart across it do not interact and can be updated at once: 16 bond
    sublattices (2 orientations x 4 x 2 offsets) cover every bond once per sweep.
    Each update is a Metropolis exchange across a bond (symmetric proposal), so
    the Boltzmann distribution is preserved. Attempted hops are counted as the
    numba kernel counts them: one per (particle, direction) considered, a hop
    onto an occupied site counting as rejected; a bond holding one particle is
    one attempt, two particles two. A sweep so makes about ``4 * n_particles``
    attempts (exactly that if no particle moved during the sweep).

    Parameters
    ----------
    occupied : bool array (H, W), H and W multiples of 4
    e_nn, T : float
    seed : int or Generator
    """

    def __init__(self, occupied: np.ndarray, e_nn: float, T: float, seed=0) -> None:
        h, w = occupied.shape
        if h % 4 or w % 4:
            raise ValueError(f"NumpyLatticeGas needs sides that are multiples of 4, found {h}x{w}")
        self.occ = occupied.astype(np.int8).ravel()
        self.e_nn, self.T = float(e_nn), float(T)
        self.rng = np.random.default_rng(seed)
        y, x = np.divmod(np.arange(h * w), w)
        self.nbr = np.stack([((y - 1) % h) * w + x, ((y + 1) % h) * w + x,
                             y * w + (x - 1) % w, y * w + (x + 1) % w], axis=1)
        self.bonds = []  # (s, t) flat index arrays of each sublattice
        for horizontal in (True, False):
            for a in range(4):  # offset along the bond
                for b in range(2):  # offset across the bond
                    if horizontal:
                        sel = (x % 4 == a) & (y % 2 == b)
                        s = np.flatnonzero(sel)
                        t = self.nbr[s, 3]
                    else:
                        sel = (y % 4 == a) & (x % 2 == b)
                        s = np.flatnonzero(sel)
                        t = self.nbr[s, 1]
                    self.bonds.append((s, t))

    def sweep(self) -> int:
        """One sweep over all bonds; returns the number of attempted hops (about 4 per particle)."""
        occ, nbr = self.occ, self.nbr
        attempts = 0
        for s, t in self.bonds:
            ns, nt = occ[s], occ[t]
            attempts += int(ns.sum()) + int(nt.sum())
            one = ns != nt
            src = np.where(ns[one] == 1, s[one], t[one])
            dst = np.where(ns[one] == 1, t[one], s[one])
            m_src = occ[nbr[src]].sum(axis=1)
            m_dst = occ[nbr[dst]].sum(axis=1) - 1  # the mover itself is a neighbour of dst
            dE = self.e_nn * (m_dst - m_src)
            if self.T > 0:
                acc = self.rng.random(dE.size) < np.exp(-np.maximum(dE, 0.0) / self.T)
            else:
                acc = dE <= 0
            occ[src[acc]] = 0
            occ[dst[acc]] = 1
        return attempts


# ---------------------------------------------------------------------------


def _best(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and best CPU time (this process) of ``repeats`` calls of ``fn``."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def run(args: argparse.Namespace) -> dict:
    from mapsim.montecarlo import kernels as K
    from mapsim.montecarlo.engine import LatticeState, run_sample, warm_up
    from mapsim.montecarlo.hamiltonian import Hamiltonian
    from mapsim.montecarlo.params import SimParams, preset_params

    warm_up()
    size = args.size
    if size % 4:
        raise MapsimError(f"--size {size}: expected a multiple of 4 (the NumPy reference uses 4x2 bond sublattices)")
    p = SimParams(e_nn=args.e_nn, T=args.T, density=args.density, sweeps=0)
    st = LatticeState.initial(p, size, size, np.random.SeedSequence(12345))
    hi, lo = K.acceptance_tables(K.lg_delta_table(Hamiltonian(e_nn=p.e_nn).move_deltas(4)), p.T,
                                 1e-9 * p.energy_scale)
    n_part = st.pos.size
    K.lg_hop_attempts(st.state, size, True, st.pos, hi, lo, 20 * n_part, st.rng)  # equilibrate a little
    acc = [0]

    def numba_run():
        acc[0] = K.lg_hop_attempts(st.state, size, True, st.pos, hi, lo, args.attempts, st.rng)

    t_numba, c_numba = _best(numba_run, args.repeats)
    numba_rate = args.attempts / t_numba

    # non-local jumps on a copy of the same lattice, timed in this run beside the local hops
    nl_state, nl_pos = st.state.copy(), st.pos.copy()
    order, slot = K.site_order(nl_pos, size * size)
    nl_hi, nl_lo = K.acceptance_tables(Hamiltonian(e_nn=p.e_nn).move_deltas(4), p.T, 1e-9 * p.energy_scale)
    nl_counts = np.zeros(8, np.int64)

    def nonlocal_run():
        K.lg_particle_moves(nl_state, size, True, order, slot, n_part, nl_hi, nl_lo, 1 << 32, args.attempts,
                            st.rng, nl_counts)

    t_nl, c_nl = _best(nonlocal_run, args.repeats)

    occ = (st.state[: size * size] & 1).reshape(size, size).astype(bool)
    ref = NumpyLatticeGas(occ, p.e_nn, p.T, seed=1)
    ref.sweep()
    np_rates, np_cpu_rates = [], []
    for _ in range(args.repeats):
        attempts, c0, t0 = 0, time.process_time(), time.perf_counter()
        while True:
            attempts += ref.sweep()
            dt = time.perf_counter() - t0
            if dt > 0.5:
                break
        np_rates.append(attempts / dt)
        np_cpu_rates.append(attempts / max(time.process_time() - c0, 1e-9))
    numpy_rate = max(np_rates)

    result = {
        "lattice_gas_updates_per_s": numba_rate,
        "numpy_updates_per_s": numpy_rate,
        "ratio_vs_numpy": numba_rate / numpy_rate,
        "lattice_gas_updates_per_cpu_s": args.attempts / c_numba,
        "numpy_updates_per_cpu_s": max(np_cpu_rates),
        "ratio_vs_numpy_cpu": args.attempts / c_numba / max(np_cpu_rates),
        "lattice_gas_acceptance": acc[0] / args.attempts,
        "nonlocal_updates_per_s": args.attempts / t_nl,
        "nonlocal_ratio_vs_local": (args.attempts / t_nl) / numba_rate,
        "nonlocal_updates_per_cpu_s": args.attempts / c_nl,
        "nonlocal_ratio_vs_local_cpu": c_numba / c_nl,
        "nonlocal_acceptance": float(nl_counts[3] / max(nl_counts[2], 1)),
        "lattice_gas": f"{size}x{size}, density {args.density}, T {args.T}, e_nn {args.e_nn}, periodic, {n_part} particles",
    }
    if not args.skip_drying:
        dp = preset_params("drying")
        n = args.drying_size
        wall, cpu = _best(lambda: run_sample(dp, n, n, 0, 0), 1)
        key = "drying_128_seconds" if n == 128 else f"drying_{n}_seconds"
        result[key] = wall
        result[key.replace("_seconds", "_cpu_seconds")] = cpu
        result["drying"] = f"{n}x{n}, preset defaults ({dp.sweeps} sweeps, mobility {dp.mobility})"
    if not args.skip_equilibration:
        result.update(equilibrium_figures(args.equil_size, args.equil_samples, args.equil_cap, args.workers))
    result["load_average_1min"] = os.getloadavg()[0]
    result["cpu_count"] = os.cpu_count()
    return result


# ---------------------------------------------------------------------------
# equilibrium figures against the exact 2D Ising results


def _ising_run(size: int, n: int, T: float, sweeps: int, workers: int | None, seed: int, **over):
    """Lattice gas with e_nn = -4 (J = 1); returns (params, dataset, u per chain and trace point)."""
    from mapsim.montecarlo import preset_params, simulate

    p = preset_params("lattice-gas", {"e_nn": -4, "T": T, "sweeps": sweeps, **over})
    ds = simulate(p, n, size, seed=seed, workers=workers)
    # canonical at density 1/2 and grand canonical at mu_n = -2 e_nn: u = H/N - e_nn/2 - mu_n/2 (the m terms cancel)
    return p, ds, ds.extras["energy_trace"] + 2.0 - p.mu_n / 2


def _last_half_mean(ds, u: np.ndarray) -> tuple[float, float]:
    """Mean over chains and the last half of the trace, and its standard error (over chains)."""
    at = np.asarray(ds.metadata["trace_sweeps"])
    per_chain = u[:, at >= at[-1] / 2].mean(axis=1)
    return float(per_chain.mean()), float(per_chain.std(ddof=1) / np.sqrt(per_chain.size))


def _entry_sweep(ds, u: np.ndarray, exact: float) -> int | None:
    """First trace sweep where the mean over chains lies within max(0.3 %, 3 SE) of ``exact``."""
    at = np.asarray(ds.metadata["trace_sweeps"])
    mean = u.mean(axis=0)
    se = u.std(axis=0, ddof=1) / np.sqrt(u.shape[0])
    ok = np.abs(mean - exact) <= np.maximum(0.003 * abs(exact), 3 * se)
    return int(at[np.argmax(ok)]) if ok.any() else None


def equilibrium_figures(size: int, n: int, cap: int, workers: int | None) -> dict:
    """The equilibrium figures of the module docstring (seconds of wall time each are reported too)."""
    from mapsim.montecarlo.exact import onsager_energy, yang_magnetisation

    if n < 2:
        raise MapsimError(f"--equil-samples {n}: expected at least 2 chains (standard errors)")
    u3, u2 = onsager_energy(3.0), onsager_energy(2.0)
    out: dict = {"equilibrium": f"{size}x{size} lattice gas, e_nn=-4 (Ising J=1), {n} chains; exact u(3) = {u3:.5f}, "
                                f"u(2) = {u2:.5f}, |m|(2) = {yang_magnetisation(2.0):.5f}"}
    t0 = time.perf_counter()
    p, ds, u = _ising_run(size, n, 3.0, cap, workers, 1, moves="local", trace_points=min(cap, 400))
    entry = _entry_sweep(ds, u, u3)
    out["equilibration_sweeps_local"] = cap if entry is None else entry
    out["equilibration_sweeps_local_is_lower_bound"] = entry is None
    out["local_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    p, ds, u = _ising_run(size, n, 3.0, 500, workers, 2, trace_points=500)
    entry = _entry_sweep(ds, u, u3)
    out["equilibration_sweeps_default"] = entry
    mean, se = _last_half_mean(ds, u)
    out.update(default_moves=f"{p.moves}, nonlocal_frac {p.nonlocal_frac:g}, 500 sweeps", default_u=mean,
               default_u_se_rel=se / abs(u3), default_u_error_rel=mean / u3 - 1,
               default_u_within_target=abs(mean - u3) <= max(0.003 * abs(u3), 3 * se),
               verdict_default=ds.metadata["equilibration"], default_seconds=time.perf_counter() - t0)

    _, ds, _ = _ising_run(size, 16, 3.0, 1000, workers, 1, moves="local")
    out["verdict_local_1000"] = ds.metadata["equilibration"]

    for key, T, over in (("grand_T3", 3.0, {}), ("grand_T2", 2.0, {"start_density": 1.0})):
        t0 = time.perf_counter()
        _, ds, u = _ising_run(size, n, T, 500, workers, 3, ensemble="grand", mu_n=8.0, **over)
        mean, se = _last_half_mean(ds, u)
        exact = onsager_energy(T)
        m = np.abs(2 * ds.grids.mean(axis=(1, 2)) - 1)
        out.update({f"{key}_u": mean, f"{key}_u_se_rel": se / abs(exact), f"{key}_u_error_rel": mean / exact - 1,
                    f"{key}_abs_m": float(m.mean()), f"{key}_abs_m_se": float(m.std(ddof=1) / np.sqrt(n)),
                    f"{key}_abs_m_exact": yang_magnetisation(T), f"{key}_seconds": time.perf_counter() - t0})
    return out
