"""The context chain of a MAP sequence: exact Markov-chain analysis (paper Section III, Fig. 4).

A conditional table ``table[s, y] = p(y | s)`` over context states (numbering
and tables: :mod:`mapsim.analysis.context_states`) *is* a Markov chain:
appending symbol y moves state s to ``(s * A) % A**L_c + y``.  This module
builds its transition matrix, finds its communicating and closed classes,
periods, stationary distributions, diameter and total-variation mixing
(:class:`MarkovChain`), tests sampled visit counts against the stationary
distribution with the Markov-chain central limit theorem (:func:`markov_chi2`),
and runs the whole check in one call (:func:`analyze_context_chain`).  Hard
zeros (logit -inf) remove edges; the chain is then analysed as it is
(reducible, several closed classes) rather than assumed irreducible.

NumPy/SciPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from mapsim.analysis.chain_sampling import sample_rows, sample_table_sequences
from mapsim.analysis.context_states import (
    Conditionals,
    boundary_start,
    context_counts,
    decode_states,
    row_codes,
    state_labels,
)
from mapsim.errors import MapsimError

MIXING_EPS = 0.25
"""Mixing time threshold: t_mix = min{t : max over starts of TV(P^t(s, .), pi) <= 1/4}."""


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
        rng = np.random.default_rng(seed)  # a Generator passes through unchanged
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
