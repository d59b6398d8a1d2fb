"""Row-wise convergence of generated samples (paper Section IV B, Fig. 11d).

A MAP sample starts from its top boundary (outside by default) and settles
into the chain's stationary state row by row.  Given the log-probability of
every drawn pixel (``log_probs`` (K, H, W) from a sampler), this module
measures, from the top down,

* the log of the product of pixel probabilities of each row,
  ``r[k, i] = sum_j log p(x_kij | context)``, and
* of each context block R_i (the L_c rows ending at row i, full width),
  ``b[k, i] = r[k, i-L_c+1] + ... + r[k, i]`` for i >= L_c - 1,

their means over the K samples with standard errors, and the row where the
mean reaches its plateau.

Plateau rule
------------
The plateau level of sample k is its mean row value over the last
``tail_fraction`` (default one half) of the rows, ``ref_k``.  For every row i
the per-sample difference ``d[k, i] = r[k, i] - ref_k`` has mean ``D_i`` and
standard error ``s_i`` (over the K independent samples, so correlations
between rows of one sample need no model).  Row i is *at the plateau* when
``|D_i| <= z * s_i`` with z the two-sided Student-t quantile at level
``alpha / H`` (Bonferroni over the H rows tested, K - 1 degrees of freedom;
alpha = 0.05 by default), so that a stationary sample has every row at the
plateau with probability at least 1 - alpha.  The **plateau row** is the
first row from which every later row is at the plateau.  Blocks use the
same rule on ``b``; because a block is a moving sum of L_c rows, its plateau
row (indexed by the block's last row) is about the row plateau + L_c - 1,
the lag the paper points out in Fig. 11d.

The recommended number of rows to skip (``skip_rows``) is the row plateau:
rows above it are drawn from the start-up of the chain, not its stationary
state.  If the plateau lies in the reference half itself, the samples are
too short to tell and ``converged`` is False.
"""

from __future__ import annotations

import math
import numpy as np

from mapsim.errors import MapsimError


def _plateau(values: np.ndarray, tail_start: int, z: float) -> tuple[int, np.ndarray, np.ndarray, float, float]:
    """Plateau row of per-sample curves ``values`` (K, n) with reference over columns tail_start..n-1.

    Returns plateau index, the mean difference D (n,), its standard error s (n,),
    the reference mean and its standard error.
    """
    K, n = values.shape
    ref_k = values[:, tail_start:].mean(axis=1)  # (K,)
    d = values - ref_k[:, None]
    D = d.mean(axis=0)
    s = d.std(axis=0, ddof=1) / math.sqrt(K)
    ok = np.abs(D) <= z * s + 1e-12 * np.abs(ref_k.mean())
    bad = np.flatnonzero(~ok)
    plateau = int(bad[-1] + 1) if bad.size else 0
    return plateau, D, s, float(ref_k.mean()), float(ref_k.std(ddof=1) / math.sqrt(K))


def plane_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """Per-voxel log-probabilities of volumes as rows: (K, D, H, W) -> (K, D, H * W).

    A 3-D MAP sequence is a chain of planes (each voxel's context lies in the L_c planes before it
    and its own), so convergence by plane (the 3-D Fig. 11d) is the row analysis of
    :class:`RowConvergence` with every plane flattened into one row: plane means, the plateau rule
    over the D planes, blocks of L_c planes.
    """
    lp = np.asarray(log_probs)
    if lp.ndim != 4:
        raise MapsimError(f"log_probs of volumes must have shape (K, D, H, W), found shape {lp.shape}")
    return lp.reshape(lp.shape[0], lp.shape[1], -1)


