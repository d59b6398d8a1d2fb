"""Simulation parameters, the paper's presets and their schedules.

Every parameter has a name usable with ``mapsim simulate --set NAME=VALUE`` and a
one-line description in :data:`PARAM_HELP` (shown by ``mapsim simulate --help``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mapsim.errors import MapsimError

__all__ = [
    "SimParams", "PRESETS", "PRESET_DESCRIPTIONS", "PARAM_HELP", "DEFAULT_PRESET", "PROTOCOL_PRESETS",
    "preset_params", "temperature_schedule", "mu_schedule", "schedule", "has_schedule", "SWEEP_DEFINITION",
]


@dataclass(frozen=True)
class SimParams:
    """Parameters of one Monte Carlo run (a flat, typed, validated config).

    The Hamiltonian is ``H = e_nn Σ n_i n_j + e_ll Σ l_i l_j + e_nl Σ n_i l_j + mu Σ l_i + mu_n Σ n_i``
    over nearest-neighbour bonds (each once), k_B = 1 (:mod:`.hamiltonian`). Negative couplings attract.
    ``moves`` and ``ensemble`` choose the move set (see :data:`SWEEP_DEFINITION`).
    Construction validates every field and raises :class:`MapsimError` naming the
    parameter, what was expected and what was found.
    """

    e_nn: float = 0.0
    e_ll: float = 0.0
    e_nl: float = 0.0
    mu: float = 0.0
    T: float = 1.0
    density: float = 0.05
    sweeps: int = 100
    mobility: int = 1
    periodic: bool = True
    solvent: bool = False
    keep_solvent: bool = False
    T_start: float | None = None
    anneal_frac: float = 0.0
    mu_start: float | None = None
    mu_ramp_frac: float = 0.0
    moves: str = "local"
    nonlocal_frac: float = 0.5
    ensemble: str = "canonical"
    mu_n: float = 0.0
    start_density: float | None = None
    trace_points: int = 256

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = _FIELD_KINDS[f.name]
            ok = (
                (kind is bool and isinstance(v, (bool, np.bool_)))
                or (kind is int and isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)))
                or (kind in (float, "opt_float") and isinstance(v, (int, float, np.integer, np.floating))
                    and not isinstance(v, (bool, np.bool_)))
                or (kind == "opt_float" and v is None)
                or (isinstance(kind, tuple) and isinstance(v, str) and v in kind)
            )
            if not ok:
                raise MapsimError(f"parameter {f.name}: expected {_KIND_TEXT[kind]}, found {v!r}")
            if kind in (float, "opt_float") and v is not None:
                if not math.isfinite(float(v)):
                    raise MapsimError(f"parameter {f.name}: expected a finite number, found {v!r}")
                object.__setattr__(self, f.name, float(v))
            elif kind is int:
                object.__setattr__(self, f.name, int(v))
            elif kind is bool:
                object.__setattr__(self, f.name, bool(v))
        self._check_ranges()

    def _check_ranges(self) -> None:
        def need(cond: bool, name: str, expected: str) -> None:
            if not cond:
                raise MapsimError(f"parameter {name}: expected {expected}, found {getattr(self, name)!r}")

        need(self.T >= 0, "T", "a temperature >= 0")
        need(self.T_start is None or self.T_start >= 0, "T_start", "a temperature >= 0 (or none = T)")
        need(0 <= self.density <= 1, "density", "a particle fraction of sites in [0, 1]")
        need(self.sweeps >= 0, "sweeps", "an integer >= 0")
        need(self.mobility >= 0, "mobility", "an integer >= 0 (hop attempts per particle per sweep)")
        need(0 <= self.anneal_frac <= 1, "anneal_frac", "a fraction of the sweeps in [0, 1]")
        need(0 <= self.mu_ramp_frac <= 1, "mu_ramp_frac", "a fraction of the sweeps in [0, 1]")
        need(0 <= self.nonlocal_frac <= 1, "nonlocal_frac", "a fraction of the particle moves in [0, 1]")
        need(self.start_density is None or 0 <= self.start_density <= 1, "start_density",
             "a particle fraction of sites in [0, 1] (or none = density)")
        need(self.trace_points >= 1, "trace_points", "an integer >= 1")
        if self.ensemble == "canonical":
            if self.mu_n != 0:
                raise MapsimError(f"parameter mu_n={self.mu_n:g} acts on the particle number, which the canonical "
                                  "ensemble holds fixed; set ensemble=grand or leave mu_n at 0")
            if self.start_density is not None and self.start_density != self.density:
                raise MapsimError(f"parameter start_density={self.start_density:g}: the canonical ensemble keeps "
                                  f"the starting density (density={self.density:g}); set ensemble=grand or leave "
                                  "start_density at none")
        if not self.solvent:
            for name in ("e_ll", "e_nl", "mu"):
                if getattr(self, name) != 0:
                    raise MapsimError(
                        f"parameter {name}={getattr(self, name):g} acts on solvent, but solvent=false; "
                        f"set solvent=true or leave {name} at 0")
            if self.mu_start is not None or self.mu_ramp_frac != 0:
                raise MapsimError("parameters mu_start/mu_ramp_frac schedule the solvent's mu, but solvent=false")
            if self.keep_solvent:
                raise MapsimError("keep_solvent=true needs a system with solvent (solvent=true); this one has none")

    @property
    def energy_scale(self) -> float:
        """Largest |coupling| (sets the ΔE = 0 tolerance at T = 0)."""
        return max(abs(self.e_nn), abs(self.e_ll), abs(self.e_nl), abs(self.mu), abs(self.mu_n), 1.0)

    def n_particles(self, n_sites: int) -> int:
        """Particles placed on ``n_sites`` sites: ``round(density * n_sites)`` (``start_density`` if given)."""
        rho = self.density if self.start_density is None else self.start_density
        return int(round(rho * n_sites))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SimParams":
        """Rebuild from :meth:`to_dict` output (e.g. a dataset's metadata)."""
        unknown = set(d) - set(_FIELD_KINDS)
        if unknown:
            raise MapsimError(f"unknown Monte Carlo parameter(s) {sorted(unknown)}")
        return cls(**dict(d))


_FIELD_KINDS: dict[str, Any] = {
    "e_nn": float, "e_ll": float, "e_nl": float, "mu": float, "T": float, "density": float,
    "sweeps": int, "mobility": int, "periodic": bool, "solvent": bool, "keep_solvent": bool,
    "T_start": "opt_float", "anneal_frac": float, "mu_start": "opt_float", "mu_ramp_frac": float,
    "moves": ("local", "nonlocal", "mixed"), "nonlocal_frac": float, "ensemble": ("canonical", "grand"),
    "mu_n": float, "start_density": "opt_float", "trace_points": int,
}
_KIND_TEXT: dict[Any, str] = {float: "a finite number", int: "an integer", bool: "true or false",
                              "opt_float": "a finite number or none"}
for _kind in _FIELD_KINDS.values():
    if isinstance(_kind, tuple):
        _KIND_TEXT[_kind] = "one of " + "|".join(_kind)

#: What one sweep is, per move set (``mapsim simulate --help`` and the README say the same).
SWEEP_DEFINITION = (
    "One sweep = (with solvent) N solvent flip attempts at uniformly random sites, then (ensemble=grand) N "
    "particle insertion/removal attempts at uniformly random sites (a solvent site counts as a rejected "
    "attempt), then mobility * n particle-move attempts, n = number of particles at that point; N = H * W. "
    "Each particle move picks a uniformly random particle and is a local hop to a random neighbour "
    "(moves=local), a non-local jump to a uniformly random non-particle site (moves=nonlocal; empty without "
    "solvent, with solvent an exchange that is rejected unless the site holds solvent), or one of the two, "
    "non-local with probability nonlocal_frac (moves=mixed). All moves are Metropolis with symmetric proposals.")

PARAM_HELP: dict[str, str] = {
    "e_nn": "particle-particle bond energy (negative attracts)",
    "e_ll": "liquid-liquid bond energy (solvent systems)",
    "e_nl": "particle-liquid bond energy (solvent systems)",
    "mu": "energy per liquid site, H += mu * (liquid sites); larger mu dries the film (final value of the mu schedule)",
    "T": "temperature, k_B = 1 (final value of the annealing schedule); T=0 accepts exactly the moves with dE <= 0",
    "density": "particle fraction of sites; round(density * H * W) particles placed uniformly at random "
               "(held fixed; with ensemble=grand only the start, set by start_density)",
    "sweeps": "number of sweeps (what one sweep is, per move set: 'sweeps:' below)",
    "mobility": "particle-move attempts per particle per sweep",
    "periodic": "periodic boundaries (true) or open edges (false)",
    "solvent": "simulate a solvent (liquid/vapour) on non-particle sites; starts as a fully wet film",
    "keep_solvent": "save solvent as class 2 (default: solvent sites are saved as empty)",
    "T_start": "annealing: temperature of sweep 0, falling linearly to T over anneal_frac of the sweeps (none = T, no annealing)",
    "anneal_frac": "annealing: fraction of the sweeps over which T goes from T_start to T (then constant)",
    "mu_start": "drying: mu of sweep 0, going linearly to mu over mu_ramp_frac of the sweeps (none = mu, constant)",
    "mu_ramp_frac": "drying: fraction of the sweeps over which mu goes from mu_start to mu (then constant)",
    "moves": "particle move set: local (hop to a random neighbour), nonlocal (jump to a random non-particle "
             "site anywhere) or mixed (nonlocal with probability nonlocal_frac)",
    "nonlocal_frac": "moves=mixed: probability that a particle move is non-local",
    "ensemble": "canonical (fixed particle number) or grand (particle insertion/removal at non-solvent sites, "
                "H += mu_n * (particles))",
    "mu_n": "ensemble=grand: energy per particle, H += mu_n * (particles); without solvent mu_n = -2*e_nn is "
            "the field-free Ising model",
    "start_density": "ensemble=grand: particle fraction of the starting lattice (none = density)",
    "trace_points": "energy-trace points per sample after sweep 0 (at most one per sweep)",
}

# Defaults of the lattice-gas preset (equilibrium sampling; see the README for the measurements).
LATTICE_GAS_SWEEPS = 1000
LATTICE_GAS_NONLOCAL_FRAC = 0.8

PRESETS: dict[str, SimParams] = {
    # Appendix A, Table 2: dilute fluids of particles only, 100 sweeps ("Age 100 steps").
    "fluid-cold-repulsive": SimParams(e_nn=1.0, T=0.0, density=0.05, sweeps=100, mobility=1),
    "fluid-hot-repulsive": SimParams(e_nn=1.0, T=1.0, density=0.05, sweeps=100, mobility=1),
    "fluid-hot-attractive": SimParams(e_nn=-1.0, T=1.0, density=0.01, sweeps=100, mobility=1),
    # Appendix A, Table 3: drying of particles in a solvent (couplings, mu, T, density, 2000
    # sweeps from the paper; mobility 30 as in Rabani et al. 2003). The paper gives no
    # schedule: ours anneals T from 2 to 1 and raises mu from 2 (liquid stable; liquid-vapour
    # coexistence is at mu = -2 e_ll = 4) to 11 over the first half, so the film dries while
    # the particles can still move, then holds the paper's values.
    "drying": SimParams(
        e_nn=-4.0, e_ll=-2.0, e_nl=-20.0, mu=11.0, T=1.0, density=0.10, sweeps=2000, mobility=30,
        solvent=True, T_start=2.0, anneal_frac=0.5, mu_start=2.0, mu_ramp_frac=0.5,
    ),
    # The paper's named failure case (Section V: "nanoparticle aggregates similar to those modelled
    # in Figure 11, though with pixel occupation density reduced to 1.5 %"): the drying system with
    # only the density changed. Couplings, mu, T, the 2000-sweep age and mobility 30 are Table 3's
    # (the paper changes nothing else); the schedule is the drying preset's, so the two differ in
    # the particle density alone and the sparse film dries along the same path.
    "drying-sparse": SimParams(
        e_nn=-4.0, e_ll=-2.0, e_nl=-20.0, mu=11.0, T=1.0, density=0.015, sweeps=2000, mobility=30,
        solvent=True, T_start=2.0, anneal_frac=0.5, mu_start=2.0, mu_ramp_frac=0.5,
    ),
    # Lattice gas, particles only, sampled at equilibrium: canonical, local hops mixed with
    # non-local jumps that relax long-wavelength density fluctuations (local hops alone relax
    # them by diffusion only); every parameter settable.
    "lattice-gas": SimParams(e_nn=-1.0, T=1.0, density=0.5, sweeps=LATTICE_GAS_SWEEPS, mobility=1,
                             moves="mixed", nonlocal_frac=LATTICE_GAS_NONLOCAL_FRAC),
}

PRESET_DESCRIPTIONS: dict[str, str] = {
    "fluid-cold-repulsive": "paper Table 2 system 1: repulsive particles (e_nn=+1) at T=0, 5% density, 100 sweeps",
    "fluid-hot-repulsive": "paper Table 2 system 2: repulsive particles (e_nn=+1) at T=1, 5% density, 100 sweeps",
    "fluid-hot-attractive": "paper Table 2 system 3: attractive particles (e_nn=-1) at T=1, 1% density, 100 sweeps",
    "drying": "paper Table 3: particles in a drying solvent (e_ll=-2, e_nl=-20, e_nn=-4, mu=11, T=1, 10%, "
              "2000 sweeps, mobility 30) from a fully wet film, annealing T 2->1 and ramping mu 2->11 over the first half",
    "drying-sparse": "paper Section V failure case: the drying preset at 1.5% particle density (every other "
                     "parameter and the schedule as in drying)",
    "lattice-gas": f"canonical lattice gas at equilibrium, particles only (defaults e_nn=-1, T=1, density 0.5, "
                   f"{LATTICE_GAS_SWEEPS} sweeps of mixed moves, nonlocal_frac {LATTICE_GAS_NONLOCAL_FRAC:g})",
}

DEFAULT_PRESET = "drying"

#: Presets defined by a protocol (local dynamics for a given age in sweeps, the paper's systems),
#: not by equilibrium: their runs record energy traces but get no equilibration verdict.
PROTOCOL_PRESETS = frozenset({"fluid-cold-repulsive", "fluid-hot-repulsive", "fluid-hot-attractive", "drying",
                              "drying-sparse"})

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _convert(name: str, value: Any) -> Any:
    """Convert a ``--set`` value (string or number) to the parameter's type."""
    kind = _FIELD_KINDS[name]
    if not isinstance(value, str):
        return value  # SimParams checks type and range
    text = value.strip()
    low = text.lower()
    if kind is bool:
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise MapsimError(f"parameter {name}: expected true or false, found {value!r}")
    if isinstance(kind, tuple):
        if low not in kind:
            raise MapsimError(f"parameter {name}: expected {_KIND_TEXT[kind]}, found {value!r}")
        return low
    if kind == "opt_float" and low in ("none", "null", ""):
        return None
    try:
        x = float(text)
    except ValueError:
        raise MapsimError(f"parameter {name}: expected {_KIND_TEXT[kind]}, found {value!r}") from None
    if not math.isfinite(x):
        raise MapsimError(f"parameter {name}: expected a finite number, found {value!r}")
    if kind is int:
        if x != int(x):
            raise MapsimError(f"parameter {name}: expected an integer, found {value!r}")
        return int(x)
    return x


def preset_params(name: str, overrides: Mapping[str, str | float | int | bool | None] | None = None) -> SimParams:
    """A preset's parameters with overrides applied and validated.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS`.
    overrides : mapping of parameter name to value, optional
        Values may be strings as given to ``--set`` (``"0.3"``, ``"true"``, ``"none"``)
        or Python values.

    Raises
    ------
    MapsimError
        Unknown preset or parameter name, unparsable value, value out of range or an
        impossible combination (e.g. ``mu`` set on a system without solvent).
    """
    if name not in PRESETS:
        raise MapsimError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    changes: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in _FIELD_KINDS:
            close = difflib.get_close_matches(key, list(_FIELD_KINDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MapsimError(f"unknown parameter {key!r}{hint}; expected one of {list(_FIELD_KINDS)}")
        changes[key] = _convert(key, value)
    params = dataclasses.replace(PRESETS[name], **changes)
    if params.ensemble == "grand" and "density" in changes:
        # a grand-canonical run lets the particle number follow mu_n: a density asked for cannot hold
        raise MapsimError(f"parameter density={params.density:g}: ensemble=grand does not hold the density fixed "
                          "(mu_n sets it); give the starting fraction as start_density instead")
    return params


def schedule(start: float | None, end: float, frac: float, sweeps: int) -> np.ndarray:
    """Per-sweep values: linear from ``start`` to ``end`` over ``round(frac * sweeps)`` sweeps, then ``end``.

    Returns
    -------
    ndarray of float64, shape (sweeps,)
        Value used during sweep ``i``: ``start + (end - start) * i / L`` for ``i < L``.
    """
    out = np.full(sweeps, float(end))
    if start is None:
        return out
    n_ramp = int(round(frac * sweeps))
    if n_ramp > 0:
        out[:n_ramp] = start + (end - start) * np.arange(n_ramp) / n_ramp
    return out


def temperature_schedule(p: SimParams) -> np.ndarray:
    """Temperature of each sweep, shape (sweeps,)."""
    return np.maximum(schedule(p.T_start, p.T, p.anneal_frac, p.sweeps), 0.0)


def has_schedule(p: SimParams) -> bool:
    """Whether the run changes T or mu during its sweeps (annealing or a mu ramp)."""
    return bool(np.ptp(temperature_schedule(p)) > 0 or np.ptp(mu_schedule(p)) > 0) if p.sweeps else False


def mu_schedule(p: SimParams) -> np.ndarray:
    """Solvent chemical potential term of each sweep, shape (sweeps,)."""
    return schedule(p.mu_start, p.mu, p.mu_ramp_frac, p.sweeps)
