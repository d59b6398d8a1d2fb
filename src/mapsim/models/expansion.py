"""The correlation cluster expansion (paper Eq. 17; Eq. 21 is its binary case), and its fitting.

Conventions
-----------
* Order Omega is the cluster size *including the predicted site*, so a cluster
  holds k = 1 .. Omega-1 context sites of the causal neighbourhood of range L
  (n = 2L(L+1) sites, :func:`mapsim.models.base.causal_offsets`), each with a
  class label among the N_c - 1 non-empty classes 1 .. N_c-1.
* The empty class (0) and the outside class (N_c) get no coefficients: they are
  the reference.  A cluster's indicator is prod_m delta(X_{x_m}, omega_m).
* The logit of class 0 is fixed at 0; for theta = 1 .. N_c-1

      logit_theta = c_rho,theta + sum_clusters c_{cluster, theta} * indicator(cluster).

* Coefficient count: (N_c - 1) * sum_{k=0}^{Omega-1} C(n, k) (N_c - 1)^k
  (k = 0 is the density bias c_rho).

Evaluation never materialises a (pixels x clusters) matrix: per call the n
context classes of every pixel are gathered into one-hot features (P, n (N_c-1)),
and cluster indicator products are formed for a chunk of clusters at a time,
in the forward and (recomputed) in the backward pass.

Fitting dilute data uses a sparse path instead (:meth:`Expansion.active_clusters`):
a cluster's indicator is non-zero only if all its sites hold its labels, so each
pixel's logits are the bias plus the coefficients of the few clusters made of
its non-empty context sites.  These (pixel, cluster) pairs are listed once per
training set and the logits become an index-add of coefficient rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from mapsim.errors import MapsimError
from mapsim.models.base import MapModel, causal_offsets, register_model

BINARY_CLASSES: tuple[str, ...] = ("empty", "particle")

MAX_COEFFICIENTS = 20_000_000
"""Largest expansion that is built in memory (its cluster table alone takes ~0.5 GB)."""

CHUNK_ELEMENTS = 1 << 22
"""Pixels x clusters evaluated at once (16 MB of float32)."""

MAX_ACTIVE_ENTRIES = 30_000_000
"""Most (pixel, active cluster) pairs the sparse fitting path lists (~0.5 GB); beyond it, the dense path."""


def n_sites(context_range: int) -> int:
    """n = 2 L (L + 1): sites of the causal neighbourhood of range L."""
    return 2 * int(context_range) * (int(context_range) + 1)


def expansion_count(context_range: int, order: int, n_classes: int = 2) -> int:
    """Number of coefficients of the expansion, bias included (exact integer).

    (N_c - 1) * sum_{k=0}^{Omega-1} C(n, k) (N_c - 1)^k with n = 2L(L+1).
    Table 1 of the paper: (L, Omega) = (1, 2) -> 5, (2, 3) -> 79, (3, 3) -> 301.
    """
    L, order, n_classes = int(context_range), int(order), int(n_classes)
    if L < 0:
        raise MapsimError(f"range must be non-negative, found {L}")
    if order < 1:
        raise MapsimError(f"order (cluster size including the predicted site) must be at least 1, found {order}")
    if n_classes < 2:
        raise MapsimError(f"the number of classes must be at least 2, found {n_classes}")
    n, c = n_sites(L), n_classes - 1
    return c * sum(math.comb(n, k) * c**k for k in range(order))


def _combinations(n: int, k: int) -> np.ndarray:
    """All k-subsets of range(n) in lexicographic order, shape (C(n, k), k), int32."""
    if k == 0:
        return np.zeros((1, 0), dtype=np.int32)
    rows = np.arange(n - k + 1, dtype=np.int32)[:, None]
    for step in range(1, k):
        last = rows[:, -1]
        # extend each row by every larger site that still leaves room for the rest
        top = n - (k - step)  # largest allowed value in this column
        counts = np.maximum(top - last, 0)
        rep = np.repeat(rows, counts, axis=0)
        starts = np.repeat(last + 1, counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = np.concatenate([rep, (starts + within)[:, None].astype(np.int32)], axis=1)
    return rows


def cluster_tables(context_range: int, order: int, n_classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sites and labels of every cluster, per size k = 1 .. Omega-1.

    Returns
    -------
    list of (sites, labels)
        For size k: ``sites`` (n_k, k) indices into ``causal_offsets(L)``
        (increasing), ``labels`` (n_k, k) class ids in 1 .. N_c-1.  Clusters run
        over site sets in lexicographic order, then label tuples in
        lexicographic order; this is the order of the model's coefficients.
    """
    n, c = n_sites(context_range), n_classes - 1
    out = []
    for k in range(1, order):
        sites = _combinations(n, k)
        labels = (np.indices((c,) * k).reshape(k, -1).T + 1).astype(np.int32)  # (c^k, k)
        out.append((np.repeat(sites, len(labels), axis=0), np.tile(labels, (len(sites), 1))))
    return out


