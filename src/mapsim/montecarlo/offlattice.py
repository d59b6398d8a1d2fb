"""Off-lattice Monte Carlo of 2-D particle systems in a periodic square box (numba).

Systems (presets)
-----------------
``hard-disks``  diameter σ = 1; any overlap is forbidden (T plays no role).
``lj-liquid``   Lennard-Jones, u(r) = 4ε[(σ/r)^12 − (σ/r)^6] − u(r_c), cut and shifted at
                r_c = 2.5 σ (ε = σ = 1); default ρ = 0.75, T = 1.0 (a dense liquid).
``lj-mixture``  two species L (large) and S (small) with the Kob–Andersen parameters
                (ε_LS = 1.5, ε_SS = 0.5, σ_LS = 0.8, σ_SS = 0.88, cut at 2.5 σ_ab, shifted),
                fraction ``x_small`` = 0.35 of small particles; default ρ = 1.0, T = 1.0, 3000
                sweeps (at Kob–Andersen's ρ = 1.2 the 2-D mixture is too slow to equilibrate here).

Lengths are in units of σ (σ_LL for the mixture), energies in ε, k_B = 1.

Moves
-----
A sweep is N single-particle displacement attempts: a uniformly chosen particle moves by a
vector uniform in [−δ, δ]², accepted with min(1, exp(−ΔU/T)) (hard disks: accepted iff no
overlap). During the first half of ``sweeps`` δ is tuned every 10 sweeps towards 40 %
acceptance (this breaks detailed balance, so only the second half, run with δ fixed, is the
sample's equilibration that counts); the state after the last sweep is the sample. Neighbours
come from a cell list (cells at least the largest cut-off wide), kept up to date move by move.

Random numbers
--------------
Each sample owns a xoshiro256** stream seeded from ``(seed, k)``
(:func:`mapsim.montecarlo.rng.sample_seed_sequence`), so sample k is the same however many
samples are run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import numpy as np
from numba import njit

from mapsim.errors import MapsimError
from mapsim.montecarlo.rng import sample_seed_sequence, xoshiro_next, xoshiro_state

__all__ = [
    "OffLatticeParams", "OFFLATTICE_PRESETS", "OFFLATTICE_DESCRIPTIONS", "OFFLATTICE_HELP", "offlattice_params",
    "OffLatticeResult", "simulate_offlattice", "potential_energy", "pair_tables", "hard_disk_contact_pressure",
    "henderson_hard_disk_z", "santos_hard_disk_z", "to_dataset", "run_sample",
]


@dataclass
class OffLatticeParams:
    """Parameters of one off-lattice run (flat, typed; stored in every output's metadata).

    Attributes
    ----------
    system : {"hard-disks", "lj", "lj-mixture"}
    atoms : int
        Particles per sample (N).
    density : float
        Number density N / L² (σ⁻²).
    T : float
        Temperature (ε / k_B); ignored by hard disks.
    sweeps : int
        Sweeps per sample (N attempts each); δ is tuned during the first half.
    delta : float
        Starting maximum displacement (σ).
    r_cut : float
        Cut-off in units of σ_ab (LJ).
    x_small : float
        Fraction of small particles (mixture).
    eps_ls, eps_ss, sig_ls, sig_ss : float
        Mixture interactions relative to ε_LL = σ_LL = 1.
    """

    system: str = "lj"
    atoms: int = 256
    density: float = 0.75
    T: float = 1.0
    sweeps: int = 2000
    delta: float = 0.15
    r_cut: float = 2.5
    x_small: float = 0.35
    eps_ls: float = 1.5
    eps_ss: float = 0.5
    sig_ls: float = 0.8
    sig_ss: float = 0.88

    def validate(self) -> "OffLatticeParams":
        """Check ranges; raise a MapsimError naming the parameter."""
        if self.system not in _SYSTEMS:
            raise MapsimError(f"system {self.system!r}: expected one of {list(_SYSTEMS)}")
        if self.atoms < 2:
            raise MapsimError(f"--atoms {self.atoms}: expected at least 2 particles")
        for name in ("density", "T", "delta", "r_cut", "eps_ls", "eps_ss", "sig_ls", "sig_ss"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise MapsimError(f"--set {name}={v}: expected a positive number")
        if self.sweeps < 2:
            raise MapsimError(f"--set sweeps={self.sweeps}: expected at least 2")
        if not 0.0 <= self.x_small < 1.0:
            raise MapsimError(f"--set x_small={self.x_small}: expected a fraction in [0, 1)")
        if self.system == "hard-disks":
            eta = math.pi / 4 * self.density
            if eta >= 0.72:
                raise MapsimError(f"--set density={self.density}: packing fraction {eta:.3f} is too high for "
                                  "hard disks (the square start packs at most 0.785; keep it below 0.72)")
        if self.box < 3 * max(self.r_cut * self._sig_max(), 1.0) and self.system != "hard-disks":
            raise MapsimError(f"--atoms {self.atoms} at density {self.density:g}: box side {self.box:.3g} σ is "
                              f"less than 3 cut-offs ({3 * self.r_cut * self._sig_max():.3g} σ); use more atoms")
        if self.system == "hard-disks" and self.box < 3.0:
            raise MapsimError(f"--atoms {self.atoms}: box side {self.box:.3g} σ is less than 3 σ; use more atoms")
        return self

    def _sig_max(self) -> float:
        return max(1.0, self.sig_ls, self.sig_ss) if self.system == "lj-mixture" else 1.0

    @property
    def box(self) -> float:
        """Box side L = sqrt(N / ρ) (σ)."""
        return math.sqrt(self.atoms / self.density)

    @property
    def classes(self) -> tuple[str, ...]:
        """Dataset class names."""
        return ("empty", "large", "small") if self.system == "lj-mixture" else ("empty", "particle")

    @property
    def species_map(self) -> dict[str, str]:
        """Chemical symbols used for structure files -> class names."""
        return {"Ar": "large", "Ne": "small"} if self.system == "lj-mixture" else {"Ar": "particle"}


_SYSTEMS = ("hard-disks", "lj", "lj-mixture")

OFFLATTICE_PRESETS: dict[str, OffLatticeParams] = {
    "hard-disks": OffLatticeParams(system="hard-disks", density=4 * 0.5 / math.pi, T=1.0, sweeps=2000, delta=0.1),
    "lj-liquid": OffLatticeParams(system="lj", density=0.75, T=1.0, sweeps=2000, delta=0.15),
    # Kob-Andersen's 3D state point rho = 1.2 is glassy in 2D: at T = 1 the energy still drifts after
    # 8000 sweeps (tau ~ 300 sweeps); at rho = 1.0 it settles within ~1000 sweeps (tau ~ 40 sweeps)
    "lj-mixture": OffLatticeParams(system="lj-mixture", density=1.0, T=1.0, sweeps=3000, delta=0.1),
}
"""Off-lattice presets for ``mapsim simulate``."""

OFFLATTICE_DESCRIPTIONS = {
    "hard-disks": "off-lattice hard disks (σ = 1), packing fraction 0.5 (density 0.637)",
    "lj-liquid": "off-lattice Lennard-Jones liquid, cut 2.5 σ and shifted, ρ = 0.75, T = 1.0",
    "lj-mixture": "off-lattice Kob-Andersen LJ mixture (35 % small), ρ = 1.0, T = 1.0",
}

OFFLATTICE_HELP = {
    "atoms": "particles per sample (also --atoms N)",
    "density": "number density N / L² (σ⁻²)",
    "T": "temperature (ε / k_B; hard disks ignore it)",
    "sweeps": "sweeps per sample, N attempts each (δ tuned in the first half)",
    "delta": "starting maximum displacement (σ)",
    "r_cut": "LJ cut-off in units of σ_ab (potential shifted to 0 there)",
    "x_small": "mixture: fraction of small particles",
    "eps_ls": "mixture: ε between large and small (ε_LL = 1)",
    "eps_ss": "mixture: ε between small particles",
    "sig_ls": "mixture: σ between large and small (σ_LL = 1)",
    "sig_ss": "mixture: σ between small particles",
}


def offlattice_params(preset: str, overrides: Mapping[str, Any] | None = None) -> OffLatticeParams:
    """A preset's parameters with ``overrides`` (name -> value, strings converted) applied, validated."""
    if preset not in OFFLATTICE_PRESETS:
        raise MapsimError(f"unknown off-lattice preset {preset!r}; expected one of {list(OFFLATTICE_PRESETS)}")
    p = OffLatticeParams(**asdict(OFFLATTICE_PRESETS[preset]))
    types = {f.name: f.type for f in fields(OffLatticeParams)}
    for name, value in (overrides or {}).items():
        if name not in types or name == "system":
            raise MapsimError(f"--set {name}: not a parameter of {preset!r}; expected one of "
                              f"{[n for n in types if n != 'system']}")
        conv = int if types[name] in (int, "int") else float
        try:
            v = conv(value) if not isinstance(value, bool) else None
            if v is None:
                raise ValueError
        except (TypeError, ValueError):
            raise MapsimError(f"--set {name}={value!r}: expected {'an integer' if conv is int else 'a number'}") from None
        setattr(p, name, v)
    return p.validate()


def pair_tables(p: OffLatticeParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per type pair: 4ε (2, 2), σ² (2, 2), r_c² (2, 2) and the shift u_LJ(r_c) (2, 2).

    Hard disks use σ² only (overlap distance); type 1 is the small species of the mixture.
    """
    if p.system == "lj-mixture":
        eps = np.array([[1.0, p.eps_ls], [p.eps_ls, p.eps_ss]])
        sig = np.array([[1.0, p.sig_ls], [p.sig_ls, p.sig_ss]])
    else:
        eps, sig = np.ones((2, 2)), np.ones((2, 2))
    rc = p.r_cut * sig if p.system != "hard-disks" else sig
    sr6 = (sig / rc) ** 6
    shift = 4 * eps * (sr6 * sr6 - sr6) if p.system != "hard-disks" else np.zeros((2, 2))
    return 4 * eps, sig ** 2, rc ** 2, shift


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------

_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(inline="always", cache=True)
def _cell_xy(x, y, nc, cs):
    """Cell column and row of a position in [0, L)² (the last cell takes rounding at L)."""
    return min(int(x / cs), nc - 1), min(int(y / cs), nc - 1)


@njit(cache=True)
def _cell_index(x, y, nc, cs):
    cx, cy = _cell_xy(x, y, nc, cs)
    return cy * nc + cx


@njit(cache=True)
def _build_cells(pos, nc, cs, cap):
    n = pos.shape[0]
    cells = np.full((nc * nc, cap), -1, np.int64)
    counts = np.zeros(nc * nc, np.int64)
    cell_of = np.empty(n, np.int64)
    slot_of = np.empty(n, np.int64)
    for i in range(n):
        c = _cell_index(pos[i, 0], pos[i, 1], nc, cs)
        if counts[c] >= cap:
            return cells, counts, cell_of, slot_of, False
        cells[c, counts[c]] = i
        slot_of[i] = counts[c]
        cell_of[i] = c
        counts[c] += 1
    return cells, counts, cell_of, slot_of, True


@njit(inline="always", cache=True)
def _pair_u(rx, ry, L, ti, tj, hard, eps4, sig2, rc2, shift):
    """Pair energy at separation (rx, ry) under the minimum image; +inf on a hard overlap."""
    rx -= L * np.floor(rx / L + 0.5)
    ry -= L * np.floor(ry / L + 0.5)
    r2 = rx * rx + ry * ry
    if hard:
        return np.inf if r2 < sig2[ti, tj] else 0.0
    if r2 >= rc2[ti, tj]:
        return 0.0
    s6 = sig2[ti, tj] / r2
    s6 = s6 * s6 * s6
    return eps4[ti, tj] * (s6 * s6 - s6) - shift[ti, tj]


@njit(cache=True)
def _particle_energy(i, x, y, pos, types, L, hard, eps4, sig2, rc2, shift, cells, counts, nc, cs):
    """Energy of particle i placed at (x, y) with all others; +inf on a hard overlap."""
    cx, cy = _cell_xy(x, y, nc, cs)
    ti = types[i]
    e = 0.0
    for dy in range(-1, 2):
        yy = (cy + dy) % nc
        for dx in range(-1, 2):
            c = yy * nc + (cx + dx) % nc
            for s in range(counts[c]):
                j = cells[c, s]
                if j == i:
                    continue
                u = _pair_u(pos[j, 0] - x, pos[j, 1] - y, L, ti, types[j], hard, eps4, sig2, rc2, shift)
                if u == np.inf:
                    return u
                e += u
    return e


@njit(cache=True)
def _run_sweeps(pos, types, L, n_sweeps, delta, beta, hard, eps4, sig2, rc2, shift,
                cells, counts, cell_of, slot_of, nc, cs, state):
    """n_sweeps sweeps of N displacement attempts; returns accepted moves. Advances ``state``."""
    n = pos.shape[0]
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    accepted = 0
    cap = cells.shape[1]
    for _ in range(n_sweeps * n):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        i = int((r >> np.uint64(11)) * _INV53 * n)
        if i >= n:
            i = n - 1
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        ux = (r >> np.uint64(11)) * _INV53
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        uy = (r >> np.uint64(11)) * _INV53
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        ua = (r >> np.uint64(11)) * _INV53
        xo, yo = pos[i, 0], pos[i, 1]
        xn = xo + (2.0 * ux - 1.0) * delta
        yn = yo + (2.0 * uy - 1.0) * delta
        if xn >= L:
            xn -= L
        elif xn < 0.0:
            xn += L
        if yn >= L:
            yn -= L
        elif yn < 0.0:
            yn += L
        if xn >= L:  # rounding of a tiny negative number
            xn = 0.0
        if yn >= L:
            yn = 0.0
        en = _particle_energy(i, xn, yn, pos, types, L, hard, eps4, sig2, rc2, shift, cells, counts, nc, cs)
        if hard:
            ok = en == 0.0
        else:
            du = en - _particle_energy(i, xo, yo, pos, types, L, hard, eps4, sig2, rc2, shift, cells, counts, nc, cs)
            ok = du <= 0.0 or ua < math.exp(-beta * du)
        if not ok:
            continue
        cn = _cell_index(xn, yn, nc, cs)
        co = cell_of[i]
        if cn != co:
            if counts[cn] >= cap:
                continue  # cell full: reject (never happens at physical densities; cap is generous)
            last = cells[co, counts[co] - 1]  # move the last entry into i's slot
            cells[co, slot_of[i]] = last
            slot_of[last] = slot_of[i]
            counts[co] -= 1
            cells[co, counts[co]] = -1
            cells[cn, counts[cn]] = i
            slot_of[i] = counts[cn]
            counts[cn] += 1
            cell_of[i] = cn
        pos[i, 0] = xn
        pos[i, 1] = yn
        accepted += 1
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return accepted


@njit(cache=True)
def _cell_energy(pos, types, L, eps4, sig2, rc2, shift, cells, counts, nc, cs):
    """Total potential energy (soft potentials) through the cell list: half the sum of particle energies."""
    e = 0.0
    for i in range(pos.shape[0]):
        e += _particle_energy(i, pos[i, 0], pos[i, 1], pos, types, L, False, eps4, sig2, rc2, shift, cells, counts,
                              nc, cs)
    return 0.5 * e


@njit(cache=True)
def _total_energy(pos, types, L, hard, eps4, sig2, rc2, shift):
    """Brute-force total potential energy (all pairs, minimum image); +inf on a hard overlap."""
    n = pos.shape[0]
    e = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            u = _pair_u(pos[j, 0] - pos[i, 0], pos[j, 1] - pos[i, 1], L, types[i], types[j], hard, eps4, sig2, rc2,
                        shift)
            if u == np.inf:
                return u
            e += u
    return e


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

def potential_energy(positions: np.ndarray, types: np.ndarray, params: OffLatticeParams) -> float:
    """Total potential energy (ε) of one configuration, by brute force over all pairs.

    Parameters
    ----------
    positions : ndarray of float, shape (N, 2)
        (x, y) in σ, inside the periodic box of side ``params.box``.
    types : ndarray of int, shape (N,)
        0 = large/only species, 1 = small.
    """
    eps4, sig2, rc2, shift = pair_tables(params)
    return float(_total_energy(np.ascontiguousarray(positions, np.float64), np.ascontiguousarray(types, np.int64),
                               params.box, params.system == "hard-disks", eps4, sig2, rc2, shift))


class _System:
    """One sample's state: positions, types, cell list and random stream."""

    def __init__(self, p: OffLatticeParams, state: np.ndarray) -> None:
        self.p, self.state = p, state
        self.L = p.box
        self.hard = p.system == "hard-disks"
        self.eps4, self.sig2, self.rc2, self.shift = pair_tables(p)
        self.nc = max(3, int(self.L / math.sqrt(float(self.rc2.max()))))
        self.cs = self.L / self.nc
        n = p.atoms
        n_small = int(round(p.x_small * n)) if p.system == "lj-mixture" else 0
        self.types = np.zeros(n, np.int64)
        self.types[:n_small] = 1  # shuffled by the start lattice below
        # start: a square lattice filled in a random order (no overlap at the densities allowed)
        m = int(math.ceil(math.sqrt(n)))
        a = self.L / m
        sites = np.stack(np.meshgrid(np.arange(m), np.arange(m), indexing="xy"), -1).reshape(-1, 2)
        order = self._permutation(m * m)[:n]
        self.pos = np.ascontiguousarray((sites[order] + 0.5) * a, np.float64)
        self.types = self.types[self._permutation(n)]
        cap = int(max(8, 4 * self.cs * self.cs * 2.0 + 8))
        cells, counts, cell_of, slot_of, ok = _build_cells(self.pos, self.nc, self.cs, cap)
        if not ok:
            raise MapsimError("off-lattice start: a cell overflowed its capacity (report this as a bug)")
        self.cells, self.counts, self.cell_of, self.slot_of = cells, counts, cell_of, slot_of

    def _permutation(self, n: int) -> np.ndarray:
        from mapsim.montecarlo.rng import random_u64

        keys = random_u64(self.state, n)
        return np.argsort(keys, kind="stable")

    def energy_per_particle(self) -> float:
        """Potential energy per particle (ε) through the cell list; NaN for hard disks."""
        if self.hard:
            return float("nan")
        return float(_cell_energy(self.pos, self.types, self.L, self.eps4, self.sig2, self.rc2, self.shift,
                                  self.cells, self.counts, self.nc, self.cs)) / self.p.atoms

    def sweeps(self, n: int, delta: float) -> int:
        beta = 1.0 / self.p.T
        return int(_run_sweeps(self.pos, self.types, self.L, int(n), float(delta), beta, self.hard, self.eps4,
                               self.sig2, self.rc2, self.shift, self.cells, self.counts, self.cell_of, self.slot_of,
                               self.nc, self.cs, self.state))


#: Energy trace points per sample (plus sweep 0), as the lattice runs record them.
TRACE_POINTS = 200

#: Sweeps between adjustments of δ in the first half.
TUNE_EVERY = 10


def run_sample(p: OffLatticeParams, seed: int, k: int, observe: Callable[[np.ndarray, np.ndarray], None] | None = None,
               observe_every: int = 0, trace_points: int = TRACE_POINTS) -> dict[str, Any]:
    """Simulate sample ``k`` of a run with ``seed``.

    Parameters
    ----------
    observe : callable, optional
        Called with (positions (N, 2), types (N,)) every ``observe_every`` sweeps of the second
        (fixed-δ) half, for averages along the run.
    trace_points : int
        The potential energy per particle is recorded after the sweeps
        :func:`mapsim.montecarlo.equilibration.trace_sweeps` ``(sweeps, trace_points)``.

    Returns
    -------
    dict
        ``positions`` float64 (N, 2) in [0, L)², ``types`` int64 (N,), ``delta`` (δ after
        tuning), ``acceptance`` (second half), ``energy`` (ε per particle; NaN for hard disks),
        ``energy_trace`` float64 (n_points,) (NaN for hard disks) and ``trace_sweeps`` (n_points,).
    """
    from mapsim.montecarlo.equilibration import trace_sweeps

    sys_ = _System(p, xoshiro_state(sample_seed_sequence(seed, k)))
    delta = float(p.delta)
    tune = p.sweeps // 2
    at = trace_sweeps(p.sweeps, trace_points)
    tune_at = set(range(TUNE_EVERY, tune, TUNE_EVERY)) | ({tune} if tune > 0 else set())
    obs_at = set(range(tune + observe_every, p.sweeps + 1, observe_every)) if observe and observe_every > 0 else set()
    # the same moves whatever the events: chunks only split the stream of attempts
    events = sorted(set(int(x) for x in at[1:]) | tune_at | obs_at | {p.sweeps})
    trace = [sys_.energy_per_particle()]
    done, acc_window, window, acc_rest = 0, 0, 0, 0
    for event in events:
        step = event - done
        if step > 0:
            acc = sys_.sweeps(step, delta)
            if done < tune:
                acc_window += acc
                window += step
            else:
                acc_rest += acc
            done = event
        if done in tune_at:
            rate = acc_window / (window * p.atoms)
            delta = float(np.clip(delta * np.clip(rate / 0.4, 0.5, 1.5), 1e-4, 0.25 * sys_.L))
            acc_window, window = 0, 0
        if done in obs_at:
            observe(sys_.pos, sys_.types)
        if done in at[1:]:
            trace.append(sys_.energy_per_particle())
    rest = p.sweeps - tune
    energy = float("nan") if sys_.hard else potential_energy(sys_.pos, sys_.types, p) / p.atoms
    return {"positions": sys_.pos.copy(), "types": sys_.types.copy(), "delta": delta,
            "acceptance": acc_rest / max(1, rest * p.atoms), "energy": energy,
            "energy_trace": np.array(trace), "trace_sweeps": at}


@dataclass
class OffLatticeResult:
    """Samples of an off-lattice run.

    Attributes
    ----------
    positions : ndarray of float64, shape (n_samples, N, 2)
        (x, y) in σ, inside [0, L)².
    types : ndarray of int64, shape (n_samples, N)
        0 = large/only species, 1 = small (mixture).
    params : OffLatticeParams
    seed : int
    energy : ndarray of float64, shape (n_samples,)
        Final potential energy per particle (ε; NaN for hard disks).
    acceptance : ndarray of float64, shape (n_samples,)
    seconds : float
    energy_trace : ndarray of float64, shape (n_samples, n_points)
        Energy per particle after ``trace_sweeps`` (NaN for hard disks).
    trace_sweeps : ndarray of int64, shape (n_points,)
    """

    positions: np.ndarray
    types: np.ndarray
    params: OffLatticeParams
    seed: int
    energy: np.ndarray
    acceptance: np.ndarray
    seconds: float = 0.0
    energy_trace: np.ndarray | None = None
    trace_sweeps: np.ndarray | None = None

    def equilibration(self):
        """Verdict of :func:`mapsim.montecarlo.equilibration.equilibration_verdict` on the energy traces
        (drift from the third to the last quarter, autocorrelation time); None for hard disks."""
        from mapsim.montecarlo.equilibration import equilibration_verdict

        if self.params.system == "hard-disks" or self.energy_trace is None:
            return None
        return equilibration_verdict(self.energy_trace, self.trace_sweeps, moves="offlattice")

    @property
    def box(self) -> float:
        return self.params.box

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description (generator, parameters, seed, box, unit, species)."""
        from mapsim import __version__

        return {"generator": "mapsim.montecarlo.offlattice", "mapsim_version": __version__,
                "params": asdict(self.params), "seed": int(self.seed),
                "n_samples": int(self.positions.shape[0]), "box": [self.box, self.box], "length_unit": "sigma",
                "species_map": self.params.species_map, "periodic": [True, True],
                "energy_per_particle": [float(e) for e in self.energy] if self.params.system != "hard-disks" else None,
                "acceptance": [float(a) for a in self.acceptance]}


def simulate_offlattice(params: OffLatticeParams, n_samples: int, seed: int,
                        progress: Callable[[int], object] | None = None) -> OffLatticeResult:
    """Independent samples (one run each from the square start; see the module docstring).

    Parameters
    ----------
    params : OffLatticeParams
    n_samples : int
    seed : int
        Sample k uses the stream of ``(seed, k)``.
    progress : callable, optional
        Called with 1 after each sample.

    Returns
    -------
    OffLatticeResult
    """
    params.validate()
    if n_samples < 1:
        raise MapsimError(f"--samples {n_samples}: expected at least 1")
    t0 = time.perf_counter()
    out = []
    for k in range(n_samples):
        out.append(run_sample(params, seed, k))
        if progress is not None:
            progress(1)
    return OffLatticeResult(np.stack([o["positions"] for o in out]), np.stack([o["types"] for o in out]), params,
                            int(seed), np.array([o["energy"] for o in out]), np.array([o["acceptance"] for o in out]),
                            time.perf_counter() - t0, np.stack([o["energy_trace"] for o in out]),
                            out[0]["trace_sweeps"])


def to_dataset(result: OffLatticeResult, pixel_size: float | None = None):
    """The samples as a dataset with offsets (every particle kept).

    Parameters
    ----------
    result : OffLatticeResult
    pixel_size : float, optional
        Requested pixel (σ); default the largest collision-free pixel over all samples
        (:func:`mapsim.lattice.largest_collision_free_pixel`, the rule ``mapsim import`` uses).

    Returns
    -------
    Dataset
        ``grids`` (n, H, W) with class 1 (``particle``/``large``) and 2 (``small``), ``offsets``,
        and metadata with the pixel size per axis, ``length_unit`` ``sigma``, ``periodic``
        [true, true], ``cell``, ``species_map`` and the run's parameters.

    Raises
    ------
    MapsimError
        When a given pixel size puts two particles into one pixel (they would be lost).
    """
    from mapsim.lattice import OFFSETS_KEY, Dataset, grid_geometry, largest_collision_free_pixel, rasterize

    L = result.box
    frames = [(result.positions[k], (L, L)) for k in range(result.positions.shape[0])]
    if pixel_size is None:
        a, rule = largest_collision_free_pixel(frames, "off-lattice samples")
    else:
        a, rule = float(pixel_size), "given"
    grids, offs = [], []
    for k, (xy, cell) in enumerate(frames):
        geom = grid_geometry(xy, cell, a, f"sample {k}")
        r = rasterize(xy, result.types[k] + 1, geom)
        if r.lost:
            raise MapsimError(f"pixel size {a:g} σ puts {r.lost} particle(s) of sample {k} on an occupied pixel; "
                              "give a smaller one (or none for the largest collision-free pixel)")
        grids.append(r.grid)
        offs.append(r.offsets)
    meta = result.metadata()
    meta.update({"pixel_size": [geom.pixel[0], geom.pixel[1]], "pixel_size_rule": rule, "cell": [L, L],
                 "height": int(geom.shape[0]), "width": int(geom.shape[1])})
    extras = {OFFSETS_KEY: np.stack(offs)}
    if result.energy_trace is not None and result.params.system != "hard-disks":
        extras["energy_trace"] = result.energy_trace.astype(np.float64)
        meta["trace_sweeps"] = [int(v) for v in result.trace_sweeps]
        v = result.equilibration()
        meta["equilibration"] = v.to_dict() if v is not None else None
    return Dataset(np.stack(grids), result.params.classes, meta, extras)


# ---------------------------------------------------------------------------------------------
# Hard-disk pressure: contact value of g(r) against published equations of state
# ---------------------------------------------------------------------------------------------

def henderson_hard_disk_z(eta: float) -> float:
    """Compressibility factor βP/ρ of hard disks, Henderson (1975), Mol. Phys. 30, 971:
    Z = (1 + η²/8) / (1 − η)²."""
    return (1.0 + eta * eta / 8.0) / (1.0 - eta) ** 2


def santos_hard_disk_z(eta: float) -> float:
    """Compressibility factor of hard disks, Santos, López de Haro & Yuste (1995), J. Chem. Phys.
    103, 4622: Z = 1 / (1 − 2η + (2η₀ − 1) η² / η₀²), η₀ = π / (2√3) (close packing)."""
    eta0 = math.pi / (2.0 * math.sqrt(3.0))
    return 1.0 / (1.0 - 2.0 * eta + (2.0 * eta0 - 1.0) * eta * eta / (eta0 * eta0))


def hard_disk_contact_pressure(positions: np.ndarray, box: float, density: float, width: float = 0.1,
                               bins: int = 10) -> dict[str, float]:
    """βP/ρ of hard disks (σ = 1) from the contact value of g(r): Z = 1 + (π/2) ρ g(1⁺).

    Parameters
    ----------
    positions : ndarray of float, shape (n_configs, N, 2)
        Configurations in a periodic square box of side ``box`` (σ).
    density : float
        N / box².
    width, bins : float, int
        g(r) is histogrammed in ``bins`` bins over [1, 1 + width]; g(1⁺) is the value at r = 1 of
        a quadratic fitted to them (weights: counts).

    Returns
    -------
    dict
        ``g_contact``, ``Z`` and ``g_bins`` (the histogram, for inspection).
    """
    from scipy.spatial import cKDTree

    edges = np.linspace(1.0, 1.0 + width, bins + 1)
    counts = np.zeros(bins)
    n_conf, n = positions.shape[0], positions.shape[1]
    for k in range(n_conf):
        pts = np.mod(positions[k], box)
        pts[pts >= box] = 0.0
        tree = cKDTree(pts, boxsize=box)
        pairs = tree.query_pairs(1.0 + width, output_type="ndarray")
        d = pts[pairs[:, 0]] - pts[pairs[:, 1]]
        d -= box * np.round(d / box)
        r = np.sqrt((d * d).sum(1))
        counts += np.histogram(r, edges)[0]
    shell = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    g = counts / (n_conf * 0.5 * n * density * shell)
    centres = 0.5 * (edges[1:] + edges[:-1])
    coef = np.polyfit(centres - 1.0, g, 2, w=np.sqrt(np.maximum(counts, 1)))
    g0 = float(coef[-1])
    return {"g_contact": g0, "Z": 1.0 + 0.5 * math.pi * density * g0, "g_bins": g.tolist()}
