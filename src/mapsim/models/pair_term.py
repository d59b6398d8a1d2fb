"""The pair term of the position density (``position_pairs`` of :mod:`mapsim.models.pixelcnn`), compiled.

For an atom and one neighbour already drawn at (ny, nx) (pixel units from the atom's pixel
corner), the term adds w(d) to the log-weight of every cell (y bin b, x bin q) of the B x B grid,
d = the distance from the cell centre ((b + 0.5) / B, (q + 0.5) / B) to the neighbour, x scaled by
a_x / a_y, and w the piecewise linear function of d with knots ``1 / knots_per_pixel`` apart
(table ``w`` of ``knots + 2`` values, the last two zero, so w = 0 from ``knots`` knots on).

One function, :func:`add_pair`, evaluates it for the samplers (the cached kernel calls it per
atom) and for training (:func:`pair_forward` over all pairs of a batch); :func:`pair_backward`
is its gradient with respect to the table.  Loops over the B^2 cells in place replace the
(pairs, B, B) temporaries of a tensor version, which made training seven times slower.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange


@njit(cache=True)
def _knot(dy, q, nb, nx, ratio, kpp, knots):
    """(knot k, fraction f) of cell (row at dy from the neighbour, column q) for a neighbour at x = nx;
    k = -1 out of reach.  d is in y-pixel units (x scaled by ``ratio``), k = floor(d kpp)."""
    dx = ((q + 0.5) / nb - nx) * ratio
    u = math.sqrt(dy * dy + dx * dx) * kpp
    if u >= knots:
        return -1, 0.0
    k = int(math.floor(u))
    return k, u - k


@njit(cache=True)
def add_pair(J, w, ny, nx, ratio, kpp):
    """J[b, q] += w(d) for one neighbour at (ny, nx); ``J`` (B, B), ``w`` (knots + 2,) (module docstring).
    Rows of cells out of reach are skipped whole (w = 0 there)."""
    nb, knots = J.shape[0], w.shape[0] - 2
    for b in range(nb):
        dy = (b + 0.5) / nb - ny
        if abs(dy) * kpp >= knots:
            continue
        for q in range(nb):
            k, f = _knot(dy, q, nb, nx, ratio, kpp, knots)
            if k >= 0:
                J[b, q] += w[k] * (1.0 - f) + w[k + 1] * f


PAIR_CHUNKS = 16
"""Training splits the pairs into this many runs of whole atoms, one numba task each; fixed, so that
the gradient's summation order, and the bytes of a run, do not depend on the thread count."""


def chunk_starts(atom: np.ndarray, chunks: int = PAIR_CHUNKS) -> np.ndarray:
    """Boundaries (chunks + 1,) splitting pairs sorted by ``atom`` into runs of whole atoms."""
    cut = np.linspace(0, atom.shape[0], chunks + 1).astype(np.int64)
    if atom.shape[0]:
        cut[1:-1] = np.searchsorted(atom, atom[cut[1:-1]], side="left")  # back to the atom's first pair
    return cut


@njit(cache=True, parallel=True)
def pair_forward(out, table, atom, row, ny, nx, ratio, kpp, starts):
    """out[atom[p]] += the term of pair p with table row ``row[p]``; ``out`` (N, B, B) float64; pairs
    sorted by atom, split at ``starts`` (:func:`chunk_starts`), the runs in parallel."""
    for i in prange(starts.shape[0] - 1):
        for p in range(starts[i], starts[i + 1]):
            add_pair(out[atom[p]], table[row[p]], ny[p], nx[p], ratio, kpp)


@njit(cache=True, parallel=True)
def pair_backward(gtables, grad, atom, row, ny, nx, ratio, kpp, starts):
    """gtables[i] += d(sum grad * out) / d table over the pairs of run i of :func:`pair_forward`;
    ``gtables`` (runs, rows, knots + 2), ``grad`` (N, B, B) float64."""
    nb, knots = grad.shape[1], gtables.shape[2] - 2
    for i in prange(starts.shape[0] - 1):
        gtable = gtables[i]
        for p in range(starts[i], starts[i + 1]):
            g, t = grad[atom[p]], row[p]
            for b in range(nb):
                dy = (b + 0.5) / nb - ny[p]
                if abs(dy) * kpp >= knots:
                    continue
                for q in range(nb):
                    k, f = _knot(dy, q, nb, nx[p], ratio, kpp, knots)
                    if k >= 0:
                        gtable[t, k] += g[b, q] * (1.0 - f)
                        gtable[t, k + 1] += g[b, q] * f


def closest_pairs(grids: np.ndarray, offsets: np.ndarray, n_classes: int, reach: float, ratio: float) -> list:
    """The closest pair of atoms of each pair of occupied classes within ``reach`` pixels, in y-pixel units.

    Parameters
    ----------
    grids : ndarray, shape (K, H, W)
        Classes (0 = empty).
    offsets : ndarray, shape (K, H, W, 2)
        Positions inside the pixels, (y, x) in [0, 1); NaN where empty.
    n_classes : int
        N_c; the pairs of the N_c - 1 occupied classes are the table's rows.
    reach : float
        Pairs farther than this (pixels) are not looked at; a pair of classes without a closer pair
        gets ``reach``.
    ratio : float
        a_x / a_y: x distances in y-pixel units.

    Returns
    -------
    list of list of float, (N_c - 1, N_c - 1)
        Symmetric; within each sample, not across its edges (the edges may not be periodic).
    """
    from scipy.spatial import cKDTree

    occ = n_classes - 1
    best = np.full((occ, occ), float(reach))
    for g, off in zip(grids, offsets):
        r, c = np.nonzero(g)
        if r.size < 2:
            continue
        pts = np.stack([r + off[r, c, 0].astype(np.float64), (c + off[r, c, 1].astype(np.float64)) * ratio], 1)
        pairs = cKDTree(pts).query_pairs(reach, output_type="ndarray")
        if not len(pairs):
            continue
        d = np.hypot(*(pts[pairs[:, 0]] - pts[pairs[:, 1]]).T)
        a, b = g[r, c][pairs[:, 0]].astype(np.int64) - 1, g[r, c][pairs[:, 1]].astype(np.int64) - 1
        np.minimum.at(best, (a, b), d)
        np.minimum.at(best, (b, a), d)
    return best.tolist()


class PairTerm(torch.autograd.Function):
    """Autograd wrapper: ``apply(table (rows, knots + 2), n_atoms, B, atom, row, ny, nx, ratio, kpp)`` ->
    (n_atoms, B, B) in the table's dtype; gradient for the table only (positions are data)."""

    @staticmethod
    def forward(ctx, table, n_atoms, nb, atom, row, ny, nx, ratio, kpp):
        atom = np.ascontiguousarray(atom.cpu().numpy(), np.int64)
        order = np.argsort(atom, kind="stable") if np.any(np.diff(atom) < 0) else slice(None)
        args = (atom[order], np.ascontiguousarray(row.cpu().numpy()[order], np.int64),
                np.ascontiguousarray(ny.detach().cpu().numpy()[order], np.float64),
                np.ascontiguousarray(nx.detach().cpu().numpy()[order], np.float64), float(ratio), float(kpp),
                chunk_starts(atom[order]))
        out = np.zeros((n_atoms, nb, nb))
        pair_forward(out, table.detach().cpu().numpy().astype(np.float64), *args)
        ctx.args, ctx.shape, ctx.dtype, ctx.device = args, tuple(table.shape), table.dtype, table.device
        return torch.as_tensor(out, dtype=table.dtype, device=table.device)

    @staticmethod
    def backward(ctx, grad):
        gtables = np.zeros((PAIR_CHUNKS,) + ctx.shape)
        pair_backward(gtables, np.ascontiguousarray(grad.detach().cpu().numpy(), np.float64), *ctx.args)
        return (torch.as_tensor(gtables.sum(0), dtype=ctx.dtype, device=ctx.device),) + (None,) * 8
