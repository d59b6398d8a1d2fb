"""A MAP sequence as a Markov chain over context states (paper Section III, Eqs. 19-20).

This module is NumPy/SciPy only; the helpers that evaluate a PyTorch
:class:`~mapsim.models.base.MapModel` import torch inside the function.

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
closed classes; :class:`MarkovChain` reports this rather than assuming it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.special import logsumexp

from mapsim.errors import MapsimError

MIXING_EPS = 0.25
"""Mixing time threshold: t_mix = min{t : max over starts of TV(P^t(s, .), pi) <= 1/4}."""

DEFAULT_MAX_STATES = 4096


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


def _context_range(cond) -> int:
    return int(getattr(cond, "context_range"))


def _n_classes(cond) -> int:
    return int(getattr(cond, "n_classes"))


def table_1d(cond: Conditionals) -> np.ndarray:
    """The 1D MAP of a 2D model: p(next | L pixels to the left), rows above outside.

    Returns
    -------
    ndarray of float64, shape (N_c^L, N_c)
    """
    N, L = _n_classes(cond), _context_range(cond)
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
    N, L, W = _n_classes(cond), _context_range(cond), int(width)
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
    N, L = _n_classes(cond), _context_range(cond)
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
# The chain
# ---------------------------------------------------------------------------
def context_transition_matrix(table: np.ndarray) -> sp.csr_matrix:
    """Transition matrix of the context chain of a table p(next | context).

    Parameters
    ----------
    table : ndarray, shape (A^L, A)

    Returns
    -------
    scipy.sparse.csr_matrix, shape (A^L, A^L)
        P[s, (s * A) % A^L + y] = table[s, y] (for L = 0 the single state loops on itself).
    """
    t = np.asarray(table, dtype=np.float64)
    S, A = t.shape
    s = np.repeat(np.arange(S), A)
    nxt = (s * A) % S + np.tile(np.arange(A), S) if S > 1 else np.zeros(S * A, dtype=np.int64)
    P = sp.csr_matrix((t.ravel(), (s, nxt)), shape=(S, S))
    P.sum_duplicates()
    P.eliminate_zeros()
    return P


def _bfs_levels(adj: sp.csr_matrix, root: int, members: np.ndarray) -> np.ndarray:
    """Breadth-first distance from ``root`` inside the subgraph ``members`` (-1: not reached)."""
    inside = np.zeros(adj.shape[0], dtype=bool)
    inside[members] = True
    level = np.full(adj.shape[0], -1, dtype=np.int64)
    level[root] = 0
    frontier = np.array([root])
    d = 0
    while frontier.size:
        d += 1
        nb = adj[frontier].indices
        nb = np.unique(nb[inside[nb] & (level[nb] < 0)])
        level[nb] = d
        frontier = nb
    return level


def class_period(adj: sp.csr_matrix, members: np.ndarray) -> int:
    """Period of a strongly connected class: gcd over its edges u -> v of level(u) + 1 - level(v).

    BFS levels from any member; every cycle length is a sum of such terms and
    each term is a difference of cycle lengths, so the gcd is the period.
    """
    members = np.asarray(members)
    level = _bfs_levels(adj, int(members[0]), members)
    sub = adj[members][:, members].tocoo()
    u, v = members[sub.row], members[sub.col]
    g = 0
    for x in np.unique(np.abs(level[u] + 1 - level[v])):
        g = math.gcd(g, int(x))
    return g if g > 0 else 0  # 0: a single state without a self-loop (no cycle)


def stationary_distribution(P: sp.spmatrix | np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """Exact stationary distribution of an irreducible (sub)chain by a linear solve.

    Solves pi (P - I) = 0 with sum(pi) = 1 (one balance equation replaced by
    the normalisation) on ``members`` (a closed class; default all states).

    Returns
    -------
    ndarray of float64, shape (n_states,)
        Zero outside ``members``.
    """
    Pd = P.toarray() if sp.issparse(P) else np.asarray(P, dtype=np.float64)
    n = Pd.shape[0]
    idx = np.arange(n) if members is None else np.asarray(members)
    Q = Pd[np.ix_(idx, idx)]
    m = len(idx)
    A = Q.T - np.eye(m)
    A[-1, :] = 1.0
    b = np.zeros(m)
    b[-1] = 1.0
    x = np.linalg.solve(A, b)
    x = np.clip(x, 0.0, None)
    pi = np.zeros(n)
    pi[idx] = x / x.sum()
    return pi


def tv_distance(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Total-variation distance 0.5 * sum |p - q|."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=axis)


def tv_curves(P: sp.spmatrix, pi: np.ndarray, starts: np.ndarray, max_steps: int, stop_below: float = 0.0) -> np.ndarray:
    """TV(mu_t, pi) for t = 0 .. T, mu_0 = each row of ``starts``, mu_{t+1} = mu_t P.

    Parameters
    ----------
    P : sparse (n, n)
    pi : ndarray (n,)
    starts : ndarray (m, n)
        Initial distributions (the identity: every start state).
    max_steps : int
    stop_below : float
        Stop early once every curve is at most this.

    Returns
    -------
    ndarray of float64, shape (T + 1, m)
    """
    PT = sp.csr_matrix(P).T.tocsr()
    mu = np.array(starts, dtype=np.float64).T  # (n, m): columns evolve as P^T mu
    out = [tv_distance(mu.T, pi[None])]
    for _ in range(int(max_steps)):
        if out[-1].max() <= stop_below:
            break
        mu = PT @ mu
        out.append(tv_distance(mu.T, pi[None]))
    return np.array(out)


def markov_chi2(counts: np.ndarray, pi: np.ndarray, P: sp.spmatrix) -> dict:
    """Chi-squared test of visit counts of stationary chain runs against pi.

    Visits along a chain are correlated, so the plain Pearson statistic has the
    wrong null distribution.  The Markov-chain central limit theorem gives
    the covariance of the visit frequencies over n steps as Sigma / n with
    Sigma = D Z + Z^T D - D - pi pi^T, D = diag(pi), Z = (I - P + 1 pi)^-1
    (the fundamental matrix).  The statistic (c - n pi)^T (n Sigma)^+ (c - n pi)
    is chi-squared with rank(Sigma) degrees of freedom for long runs (several
    independent stationary runs add their counts; the covariance still
    scales with the total n).

    Parameters
    ----------
    counts : ndarray (n_states,)
        Visits summed over runs started in the stationary distribution.
    pi : ndarray (n_states,)
    P : sparse (n_states, n_states)

    Returns
    -------
    dict with ``chi2``, ``dof``, ``p_value``, ``n_visits``, ``tv`` (empirical vs exact)
    """
    from scipy.stats import chi2 as chi2_dist

    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    Pd = P.toarray() if sp.issparse(P) else np.asarray(P)
    S = len(pi)
    Z = np.linalg.inv(np.eye(S) - Pd + np.outer(np.ones(S), pi))
    D = np.diag(pi)
    sigma = D @ Z + Z.T @ D - D - np.outer(pi, pi)
    sigma = 0.5 * (sigma + sigma.T)
    w, V = np.linalg.eigh(sigma)
    keep = w > 1e-10 * max(w.max(), 1e-300)
    resid = counts - n * pi
    if np.any(counts[pi <= 0] > 0):
        stat = math.inf
    else:
        proj = V[:, keep].T @ resid
        stat = float(np.sum(proj**2 / (n * w[keep])))
    dof = int(keep.sum())
    return {"chi2": stat, "dof": dof, "p_value": float(chi2_dist.sf(stat, dof)) if dof > 0 else 1.0,
            "n_visits": int(n), "tv": float(tv_distance(counts / n, pi))}


class MarkovChain:
    """Exact analysis of a finite Markov chain given by its transition matrix.

    Settings go in the constructor; :meth:`compute` fills the attributes
    ending in ``_`` and returns self.

    Parameters
    ----------
    P : ndarray or sparse matrix, shape (n, n)
        Row-stochastic transition matrix.
    labels : list of str, optional
        State names for reports and drawings.
    max_steps : int
        Longest total-variation curve computed.
    eps : float
        Mixing threshold (default 1/4).

    Attributes (after compute)
    --------------------------
    classes_ : list of ndarray
        Strongly connected (communicating) classes.
    closed_classes_ : list of ndarray
        Classes with no edge leaving them (the recurrent classes).
    transient_states_ : ndarray
        States in no closed class.
    irreducible_ : bool
        One communicating class.
    periods_ : list of int
        Period of each closed class.
    period_ : int
        lcm of ``periods_`` (P^t converges iff it is 1).
    aperiodic_ : bool
    self_connected_ : ndarray
        States with P[s, s] > 0.
    out_degree_ : ndarray
    diameter_ : int or None
        Longest shortest path over all ordered pairs (None if some pair is unreachable).
    stationary_ : ndarray or None
        The stationary distribution when unique (one closed class), else None.
    class_stationary_ : list of ndarray
        The stationary distribution of each closed class.
    tv_ : ndarray (T + 1, n) or None
        TV(P^t(s, .), pi) for every start state s (unique stationary only).
    mixing_steps_ : int or None
        First t with max_s tv_[t, s] <= eps (None if not reached within max_steps or not unique).
    """

    def __init__(self, P, labels: list[str] | None = None, max_steps: int = 1000, eps: float = MIXING_EPS,
                 stop_below: float = 1e-6) -> None:
        self.P = sp.csr_matrix(P, dtype=np.float64)
        self.labels = labels
        self.max_steps = max_steps
        self.eps = eps
        self.stop_below = stop_below

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    def compute(self) -> "MarkovChain":
        P = self.P
        n = self.n_states
        if P.shape != (n, n):
            raise MapsimError(f"transition matrix must be square, found shape {P.shape}")
        rs = np.asarray(P.sum(axis=1)).ravel()
        if P.nnz and (P.data.min() < 0 or np.abs(rs - 1).max() > 1e-8):
            raise MapsimError(f"transition matrix rows must be probability distributions (row sums {rs.min():.6g}..{rs.max():.6g})")
        adj = (P > 0).astype(np.int8).tocsr()
        n_comp, lab = connected_components(adj, directed=True, connection="strong")
        self.classes_ = [np.flatnonzero(lab == c) for c in range(n_comp)]
        coo = adj.tocoo()
        has_exit = np.zeros(n_comp, dtype=bool)
        has_exit[lab[coo.row][lab[coo.row] != lab[coo.col]]] = True
        self.closed_classes_ = [c for k, c in enumerate(self.classes_) if not has_exit[k]]
        closed = np.zeros(n, dtype=bool)
        for c in self.closed_classes_:
            closed[c] = True
        self.transient_states_ = np.flatnonzero(~closed)
        self.irreducible_ = n_comp == 1
        self.periods_ = [class_period(adj, c) for c in self.closed_classes_]
        self.period_ = math.lcm(*self.periods_) if self.periods_ else 0
        self.aperiodic_ = self.period_ == 1
        self.self_connected_ = np.flatnonzero(P.diagonal() > 0)
        self.out_degree_ = np.diff(adj.indptr)
        self.diameter_ = self._diameter(adj)
        self.class_stationary_ = [stationary_distribution(P, c) for c in self.closed_classes_]
        self.stationary_ = self.class_stationary_[0] if len(self.closed_classes_) == 1 else None
        self.tv_ = None
        self.mixing_steps_ = None
        if self.stationary_ is not None:
            self.tv_ = tv_curves(P, self.stationary_, np.eye(n), self.max_steps, self.stop_below)
            dmax = self.tv_.max(axis=1)
            hit = np.flatnonzero(dmax <= self.eps)
            self.mixing_steps_ = int(hit[0]) if hit.size else None
        return self

    @staticmethod
    def _diameter(adj: sp.csr_matrix) -> int | None:
        n = adj.shape[0]
        reach = np.eye(n, dtype=np.float32)
        A = adj.astype(np.float32)
        AT = A.T.tocsr()
        for d in range(0, n + 1):
            if reach.min() > 0:
                return d
            new = reach + (AT @ reach.T).T  # reach within d+1 steps
            new = (new > 0).astype(np.float32)
            if np.array_equal(new, reach):
                return None
            reach = new
        return None

    def mixing_from(self, start: np.ndarray) -> tuple[np.ndarray, int | None]:
        """TV curve from an initial distribution (e.g. the boundary) and its first t with TV <= eps."""
        if self.stationary_ is None:
            return np.zeros(0), None
        curve = tv_curves(self.P, self.stationary_, np.asarray(start)[None], self.max_steps, self.stop_below)[:, 0]
        hit = np.flatnonzero(curve <= self.eps)
        return curve, (int(hit[0]) if hit.size else None)

    def summary(self) -> dict:
        """The chain's properties as a JSON-ready dict (state labels where known)."""
        lab = self.labels or [str(i) for i in range(self.n_states)]
        names = lambda idx: [lab[i] for i in idx]  # noqa: E731
        out = {
            "n_states": self.n_states,
            "n_edges": int(self.P.nnz),
            "irreducible": bool(self.irreducible_),
            "aperiodic": bool(self.aperiodic_),
            "period": int(self.period_),
            "n_communicating_classes": len(self.classes_),
            "closed_classes": [names(c) for c in self.closed_classes_],
            "class_periods": [int(p) for p in self.periods_],
            "transient_states": names(self.transient_states_),
            "unique_stationary": self.stationary_ is not None,
            "self_connected_states": names(self.self_connected_),
            "out_degree_min": int(self.out_degree_.min()),
            "out_degree_max": int(self.out_degree_.max()),
            "diameter": self.diameter_,
            "mixing_eps": self.eps,
            "mixing_steps": self.mixing_steps_,
        }
        if self.stationary_ is not None:
            out["stationary"] = {lab[i]: float(v) for i, v in enumerate(self.stationary_)} if self.n_states <= 64 else None
            out["stationary_min"] = float(self.stationary_[self.stationary_ > 0].min())
        return out


