"""The one lattice Hamiltonian (the paper's Eq. 22 plus a particle chemical potential), in NumPy.

    H = e_nn Σ n_i n_j + e_ll Σ l_i l_j + e_nl Σ (n_i l_j + l_i n_j) + mu Σ l_i + mu_n Σ n_i

The pair sums run over nearest-neighbour bonds, each bond once; n_i = 1 on a
particle site (class id 1), l_i = 1 on a solvent (liquid) site (class id 2);
empty sites (vapour, class id 0) do not interact. k_B = 1, so energies are in
units of temperature. With ``mu > 0`` liquid costs energy (large ``mu`` dries);
``mu_n`` is the same for particles and only matters when their number changes
(grand-canonical particles, ``ensemble=grand``).

The lattice is hypercubic with ``ndim`` axes (the last ``ndim`` axes of a grid), so
every site has ``2 * ndim`` neighbours: 4 on the square lattice the Monte Carlo
engine simulates today, 6 on a simple cubic one. The energy and the ΔE tables of
the moves take that neighbour count from ``ndim`` / ``z``.

This module is the reference the numba kernels are tested against, the source of
every kernel's particle-move and insertion ΔE table (:meth:`Hamiltonian.move_deltas`,
:meth:`Hamiltonian.insertion_deltas`; only the solvent flip's table, which follows the mu
schedule inside numba, is built there: ``kernels.sv_flip_delta_table``), the energy of the
runs' traces (:meth:`Hamiltonian.energy_of_terms`) and the energy used by
:mod:`mapsim.analysis.structure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from mapsim.errors import MapsimError

__all__ = ["Hamiltonian", "bond_sum", "energy_terms", "total_energy", "COUPLINGS", "TERMS", "neighbour_count"]

#: Names of the Hamiltonian's parameters (couplings and chemical potentials).
COUPLINGS = ("e_nn", "e_ll", "e_nl", "mu", "mu_n")
#: The counts the energy is linear in, in the order of COUPLINGS (see :func:`energy_terms`).
TERMS = ("nn", "ll", "nl", "l", "n")


def neighbour_count(ndim: int) -> int:
    """Nearest neighbours of a site of the ``ndim``-dimensional hypercubic lattice (4 square, 6 cubic)."""
    return 2 * int(ndim)


def bond_sum(a: np.ndarray, b: np.ndarray, periodic: bool, ndim: int = 2) -> np.ndarray:
    """Σ over nearest-neighbour bonds {i, j} (each once) of ``a_i b_j + b_i a_j``.

    For ``a is b`` this is twice the number of a-a bonds.

    Parameters
    ----------
    a, b : ndarray of bool or int, shape (..., *lattice) with ``len(lattice) == ndim``
    periodic : bool
        Include the bonds across the edges. A periodic axis of one site has no
        bond; on an axis of two sites the bond inside and the one across the edge
        join the same pair and both count (as ``np.roll`` does).
    ndim : int
        Number of lattice axes (the last ``ndim`` axes of ``a`` and ``b``).

    Returns
    -------
    ndarray of int64, shape (...)
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.ndim < ndim or a.shape != b.shape:
        raise ValueError(f"bond_sum: expected two arrays of one shape (..., {ndim} lattice axes), "
                         f"found {a.shape} and {b.shape}")
    axes = tuple(range(-ndim, 0))
    total = np.zeros(a.shape[:a.ndim - ndim], dtype=np.int64)
    for axis in axes:
        size = a.shape[axis]
        if periodic:
            if size < 2:
                continue
            total = total + (a * np.roll(b, -1, axis) + b * np.roll(a, -1, axis)).sum(axis=axes)
        else:
            lo = np.take(a, np.arange(size - 1), axis), np.take(b, np.arange(size - 1), axis)
            hi = np.take(a, np.arange(1, size), axis), np.take(b, np.arange(1, size), axis)
            total = total + (lo[0] * hi[1] + lo[1] * hi[0]).sum(axis=axes)
    return np.asarray(total, np.int64)


