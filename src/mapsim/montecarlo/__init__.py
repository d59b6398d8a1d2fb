"""Lattice Monte Carlo: the paper's Hamiltonian, numba kernels, presets, parallel samples.

Public API
----------
SimParams, PRESETS, preset_params
    Typed parameters and the presets of the paper's Appendix A.
simulate
    Independent samples as a :class:`mapsim.lattice.Dataset`.
total_energy
    Brute-force energy of grids (Eq. 22), the reference for the kernels.
LatticeState
    One run's state with kernel-level access (tests, custom protocols).
"""

from mapsim.montecarlo.hamiltonian import energy_terms, total_energy
from mapsim.montecarlo.params import (
    DEFAULT_PRESET,
    PARAM_HELP,
    PRESET_DESCRIPTIONS,
    PRESETS,
    SimParams,
    mu_schedule,
    preset_params,
    temperature_schedule,
)

__all__ = [
    "SimParams", "PRESETS", "PRESET_DESCRIPTIONS", "PARAM_HELP", "DEFAULT_PRESET", "preset_params",
    "simulate", "corner_window", "run_sample", "LatticeState", "total_energy", "energy_terms", "HAMILTONIAN",
    "temperature_schedule", "mu_schedule",
]

# The engine imports numba and the kernels; load it on first use so that reading
# presets or computing energies (and ``mapsim --help``) stays quick.
_ENGINE_NAMES = ("HAMILTONIAN", "LatticeState", "corner_window", "run_sample", "simulate")


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from mapsim.montecarlo import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
