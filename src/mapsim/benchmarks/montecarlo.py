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

The headline figures are wall-clock; ``*_cpu*`` twins use this process's CPU
time, which is the better single-core figure on a machine shared with other
work. ``load_average_1min`` is reported so that a busy machine can be recognised.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mapsim.cli.common import finite_float, positive_int


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
    from mapsim.montecarlo.params import SimParams, preset_params

    warm_up()
    size = args.size
    if size % 4:
        from mapsim.errors import MapsimError

        raise MapsimError(f"--size {size}: expected a multiple of 4 (the NumPy reference uses 4x2 bond sublattices)")
    p = SimParams(e_nn=args.e_nn, T=args.T, density=args.density, sweeps=0)
    st = LatticeState.initial(p, size, size, np.random.SeedSequence(12345))
    hi, lo = K.acceptance_tables(K.lg_delta_table(p.e_nn), p.T, 1e-9 * p.energy_scale)
    n_part = st.pos.size
    K.lg_hop_attempts(st.state, size, True, st.pos, hi, lo, 20 * n_part, st.rng)  # equilibrate a little
    acc = [0]

    def numba_run():
        acc[0] = K.lg_hop_attempts(st.state, size, True, st.pos, hi, lo, args.attempts, st.rng)

    t_numba, c_numba = _best(numba_run, args.repeats)
    numba_rate = args.attempts / t_numba

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
    result["load_average_1min"] = os.getloadavg()[0]
    result["cpu_count"] = os.cpu_count()
    return result
