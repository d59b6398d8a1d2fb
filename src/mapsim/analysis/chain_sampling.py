"""Long sequences drawn from a MAP, pixel by pixel, for checking the chain by sampling.

:func:`sample_table_sequences` runs a 1D MAP given by its table
p(next | context); :func:`sample_rows` runs a 2D MAP's pixel conditionals in
raster order (the reference sampler's rule).  State numbering and tables are in
:mod:`mapsim.analysis.context_states`.
"""

from __future__ import annotations

import numpy as np

from mapsim.analysis.context_states import Conditionals, check_table, context_range_of, decode_states, n_classes_of


class _TableProvider:
    """Conditionals of a 1D MAP from its table, for the sampler core (one point per step)."""

    def __init__(self, table: np.ndarray, length: int, start: np.ndarray) -> None:
        t, self.n_classes, self.L = check_table(table)
        with np.errstate(divide="ignore"):
            self.log_table = np.log(t)  # probability 0 -> logit -inf: never drawn
        self.start_state = start

    def start(self, n_samples: int, shape: tuple[int, ...]) -> None:
        self.state = self.start_state.copy()

    def logits(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        return self.log_table[self.state][:, None, :]  # (M, 1, A)

    def commit(self, index: tuple[np.ndarray, ...], classes: np.ndarray) -> None:
        S = self.n_classes**self.L
        if S > 1:
            self.state = (self.state * self.n_classes) % S + classes[:, 0]


def sample_table_sequences(table: np.ndarray, length: int, n_sequences: int, seed: int | np.random.Generator = 0,
                           start: np.ndarray | None = None) -> np.ndarray:
    """Run a 1D MAP given by its table, pixel by pixel (the sampler core, raster schedule).

    Parameters
    ----------
    table : ndarray (A^L, A)
    length : int
        T elements drawn after the initial context.
    n_sequences : int
        M independent sequences.
    seed : int or Generator
        Seed of the uniforms (contract of :mod:`mapsim.sampling.rng`, one line per sequence).
    start : ndarray of int, shape (M,), optional
        Initial context state of each sequence (default state 0).

    Returns
    -------
    ndarray of int64, shape (M, L + T)
        The initial context digits followed by the drawn elements.
    """
    from mapsim.sampling.core import raster_schedule, run
    from mapsim.sampling.rng import uniforms

    _, A, L = check_table(table)
    M = int(n_sequences)
    start = np.zeros(M, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64)
    out = np.empty((M, L + length), dtype=np.int64)
    out[:, :L] = decode_states(A, L, start)
    if length > 0:
        res = run(_TableProvider(table, length, start), raster_schedule((length,)), uniforms(seed, M, length))
        out[:, L:] = res.classes
    return out


def sample_rows(cond: Conditionals, n_samples: int, height: int, width: int, seed: int | np.random.Generator = 0,
                top: np.ndarray | None = None, left: np.ndarray | None = None) -> np.ndarray:
    """Raster-order MAP sampling with NumPy conditionals (the sampler core, as the reference sampler).

    With the default boundary it draws the same samples as
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
    from mapsim.sampling.core import raster_schedule, run
    from mapsim.sampling.providers import CropProvider
    from mapsim.sampling.rng import uniforms

    N, L = n_classes_of(cond), context_range_of(cond)
    K, H, W = n_samples, height, width
    if top is None:
        top = np.full((K, L, W + 2 * L), N, dtype=np.int64)
    provider = CropProvider(cond, N, L, top, left=left, mode="pixel")
    return run(provider, raster_schedule((H, W)), uniforms(seed, K, H, W)).classes