def energy_terms(grid: np.ndarray, periodic: bool = True, ndim: int = 2, particle: int = 1,
                 solvent: int | None = 2) -> dict[str, np.ndarray]:
    """Bond and site counts that the energy is linear in.

    Parameters
    ----------
    grid : int array, shape (..., *lattice) with ``ndim`` lattice axes
        Site states: ``particle`` (default 1), ``solvent`` (default 2), anything else empty.
    periodic : bool
        Periodic boundaries or open.
    ndim : int
        Lattice dimension (2: square, 4 neighbours; 3: simple cubic, 6 neighbours).
    particle, solvent : int
        Class ids of particles and solvent; ``solvent=None`` when there is none.

    Returns
    -------
    dict of int64 arrays, each of shape (...)
        ``nn``, ``ll``, ``nl``: numbers of particle-particle, liquid-liquid and
        particle-liquid bonds; ``l``, ``n``: numbers of liquid and particle sites.
    """
    g = np.asarray(grid)
    if g.ndim < ndim:
        raise ValueError(f"grid must have at least {ndim} lattice axes, found shape {g.shape}")
    n = g == particle
    l = g == solvent if solvent is not None else np.zeros_like(n)
    axes = tuple(range(-ndim, 0))
    return {
        "nn": bond_sum(n, n, periodic, ndim) // 2,
        "ll": bond_sum(l, l, periodic, ndim) // 2,
        "nl": bond_sum(n, l, periodic, ndim),
        "l": np.asarray(l.sum(axis=axes), np.int64),
        "n": np.asarray(n.sum(axis=axes), np.int64),
    }


@dataclass(frozen=True)
class Hamiltonian:
    """Couplings of the lattice Hamiltonian (module docstring), k_B = 1.

    Attributes
    ----------
    e_nn, e_ll, e_nl : float
        Bond energies particle-particle, liquid-liquid, particle-liquid (negative attracts).
    mu, mu_n : float
        Energy per liquid site and per particle.
    """

    e_nn: float = 0.0
    e_ll: float = 0.0
    e_nl: float = 0.0
    mu: float = 0.0
    mu_n: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise MapsimError(f"Hamiltonian parameter {f.name}: expected a number, found {v!r}") from None
            if not math.isfinite(x):
                raise MapsimError(f"Hamiltonian parameter {f.name}: expected a finite number, found {v!r}")
            object.__setattr__(self, f.name, x)

    @classmethod
    def from_mapping(cls, params: Any) -> "Hamiltonian":
        """From a mapping or an object with attributes named in :data:`COUPLINGS` (missing or None = 0)."""
        if params is None:
            return cls()
        get = params.get if isinstance(params, Mapping) else (lambda k, d=None: getattr(params, k, d))
        return cls(**{k: (0.0 if get(k, None) is None else get(k, None)) for k in COUPLINGS})

    @staticmethod
    def in_mapping(params: Any) -> bool:
        """Whether ``params`` (a mapping) names at least one Hamiltonian parameter."""
        return isinstance(params, Mapping) and any(k in params for k in COUPLINGS)

    def energy(self, grid: np.ndarray, periodic: bool = True, ndim: int = 2, particle: int = 1,
               solvent: int | None = 2) -> np.ndarray:
        """Energy of each grid, by summing over every bond (arguments as :func:`energy_terms`).

        Returns
        -------
        ndarray of float64, shape (...)
        """
        return self.energy_of_terms(energy_terms(grid, periodic, ndim, particle, solvent))

    def energy_of_terms(self, terms: Mapping[str, np.ndarray] | np.ndarray,
                        mu: np.ndarray | float | None = None) -> np.ndarray:
        """Energy from the counts of :func:`energy_terms` (a dict, or an array (..., 5) in :data:`TERMS` order).

        ``mu`` replaces the liquid-site term's coefficient (e.g. one value per point of a schedule).
        """
        if not isinstance(terms, Mapping):
            t = np.asarray(terms)
            terms = {name: t[..., i] for i, name in enumerate(TERMS)}
        mu = self.mu if mu is None else np.asarray(mu, np.float64)
        return np.asarray(self.e_nn * terms["nn"] + self.e_ll * terms["ll"] + self.e_nl * terms["nl"]
                          + mu * terms["l"] + self.mu_n * terms["n"], np.float64)

    def formula(self, with_mu_n: bool | None = None) -> str:
        """The Hamiltonian as text (metadata); the ``mu_n`` term only if ``with_mu_n`` (default: mu_n != 0)."""
        text = "H = e_nn*sum_<ij> n_i n_j + e_ll*sum_<ij> l_i l_j + e_nl*sum_<ij> (n_i l_j + l_i n_j) + mu*sum_i l_i"
        if self.mu_n != 0 if with_mu_n is None else with_mu_n:
            text += " + mu_n*sum_i n_i"
        return text

    # ΔE tables of the moves, indexed by neighbour counts; z = number of neighbours of a site.

    def move_deltas(self, z: int) -> np.ndarray:
        """ΔE of moving a particle from site s to a non-particle site t (any distance).

        Index ``(x + z) * (2z + 1) + (y + z)`` with ``x = n_t - n_s``, ``y = l_t - l_s``: the
        numbers of particle and liquid neighbours of t (not counting s) and of s (not counting
        t). Without solvent the target is empty and ``y = 0``; with solvent it is liquid and
        moves to s. ΔE = (e_nn - e_nl) x + (e_nl - e_ll) y (an s-t bond, if any, is
        particle-liquid before and after, and the numbers of sites of each kind do not change).

        Returns
        -------
        ndarray of float64, shape ((2z + 1)**2,)
        """
        k = np.arange(-z, z + 1, dtype=np.float64)
        return ((self.e_nn - self.e_nl) * k[:, None] + (self.e_nl - self.e_ll) * k[None, :]).ravel()

    def insertion_deltas(self, z: int) -> np.ndarray:
        """ΔE of inserting (index 0 ..) or removing (index (z+1)² ..) a particle at a non-solvent site.

        Index ``occupied * (z + 1)**2 + n * (z + 1) + l`` with (n, l) the site's particle and
        liquid neighbours: insertion ΔE = e_nn n + e_nl l + mu_n, removal the negative.

        Returns
        -------
        ndarray of float64, shape (2 (z + 1)**2,)
        """
        n, l = np.meshgrid(np.arange(z + 1), np.arange(z + 1), indexing="ij")
        ins = (self.e_nn * n + self.e_nl * l + self.mu_n).astype(np.float64).ravel()
        return np.concatenate([ins, -ins])


