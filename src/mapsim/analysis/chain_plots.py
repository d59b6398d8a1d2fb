"""Drawings of a context chain: the state graph (paper Fig. 4) and the approach to stationarity.

Both functions draw on a matplotlib Axes (a new pyplot figure when none is
given) and import matplotlib inside the function, so the chain analysis
itself needs only NumPy/SciPy.
"""

from __future__ import annotations

import numpy as np

from mapsim.analysis.chain import MarkovChain
from mapsim.analysis.context_states import encode_states


def de_bruijn_order(alphabet: int, length: int) -> np.ndarray:
    """Context states in the order of a de Bruijn cycle (each is followed by one of its successors).

    The windows of the lexicographically least de Bruijn sequence B(A, L)
    (FKM algorithm) visit every state once along edges of the context chain,
    so drawing the states on a circle in this order puts A^L of the edges
    between neighbours and keeps the state graph readable.
    """
    A, L = int(alphabet), int(length)
    if L == 0:
        return np.zeros(1, dtype=np.int64)
    a = [0] * (A * L + 1)
    seq: list[int] = []

    def db(t: int, p: int) -> None:
        if t > L:
            if L % p == 0:
                seq.extend(a[1 : p + 1])
        else:
            a[t] = a[t - p]
            db(t + 1, p)
            for j in range(a[t - p] + 1, A):
                a[t] = j
                db(t + 1, t)

    db(1, 1)
    cyc = np.array(seq + seq[: L - 1], dtype=np.int64)
    win = np.lib.stride_tricks.sliding_window_view(cyc, L)
    return encode_states(win, A)


def plot_state_graph(chain: MarkovChain, ax=None, title: str | None = None, show_probs: bool = True,
                     order: np.ndarray | None = None):
    """Draw the directed state graph (edges where P > 0) like the paper's Fig. 4.

    Nodes sit on a circle (in ``order``, e.g. :func:`de_bruijn_order`;
    default state order); self-loops are drawn outside it; edge width grows
    with the transition probability, which labels each edge; transient
    states are grey and each closed class gets its own colour.  Imports matplotlib.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    if not hasattr(chain, "classes_"):
        chain.compute()
    n = chain.n_states
    labels = chain.labels or [str(i) for i in range(n)]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5.5))
    order = np.arange(n) if order is None else np.asarray(order)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    ang = np.pi / 2 - 2 * np.pi * pos / n
    xy = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    r_node = min(0.16, 0.9 * np.pi / max(n, 1))
    lim = 1.0 + 4.0 * r_node
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axis("off")
    fig = ax.figure
    bbox = ax.get_window_extent().transformed(fig.dpi_scale_trans.inverted())
    pt_per_unit = min(bbox.width, bbox.height) * 72.0 / (2 * lim)
    shrink = r_node * pt_per_unit + 1.5
    palette = plt.get_cmap("tab10")
    colour = ["0.82"] * n
    for k, c in enumerate(chain.closed_classes_):
        for s in c:
            colour[s] = palette(k % 10)
    fs = 9 if n <= 8 else 7
    coo = chain.P.tocoo()
    for a, b, p in zip(coo.row, coo.col, coo.data):
        lw = 0.6 + 2.0 * p
        if a == b:
            out = xy[a]
            tang = np.array([-out[1], out[0]])
            p1 = out * (1 + 0.6 * r_node) + 0.75 * r_node * tang
            p2 = out * (1 + 0.6 * r_node) - 0.75 * r_node * tang
            arrow = FancyArrowPatch(tuple(p1), tuple(p2), arrowstyle="-|>", mutation_scale=10, lw=lw,
                                    connectionstyle="arc3,rad=-1.6", shrinkA=0, shrinkB=0, color="k", zorder=1)
            ax.add_patch(arrow)
            lab = out * (1 + 2.7 * r_node)
        else:
            arrow = FancyArrowPatch(tuple(xy[a]), tuple(xy[b]), arrowstyle="-|>", mutation_scale=12, lw=lw,
                                    connectionstyle="arc3,rad=0.15", shrinkA=shrink, shrinkB=shrink, color="k",
                                    zorder=1)
            ax.add_patch(arrow)
            d = xy[b] - xy[a]
            ctrl = 0.5 * (xy[a] + xy[b]) + 0.15 * np.array([d[1], -d[0]])
            t = 0.4  # quadratic Bezier point, nearer the source so opposite edges get separate labels
            lab = (1 - t) ** 2 * xy[a] + 2 * t * (1 - t) * ctrl + t**2 * xy[b]
        if show_probs:
            ax.text(lab[0], lab[1], f"{p:.2f}", ha="center", va="center", fontsize=fs - 2, color="0.25", zorder=4,
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85))
    for s in range(n):
        ax.add_patch(plt.Circle(tuple(xy[s]), r_node, fc=colour[s], ec="k", zorder=2))
        ax.text(xy[s][0], xy[s][1], labels[s], ha="center", va="center", fontsize=fs, zorder=3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_tv(chain: MarkovChain, ax=None, boundary_curve: np.ndarray | None = None, boundary_offset: int = 0,
            unit: str = "steps"):
    """TV distance to stationarity against steps, from every start state (grey) and its maximum."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    tv = chain.tv_
    t = np.arange(tv.shape[0])
    floor = 1e-12
    ax.semilogy(t, np.maximum(tv, floor), color="0.75", lw=0.6)
    ax.semilogy(t, np.maximum(tv.max(axis=1), floor), color="k", lw=1.6, label="max over start states")
    if boundary_curve is not None and boundary_curve.size:
        tb = np.arange(boundary_curve.size) + boundary_offset
        ax.semilogy(tb, np.maximum(boundary_curve, floor), color="C3", lw=1.6, label="from the outside boundary")
    ax.axhline(chain.eps, color="C0", ls="--", lw=1, label=f"eps = {chain.eps:g}")
    if chain.mixing_steps_ is not None:
        ax.axvline(chain.mixing_steps_, color="C0", ls=":", lw=1, label=f"mixing: {chain.mixing_steps_} {unit}")
    ax.set_xlabel(unit)
    ax.set_ylabel("total-variation distance to stationarity")
    ax.legend(fontsize=8)
    return ax
