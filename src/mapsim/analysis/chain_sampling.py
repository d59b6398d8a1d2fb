"""Long sequences drawn from a MAP, pixel by pixel, for checking the chain by sampling.

:func:`sample_table_sequences` runs a 1D MAP given by its table
p(next | context); :func:`sample_rows` runs a 2D MAP's pixel conditionals in
raster order (the reference sampler's rule).  State numbering and tables are in
:mod:`mapsim.analysis.context_states`.
"""

from __future__ import annotations

import numpy as np

from mapsim.analysis.context_states import Conditionals, check_table, context_range_of, decode_states, n_classes_of


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sample_table_sequences(table: np.ndarray, length: int, n_sequences: int, seed: int | np.random.Generator = 0,
                           start: np.ndarray | None = None) -> np.ndarray:
    """Run a 1D MAP given by its table, pixel by pixel.

    Parameters
    ----------
    table : ndarray (A^L, A)
    length : int
        T elements drawn after the initial context.
    n_sequences : int
        M independent sequences.
    seed : int or Generator
    start : ndarray of int, shape (M,), optional
        Initial context state of each sequence (default state 0).

    Returns
    -------
    ndarray of int64, shape (M, L + T)
        The initial context digits followed by the drawn elements.
    """
    from mapsim.sampling.common import draw

    t, A, L = check_table(table)
    rng = _rng(seed)
    M = int(n_sequences)
    start = np.zeros(M, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64)
    out = np.empty((M, L + length), dtype=np.int64)
    out[:, :L] = decode_states(A, L, start)
    state = start.copy()
    S = A**L
    u = rng.random((M, length))
    for i in range(length):
        x = draw(t[state], u[:, i])
        out[:, L + i] = x
        state = (state * A) % S + x if S > 1 else state
    return out


def sample_rows(cond: Conditionals, n_samples: int, height: int, width: int, seed: int | np.random.Generator = 0,
                top: np.ndarray | None = None, left: np.ndarray | None = None) -> np.ndarray:
    """Raster-order MAP sampling with NumPy conditionals (the reference sampler's rule).

    Uses the uniforms contract of :mod:`mapsim.sampling.common`, so with the
    default boundary it draws the same samples as
    :func:`mapsim.sampling.reference.sample_reference` for the same seed.

    Parameters
    ----------
    cond : Conditionals
    n_samples, height, width : int
    seed : int or Generator
    top : ndarray of int, shape (K, L, W + 2L), optional
        Rows above the sample (default outside); e.g. a stationary start state.
    left : ndarray of int, shape (K, H, L), optional
        Columns left of the sample (default outside): a 1D chain's initial context.

    Returns
    -------
    ndarray of int64, shape (K, H, W)
    """
    from mapsim.sampling.common import draw, uniforms

    N, L = n_classes_of(cond), context_range_of(cond)
    K, H, W = n_samples, height, width
    u = uniforms(seed, K, H, W)
    canvas = np.full((K, H + L, W + 2 * L), N, dtype=np.int64)
    if top is not None:
        canvas[:, :L] = top
    if left is not None:
        canvas[:, L:, :L] = left
    canvas[:, L:, L : L + W] = 0
    for i in range(H):
        for j in range(W):
            crop = canvas[:, i : i + L + 1, j : j + 2 * L + 1]
            p = np.exp(cond(crop)[:, :, 0, 0])
            canvas[:, L + i, L + j] = draw(p, u[:, i, j])
    return canvas[:, L:, L : L + W]
