"""The lattice Hamiltonian of the paper's Eq. 22, evaluated by brute force (NumPy).

    H = e_nn Σ n_i n_j + e_ll Σ l_i l_j + e_nl Σ (n_i l_j + l_i n_j) + mu Σ l_i

The pair sums run over nearest-neighbour bonds, each bond once; n_i = 1 on a
particle site (class id 1), l_i = 1 on a solvent (liquid) site (class id 2);
empty sites (vapour, class id 0) do not interact. k_B = 1, so energies are in
units of temperature. With ``mu > 0`` liquid costs energy: large ``mu`` dries.

This is the reference the numba kernels are tested against; it is also the
public way to get the energy of stored samples.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["total_energy", "energy_terms"]


def _coupling(params: Any, name: str, default: Any) -> Any:
    if params is None:
        return default
    if isinstance(params, Mapping):
        return params.get(name, default)
    return getattr(params, name, default)


def energy_terms(grid: np.ndarray, periodic: bool = True) -> dict[str, np.ndarray]:
    """Bond and site counts that the energy is linear in.

    Parameters
    ----------
    grid : int array, shape (..., H, W)
        Site states 0 (empty), 1 (particle), 2 (solvent).
    periodic : bool
        Periodic boundaries (bonds wrap around, as ``np.roll`` does) or open.

    Returns
    -------
    dict of int64 arrays, each of shape (...)
        ``nn``, ``ll``, ``nl``: numbers of particle-particle, liquid-liquid and
        particle-liquid bonds; ``l``: number of liquid sites.
    """
    g = np.asarray(grid)
    if g.ndim < 2:
        raise ValueError(f"grid must have shape (..., H, W), found shape {g.shape}")
    n = (g == 1).astype(np.int64)
    l = (g == 2).astype(np.int64)
    out = {"nn": 0, "ll": 0, "nl": 0}
    for axis in (-2, -1):
        if periodic:
            n2, l2 = np.roll(n, -1, axis), np.roll(l, -1, axis)
            a_n, a_l = n, l
        else:
            size = g.shape[axis]
            a_n = np.take(n, np.arange(size - 1), axis)
            a_l = np.take(l, np.arange(size - 1), axis)
            n2 = np.take(n, np.arange(1, size), axis)
            l2 = np.take(l, np.arange(1, size), axis)
        out["nn"] = out["nn"] + (a_n * n2).sum(axis=(-2, -1))
        out["ll"] = out["ll"] + (a_l * l2).sum(axis=(-2, -1))
        out["nl"] = out["nl"] + (a_n * l2 + a_l * n2).sum(axis=(-2, -1))
    out["l"] = l.sum(axis=(-2, -1))
    return {k: np.asarray(v, np.int64) for k, v in out.items()}


def total_energy(grid: np.ndarray, params: Any = None, **couplings: Any) -> np.ndarray | float:
    """Energy of one grid or a batch, by summing over every bond.

    Parameters
    ----------
    grid : int array, shape (H, W) or (..., H, W)
        Site states 0 (empty), 1 (particle), 2 (solvent).
    params : SimParams, mapping or None
        Source of ``e_nn``, ``e_ll``, ``e_nl``, ``mu`` (missing ones count as 0)
        and ``periodic`` (default True).
    **couplings
        Override any of those names, e.g. ``total_energy(g, e_nn=-1.0)``.

    Returns
    -------
    float for one (H, W) grid, else float64 array of shape (...)
        Energy in units of k_B T (k_B = 1).

    Notes
    -----
    Periodic lattices narrower than 3 sites count a wrapped bond as ``np.roll``
    does (a 2-site ring has two bonds between the same pair); the Monte Carlo
    engine requires at least 3 sites per periodic direction, so this never
    matters there.
    """
    unknown = set(couplings) - {"e_nn", "e_ll", "e_nl", "mu", "periodic"}
    if unknown:
        raise TypeError(f"unknown coupling(s) {sorted(unknown)}")
    vals = {k: couplings.get(k, _coupling(params, k, d)) for k, d in
            (("e_nn", 0.0), ("e_ll", 0.0), ("e_nl", 0.0), ("mu", 0.0), ("periodic", True))}
    t = energy_terms(grid, bool(vals["periodic"]))
    e = (float(vals["e_nn"]) * t["nn"] + float(vals["e_ll"]) * t["ll"]
         + float(vals["e_nl"]) * t["nl"] + float(vals["mu"]) * t["l"])
    e = np.asarray(e, np.float64)
    return float(e) if e.ndim == 0 else e
