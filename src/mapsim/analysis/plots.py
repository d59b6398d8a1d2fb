"""Figures of structure statistics and comparisons (matplotlib, no pyplot state).

Every function returns a :class:`matplotlib.figure.Figure`; write it with
:func:`mapsim.fileio.save_figure_atomic`.  Curves are passed as
``{label: values}`` so one function draws one dataset or several overlaid.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

# Class colours by name (Monte Carlo classes); other classes take the fallback palette.
_CLASS_COLOURS = {"empty": "#ffffff", "particle": "#1f1f1f", "solvent": "#8ecae6"}
_FALLBACK = ["#ffffff", "#1f1f1f", "#8ecae6", "#e76f51", "#2a9d8f", "#e9c46a", "#9b5de5", "#f15bb5"]
_LINE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"]


def class_colormap(classes: Sequence[str]) -> ListedColormap:
    """One colour per class id (empty white, particle black, solvent light blue)."""
    cols = [_CLASS_COLOURS.get(c, _FALLBACK[i % len(_FALLBACK)]) for i, c in enumerate(classes)]
    return ListedColormap(cols)


def draw_grid(ax, grid: np.ndarray, classes: Sequence[str], title: str | None = None) -> None:
    """Draw one sample (H, W) of class ids on ``ax`` with :func:`class_colormap`."""
    ax.imshow(grid, cmap=class_colormap(classes), vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#888888")
    if title:
        ax.set_title(title, fontsize=9)


def plot_g_r(r: np.ndarray, curves: Mapping[str, np.ndarray], title: str = "pair correlation") -> Figure:
    """g(r) of one or more datasets at the lattice distances r, shape (n_bins,)."""
    fig = Figure(figsize=(6, 4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for i, (label, g) in enumerate(curves.items()):
        ax.plot(r, g, marker="o" if i == 0 else "s", ms=4, lw=1.2, color=_LINE_COLOURS[i % 4], label=label,
                alpha=1.0 if i == 0 else 0.85, mfc="none" if i else None)
    ax.axhline(1.0, color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("r (lattice spacings)")
    ax.set_ylabel("g(r)")
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig


def plot_neighbours(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "particle neighbours",
                    sizes: tuple[int, int] = (4, 8)) -> Figure:
    """Histograms of particle neighbours among 4 and among 8, grouped bars per dataset.

    ``curves[label] = (hist4 (5,), hist8 (9,))``; 3-D data: ``sizes=(6, 26)`` and (hist6 (7,), hist26 (27,)).
    """
    fig = Figure(figsize=(9, 3.6), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2)
    k = len(curves)
    width = 0.8 / max(k, 1)
    for ax, which, n in ((axes[0], 0, sizes[0]), (axes[1], 1, sizes[1])):
        x = np.arange(n + 1)
        for i, (label, hists) in enumerate(curves.items()):
            ax.bar(x - 0.4 + width * (i + 0.5), hists[which], width=width, color=_LINE_COLOURS[i % 4], label=label)
        ax.set_xticks(x)
        ax.set_xlabel(f"particle neighbours among {n}")
        ax.set_ylabel("fraction of particles")
        ax.set_yscale("log")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(title)
    return fig


def plot_distributions(clusters: Mapping[int, Mapping[str, np.ndarray]], dens: Mapping[str, np.ndarray],
                       size_counts: bool = False) -> Figure:
    """Cluster-size distributions (one count per cluster) and per-sample densities.

    Parameters
    ----------
    clusters : dict
        ``clusters[connectivity][label]``: cluster sizes, shape (n_clusters,), for connectivity 4 and/or 8;
        with ``size_counts`` the number of clusters of each size 0, 1, ... instead.
    dens : dict
        ``dens[label]``: densities, shape (n,).
    """
    fig = Figure(figsize=(4.2 * (len(clusters) + 1), 3.6), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(clusters) + 1))
    for ax, (conn, curves) in zip(axes, clusters.items()):
        hists = {label: np.asarray(v) if size_counts else np.bincount(v, minlength=1) for label, v in curves.items()}
        for i, (label, counts) in enumerate(hists.items()):
            if counts.sum() == 0:
                continue
            x = np.nonzero(counts)[0]
            ax.plot(x, counts[x] / counts.sum(), "o-" if i == 0 else "s--", ms=3, lw=1, color=_LINE_COLOURS[i % 4],
                    label=label, mfc="none" if i else None)
        largest = max((int(np.flatnonzero(c)[-1]) for c in hists.values() if c.sum()), default=1)
        if largest > 30:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xlim(0.5, max(largest, 3) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.set_xlabel(f"cluster size ({conn}-connected)")
        ax.set_ylabel("fraction of clusters")
        ax.legend(frameon=False, fontsize=8)
    ax = axes[-1]
    allv = np.concatenate([np.asarray(v, float) for v in dens.values()]) if dens else np.zeros(0)
    if allv.size and np.ptp(allv) > 1e-12:
        bins = np.linspace(allv.min(), allv.max(), 21)
        for i, (label, d) in enumerate(dens.items()):
            ax.hist(d, bins=bins, density=True, histtype="step", lw=1.5, color=_LINE_COLOURS[i % 4], label=label)
        ax.set_ylabel("probability density")
    else:  # every sample holds the same number of particles (fixed-N simulation)
        for i, (label, d) in enumerate(dens.items()):
            ax.axvline(float(np.mean(d)), color=_LINE_COLOURS[i % 4], lw=1.5, ls="-" if i == 0 else "--",
                       label=f"{label}: all {float(np.mean(d)):.4g}")
        ax.set_yticks([])
        if allv.size:
            pad = max(0.2 * float(allv.max()), 1e-3)
            ax.set_xlim(float(allv.min()) - pad, float(allv.max()) + pad)
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.set_xlabel("density per sample")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_structure_factor(k: np.ndarray, S: np.ndarray) -> Figure:  # noqa: N803
    """Radially averaged S(k) against |k| (radians per lattice spacing)."""
    fig = Figure(figsize=(6, 4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(k, S, "o-", ms=3, lw=1)
    ax.set_xlabel("|k| (rad / lattice spacing)")
    ax.set_ylabel("S(k)")
    ax.set_title("structure factor")
    return fig


def plot_examples(panels: Sequence[tuple[str, np.ndarray]], classes: Sequence[str],
                  skip_rows: Mapping[int, int] | None = None) -> Figure:
    """Example samples side by side.

    Parameters
    ----------
    panels : sequence of (title, grid (H, W))
    classes : sequence of str
    skip_rows : dict, optional
        Panel index -> rows dropped from the top in the analysis (drawn as a red line).
    """
    n = len(panels)
    fig = Figure(figsize=(3.2 * n, 3.6), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for i, (ax, (title, grid)) in enumerate(zip(axes, panels)):
        draw_grid(ax, grid, classes, title)
        if skip_rows and skip_rows.get(i):
            ax.axhline(skip_rows[i] - 0.5, color="#d62728", lw=1.2)
    return fig


def plot_energy_traces(sweeps: np.ndarray, trace: np.ndarray, title: str = "energy traces",
                       max_lines: int = 20) -> Figure:
    """Energy per site of Monte Carlo samples against sweeps, and their mean with its standard error.

    Parameters
    ----------
    sweeps : ndarray of int, shape (n_points,)
        Sweeps at which the energies were recorded (metadata ``trace_sweeps``).
    trace : ndarray, shape (n_samples, n_points)
        Energy per site of each sample (extra array ``energy_trace``).
    title : str
    max_lines : int
        At most this many samples are drawn individually (the first ones).
    """
    trace = np.asarray(trace, np.float64)
    fig = Figure(figsize=(7, 4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for row in trace[:max_lines]:
        ax.plot(sweeps, row, lw=0.6, color="#999999", alpha=0.6)
    mean = trace.mean(axis=0)
    ax.plot(sweeps, mean, lw=1.6, color=_LINE_COLOURS[0], label=f"mean of {trace.shape[0]} samples")
    if trace.shape[0] > 1:
        se = trace.std(axis=0, ddof=1) / np.sqrt(trace.shape[0])
        ax.fill_between(sweeps, mean - 2 * se, mean + 2 * se, color=_LINE_COLOURS[0], alpha=0.25, lw=0,
                        label="± 2 standard errors")
    total = sweeps[-1] if len(sweeps) else 0
    for q in (0.5, 0.75):  # the quarters the equilibration verdict compares
        ax.axvline(q * total, color="#bbbbbb", lw=0.8, ls=":")
    ax.set_xlabel("sweeps")
    ax.set_ylabel("energy per site")
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig
