"""Generation in blocks of rows: bounded memory, streaming, resuming and splitting.

A MAP's conditional of pixel (i, j) depends only on the L rows above it and
the pixels to its left (the canvas convention of :mod:`mapsim.models.base`),
so rows ``r0 .. r1 - 1`` of a sample can be drawn by any sampler given the L
rows above them as its boundary and the uniforms of those rows (contract
``lines-v2`` of :mod:`mapsim.sampling.rng`, addressable by (sample, row)).
Every generation with :func:`mapsim.sampling.generate.generate` runs in
blocks of :data:`BLOCK_ROWS` rows, whatever its output; so a dataset written
in memory, one streamed to disk, one resumed after a crash at a block
boundary and one whose samples were split over workers hold the same bytes.

(Float32 models are exact up to float32 rounding, and the cached sampler
computes the p boundary rows of a block's vertical stack with the model's own
convolutions rather than inside the kernel, so a different block size could
flip a draw whose uniform lies within ~1e-7 of a cumulative boundary: the
block size is therefore fixed and recorded in the metadata.)
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from mapsim.sampling.common import Boundary
from mapsim.sampling.rng import POSITION, seed_entropy, uniforms

BLOCK_ROWS = 256
"""Rows per block (part of the output contract, recorded as ``metadata["block_rows"]``)."""


def next_top(top: np.ndarray, grids: np.ndarray, n_classes: int) -> np.ndarray:
    """The L canvas rows above the row after ``grids``.

    Parameters
    ----------
    top : ndarray of int, shape (K, L, W + 2L)
        Rows above ``grids``.
    grids : ndarray of int, shape (K, b, W)
        The rows just drawn.
    n_classes : int
        N_c (the outside class of the side columns).

    Returns
    -------
    ndarray of int64, shape (K, L, W + 2L)
    """
    K, L, Wc = top.shape
    if L == 0:
        return top
    W = Wc - 2 * L
    rows = np.full((K, grids.shape[1], Wc), n_classes, dtype=np.int64)
    rows[:, :, L : L + W] = grids
    return np.concatenate([top, rows], axis=1)[:, -L:]


def next_top_offsets(top_offsets: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The positions (K, L, W + 2L, 2) of the L canvas rows above the row after ``offsets`` (K, b, W, 2)."""
    K, L, Wc, _ = top_offsets.shape
    if L == 0:
        return top_offsets
    W = Wc - 2 * L
    rows = np.full((K, offsets.shape[1], Wc, 2), np.nan, dtype=np.float32)
    rows[:, :, L : L + W] = offsets
    return np.concatenate([top_offsets, rows], axis=1)[:, -L:]


def sample_blocks(model, sampler: Callable, n_samples: int, height: int, width: int, *, seed, beta: float = 1.0,
                  boundary: Boundary | None = None, first_sample: int = 0, start_row: int = 0,
                  top: np.ndarray | None = None, threads: int | None = None,
                  progress: Callable[[int], None] | None = None, top_offsets: np.ndarray | None = None
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Draw samples block by block.

    Parameters
    ----------
    model : MapModel
    sampler : callable
        A sampler with the signature of :func:`mapsim.sampling.reference.sample_reference`
        (keywords ``u``, ``top``, ``beta``, ``progress``, ``threads``).
    n_samples, height, width : int
        K (this call's samples), H, W.
    seed : int or Generator
    beta : float
    boundary : Boundary, optional
        Rows above row 0 (default outside); ignored when ``top`` is given.
    first_sample : int
        Index of this call's first sample in the whole run (its uniforms and boundary noise).
    start_row : int
        First row to draw, a multiple of :data:`BLOCK_ROWS` (resuming).
    top : ndarray of int (K, L, W + 2L), optional
        Canvas rows above ``start_row`` (needed when ``start_row > 0``).
    threads : int, optional
    progress : callable, optional
        Called with the number of rows finished.
    top_offsets : ndarray of float32 (K, L, W + 2L, 2), optional
        Models with positions: positions of the atoms in ``top`` (NaN where none); needed
        when resuming (``start_row > 0``) a model with positions.  Each block gets the
        positions of the rows above it and the position uniforms of its own rows, so blocks
        draw exactly what one pass draws.

    Yields
    ------
    r0 : int
        First row of the block.
    grids : ndarray of uint8, shape (K, b, W)
    log_probs : ndarray of float32, shape (K, b, W)
    offsets : ndarray of float32, shape (K, b, W, 2), or None
        Positions inside the pixels, for models with a position head.
    """
    if start_row % BLOCK_ROWS:
        raise ValueError(f"start_row must be a multiple of {BLOCK_ROWS}, found {start_row}")
    entropy = seed_entropy(seed)
    L, N = model.context_range, model.n_classes
    positions = bool(getattr(getattr(model, "config", None), "positions", False))
    if positions and start_row and top_offsets is None:
        raise ValueError("resuming a model with positions needs the positions of the rows above (top_offsets)")
    if positions and top_offsets is None:
        top_offsets = np.full(tuple(top.shape if top is not None else (n_samples, L, width + 2 * L)) + (2,),
                              np.nan, np.float32)
    if top is None:
        if start_row:
            raise ValueError("resuming at a later row needs the rows above it (top)")
        top = (boundary or Boundary()).top_rows(n_samples, L, width, N, entropy, first_sample=first_sample)
    for r0 in range(start_row, height, BLOCK_ROWS):
        b = min(BLOCK_ROWS, height - r0)
        u = uniforms(entropy, n_samples, b, width, first_sample=first_sample, first_row=r0)
        done = (lambda rows, r0=r0: progress(r0 + rows)) if progress is not None else None
        extra = {}
        if positions:
            extra = {"v": uniforms(entropy, n_samples, b, width, stream=POSITION, ndim=2, first_sample=first_sample,
                                   first_row=r0), "top_offsets": top_offsets}
        res = sampler(model, n_samples, b, width, seed=entropy, beta=beta, u=u, top=top, progress=done,
                      threads=threads, **extra)
        yield r0, res.grids, res.log_probs, getattr(res, "offsets", None)
        if positions:
            top_offsets = next_top_offsets(top_offsets, res.offsets)
        top = next_top(top, res.grids, N)
