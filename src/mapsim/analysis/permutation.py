"""Permutation machinery of the fidelity verdict: pooled statistics, distances, max-T step-down.

The comparison (:mod:`mapsim.analysis.compare`) reduces each dataset to
*units* (whole samples, each carrying the same number of windows) and each
statistic to per-unit sums, a numerator ``num`` and a denominator ``den``:
the statistic of a set A of units is ``Σ_A num / Σ_A den``.  A relabelling of
the units into REF and GEN is then one matrix product per statistic, and no
image is analysed again.  This module holds that algebra (:class:`Statistic`),
the random relabellings and sign flips, and the Westfall–Young max-T step-down
adjustment; it knows nothing about images.

Everything here is NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("rms", "tv", "w1", "abs")
"""Distances: RMS over bins (g(r), S(k)), total variation (histograms),
Wasserstein-1 on a sorted support (cluster sizes, window densities), absolute
difference (scalars: energy per site, mean density)."""


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is 0 (broadcast)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass
class Statistic:
    """One statistic as per-unit sums, with its distance.

    Attributes
    ----------
    name : str
    kind : {"rms", "tv", "w1", "abs"}
    num : ndarray, shape (n_units, D)
        Per-unit numerator sums.
    den : ndarray, shape (n_units, D) or (n_units, 1)
        Per-unit denominator sums (broadcast over D when one column).
    support : ndarray, shape (D,), optional
        Sorted support values of a ``w1`` histogram (e.g. cluster sizes).
    """

    name: str
    kind: str
    num: np.ndarray
    den: np.ndarray
    support: np.ndarray | None = None

    def value(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        """Pooled statistic from summed ``num`` (..., D) and ``den`` (..., D or 1)."""
        return _ratio(num, den)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distance between pooled values ``a`` and ``b``, shapes (..., D) -> (...).

        NaN where a statistic is undefined on a side (e.g. no particles): for
        ``rms`` only when no bin is defined on both sides.
        """
        if self.kind == "rms":
            ok = np.isfinite(a) & np.isfinite(b)
            sq = np.where(ok, (np.where(ok, a, 0) - np.where(ok, b, 0)) ** 2, 0.0)
            n = ok.sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, np.sqrt(sq.sum(axis=-1) / np.maximum(n, 1)), np.nan)
        if self.kind == "tv":
            return 0.5 * np.abs(a - b).sum(axis=-1)  # NaN propagates
        if self.kind == "w1":
            assert self.support is not None
            gaps = np.diff(self.support)  # (D - 1,); the CDFs agree (= 1) after the last support point
            fa, fb = np.cumsum(a, axis=-1), np.cumsum(b, axis=-1)
            return (np.abs(fa - fb)[..., :-1] * gaps).sum(axis=-1) if gaps.size else np.zeros(a.shape[:-1])
        if self.kind == "abs":
            return np.abs(a - b).sum(axis=-1)
        raise ValueError(f"unknown distance kind {self.kind!r}")

    def pooled(self, index: np.ndarray | None = None) -> np.ndarray:
        """Pooled value over the units ``index`` (all by default), shape (D,)."""
        num, den = (self.num, self.den) if index is None else (self.num[index], self.den[index])
        return self.value(num.sum(axis=0), den.sum(axis=0))

    def two_sample(self, labels: np.ndarray) -> np.ndarray:
        """Distances between the two groups of every relabelling.

        Parameters
        ----------
        labels : ndarray of float, shape (B, n_units)
            1 where a unit is labelled GEN, 0 where REF.

        Returns
        -------
        ndarray, shape (B,)
        """
        tot_n, tot_d = self.num.sum(axis=0), self.den.sum(axis=0)
        gn, gd = labels @ self.num, labels @ self.den  # (B, D)
        return self.distance(self.value(tot_n - gn, tot_d - gd), self.value(gn, gd))

    def one_sample(self, reference: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """Distances from a fixed reference value after flipping GEN units' deviations.

        Unit s deviates from the reference by ``num_s - reference * den_s``; a
        sign flip keeps the pooled denominator, so the flipped pooled value is
        ``reference + Σ ε_s dev_s / Σ den``.  Row ε = +1 everywhere is the
        observed distance.

        Parameters
        ----------
        reference : ndarray, shape (D,)
        signs : ndarray of float, shape (B, n_units), entries ±1

        Returns
        -------
        ndarray, shape (B,)
        """
        dev = self.num - reference[None, :] * self.den  # (n, D)
        tot_d = self.den.sum(axis=0)
        flipped = _ratio(signs @ dev, np.broadcast_to(tot_d, (signs.shape[0], tot_d.shape[-1])))
        return self.distance(reference[None, :] + flipped, np.broadcast_to(reference, flipped.shape))


def relabellings(n_ref: int, n_gen: int, n_perm: int, seed: int | np.random.Generator) -> np.ndarray:
    """Uniformly random relabellings of ``n_ref + n_gen`` units keeping the group sizes.

    Returns
    -------
    ndarray of float64, shape (n_perm, n_ref + n_gen)
        1 for the units labelled GEN.  Units ``0 .. n_ref - 1`` are the
        observed REF units, the rest the observed GEN units.
    """
    rng = np.random.default_rng(seed)
    n = n_ref + n_gen
    order = np.argsort(rng.random((n_perm, n)), axis=1)
    labels = np.zeros((n_perm, n))
    np.put_along_axis(labels, order[:, :n_gen], 1.0, axis=1)
    return labels


def sign_flips(n: int, n_perm: int, seed: int | np.random.Generator) -> np.ndarray:
    """Independent uniform ±1 signs, shape (n_perm, n), float64."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, (n_perm, n)) * 2.0 - 1.0


def null_rms(null: np.ndarray) -> float:
    """Root mean square of the finite null distances (NaN when there are none)."""
    col = null[np.isfinite(null)]
    return float(np.sqrt(np.mean(col**2))) if col.size else math.nan


def standardise(observed: float, null: np.ndarray, noise: float) -> tuple[float, np.ndarray]:
    """Distance over noise, for the observed value and the null draws.

    A null draw that is undefined (NaN: a relabelled group without particles)
    counts as +inf, so it can only make a p-value larger (conservative).  With
    a zero noise (every null distance 0) a positive distance is infinitely
    far and a zero distance is 0 -- never a division by zero.
    """
    null = np.where(np.isfinite(null), null, np.inf)
    if not math.isfinite(observed):
        return math.inf, null
    if not (noise > 0):
        return (0.0 if observed == 0 else math.inf), np.where(null > 0, np.inf, 0.0)
    return observed / noise, null / noise


def _exceeds(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    # ties count as exceedances (conservative); the relative slack absorbs rounding between
    # the observed statistic and the same configuration met again among the relabellings
    with np.errstate(invalid="ignore"):
        slack = np.where(np.isfinite(observed), 1e-9 * np.abs(observed), 0.0)
    return null >= observed - slack


def maxt_stepdown(t_obs: np.ndarray, t_null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw and Westfall–Young max-T step-down adjusted permutation p-values.

    Parameters
    ----------
    t_obs : ndarray, shape (m,)
        Observed standardised statistics (larger = more extreme; +inf allowed).
    t_null : ndarray, shape (B, m)
        The same statistics under B draws of the null transformation, drawn
        jointly for all m statistics (so their dependence is kept).

    Returns
    -------
    p_raw, p_adjusted : ndarray, shape (m,)
        ``p = (1 + #{b: T*_b ≥ T}) / (B + 1)``; the adjusted p-value of the
        statistic ranked i-th uses the maximum of T* over it and every
        statistic ranked below it, made monotone in the ranking (Westfall &
        Young 1993, Algorithm 2.8).  Controls the family-wise error rate
        strongly under subset pivotality, and, unlike Holm, gains from strong
        dependence between the statistics.
    """
    t_obs = np.asarray(t_obs, dtype=float)
    t_null = np.asarray(t_null, dtype=float)
    B, m = t_null.shape
    p_raw = (1 + _exceeds(t_null, t_obs[None, :]).sum(axis=0)) / (B + 1)
    order = np.argsort(-t_obs, kind="stable")
    # successive maxima from the least extreme statistic upwards
    u = np.maximum.accumulate(t_null[:, order[::-1]], axis=1)[:, ::-1]  # (B, m): u[:, i] = max over ranks ≥ i
    p_sorted = (1 + _exceeds(u, t_obs[order][None, :]).sum(axis=0)) / (B + 1)
    p_sorted = np.maximum.accumulate(p_sorted)
    p_adj = np.empty(m)
    p_adj[order] = p_sorted
    return p_raw, p_adj


def rank_scale(t_obs: np.ndarray, t_null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put every statistic on one scale, -log of its permutation p-value, before max-T.

    Max-T on distances standardised by their null RMS is unbalanced when the
    statistics' null distributions have different shapes: one whose
    standardised null never exceeds ~1.3 (g(r), an RMS over many bins) can
    then only be rejected beyond the tail of the heaviest-tailed member
    (~2.5), so it loses nearly all power, and the family becomes conservative.
    On the p-value scale every statistic's null is the same (discrete
    uniform), which is the Westfall–Young minP form of the step-down; the raw
    p-values are unchanged (a monotone transform within each statistic).

    Parameters
    ----------
    t_obs : ndarray, shape (m,)
    t_null : ndarray, shape (B, m)

    Returns
    -------
    u_obs : ndarray, shape (m,)
    u_null : ndarray, shape (B, m)
        ``-log p``, with p of a value = #{values among the observed and the B
        null draws that are ≥ it} / (B + 1) (ties count, as in :func:`maxt_stepdown`).
    """
    t_obs = np.asarray(t_obs, dtype=float)
    t_null = np.asarray(t_null, dtype=float)
    B, m = t_null.shape
    u_obs, u_null = np.empty(m), np.empty((B, m))
    for j in range(m):
        pool = np.sort(np.append(t_null[:, j], t_obs[j]))  # (B + 1,)
        for value, out in ((t_null[:, j], u_null[:, j]), (np.array([t_obs[j]]), None)):
            with np.errstate(invalid="ignore"):
                slack = np.where(np.isfinite(value), 1e-9 * np.abs(value), 0.0)
            ge = pool.size - np.searchsorted(pool, value - slack, side="left")  # values ≥ each one
            u = -np.log(ge / (B + 1))
            if out is None:
                u_obs[j] = u[0]
            else:
                out[:] = u
    return u_obs, u_null