def total_energy(grid: np.ndarray, params: Any = None, **couplings: Any) -> np.ndarray | float:
    """Energy of one grid or a batch, by summing over every bond.

    Parameters
    ----------
    grid : int array, shape (H, W) or (..., H, W)
        Site states 0 (empty), 1 (particle), 2 (solvent).
    params : SimParams, mapping or None
        Source of the couplings in :data:`COUPLINGS` (missing ones count as 0)
        and ``periodic`` (default True).
    **couplings
        Override any of those names, e.g. ``total_energy(g, e_nn=-1.0)``.

    Returns
    -------
    float for one (H, W) grid, else float64 array of shape (...)
        Energy in units of k_B T (k_B = 1).

    Notes
    -----
    A periodic axis of one site has no bond; one of two sites has two bonds between the
    same pair (as ``np.roll`` counts them). The Monte Carlo engine requires at least 3
    sites per periodic direction, so this never matters there.
    """
    unknown = set(couplings) - set(COUPLINGS) - {"periodic"}
    if unknown:
        raise TypeError(f"unknown coupling(s) {sorted(unknown)}")
    base = Hamiltonian.from_mapping(params)
    ham = Hamiltonian(**{k: couplings.get(k, getattr(base, k)) for k in COUPLINGS})
    if "periodic" in couplings:
        periodic = couplings["periodic"]
    elif isinstance(params, Mapping):
        periodic = params.get("periodic", True)
    else:
        periodic = getattr(params, "periodic", True)
    e = ham.energy(grid, bool(periodic))
    return float(e) if e.ndim == 0 else e