# ---------------------------------------------------------------------------
# Sampling long sequences
# ---------------------------------------------------------------------------
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

    N, L = _n_classes(cond), _context_range(cond)
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


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# One call: build, analyse, sample, compare
# ---------------------------------------------------------------------------
MAX_CHI2_STATES = 1024


@dataclass
class ChainAnalysis:
    """Everything :func:`analyze_context_chain` found.

    Attributes
    ----------
    chain : MarkovChain
        Computed.
    table : ndarray (A^L, A)
        p(next symbol | context state); symbols are pixels (1D) or rows (2D recast).
    n_classes, length : int
        N_c and L_c.
    width : int or None
        Sample width of the 2D recast (None: 1D MAP).
    summary : dict
        JSON-ready results.
    boundary_curve : ndarray or None
        TV to stationarity from the outside boundary, indexed by steps after the first L_c.
    counts : ndarray or None
        Visits of every state in the sampled sequences.
    """

    chain: MarkovChain
    table: np.ndarray
    n_classes: int
    length: int
    width: int | None
    summary: dict
    boundary_curve: np.ndarray | None = None
    counts: np.ndarray | None = None


def _names(labels: list[str], idx, limit: int = 256) -> list[str]:
    return [labels[i] for i in list(idx)[:limit]]


def verdict(chain: MarkovChain) -> str:
    """One sentence on what the chain's structure means for convergence."""
    n_tr = len(chain.transient_states_)
    n_cl = len(chain.closed_classes_)
    if n_cl > 1:
        return (f"reducible with {n_cl} closed classes: no unique equilibrium, the start (boundary) decides "
                f"which class the sequence ends in")
    if not chain.aperiodic_:
        return f"periodic with period {chain.period_}: the state distribution oscillates and does not converge"
    if chain.irreducible_:
        return "irreducible and aperiodic: converges to its unique stationary distribution from every start"
    return (f"reducible: {n_tr} transient state(s) (contexts of probability 0 under hard zeros) are left and "
            f"never re-entered; one closed aperiodic class, so it still converges to a unique stationary "
            f"distribution")


