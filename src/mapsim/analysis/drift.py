"""Drift of generated samples with the distance from the top boundary, and its trend test.

An autoregressive sample starts at its top boundary and should relax to the
bulk within a few context ranges.  :func:`band_profiles` cuts every sample
into *pieces*: bands of ``band_rows`` rows, each band cut into pieces of the
comparison window's width (so a reference window cut the same way gives
pieces of the very same shape and edge treatment).  On each piece it measures
the intensive statistics

- ``density``: fraction of sites of the class,
- ``contacts``: nearest-neighbour bonds of the class (4-neighbourhood, inside
  the piece) per site,
- ``energy``: energy per site under a known Hamiltonian (bonds inside the piece),

and :func:`trend_slopes` fits, per generated sample, one least-squares slope of
each statistic against the band's centre row over its *interior* bands (those
below the skipped start-up rows).  Bands of one sample are correlated, samples
are independent, so the test is on the mean slope over samples (see
:mod:`mapsim.analysis.compare`, which draws its null by sign flips).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

DRIFT_STATS: tuple[str, ...] = ("density", "contacts", "energy")
"""Intensive statistics followed from the boundary (``energy`` only with a Hamiltonian)."""


def pieces(occ_or_grid: np.ndarray, band_rows: int, width: int) -> np.ndarray:
    """Cut samples into bands of ``band_rows`` rows and pieces ``width`` wide.

    Parameters
    ----------
    occ_or_grid : ndarray, shape (n, H, W)
    band_rows, width : int

    Returns
    -------
    ndarray, shape (n, H // band_rows, W // width, band_rows, width)
        Whole pieces only, tiled from the top-left corner.
    """
    n, H, W = occ_or_grid.shape
    nb, nc = H // band_rows, W // width
    g = occ_or_grid[:, : nb * band_rows, : nc * width]
    return g.reshape(n, nb, band_rows, nc, width).transpose(0, 1, 3, 2, 4)


def piece_statistics(grids: np.ndarray, class_id: int, band_rows: int, width: int,
                     energy: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, np.ndarray]:
    """Intensive statistics of every piece.

    Parameters
    ----------
    grids : ndarray of int, shape (n, H, W)
    class_id : int
    band_rows, width : int
        Piece shape.
    energy : callable, optional
        Maps grids of shape (m, band_rows, width) to energies per site (m,),
        open edges.

    Returns
    -------
    dict of ndarray, each of shape (n, n_bands, n_cols)
    """
    g = pieces(grids, band_rows, width)  # (n, nb, nc, r, w)
    n, nb, nc, r, w = g.shape
    occ = g == class_id
    sites = r * w
    bonds = (occ[..., :, 1:] & occ[..., :, :-1]).sum(axis=(-2, -1)) + (occ[..., 1:, :] & occ[..., :-1, :]).sum(
        axis=(-2, -1))
    out = {"density": occ.sum(axis=(-2, -1)) / sites, "contacts": bonds / sites}
    if energy is not None:
        out["energy"] = np.asarray(energy(g.reshape(-1, r, w)), dtype=float).reshape(n, nb, nc)
    return out


def trend_slopes(values: np.ndarray, first_band: int, band_rows: int) -> np.ndarray:
    """Least-squares slope per sample of band values against the band centre row.

    Parameters
    ----------
    values : ndarray, shape (n, n_bands)
        A statistic per sample and band (mean over the band's pieces).
    first_band : int
        First interior band (bands before it hold skipped start-up rows).
    band_rows : int

    Returns
    -------
    ndarray, shape (n,)
        Change of the statistic per row (NaN when fewer than 2 interior bands).
    """
    y = values[:, first_band:]
    nb = y.shape[1]
    if nb < 2:
        return np.full(values.shape[0], np.nan)
    x = (np.arange(first_band, first_band + nb) + 0.5) * band_rows
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)


def plot_drift(drift: dict[str, Any], title: str = "drift from the top boundary"):
    """Each intensive statistic against the distance from the top boundary.

    ``drift`` is :attr:`mapsim.analysis.compare.Comparison.drift`: band centre
    rows, the generated mean per band with ±2 standard errors over samples,
    the reference value and its 95 % band for a band mean, the skipped rows.
    """
    from matplotlib.figure import Figure

    stats = [s for s in DRIFT_STATS if s in drift["generated"]]
    fig = Figure(figsize=(3.6 * len(stats), 3.4), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(stats)))
    x = np.asarray(drift["band_centre"])
    for ax, s in zip(axes, stats):
        m, se = np.asarray(drift["generated"][s]), np.asarray(drift["generated_stderr"][s])
        ref, half = drift["reference"][s], drift["reference_halfwidth"][s]
        ax.axhspan(ref - half, ref + half, color="#bbb", alpha=0.5, lw=0, label="reference, 95 % band")
        ax.axhline(ref, color="#333", lw=1)
        ax.errorbar(x, m, yerr=2 * se, fmt="o-", ms=3, color="#d62728", label="generated ±2 SE")
        ax.axvline(drift["skip_rows"], color="#1f77b4", ls="--", lw=1, label="skipped rows")
        p = drift.get("p_adjusted", {}).get(s)
        ax.set_title(f"{s}" + (f" (trend p_adj {p:.3g})" if p is not None else ""), fontsize=9)
        ax.set_xlabel("rows from the top boundary (band centre)")
    axes[0].legend(frameon=False, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig
