"""Exact results of the 2D Ising model and its lattice-gas mapping (validation of the engine).

The particle-only lattice gas with bond energy ``e_nn`` and particle energy ``mu_n`` is the
Ising model with spins s = 2 n - 1, coupling J = -e_nn / 4 and field h = -(e_nn + mu_n / 2)
(field-free at mu_n = -2 e_nn). With m = <s> (m = 2 ρ - 1) the lattice-gas energy per site is

    E / N = u + e_nn / 2 + e_nn m + mu_n (1 + m) / 2

where u = -J <Σ_bonds s_i s_j> / N is the Ising energy per site. In units of J (e_nn = -4:
J = 1, T in units of J):

* Onsager (1944): u(T) = -coth(2/T) [1 + (2/π)(2 tanh²(2/T) - 1) K(k)], k = 2 sinh(2/T) / cosh²(2/T),
  K the complete elliptic integral of the first kind;
* Yang (1952): |m| = (1 - sinh(2/T)^-4)^(1/8) below T_c = 2 / ln(1 + √2) ≈ 2.269, else 0.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["T_C", "onsager_energy", "yang_magnetisation", "ising_energy_per_site"]

#: Critical temperature of the square-lattice Ising model, in units of J.
T_C = 2.0 / math.log(1.0 + math.sqrt(2.0))


def onsager_energy(T: float) -> float:
    """Exact Ising energy per site u(T) of the infinite square lattice (J = 1, k_B = 1), T > 0."""
    from scipy.special import ellipk

    b = 2.0 / T
    k = 2.0 * math.sinh(b) / math.cosh(b) ** 2
    # scipy's ellipk takes the parameter m = k**2; at T_c (k = 1) the term vanishes with 2 tanh² - 1
    kk = 0.0 if abs(1.0 - k) < 1e-15 else float(ellipk(k * k))
    return -1.0 / math.tanh(b) * (1.0 + 2.0 / math.pi * (2.0 * math.tanh(b) ** 2 - 1.0) * kk)


def yang_magnetisation(T: float) -> float:
    """Exact spontaneous magnetisation |m|(T) of the square-lattice Ising model (J = 1); 0 at T >= T_c."""
    if T >= T_C:
        return 0.0
    return (1.0 - math.sinh(2.0 / T) ** -4) ** 0.125


def ising_energy_per_site(energy_per_site: np.ndarray, density: np.ndarray, e_nn: float,
                          mu_n: float = 0.0) -> np.ndarray:
    """Ising energy per site u of lattice-gas samples (module docstring), in the units of ``e_nn``.

    Parameters
    ----------
    energy_per_site : ndarray, shape (n,)
        Lattice-gas energy per site, H / N, including the ``mu_n`` term.
    density : ndarray, shape (n,)
        Particle fraction ρ of each sample (m = 2 ρ - 1).
    e_nn, mu_n : float
        Couplings of the lattice gas (u is in units of J = -e_nn / 4 after dividing by J).

    Returns
    -------
    ndarray of float64, shape (n,)
        u = E/N - e_nn/2 - e_nn m - mu_n (1 + m)/2; with e_nn = -4 it is in units of J = 1.
    """
    m = 2.0 * np.asarray(density, np.float64) - 1.0
    return np.asarray(energy_per_site, np.float64) - e_nn / 2 - e_nn * m - mu_n * (1.0 + m) / 2