@dataclass
class ExpansionConfig:
    """Truncated correlation cluster expansion (Eq. 17).

    Parameters
    ----------
    range : int
        L_c, the range of the causal neighbourhood (>= 0).
    order : int
        Omega, the largest cluster size including the predicted site (>= 1);
        ``order = 1`` is the ideal gas (bias only).
    classes : tuple of str
        Class names, index = class id; N_c = len(classes).
    """

    range: int = 1
    order: int = 2
    classes: tuple[str, ...] = BINARY_CLASSES

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise MapsimError(f"expansion classes must be at least 2 distinct names, found {list(self.classes)}")
        if int(self.range) != self.range or self.range < 0:
            raise MapsimError(f"expansion range must be a non-negative integer, found {self.range}")
        if int(self.order) != self.order or self.order < 1:
            raise MapsimError(f"expansion order must be a positive integer, found {self.order}")
        self.range, self.order = int(self.range), int(self.order)
        if self.order - 1 > n_sites(self.range):
            raise MapsimError(f"expansion order {self.order} needs clusters of {self.order - 1} context sites, "
                              f"but range {self.range} has only {n_sites(self.range)}")


class _ClusterSum(torch.autograd.Function):
    """sum_c coef[c] * prod_m feat[:, idx[c, m]], chunked over clusters; backward recomputes products."""

    @staticmethod
    def forward(ctx, feat: torch.Tensor, coef: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # feat (P, F), coef (n_k, C), idx (n_k, k) -> (P, C)
        out = feat.new_zeros(feat.shape[0], coef.shape[1])
        for s, prod in _chunked_products(feat, idx):
            out.addmm_(prod, coef[s : s + prod.shape[1]])
        ctx.save_for_backward(feat, idx)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feat, idx = ctx.saved_tensors
        grad_coef = None
        if ctx.needs_input_grad[1]:
            grad_coef = grad_out.new_empty(idx.shape[0], grad_out.shape[1])
            for s, prod in _chunked_products(feat, idx):
                grad_coef[s : s + prod.shape[1]] = prod.T @ grad_out
        return None, grad_coef, None


def _chunked_products(feat: torch.Tensor, idx: torch.Tensor):
    """Yield (start, indicator products (P, chunk)) over chunks of clusters."""
    n_k = idx.shape[0]
    chunk = max(1, CHUNK_ELEMENTS // max(1, feat.shape[0]))
    for s in range(0, n_k, chunk):
        sub = idx[s : s + chunk]
        prod = feat.index_select(1, sub[:, 0])
        for m in range(1, sub.shape[1]):
            prod = prod * feat.index_select(1, sub[:, m])
        yield s, prod


@register_model
class Expansion(MapModel):
    """Correlation cluster expansion of range L_c and order Omega (Eq. 17; Eq. 21 for N_c = 2).

    Parameters (learned)
    --------------------
    bias : (N_c - 1,)
        c_rho,theta for theta = 1 .. N_c-1.
    coef : (n_clusters, N_c - 1)
        c_{cluster, theta}, clusters in the order of :func:`cluster_tables`.
    """

    kind = "expansion"
    config_class = ExpansionConfig

    def __init__(self, config: ExpansionConfig) -> None:
        super().__init__(len(config.classes), config.range)
        self.config = config
        total = expansion_count(config.range, config.order, len(config.classes))
        if total > MAX_COEFFICIENTS:
            raise MapsimError(
                f"an expansion of range {config.range}, order {config.order} with {len(config.classes)} classes has "
                f"{total:,} coefficients, more than the {MAX_COEFFICIENTS:,} that are built in memory")
        C = self.n_classes - 1
        self.offsets = causal_offsets(self.context_range)
        tables = cluster_tables(config.range, config.order, self.n_classes)
        self._sites = [s for s, _ in tables]
        self._labels = [lab for _, lab in tables]
        # cluster -> one-hot feature indices, feature = site * C + (label - 1); derived, not saved
        self._idx_names = []
        for k, (sites, labels) in enumerate(tables, start=1):
            name = f"_idx{k}"
            self.register_buffer(name, torch.as_tensor(sites.astype(np.int64) * C + labels - 1), persistent=False)
            self._idx_names.append(name)
        self.sizes = [len(s) for s in self._sites]
        self.bias = torch.nn.Parameter(torch.zeros(C))
        self.coef = torch.nn.Parameter(torch.zeros(sum(self.sizes), C))
        self.register_buffer("_labels_out", torch.arange(1, self.n_classes), persistent=False)
        self._index: dict | None = None
        self._keys: tuple[np.ndarray, np.ndarray] | None = None

    # -- structure -----------------------------------------------------------
    @property
    def n_coefficients(self) -> int:
        """All coefficients, bias included (= :func:`expansion_count`)."""
        return self.bias.numel() + self.coef.numel()

    def clusters(self) -> Iterable[tuple[tuple[tuple[int, int], ...], tuple[int, ...]]]:
        """Every cluster as (offsets ((di, dj), ...), labels), in coefficient order."""
        for sites, labels in zip(self._sites, self._labels):
            for s, lab in zip(sites, labels):
                yield tuple(self.offsets[x] for x in s), tuple(int(v) for v in lab)

    def cluster_index(self, offsets, labels) -> int:
        """Row of ``coef`` holding the cluster with these context offsets and class labels.

        Parameters
        ----------
        offsets : sequence of (di, dj)
            Causal offsets, any order, distinct.
        labels : sequence of int, or int
            Class id (1 .. N_c-1) of each site; an int applies to all sites.
        """
        offsets = [tuple(int(v) for v in o) for o in offsets]
        if isinstance(labels, (int, np.integer)):
            labels = [int(labels)] * len(offsets)
        if len(labels) != len(offsets):
            raise MapsimError(f"cluster has {len(offsets)} sites but {len(labels)} labels")
        if self._index is None:
            self._index = {}
            for row, (offs, lab) in enumerate(self.clusters()):
                self._index[tuple(sorted(zip(offs, lab)))] = row
        key = tuple(sorted(zip(offsets, (int(v) for v in labels))))
        if key not in self._index:
            raise MapsimError(f"no cluster {key} in an expansion of range {self.config.range}, order {self.config.order}")
        return self._index[key]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["n_coefficients"] = self.n_coefficients
        return d

    # -- sparse evaluation (fitting) ----------------------------------------------
    def _key_base(self) -> int | None:
        """Base of the integer cluster keys, or None when keys would overflow int64."""
        base = n_sites(self.context_range) * (self.n_classes - 1) + 1
        return base if base ** max(1, self.config.order - 1) < 2**62 else None

    def _key_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted cluster keys and their coef rows (key = sum_m (f_m + 1) base^m, features ascending)."""
        if getattr(self, "_keys", None) is None:
            base = self._key_base()
            keys = []
            for name in self._idx_names:
                idx = getattr(self, name).cpu().numpy()
                keys.append(((idx + 1) * base ** np.arange(idx.shape[1], dtype=np.int64)).sum(1))
            keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
            order = np.argsort(keys, kind="stable")
            self._keys = (keys[order], order.astype(np.int64))
        return self._keys

    def active_clusters(self, canvas: torch.Tensor, max_entries: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray] | None:
        """(pixel, coef row) of every cluster whose indicator is 1, or None if there are too many.

        Parameters
        ----------
        canvas : LongTensor, shape (B, H + L, W + 2L)
        max_entries : int, optional
            Give up (return None) beyond this many pairs (default :data:`MAX_ACTIVE_ENTRIES`).

        Returns
        -------
        pix, rows : ndarray of int64, shape (E,)
            Pixel index into the flattened (B, H, W) and row of ``coef``.
        """
        base = self._key_base()
        if base is None:
            return None
        max_entries = MAX_ACTIVE_ENTRIES if max_entries is None else max_entries
        with torch.no_grad():
            feat = self.features(canvas.long()).bool().cpu().numpy()  # (P, F)
        P = feat.shape[0]
        pix_all, f_all = np.nonzero(feat)  # sorted by pixel, then feature
        m = np.bincount(pix_all, minlength=P)
        kmax = self.config.order - 1
        per_m = np.array([sum(math.comb(j, k) for k in range(1, kmax + 1)) for j in range(feat.shape[1] + 1)],
                         dtype=np.float64)  # active clusters of a pixel with j non-empty context sites
        if per_m[m].sum() > max_entries:
            return None
        keys_sorted, rows_sorted = self._key_table()
        ptr = np.concatenate([[0], np.cumsum(m)])
        out_pix, out_rows = [], []
        for mm in np.unique(m[m > 0]):
            pixels = np.nonzero(m == mm)[0]
            feats = f_all[ptr[pixels][:, None] + np.arange(mm)]  # (n_m, mm), ascending
            for k in range(1, min(int(mm), kmax) + 1):
                combos = _combinations(int(mm), k)  # (C(mm, k), k)
                sub = feats[:, combos]  # (n_m, C(mm, k), k)
                keys = ((sub.astype(np.int64) + 1) * base ** np.arange(k, dtype=np.int64)).sum(-1).ravel()
                at = np.searchsorted(keys_sorted, keys)
                out_rows.append(rows_sorted[at])
                out_pix.append(np.repeat(pixels, len(combos)))
        if not out_pix:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_pix).astype(np.int64), np.concatenate(out_rows)

    def logits_from_active(self, pix: torch.Tensor, rows: torch.Tensor, n_pixels: int) -> torch.Tensor:
        """Logits (n_pixels, N_c) from :meth:`active_clusters` output (differentiable in the coefficients)."""
        out = self.bias.expand(n_pixels, -1).index_add(0, pix, self.coef.index_select(0, rows))
        return torch.cat([torch.zeros_like(out[:, :1]), out], dim=1)

    # -- evaluation ------------------------------------------------------------
    def features(self, canvas: torch.Tensor) -> torch.Tensor:
        """One-hot non-empty context classes of every sample pixel, (B*H*W, n (N_c-1)).

        Empty (0) and outside (N_c) sites give all-zero features.
        """
        L = self.context_range
        B, Hc, Wc = canvas.shape
        H, W = Hc - L, Wc - 2 * L
        if not self.offsets:
            return torch.zeros(B * H * W, 0, dtype=self.coef.dtype, device=canvas.device)
        sites = torch.stack([canvas[:, L + di : L + di + H, L + dj : L + dj + W] for di, dj in self.offsets], dim=-1)
        feat = sites.unsqueeze(-1) == self._labels_out  # (B, H, W, n, C)
        return feat.reshape(B * H * W, -1).to(self.coef.dtype)

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        L = self.context_range
        B, Hc, Wc = canvas.shape
        H, W = Hc - L, Wc - 2 * L
        feat = self.features(canvas.long())  # (P, F)
        out = self.bias.expand(feat.shape[0], -1)
        start = 0
        for name, n_k in zip(self._idx_names, self.sizes):
            out = out + _ClusterSum.apply(feat, self.coef[start : start + n_k], getattr(self, name))
            start += n_k
        out = out.reshape(B, H, W, -1).permute(0, 3, 1, 2)  # (B, N_c-1, H, W)
        return torch.cat([torch.zeros_like(out[:, :1]), out], dim=1)  # class 0 is the reference


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------
class _SparseData:
    """Active (pixel, cluster) pairs of a set of grids, grouped by sample, for fast minibatches."""

    def __init__(self, model: Expansion, grids: torch.Tensor, chunk: int = 32, max_entries: int | None = None):
        max_entries = MAX_ACTIVE_ENTRIES if max_entries is None else max_entries
        N, H, W = grids.shape
        self.hw = H * W
        samples, local, rows = [], [], []
        total = 0
        for s in range(0, N, chunk):
            got = model.active_clusters(model.make_canvas(grids[s : s + chunk]), max_entries - total)
            if got is None:
                raise OverflowError
            pix, r = got
            total += len(pix)
            samples.append(pix // self.hw + s)
            local.append(pix % self.hw)
            rows.append(r)
        samples = np.concatenate(samples)
        order = np.argsort(samples, kind="stable")
        self.local = np.concatenate(local)[order]
        self.rows = np.concatenate(rows)[order]
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(samples, minlength=N))])
        self.device = model.device

    def batch(self, sel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel indices into the flattened (len(sel), H, W) batch and coef rows."""
        starts, ends = self.ptr[sel], self.ptr[sel + 1]
        lengths = ends - starts
        idx = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        pix = self.local[idx] + np.repeat(np.arange(len(sel)) * self.hw, lengths)
        return (torch.as_tensor(pix, device=self.device), torch.as_tensor(self.rows[idx], device=self.device))


class ExpansionFitter:
    """Fit an :class:`Expansion` to a dataset by minibatch Adam on the mean NLL per pixel.

    Parameters
    ----------
    epochs : int
        Passes over the training samples.
    lr : float
        Adam learning rate at the start; it decays along a cosine to lr / 20.
    l2 : float
        L2 penalty ``l2 * sum(coef ** 2)`` added to the mean NLL per pixel (the bias is not penalised).
    batch : int
        Samples per minibatch.
    seed : int
        Seeds the train/validation split and the minibatch order.
    val_fraction : float
        Fraction of samples held out for validation (at least one when > 0 and
        there are two or more samples).  The parameters of the epoch with the
        lowest validation NLL (training NLL without validation) are kept.
    skip_rows, skip_cols : int
        Leave out of the loss the first ``skip_rows`` rows and ``skip_cols``
        columns at each side (pixels whose context reaches past the edge of
        periodic data).
    method : {"auto", "sparse", "dense"}
        ``sparse`` lists each pixel's active clusters once (fast on dilute
        data); ``dense`` evaluates every cluster's indicator per pixel in
        chunks; ``auto`` takes sparse unless the list would exceed
        :data:`MAX_ACTIVE_ENTRIES` pairs.  Both give the same loss.
    progress : callable, optional
        ``progress(iterable, total, desc)`` wrapping the minibatches of an epoch
        (e.g. a tqdm bar).

    Attributes
    ----------
    history_ : list of dict
        Per epoch: ``epoch``, ``train_nll``, ``val_nll`` (nats per pixel; None without validation).
    best_epoch_ : int
    n_train_, n_val_ : int
    method_ : str
        The path used, sparse or dense.
    """

    def __init__(self, epochs: int = 20, lr: float = 0.05, l2: float = 0.0, batch: int = 4, seed: int = 0,
                 val_fraction: float = 0.1, skip_rows: int = 0, skip_cols: int = 0, method: str = "auto",
                 progress: Callable | None = None) -> None:
        self.epochs = epochs
        self.lr = lr
        self.l2 = l2
        self.batch = batch
        self.seed = seed
        self.val_fraction = val_fraction
        self.skip_rows = skip_rows
        self.skip_cols = skip_cols
        self.method = method
        self.progress = progress

    def _check(self, model: Expansion, grids: np.ndarray) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise MapsimError(f"epochs and batch must be positive, found epochs={self.epochs}, batch={self.batch}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise MapsimError(f"learning rate must be a positive number, found {self.lr}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise MapsimError(f"l2 must be a non-negative number, found {self.l2}")
        if not (0.0 <= self.val_fraction < 1.0):
            raise MapsimError(f"val_fraction must lie in [0, 1), found {self.val_fraction}")
        if self.method not in ("auto", "sparse", "dense"):
            raise MapsimError(f"fitting method must be auto, sparse or dense, found {self.method!r}")
        if grids.ndim != 3 or grids.shape[0] == 0:
            raise MapsimError(f"training grids must have shape (n_samples, H, W), found {grids.shape}")
        H, W = grids.shape[1:]
        if self.skip_rows >= H or 2 * self.skip_cols >= W or self.skip_rows < 0 or self.skip_cols < 0:
            raise MapsimError(f"skip_rows={self.skip_rows}, skip_cols={self.skip_cols} leave no pixel of {H}x{W} samples")
        if int(grids.max()) >= model.n_classes:
            raise MapsimError(f"training data hold class id {int(grids.max())}; the model has {model.n_classes} classes")

    def _sparse(self, model: Expansion, grids: torch.Tensor) -> _SparseData | None:
        if self.method == "dense" or len(grids) == 0:
            return None
        try:
            return _SparseData(model, grids)
        except OverflowError:
            if self.method == "sparse":
                raise MapsimError("the data have too many active clusters for the sparse fitting path; use method dense") from None
            return None

    def _nll(self, model: Expansion, grids: torch.Tensor, sel: np.ndarray, sparse: _SparseData | None):
        """Sum of -log p over the kept pixels of samples ``sel``, and their count."""
        g = grids[torch.as_tensor(sel, device=grids.device)]
        if sparse is None:
            lp = model.log_prob_pixels(g)
        else:
            pix, rows = sparse.batch(sel)
            logits = model.logits_from_active(pix, rows, g.numel())  # (P, N_c)
            lp = torch.log_softmax(logits, dim=1).gather(1, g.reshape(-1, 1)).reshape(g.shape)
        W = lp.shape[2]
        lp = lp[:, self.skip_rows :, self.skip_cols : W - self.skip_cols]
        return -lp.sum(), lp.numel()

    @torch.no_grad()
    def _mean_nll(self, model: Expansion, grids: torch.Tensor, sparse: _SparseData | None) -> float:
        total, count = 0.0, 0
        for s in range(0, len(grids), self.batch):
            nll, n = self._nll(model, grids, np.arange(s, min(s + self.batch, len(grids))), sparse)
            total, count = total + float(nll), count + n
        return total / count

    def fit(self, model: Expansion, grids: np.ndarray) -> "ExpansionFitter":
        """Fit ``model`` in place to ``grids`` (n_samples, H, W) of class ids; returns self."""
        grids = np.asarray(grids)
        self._check(model, grids)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(grids))
        n_val = int(round(self.val_fraction * len(grids)))
        if self.val_fraction > 0 and len(grids) >= 2:
            n_val = min(max(n_val, 1), len(grids) - 1)
        else:
            n_val = 0
        data = torch.as_tensor(grids.astype(np.int64), device=model.device)
        train, val = data[order[n_val:]], data[order[:n_val]]
        self.n_train_, self.n_val_ = len(train), len(val)
        sp_train = self._sparse(model, train)
        sp_val = self._sparse(model, val) if sp_train is not None else None
        self.method_ = "dense" if sp_train is None else "sparse"

        with torch.no_grad():  # start from the ideal gas of the training data
            counts = torch.bincount(train.flatten(), minlength=model.n_classes).double() + 0.5
            model.bias.copy_((counts[1:] / counts[0]).log().to(model.bias.dtype))
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        n_batches = math.ceil(len(train) / self.batch)
        total_steps = self.epochs * n_batches
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps)))
        self.history_ = []
        best = (math.inf, None, 0)
        model.train()
        for epoch in range(1, self.epochs + 1):
            perm = rng.permutation(len(train))
            batches = (perm[s : s + self.batch] for s in range(0, len(train), self.batch))
            if self.progress is not None:
                batches = self.progress(batches, n_batches, f"epoch {epoch}/{self.epochs}")
            for sel in batches:
                nll, n = self._nll(model, train, sel, sp_train)
                loss = nll / n
                if self.l2 > 0:
                    loss = loss + self.l2 * model.coef.pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            train_nll = self._mean_nll(model, train, sp_train)
            val_nll = self._mean_nll(model, val, sp_val) if len(val) else None
            self.history_.append({"epoch": epoch, "train_nll": train_nll, "val_nll": val_nll})
            score = val_nll if val_nll is not None else train_nll
            if score < best[0]:
                best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
        model.load_state_dict(best[1])
        model.eval()
        self.best_epoch_ = best[2]
        return self