def analyze_context_chain(table: np.ndarray, n_classes: int, length: int, width: int | None = None, *,
                          cond: Conditionals | None = None, seed: int | np.random.Generator = 0,
                          n_sequences: int = 16, n_steps: int = 4000, max_steps: int = 1000) -> ChainAnalysis:
    """Analyse the context chain of a 1D MAP or of the 2D row recast, and check it by sampling.

    Parameters
    ----------
    table : ndarray (A^L, A)
        ``table_1d(cond)``, a given/random/fitted 1D table (A = N_c), or
        ``row_table(cond, W)`` (A = N_c^W).
    n_classes, length : int
        N_c and L_c.
    width : int, optional
        W of the 2D recast; None for a 1D MAP.
    cond : Conditionals, optional
        The pixel conditionals the table came from.  When given, sequences are
        sampled pixel by pixel from them (the MAP rule itself, not the table)
        and the convergence from the outside boundary is computed.
    seed : int or Generator
        Seeds the start states and the draws.
    n_sequences, n_steps : int
        M independent sequences of T steps (pixels, or rows), each started in a
        state drawn from the exact stationary distribution; 0 steps: no sampling.
    max_steps : int
        Longest TV curve.

    Returns
    -------
    ChainAnalysis
    """
    A = n_classes if width is None else n_classes**width
    labels = state_labels(n_classes, length, width or 1)
    P = context_transition_matrix(table)
    chain = MarkovChain(P, labels, max_steps=max_steps).compute()
    s = chain.summary()
    s["closed_classes"] = [_names(labels, c) for c in chain.closed_classes_[:16]]
    s["n_closed_classes"] = len(chain.closed_classes_)
    s["transient_states"] = _names(labels, chain.transient_states_)
    s["n_transient_states"] = int(len(chain.transient_states_))
    s["self_connected_states"] = _names(labels, chain.self_connected_)
    s["n_self_connected_states"] = int(len(chain.self_connected_))
    s["diameter_bound"] = length
    s["diameter_within_bound"] = None if chain.diameter_ is None else bool(chain.diameter_ <= length)
    closed_diam = None
    if len(chain.closed_classes_) == 1:
        c = chain.closed_classes_[0]
        closed_diam = MarkovChain._diameter((P[c][:, c] > 0).astype(np.int8).tocsr())
    s["closed_class_diameter"] = closed_diam
    s["verdict"] = verdict(chain)
    unit = "pixels" if width is None else "rows"
    s["step_unit"] = unit

    boundary_curve = None
    s["boundary_mixing_steps"] = None
    if cond is not None and chain.stationary_ is not None:
        p0 = boundary_start(cond, 1, length) if width is None else boundary_start(cond, length, width)
        boundary_curve, t = chain.mixing_from(p0)
        s["boundary_mixing_steps"] = None if t is None else length + t
        s["boundary_tv_at_first_state"] = float(boundary_curve[0])

    counts = None
    for k in ("sampled_visits", "stationary_tv_vs_sampled", "chi2", "chi2_dof", "chi2_p_value"):
        s[k] = None
    pi = chain.stationary_
    if pi is not None and n_steps > 0:
        rng = _rng(seed)
        M = int(n_sequences)
        start = rng.choice(len(pi), size=M, p=pi)
        digits = decode_states(n_classes, length * (width or 1), start)  # (M, L*W)
        if width is None:
            if cond is None:
                seq = sample_table_sequences(table, n_steps, M, rng, start)
            else:
                g = sample_rows(cond, M, 1, n_steps, rng, left=digits[:, None, :])
                seq = np.concatenate([digits, g[:, 0, :]], axis=1)
            counts = context_counts(seq, n_classes, length)
        else:
            top = np.full((M, length, width + 2 * length), n_classes, dtype=np.int64)
            top[:, :, length : length + width] = digits.reshape(M, length, width)
            g = sample_rows(cond, M, n_steps, width, rng, top=top)
            codes = np.concatenate([row_codes(digits.reshape(M, length, width), n_classes), row_codes(g, n_classes)], axis=1)
            counts = context_counts(codes, A, length)
        s["sampled_sequences"] = M
        s["sampled_steps"] = int(n_steps)
        s["sampled_visits"] = int(counts.sum())
        s["stationary_tv_vs_sampled"] = float(tv_distance(counts / counts.sum(), pi))
        # the chi-squared law is asymptotic: few expected visits in some state make it rough
        s["sampled_expected_min"] = float(counts.sum() * pi[pi > 0].min())
        if chain.n_states <= MAX_CHI2_STATES:
            res = markov_chi2(counts, pi, P)
            s["chi2"], s["chi2_dof"], s["chi2_p_value"] = res["chi2"], res["dof"], res["p_value"]
        s["chi2_method"] = ("Markov-chain CLT covariance (fundamental matrix); runs started from the exact "
                            "stationary distribution")
    return ChainAnalysis(chain, np.asarray(table), n_classes, length, width, s, boundary_curve, counts)
