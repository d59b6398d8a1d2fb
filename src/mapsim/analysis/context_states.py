"""The state space of a MAP sequence seen as a Markov chain (paper Section III, Eqs. 19-20).

Numbering of context states, conditional tables p(next | context) (checked,
tempered, random or fitted on data), and the bridge from 2D models: pixel
conditionals on canvases (:data:`Conditionals`), the 1D table and the row
table of the 2D recast, the exact boundary start, and visit counts.  The
chain built on these tables is analysed in :mod:`mapsim.analysis.chain`,
sampled in :mod:`mapsim.analysis.chain_sampling` and drawn in
:mod:`mapsim.analysis.chain_plots`.

This module is NumPy/SciPy only; :func:`model_conditionals`, which evaluates a
PyTorch :class:`~mapsim.models.base.MapModel`, imports torch inside the function.

Context states
--------------
A MAP draws element i from p(X_i | the L_c elements before it).  Recast as a
chain over *context states* C_i = (X_{i-L_c+1}, ..., X_i) (Eq. 19), with an
alphabet of A symbols there are A^L_c states.  A state is numbered by its
digits in base A, **oldest element first** (most significant digit):
``s = sum_k x_k * A**(L_c - 1 - k)``.  Appending symbol y moves the chain to
``(s * A) % A**L_c + y``, so a conditional table ``table[s, y] = p(y | s)`` of
shape (A^L_c, A) *is* the chain: every state has at most A successors and,
when all entries are positive, exactly A of them, A of which are the state
itself only for the constant states (the paper's Figs. 4-5).

Two alphabets are used:

* **1D MAP** (``A = N_c``): a row-wise sequence, the context being the L_c
  pixels to the left.  From a 2D model (canvas convention of
  :mod:`mapsim.models.base`) the 1D MAP is defined as the model's first row
  generated with the default boundary: the L_c rows above are *outside*, so the
  conditional depends on the L_c pixels to the left alone and is the same at
  every column; an infinitely wide first row is exactly this chain, started
  from the all-outside context at the left edge (:func:`boundary_start`).
  A 1D MAP may also be given as a table, drawn at random
  (:func:`random_softmax_table`) or fitted on rows of data (:func:`fit_table`).
* **2D recast** (``A = N_c^W``, Figs. 7-8): for a sample of width W the state
  R_i is the block of the last L_c rows (oldest row first, each row's pixels
  left to right, so the state number is the L_c·W pixel digits in raster
  order), a new row is one symbol Y, and p(Y | R) is the product of the pixel
  conditionals across the row (Eq. 20), with the outside class at both sides.

Temperature
-----------
Probabilities are ``softmax(beta * logits)``; for a table of probabilities,
``beta`` means p -> p^beta renormalised (the same thing).  At any finite beta
every transition of a softmax model is positive and the chain is irreducible
and aperiodic.  Hard zeros (logit -inf, e.g. the hard-core model) remove edges:
the chain can become reducible, with transient states and possibly several
closed classes; :class:`~mapsim.analysis.chain.MarkovChain` reports this rather
than assuming it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.special import logsumexp

from mapsim.errors import MapsimError

DEFAULT_MAX_STATES = 4096
"""Largest 2D-recast state space :func:`row_table` builds unless told otherwise."""


# ---------------------------------------------------------------------------
# State numbering
# ---------------------------------------------------------------------------
def n_context_states(alphabet: int, length: int) -> int:
    """Number of context states A^L."""
    return int(alphabet) ** int(length)


def decode_states(alphabet: int, length: int, states: np.ndarray | None = None) -> np.ndarray:
    """Digits of context states, oldest first.

    Parameters
    ----------
    alphabet, length : int
        A and L.
    states : ndarray of int, shape (S,), optional
        Default: all A^L states in order.

    Returns
    -------
    ndarray of int64, shape (S, L)
    """
    if states is None:
        states = np.arange(n_context_states(alphabet, length))
    states = np.asarray(states, dtype=np.int64)
    powers = alphabet ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (states[:, None] // powers[None, :]) % alphabet


def encode_states(digits: np.ndarray, alphabet: int) -> np.ndarray:
    """Inverse of :func:`decode_states`: digits (..., L), oldest first -> state numbers (...)."""
    digits = np.asarray(digits, dtype=np.int64)
    L = digits.shape[-1]
    powers = alphabet ** np.arange(L - 1, -1, -1, dtype=np.int64)
    return (digits * powers).sum(axis=-1)


def state_labels(n_classes: int, length: int, width: int = 1) -> list[str]:
    """Readable labels: ``"011"`` in 1D; rows joined by ``"/"`` in the 2D recast (oldest row first)."""
    digits = decode_states(n_classes, length * width)
    sep = "" if n_classes <= 10 else ","
    out = []
    for d in digits:
        rows = [sep.join(str(int(v)) for v in d[r * width : (r + 1) * width]) for r in range(length)]
        out.append("/".join(rows) if width > 1 else sep.join(rows))
    return out if length > 0 else ["()"]


# ---------------------------------------------------------------------------
# Conditional tables
# ---------------------------------------------------------------------------
def check_table(table: np.ndarray, alphabet: int | None = None, length: int | None = None,
                where: str = "table") -> tuple[np.ndarray, int, int]:
    """Validate a conditional table p(next | context) and infer A and L.

    Parameters
    ----------
    table : array-like, shape (A^L, A)
        Non-negative rows summing to 1 (within 1e-6; rows are renormalised).
    alphabet, length : int, optional
        Expected A and L; inferred from the shape when omitted.

    Returns
    -------
    table : ndarray of float64, shape (A^L, A)
    alphabet, length : int
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] < 2:
        raise MapsimError(f"{where}: expected a 2-D table of shape (N_c^L_c, N_c) with N_c >= 2, found shape {t.shape}")
    A = t.shape[1] if alphabet is None else int(alphabet)
    if t.shape[1] != A:
        raise MapsimError(f"{where}: expected {A} columns (one per class), found shape {t.shape}")
    if length is None:
        L = round(math.log(t.shape[0], A)) if t.shape[0] > 0 else -1
        if L < 0 or A**L != t.shape[0]:
            raise MapsimError(f"{where}: the number of rows must be a power of {A} (N_c^L_c contexts), found {t.shape[0]}")
    else:
        L = int(length)
        if t.shape[0] != A**L:
            raise MapsimError(f"{where}: expected {A}^{L} = {A**L} rows (contexts), found {t.shape[0]}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise MapsimError(f"{where}: probabilities must be finite and non-negative")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise MapsimError(f"{where}: row {int(bad[0])} sums to {sums[bad[0]]:.6g}, expected 1 (rows are p(next | context))")
    return t / sums[:, None], A, L


def temper_table(table: np.ndarray, beta: float) -> np.ndarray:
    """p -> p^beta renormalised per row (softmax(beta * log p)); zeros stay zero."""
    if beta == 1.0:
        return np.asarray(table, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logp = beta * np.log(np.asarray(table, dtype=np.float64))
    return np.exp(logp - logsumexp(logp, axis=1, keepdims=True))


def softmax_table(logits: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """softmax(beta * logits) along the last axis (logit -inf gives probability 0)."""
    z = beta * np.asarray(logits, dtype=np.float64)
    return np.exp(z - logsumexp(z, axis=-1, keepdims=True))


def random_softmax_table(n_classes: int, length: int, seed: int | np.random.Generator = 0, beta: float = 1.0,
                         scale: float = 1.0) -> np.ndarray:
    """A seeded random 1D MAP: every context gets independent logits ~ Normal(0, scale^2).

    Returns
    -------
    ndarray of float64, shape (N_c^L_c, N_c)
        softmax(beta * logits); all entries positive at finite beta.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    logits = scale * rng.standard_normal((n_context_states(n_classes, length), n_classes))
    return softmax_table(logits, beta)


def fit_table(sequences: Sequence[np.ndarray] | np.ndarray, n_classes: int, length: int,
              pseudocount: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fit a 1D MAP on sequences by counting (next | the L pixels before it).

    Only positions with L real elements before them count (a row's first L
    pixels see the edge).  ``pseudocount`` > 0 (add-alpha smoothing) keeps
    every transition positive, i.e. a finite temperature; with 0, contexts
    never seen get the uniform distribution and unseen transitions are hard zeros.

    Parameters
    ----------
    sequences : ndarray of int, shape (S, T), or a sequence of 1-D arrays
        E.g. the rows of a dataset, ``grids.reshape(-1, W)``.
    n_classes, length : int
    pseudocount : float

    Returns
    -------
    table : ndarray of float64, shape (N_c^L, N_c)
    counts : ndarray of int64, shape (N_c^L, N_c)
    """
    A, L = int(n_classes), int(length)
    counts = np.zeros((A**L, A), dtype=np.int64)
    if isinstance(sequences, np.ndarray) and sequences.ndim == 1:
        sequences = [sequences]
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    for s in seqs:
        if s.size and (s.min() < 0 or s.max() >= A):
            raise MapsimError(f"sequences: class ids must lie in 0..{A - 1}, found {int(s.min())}..{int(s.max())}")
        if s.size <= L:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(s, L + 1)  # (T-L, L+1)
        ctx = encode_states(windows[:, :L], A) if L > 0 else np.zeros(len(windows), dtype=np.int64)
        np.add.at(counts, (ctx, windows[:, L]), 1)
    c = counts + float(pseudocount)
    tot = c.sum(axis=1, keepdims=True)
    table = np.where(tot > 0, c / np.where(tot > 0, tot, 1.0), 1.0 / A)
    return table, counts


# ---------------------------------------------------------------------------
# Conditionals on canvases: the bridge to 2D models
# ---------------------------------------------------------------------------
Conditionals = Callable[[np.ndarray], np.ndarray]
"""canvas (B, H+L, W+2L) int64 -> log-probabilities (B, N_c, H, W) float64, tempered and normalised."""


def model_conditionals(model, beta: float = 1.0, batch: int = 4096) -> Conditionals:
    """Wrap a :class:`~mapsim.models.base.MapModel` as a NumPy :data:`Conditionals` (imports torch)."""
    import torch

    def cond(canvas: np.ndarray) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for k in range(0, canvas.shape[0], batch):
                c = torch.as_tensor(np.ascontiguousarray(canvas[k : k + batch]), dtype=torch.long, device=model.device)
                logits = model(c).double()
                outs.append(torch.log_softmax(beta * logits, dim=1).cpu().numpy())
        return np.concatenate(outs, axis=0)

    cond.n_classes = model.n_classes  # type: ignore[attr-defined]
    cond.context_range = model.context_range  # type: ignore[attr-defined]
    return cond


@dataclass
class RandomPairModel:
    """A seeded random 2D softmax MAP: a random pair (Omega = 2) cluster expansion.

    logits[theta] at pixel (i, j) = bias[theta] + sum over the n = 2 L (L + 1) causal
    offsets o of J[o, class at (i, j) + o, theta], with bias ~ Normal(0, scale^2)
    and J ~ Normal(0, scale^2 / n), so the logits have a spread of about
    scale whatever L_c; the outside class has its own couplings, so the boundary matters.
    Calling it on a canvas gives log softmax(beta * logits), a :data:`Conditionals`.
    """

    n_classes: int
    context_range: int
    seed: int = 0
    beta: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        L = self.context_range
        self.offsets = [(di, dj) for di in range(-L, 0) for dj in range(-L, L + 1)] + [(0, dj) for dj in range(-L, 0)]
        self.bias = self.scale * rng.standard_normal(self.n_classes)
        n = max(len(self.offsets), 1)
        self.coupling = (self.scale / math.sqrt(n)) * rng.standard_normal((len(self.offsets), self.n_classes + 1, self.n_classes))

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        canvas = np.asarray(canvas, dtype=np.int64)
        L = self.context_range
        B, Hc, Wc = canvas.shape
        H, W = Hc - L, Wc - 2 * L
        logits = np.broadcast_to(self.bias[None, None, None, :], (B, H, W, self.n_classes)).copy()
        for o, (di, dj) in enumerate(self.offsets):
            nb = canvas[:, L + di : L + di + H, L + dj : L + dj + W]  # (B, H, W)
            logits += self.coupling[o][nb]
        z = self.beta * logits
        return np.moveaxis(z - logsumexp(z, axis=-1, keepdims=True), -1, 1)


def context_range_of(cond: Conditionals) -> int:
    """L_c of a :data:`Conditionals` (its ``context_range`` attribute)."""
    return int(getattr(cond, "context_range"))


def n_classes_of(cond: Conditionals) -> int:
    """N_c of a :data:`Conditionals` (its ``n_classes`` attribute)."""
    return int(getattr(cond, "n_classes"))


def table_1d(cond: Conditionals) -> np.ndarray:
    """The 1D MAP of a 2D model: p(next | L pixels to the left), rows above outside.

    Returns
    -------
    ndarray of float64, shape (N_c^L, N_c)
    """
    N, L = n_classes_of(cond), context_range_of(cond)
    S = N**L
    canvas = np.full((S, L + 1, 2 * L + 1), N, dtype=np.int64)
    canvas[:, L, L:] = 0  # the pixel itself and those after it: masked by causality
    if L > 0:
        canvas[:, L, :L] = decode_states(N, L)
    logp = cond(canvas)[:, :, 0, 0]
    return np.exp(logp)


def row_table(cond: Conditionals, width: int, max_states: int = DEFAULT_MAX_STATES) -> np.ndarray:
    """Row-to-row transition table of the 2D recast (Eq. 20).

    ``table[s, y] = prod_j p(X^j = y_j | R = s, y_{<j})`` for the block R of the
    last L rows (state numbering in the module docstring) and a new row y,
    with the outside class at both sides.

    Returns
    -------
    ndarray of float64, shape (N_c^(W L), N_c^W)
    """
    N, L, W = n_classes_of(cond), context_range_of(cond), int(width)
    S, Y = N ** (W * L), N**W
    if S > max_states:
        raise MapsimError(f"2D recast with N_c={N}, W={W}, L_c={L} has {N}^{W * L} = {S} states, more than --max-states {max_states}")
    rows = decode_states(N, W)  # (Y, W)
    out = np.empty((S, Y), dtype=np.float64)
    chunk = max(1, 65536 // Y)
    for s0 in range(0, S, chunk):
        states = np.arange(s0, min(S, s0 + chunk))
        blocks = decode_states(N, W * L, states).reshape(-1, L, W) if L > 0 else np.zeros((len(states), 0, W), dtype=np.int64)
        canvas = np.full((len(states), Y, L + 1, W + 2 * L), N, dtype=np.int64)
        canvas[:, :, :L, L : L + W] = blocks[:, None]
        canvas[:, :, L, L : L + W] = rows[None]
        logp = cond(canvas.reshape(-1, L + 1, W + 2 * L))[:, :, 0, :]  # (b*Y, N, W)
        ys = np.broadcast_to(rows[None], (len(states), Y, W)).reshape(-1, W)
        lp = np.take_along_axis(logp, ys[:, None, :], axis=1)[:, 0, :].sum(axis=1)
        out[states] = np.exp(lp.reshape(len(states), Y))
    return out


def boundary_start(cond: Conditionals, height: int, width: int) -> np.ndarray:
    """Exact distribution of the first ``height`` x ``width`` pixels of a sample, outside boundary.

    With ``height = 1, width = L`` this is the first context state of the 1D
    MAP (a row starting at the left edge); with ``height = L`` and the sample
    width it is the first row-block state R of the 2D recast.

    Returns
    -------
    ndarray of float64, shape (N_c^(height*width),)
        Indexed like the context states (pixels in raster order, oldest first).
    """
    N, L = n_classes_of(cond), context_range_of(cond)
    n = height * width
    if n == 0:  # L_c = 0: the single empty context
        return np.ones(1)
    if N**n > 2**22:
        raise MapsimError(f"boundary_start: {N}^{n} configurations is too many to enumerate")
    grids = decode_states(N, n).reshape(-1, height, width)
    canvas = np.full((grids.shape[0], height + L, width + 2 * L), N, dtype=np.int64)
    canvas[:, L:, L : L + width] = grids
    logp = cond(canvas)  # (G, N, h, w)
    lp = np.take_along_axis(logp, grids[:, None], axis=1)[:, 0].reshape(grids.shape[0], -1).sum(axis=1)
    p = np.exp(lp)
    return p / p.sum()


# ---------------------------------------------------------------------------
# Visits of context states along sequences
# ---------------------------------------------------------------------------
def context_counts(sequences: np.ndarray, alphabet: int, length: int) -> np.ndarray:
    """Visits of every context state along sequences (every window of L consecutive symbols).

    Parameters
    ----------
    sequences : ndarray of int, shape (M, T)
        Symbols (pixels in 1D; row codes in the 2D recast).

    Returns
    -------
    ndarray of int64, shape (A^L,)
    """
    seq = np.asarray(sequences, dtype=np.int64)
    S = alphabet**length
    if length == 0:
        return np.array([seq.size], dtype=np.int64)
    win = np.lib.stride_tricks.sliding_window_view(seq, length, axis=1)  # (M, T-L+1, L)
    return np.bincount(encode_states(win, alphabet).ravel(), minlength=S)


def row_codes(grids: np.ndarray, n_classes: int) -> np.ndarray:
    """Each row of (K, H, W) grids as one symbol Y < N_c^W (pixels left to right, first most significant)."""
    return encode_states(np.asarray(grids, dtype=np.int64), n_classes)