class RowConvergence:
    """Row-wise and block-wise log-probabilities of samples, and their plateau.

    Parameters
    ----------
    context_range : int
        L_c of the model that drew the samples (block height; 0 is treated as 1).
    alpha : float
        Family-wise significance of the plateau test (see the module docstring).
    tail_fraction : float
        Fraction of the last rows that defines the plateau level.

    Attributes (after :meth:`compute`)
    ----------------------------------
    row_logp_ : ndarray (K, H)
        Log of the product of pixel probabilities of each row of each sample (nats).
    row_mean_, row_sem_ : ndarray (H,)
        Mean over samples and its standard error.
    block_rows_ : ndarray (H - L + 1,)
        Index of the last row of each block.
    block_mean_, block_sem_ : ndarray (H - L + 1,)
    row_diff_, row_diff_sem_ : ndarray (H,)
        Mean difference from the plateau level and its standard error.
    z_ : float
        Threshold in standard errors.
    plateau_level_, plateau_level_sem_ : float
        Mean row value over the reference rows.
    plateau_row_ : int
        First row from which every row is at the plateau.
    block_plateau_row_ : int
        Last row of the first block from which every block is at the plateau.
    skip_rows_ : int
        Recommended rows to drop before comparing statistics (= plateau_row_).
    converged_ : bool
        The plateau is reached before the reference rows begin.
    """

    def __init__(self, context_range: int, alpha: float = 0.05, tail_fraction: float = 0.5) -> None:
        self.context_range = int(context_range)
        self.alpha = float(alpha)
        self.tail_fraction = float(tail_fraction)

    def compute(self, log_probs: np.ndarray) -> "RowConvergence":
        """Analyse per-pixel log-probabilities.

        Parameters
        ----------
        log_probs : ndarray, shape (K, H, W)
            Natural log of the probability of every drawn pixel, K >= 2 samples.

        Returns
        -------
        self
        """
        lp = np.asarray(log_probs, dtype=np.float64)
        if lp.ndim != 3:
            raise MapsimError(f"log_probs must have shape (K, H, W), found shape {lp.shape}")
        if not np.all(np.isfinite(lp)):
            raise MapsimError("log_probs holds non-finite values (a drawn pixel of probability 0?)")
        return self.compute_rows(lp.sum(axis=2), lp.shape[2])

    def compute_rows(self, row_log_probs: np.ndarray, width: int) -> "RowConvergence":
        """Analyse the log-probabilities summed over each row (what a zarr store keeps as ``row_log_probs``).

        Parameters
        ----------
        row_log_probs : ndarray, shape (K, H)
            Σ over the row's pixels of the log-probability of each drawn pixel, K >= 2 samples.
        width : int
            Pixels per row W (for the per-pixel figures).

        Returns
        -------
        self
        """
        r = np.asarray(row_log_probs, dtype=np.float64)
        if r.ndim != 2:
            raise MapsimError(f"row log-probabilities must have shape (K, H), found shape {r.shape}")
        from scipy.stats import t as student_t

        (K, H), W = r.shape, int(width)
        if K < 2:
            raise MapsimError(f"row convergence needs at least 2 samples for standard errors, found {K}")
        if not np.all(np.isfinite(r)):
            raise MapsimError("log_probs holds non-finite values (a drawn pixel of probability 0?)")
        if not (0.0 < self.alpha < 1.0) or not (0.0 < self.tail_fraction < 1.0):
            raise MapsimError(f"alpha and tail_fraction must lie in (0, 1), found {self.alpha}, {self.tail_fraction}")
        Lb = max(self.context_range, 1)
        if H < 2 * Lb + 2:
            raise MapsimError(f"samples of height {H} are too short for row convergence with L_c = {self.context_range}: need at least {2 * Lb + 2} rows")
        self.shape_ = (K, H, W)
        tail_start = H - max(1, int(round(self.tail_fraction * H)))
        self.tail_start_ = tail_start
        self.z_ = float(student_t.ppf(1.0 - self.alpha / (2.0 * H), K - 1))

        self.row_logp_ = r
        self.row_mean_ = r.mean(axis=0)
        self.row_sem_ = r.std(axis=0, ddof=1) / math.sqrt(K)
        (self.plateau_row_, self.row_diff_, self.row_diff_sem_,
         self.plateau_level_, self.plateau_level_sem_) = _plateau(r, tail_start, self.z_)

        c = np.concatenate([np.zeros((K, 1)), np.cumsum(r, axis=1)], axis=1)
        b = c[:, Lb:] - c[:, :-Lb]  # (K, H - Lb + 1): rows i-Lb+1 .. i
        self.block_rows_ = np.arange(Lb - 1, H)
        self.block_logp_ = b
        self.block_mean_ = b.mean(axis=0)
        self.block_sem_ = b.std(axis=0, ddof=1) / math.sqrt(K)
        bp, self.block_diff_, self.block_diff_sem_, self.block_level_, _ = _plateau(
            b, max(0, tail_start - (Lb - 1)), self.z_)
        self.block_plateau_row_ = int(self.block_rows_[min(bp, len(self.block_rows_) - 1)])
        self.skip_rows_ = int(self.plateau_row_)
        self.converged_ = bool(self.plateau_row_ < tail_start)
        return self

    def summary(self) -> dict:
        """JSON-ready results (``skip_rows`` is what ``mapsim compare`` reads)."""
        K, H, W = self.shape_
        return {
            "n_samples": K,
            "height": H,
            "width": W,
            "context_range": self.context_range,
            "rule": (f"plateau row = first row from which every row's mean log-probability lies within z = {self.z_:.3g} "
                     f"standard errors of the mean over rows {self.tail_start_}..{H - 1} "
                     f"(Bonferroni-corrected two-sided t test over {H} rows, alpha = {self.alpha:g})"),
            "alpha": self.alpha,
            "z": self.z_,
            "reference_rows": [self.tail_start_, H - 1],
            "plateau_row": self.plateau_row_,
            "plateau_row_in_context_ranges": (self.plateau_row_ / self.context_range) if self.context_range else None,
            "block_plateau_row": self.block_plateau_row_,
            "skip_rows": self.skip_rows_,
            "converged": self.converged_,
            "plateau_logp_per_pixel": self.plateau_level_ / W,
            "plateau_logp_per_pixel_sem": self.plateau_level_sem_ / W,
            "first_row_logp_per_pixel": float(self.row_mean_[0] / W),
            "row_logp_mean": self.row_mean_,
            "row_logp_sem": self.row_sem_,
            "block_logp_mean": self.block_mean_,
            "block_logp_sem": self.block_sem_,
        }

    def plot(self, ax=None, title: str | None = None):
        """Fig. 11d: mean log-probability per pixel of rows and of context blocks, from the top down.

        Both curves are divided by their pixel count (W, or L_c W) so they share one axis;
        bands are +- 2 standard errors.  Imports matplotlib.
        """
        import matplotlib.pyplot as plt

        K, H, W = self.shape_
        Lb = max(self.context_range, 1)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        rows = np.arange(H)
        m, s = self.row_mean_ / W, self.row_sem_ / W
        ax.plot(rows, m, color="C0", lw=1.5, label="row")
        ax.fill_between(rows, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, lw=0)
        mb, sb = self.block_mean_ / (Lb * W), self.block_sem_ / (Lb * W)
        ax.plot(self.block_rows_, mb, color="C1", lw=1.5, label=f"context block R_i ({Lb} rows, by last row)")
        ax.fill_between(self.block_rows_, mb - 2 * sb, mb + 2 * sb, color="C1", alpha=0.25, lw=0)
        ax.axhline(self.plateau_level_ / W, color="0.4", ls="--", lw=1, label="plateau level (reference rows)")
        ax.axvline(self.plateau_row_, color="C3", ls=":", lw=1.5, label=f"row plateau: row {self.plateau_row_}")
        if self.context_range:
            for k in (1, 2):
                if k * self.context_range < H:
                    ax.axvline(k * self.context_range, color="0.7", lw=0.8)
            ax.text(self.context_range, ax.get_ylim()[0], " L_c", color="0.5", fontsize=8, va="bottom")
        ax.axvspan(self.tail_start_, H - 1, color="0.9", zorder=0, label="reference rows")
        ax.set_xlabel("row (from the top boundary)")
        ax.set_ylabel("mean log-probability per pixel (nats)")
        ax.set_title(title or f"Row-wise convergence, {K} samples of {H} x {W}", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        return ax


def exact_row_logp(cond, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact expected row log-probabilities from the outside boundary, for tiny widths.

    Uses the 2D recast (:mod:`mapsim.analysis.context_states`, :mod:`mapsim.analysis.chain`): the first L_c rows are
    enumerated, later rows follow the row chain, so E[log p(row i)] and the
    distance of the block state to stationarity are exact.

    Parameters
    ----------
    cond : Conditionals
        E.g. ``chain.model_conditionals(model, beta)``.
    height, width : int
        H rows of width W (N_c^(W L_c) states must be few).

    Returns
    -------
    row_logp : ndarray (H,)
        E[sum_j log p(x_ij | context)] for every row (nats).
    tv : ndarray (H,)
        TV distance between the distribution of the block of rows i-L_c+1 .. i
        and the stationary one (NaN for i < L_c - 1, or when the stationary
        distribution is not unique).
    """
    from mapsim.analysis import chain as ch
    from mapsim.analysis import context_states as cs

    N, L, W = int(cond.n_classes), int(cond.context_range), int(width)
    T = cs.row_table(cond, W)  # (N^(WL), N^W)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = np.where(T > 0, T * np.log(T), 0.0).sum(axis=1)  # E[log p(row) | state]
    row = np.empty(height)
    tv = np.full(height, np.nan)
    P = ch.context_transition_matrix(T)
    mc = ch.MarkovChain(P, max_steps=0).compute()
    pi = mc.stationary_
    if L == 0:
        row[:] = ent[0]
        tv[:] = 0.0
        return row, tv
    # rows 0 .. L-1: enumerate the first min(L, H) rows with the outside boundary
    h0 = min(L, height)
    grids = cs.decode_states(N, h0 * W).reshape(-1, h0, W)
    canvas = np.full((grids.shape[0], h0 + L, W + 2 * L), N, dtype=np.int64)
    canvas[:, L:, L : L + W] = grids
    lp = np.take_along_axis(cond(canvas), grids[:, None], axis=1)[:, 0].sum(axis=2)  # (G, h0)
    p0 = np.exp(lp.sum(axis=1))
    p0 /= p0.sum()
    row[:h0] = (p0[:, None] * np.where(p0[:, None] > 0, lp, 0.0)).sum(axis=0)  # impossible grids weigh 0
    if height <= L:
        return row, tv
    mu = p0  # the block of rows 0..L-1, indexed like the chain states
    PT = P.T.tocsr()
    for i in range(L, height):
        if pi is not None:
            tv[i - 1] = ch.tv_distance(mu, pi)
        row[i] = mu @ ent
        mu = PT @ mu
    if pi is not None:
        tv[height - 1] = ch.tv_distance(mu, pi)
    return row, tv
