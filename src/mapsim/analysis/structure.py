"""Structure statistics of lattice samples: density, g(r), neighbours, clusters, energy, S(k).

Every statistic is computed for one *class* (e.g. ``particle``) from an
occupation array ``occupied`` of shape (n, H, W), bool: True where the grid
holds that class (see :func:`occupancy`).  Analysis objects follow the freud
pattern: settings go to the constructor, ``compute(occupied)`` returns
``self`` and the results are read-only properties.  Each object keeps the
*per-sample* sufficient statistics (pair counts, histogram counts, cluster
sizes) as well as the pooled result, so that a statistic of any subset of
samples can be formed cheaply (:mod:`mapsim.analysis.compare` relies on this
for its bootstrap noise floor).

Boundaries
----------
``periodic=True`` treats each sample as a torus (what lattice Monte Carlo
simulates).  ``periodic=False`` (*open*) treats it as a window cut from a
larger system: nothing is assumed outside the window, so every estimator
below uses only the pairs, neighbourhoods and clusters that the window
shows.  Open estimators are valid for periodic samples too (they just use
less of the data); that is why :func:`is_periodic` defaults to open when the
metadata does not say.

This module is NumPy/SciPy only; it never imports torch or :mod:`mapsim.models`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mapsim.errors import MapsimError
from mapsim.lattice import Dataset
from mapsim.montecarlo.hamiltonian import Hamiltonian, bond_sum

DEFAULT_R_MAX = 10
"""Default range of g(r) in lattice spacings (clipped to what the samples allow)."""

# Forward half of each neighbourhood: every nearest-neighbour bond (or
# neighbour pair) is reached exactly once from one of its two ends.
_FORWARD = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}
_FULL = {
    4: ((0, 1), (0, -1), (1, 0), (-1, 0)),
    8: ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)),
}

# Keep FFT work arrays of a chunk of samples below this many complex numbers
# (4 M x 16 bytes = 64 MiB), so large generated samples do not exhaust memory.
_FFT_CHUNK_ELEMENTS = 4 * 1024 * 1024


# --------------------------------------------------------------------------------------
# inputs


def default_class(dataset: Dataset) -> int:
    """The class analysed when none is named: ``particle`` if present, else id 1.

    Raises
    ------
    MapsimError
        If the dataset has a single class only.
    """
    if "particle" in dataset.classes:
        return dataset.classes.index("particle")
    if dataset.n_classes < 2:
        raise MapsimError(f"dataset has only the class {list(dataset.classes)}; nothing to analyse")
    return 1


def resolve_class(dataset: Dataset, name: str | int | None) -> int:
    """Class id for a name, id or digit string; ``None`` gives :func:`default_class`."""
    if name is None:
        return default_class(dataset)
    return dataset.class_id(name)


def occupancy(grids: np.ndarray, class_id: int) -> np.ndarray:
    """Where the grids hold ``class_id``.

    Parameters
    ----------
    grids : ndarray of int, shape (n, H, W) or (H, W)
    class_id : int

    Returns
    -------
    ndarray of bool, shape (n, H, W)
    """
    g = np.asarray(grids)
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3:
        raise MapsimError(f"grids: expected shape (n, H, W) or (H, W), found shape {g.shape}")
    return g == class_id


def is_periodic(metadata: Mapping[str, Any] | None, override: bool | None = None) -> bool:
    """Whether samples are periodic along both axes: ``override`` if given, else the metadata, else open.

    Reads the metadata through :func:`mapsim.lattice.periodic_axes` (``params.periodic`` as the
    Monte Carlo writer records it, or a top-level ``periodic``: one bool, or one per axis as import
    records it). A sample periodic along one axis only counts as open here (open estimators stay
    correct for periodic data, the converse is not true); the estimators themselves also take the
    boundary axis by axis (:func:`boundary`), as :func:`analyze` does.
    """
    from mapsim.lattice import periodic_axes

    if override is not None:
        return bool(override)
    return all(periodic_axes(metadata))


def boundary(metadata: Mapping[str, Any] | None, override: bool | None = None) -> bool | tuple[bool, bool]:
    """The samples' boundary for the estimators here, axis by axis: ``override`` if given, else the
    metadata (:func:`mapsim.lattice.periodic_axes`); one bool when both axes agree, else
    ``(periodic_rows, periodic_columns)``."""
    from mapsim.lattice import periodic_axes

    per = periodic_axes(metadata, override)
    return per[0] if per[0] == per[1] else per


def _axes(periodic: bool | Sequence[bool]) -> tuple[bool, bool]:
    """``periodic`` as (rows, columns): one bool for both axes, or a pair."""
    if isinstance(periodic, (tuple, list, np.ndarray)):
        return bool(periodic[0]), bool(periodic[1])
    return bool(periodic), bool(periodic)


def _norm(periodic: bool | Sequence[bool]) -> bool | tuple[bool, bool]:
    per = _axes(periodic)
    return per[0] if per[0] == per[1] else per


def boundary_text(periodic: bool | Sequence[bool]) -> str:
    """``periodic``, ``open`` or ``periodic rows, open columns`` (and the reverse)."""
    py, px = _axes(periodic)
    if py == px:
        return "periodic" if py else "open"
    return f"{'periodic' if py else 'open'} rows, {'periodic' if px else 'open'} columns"


def max_r_allowed(shape: tuple[int, int], periodic: bool | Sequence[bool]) -> int:
    """Largest g(r) range a sample shape supports, axis by axis.

    Periodic axis: ``n // 2`` (beyond it a displacement is no longer its own
    minimum image).  Open axis: ``n - 1`` (beyond it no pair fits in a row
    or column).  The range is the smaller of the two axes' limits.
    """
    limits = [n // 2 if p else n - 1 for n, p in zip(shape, _axes(periodic))]
    return max(min(limits), 0)


def check_r_max(r_max: int | None, shape: tuple[int, int], periodic: bool, where: str = "samples") -> int:
    """Validate ``r_max`` (None: ``min(DEFAULT_R_MAX, allowed)``)."""
    limit = max_r_allowed(shape, periodic)
    if r_max is None:
        r_max = min(DEFAULT_R_MAX, limit)
    r_max = int(r_max)
    if r_max < 1:
        raise MapsimError(f"r_max must be at least 1, found {r_max} ({where} of shape {shape})")
    if r_max > limit:
        kind = boundary_text(periodic)
        raise MapsimError(f"r_max {r_max} too large for {kind} {where} of shape {shape}: at most {limit}")
    return r_max


# --------------------------------------------------------------------------------------
# lattice distances and FFT autocorrelation


def lattice_r2(r_max: int) -> np.ndarray:
    """Squared distances r² = dy² + dx² ≤ r_max² that occur on the square lattice.

    Returns
    -------
    ndarray of int64, shape (n_bins,)
        Sorted: 1, 2, 4, 5, 8, 9, 10, 13, ... (3, 6, 7, 11, ... are no sums of two squares).
    """
    d = np.arange(-r_max, r_max + 1)
    r2 = (d[:, None] ** 2 + d[None, :] ** 2).ravel()
    r2 = np.unique(r2)
    return r2[(r2 > 0) & (r2 <= r_max * r_max)]


def _displacements(r_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All displacement vectors 0 < |d| ≤ r_max and the r² bin of each.

    Returns
    -------
    dy, dx : ndarray of int64, shape (n_disp,)
    bin_index : ndarray of int64, shape (n_disp,)
        Index into :func:`lattice_r2`.
    """
    d = np.arange(-r_max, r_max + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    dy, dx = dy.ravel(), dx.ravel()
    r2 = dy**2 + dx**2
    keep = (r2 > 0) & (r2 <= r_max * r_max)
    dy, dx, r2 = dy[keep], dx[keep], r2[keep]
    bins = np.searchsorted(lattice_r2(r_max), r2)
    return dy, dx, bins


def autocorrelation(x: np.ndarray, periodic: bool, r_max: int) -> np.ndarray:
    """Pair counts C[s, d] = Σ_i x[s, i] x[s, i + d] for every |dy|, |dx| ≤ r_max, by FFT.

    Parameters
    ----------
    x : ndarray of bool or float, shape (n, H, W)
    periodic : bool or (bool, bool)
        Circular (torus) or linear (open window) autocorrelation, for both axes
        or per axis (rows, columns).  An open axis is zero-padded to at least
        n + r_max, so no wrapped pair reaches a lag ≤ r_max.
    r_max : int

    Returns
    -------
    ndarray of float64, shape (n, 2 r_max + 1, 2 r_max + 1)
        ``C[s, r_max + dy, r_max + dx]``; integer valued up to FFT rounding.
    """
    n, h, w = x.shape
    shape = tuple(m if p else sfft.next_fast_len(m + r_max, real=True) for m, p in zip((h, w), _axes(periodic)))
    lags = np.arange(-r_max, r_max + 1)
    iy = lags % shape[0]
    ix = lags % shape[1]
    out = np.empty((n, lags.size, lags.size))
    chunk = max(1, _FFT_CHUNK_ELEMENTS // (shape[0] * shape[1]))
    for start in range(0, n, chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float64)
        f = sfft.rfft2(block, s=shape)  # (b, P, Q//2+1)
        ac = sfft.irfft2(f.real**2 + f.imag**2, s=shape)  # (b, P, Q)
        out[start : start + chunk] = ac[:, iy][:, :, ix]
    return out


def available_pairs(shape: tuple[int, int], periodic: bool, r_max: int) -> np.ndarray:
    """A[d]: number of site pairs (i, i + d) that lie inside one sample, |dy|, |dx| ≤ r_max.

    Periodic: H·W for every d.  Open: the autocorrelation of the all-ones
    mask, i.e. (H - |dy|)(W - |dx|); a periodic axis contributes its full length.

    Returns
    -------
    ndarray of float64, shape (2 r_max + 1, 2 r_max + 1)
    """
    lags = np.abs(np.arange(-r_max, r_max + 1))
    ay, ax = (np.full(lags.size, float(m)) if p else (m - lags).clip(0).astype(np.float64)
              for m, p in zip(shape, _axes(periodic)))
    return ay[:, None] * ax[None, :]


# --------------------------------------------------------------------------------------
# analysis objects


class _Analysis:
    """Gives a clear error when results are read before ``compute``."""

    _computed = False

    def _need(self) -> None:
        if not self._computed:
            raise RuntimeError(f"{type(self).__name__}: call compute() before reading results")


class PairCorrelation(_Analysis):
    """Radial pair-correlation function g(r), binned by exact lattice distances.

    For sample s with N_s occupied sites among M = H·W, the pair count at
    displacement d ≠ 0 is C_s(d) = Σ_i n_i n_{i+d} (ordered pairs, by FFT).
    If the N_s particles were placed uniformly at random (ideal lattice gas)
    its expectation would be E_s(d) = A(d) N_s (N_s - 1) / (M (M - 1)), with
    A(d) the number of site pairs at displacement d inside the sample (M when
    periodic; (H - |dy|)(W - |dx|) when open).  Then

        g(r) = Σ_s Σ_{|d| = r} C_s(d) / Σ_s Σ_{|d| = r} E_s(d),

    which is exactly 1 in expectation, at every r, for random occupation with
    any particle number; the N(N-1) rather than N² normalisation removes the
    1/N bias of a fixed particle number.  Samples without a pair contribute
    nothing; an r with no expected pairs at all gives NaN.

    Parameters
    ----------
    r_max : int
        Largest distance, in lattice spacings; bins are every r² ≤ r_max²
        that is a sum of two squares.
    periodic : bool
        Boundary of the samples (see module docstring).
    """

    def __init__(self, r_max: int = DEFAULT_R_MAX, periodic: bool | tuple[bool, bool] = False) -> None:
        self.r_max = int(r_max)
        self.periodic = _norm(periodic)

    def compute(self, occupied: np.ndarray) -> "PairCorrelation":
        """Compute from ``occupied`` of shape (n, H, W) (bool); returns self."""
        occ = np.asarray(occupied, dtype=bool)
        n, h, w = occ.shape
        r_max = check_r_max(self.r_max, (h, w), self.periodic)
        dy, dx, bins = _displacements(r_max)
        ac = np.rint(autocorrelation(occ, self.periodic, r_max))[:, r_max + dy, r_max + dx]  # (n, n_disp)
        avail = available_pairs((h, w), self.periodic, r_max)[r_max + dy, r_max + dx]  # (n_disp,)
        self._store(occ, ac, avail, bins, lattice_r2(r_max))
        return self

    def _store(self, occ: np.ndarray, ac: np.ndarray, avail: np.ndarray, bins: np.ndarray, r2: np.ndarray) -> None:
        """Per-sample pair counts and ideal-gas expectations per bin from the counts per displacement.

        ``occ`` (n, *lattice), ``ac`` (n, n_disp) pair counts, ``avail`` (n_disp,) site pairs,
        ``bins`` (n_disp,) bin of each displacement, ``r2`` (n_bins,) the bins' squared distances.
        """
        n = occ.shape[0]
        self._pairs = np.zeros((n, r2.size))
        np.add.at(self._pairs.T, bins, ac.T)
        self._avail = np.bincount(bins, weights=avail, minlength=r2.size)  # (n_bins,)
        self._expected = ideal_pairs(occ.reshape(n, -1).sum(axis=1), int(np.prod(occ.shape[1:])), self._avail)
        self._r2 = r2
        self._computed = True

    @property
    def r2(self) -> np.ndarray:
        """Squared bin distances, shape (n_bins,), int64."""
        self._need()
        return self._r2

    @property
    def r(self) -> np.ndarray:
        """Bin distances sqrt(r2) in lattice spacings, shape (n_bins,)."""
        self._need()
        return np.sqrt(self._r2)

    @property
    def pair_counts(self) -> np.ndarray:
        """Ordered pair counts per sample and bin, shape (n, n_bins)."""
        self._need()
        return self._pairs

    @property
    def expected_counts(self) -> np.ndarray:
        """Ideal-gas expectation of :attr:`pair_counts` given each N_s, shape (n, n_bins)."""
        self._need()
        return self._expected

    @property
    def site_pairs(self) -> np.ndarray:
        """Σ_{|d| = r} A(d): site pairs per sample in each bin, shape (n_bins,)."""
        self._need()
        return self._avail

    @property
    def g(self) -> np.ndarray:
        """g(r) pooled over all samples, shape (n_bins,)."""
        self._need()
        return pooled_g(self._pairs, self._expected)

    @property
    def g_per_sample(self) -> np.ndarray:
        """g(r) of each sample alone, shape (n, n_bins); NaN where N_s < 2."""
        self._need()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._expected > 0, self._pairs / np.where(self._expected > 0, self._expected, 1), np.nan)


def ideal_pairs(counts: np.ndarray, sites: int, site_pairs: np.ndarray) -> np.ndarray:
    """Ideal-gas expectation of the pair counts: A(r) N_s (N_s - 1) / (M (M - 1)) (see :class:`PairCorrelation`).

    Parameters
    ----------
    counts : ndarray of int, shape (n,)
        Occupied sites N_s of each sample.
    sites : int
        Sites M of a sample.
    site_pairs : ndarray, shape (n_bins,)
        Site pairs A(r) of a sample in each bin.

    Returns
    -------
    ndarray of float64, shape (n, n_bins)
    """
    counts = np.asarray(counts).astype(np.float64)
    m = int(sites)
    pair_prob = counts * (counts - 1) / (m * (m - 1)) if m > 1 else np.zeros(counts.size)
    return pair_prob[:, None] * np.asarray(site_pairs)[None, :]


def pooled_g(pairs: np.ndarray, expected: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """g(r) of a subset of samples from per-sample counts (see :class:`PairCorrelation`).

    Parameters
    ----------
    pairs, expected : ndarray, shape (n, n_bins)
    index : ndarray of int or bool, optional
        Samples to pool (all by default).

    Returns
    -------
    ndarray of float64, shape (n_bins,); NaN where no pair is expected.
    """
    if index is not None:
        pairs, expected = pairs[index], expected[index]
    num = pairs.sum(axis=0)
    den = expected.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


class NeighbourCounts(_Analysis):
    """How many of the 4 and of the 8 nearest neighbours of each particle are particles.

    Periodic samples count every particle, wrapping around the edges.  Open
    samples count only particles whose whole 3×3 neighbourhood lies inside
    the sample (rows and columns 1 .. H-2, 1 .. W-2): a pixel outside the
    window is unknown, not empty, so border particles would otherwise be
    biased towards fewer neighbours.  With one periodic and one open axis,
    each axis follows its own rule.

    Parameters
    ----------
    periodic : bool or (bool, bool)
        Both axes, or (rows, columns).
    """

    def __init__(self, periodic: bool | tuple[bool, bool] = False) -> None:
        self.periodic = _norm(periodic)

    def compute(self, occupied: np.ndarray) -> "NeighbourCounts":
        """Compute from ``occupied`` of shape (n, H, W) (bool); returns self."""
        occ = np.asarray(occupied, dtype=bool)
        n, h, w = occ.shape
        py, px = _axes(self.periodic)
        # a periodic axis is padded with the wrapped rows/columns, an open one with zeros (and its border
        # particles are not counted)
        pad = np.pad(occ, ((0, 0), (1, 1), (0, 0)), mode="wrap" if py else "constant")
        pad = np.pad(pad, ((0, 0), (0, 0), (1, 1)), mode="wrap" if px else "constant")
        centre = occ.copy()
        if not py:
            centre[:, [0, -1], :] = False
        if not px:
            centre[:, :, [0, -1]] = False
        self._counts = neighbour_histograms(pad, centre)
        h_in, w_in = (h if py else max(h - 2, 0)), (w if px else max(w - 2, 0))
        self._sites = h_in * w_in
        self._computed = True
        return self

    @property
    def counts4(self) -> np.ndarray:
        """Particles with 0..4 particle neighbours among the 4, per sample, shape (n, 5), int64."""
        self._need()
        return self._counts[4]

    @property
    def counts8(self) -> np.ndarray:
        """Particles with 0..8 particle neighbours among the 8, per sample, shape (n, 9), int64."""
        self._need()
        return self._counts[8]

    @property
    def hist4(self) -> np.ndarray:
        """Fraction of counted particles with 0..4 particle neighbours (of 4), shape (5,)."""
        self._need()
        return normalised(self._counts[4].sum(axis=0))

    @property
    def hist8(self) -> np.ndarray:
        """Fraction of counted particles with 0..8 particle neighbours (of 8), shape (9,)."""
        self._need()
        return normalised(self._counts[8].sum(axis=0))

    @property
    def sites_per_sample(self) -> int:
        """Sites whose particles are counted, per sample (H·W, or (H-2)(W-2) when open)."""
        self._need()
        return self._sites


def neighbour_histograms(pad: np.ndarray, centre: np.ndarray) -> dict[int, np.ndarray]:
    """Per sample, how many particles have 0..4 (0..8) particles among their 4 (8) neighbours.

    Parameters
    ----------
    pad : ndarray of bool, shape (n, h + 2, w + 2)
        Occupation with one row and column of neighbours at each side (wrapped, or empty).
    centre : ndarray of bool, shape (n, h, w)
        The particles counted (``pad[:, 1:-1, 1:-1]`` less any not counted).

    Returns
    -------
    dict
        ``{4: counts (n, 5), 8: counts (n, 9)}``, int64.
    """
    n, h, w = centre.shape
    s, _, _ = np.nonzero(centre)
    out = {}
    for k in (4, 8):
        nb = sum(pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].astype(np.int8) for dy, dx in _FULL[k])
        vals = nb[centre].astype(np.int64)
        out[k] = np.bincount(s * (k + 1) + vals, minlength=n * (k + 1)).reshape(n, k + 1)
    return out


def normalised(counts: np.ndarray) -> np.ndarray:
    """``counts / counts.sum()`` (float64); all NaN when the total is zero."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else np.full(c.shape, np.nan)


class ClusterSizes(_Analysis):
    """Sizes of connected clusters of particles.

    Clusters are labelled with :func:`scipy.ndimage.label` (4- or
    8-connected); with ``periodic=True`` labels that touch across an edge
    (including diagonally across a corner for 8-connectivity) are merged by a
    union over the wrap (connected components of the label graph), so a
    cluster crossing an edge, or winding round the torus, counts once.  With
    ``(True, False)`` or ``(False, True)`` only the periodic axis wraps.

    Parameters
    ----------
    connectivity : {4, 8}
    periodic : bool or (bool, bool)
        Both axes, or (rows, columns).
    """

    def __init__(self, connectivity: int = 4, periodic: bool | tuple[bool, bool] = False) -> None:
        if connectivity not in (4, 8):
            raise MapsimError(f"cluster connectivity must be 4 or 8, found {connectivity}")
        self.connectivity = int(connectivity)
        self.periodic = _norm(periodic)

    def compute(self, occupied: np.ndarray) -> "ClusterSizes":
        """Compute from ``occupied`` of shape (n, H, W) (bool); returns self."""
        occ = np.asarray(occupied, dtype=bool)
        structure = np.zeros((3, 3, 3), dtype=bool)  # no connection along the sample axis
        structure[1] = ndimage.generate_binary_structure(2, 1 if self.connectivity == 4 else 2)
        self._store(occ, structure, _FORWARD[self.connectivity], _axes(self.periodic))
        return self

    def _store(self, occ: np.ndarray, structure: np.ndarray, forward: Sequence[tuple[int, ...]],
               periodic: Sequence[bool]) -> None:
        """Label ``occ`` (n, *lattice) with ``structure`` (no links along the sample axis), merge labels
        that touch across the periodic axes (``forward``: half of the neighbour offsets), keep the sizes."""
        n = occ.shape[0]
        labels, n_labels = ndimage.label(occ, structure=structure)  # (n, *lattice); 0 = background
        if n_labels == 0:
            self._sizes = np.zeros(0, dtype=np.int64)
            self._sample = np.zeros(0, dtype=np.int64)
        else:
            comp = np.arange(n_labels + 1)
            if any(periodic):
                shape = occ.shape[1:]
                index = np.indices(shape)
                axes = tuple(range(1, occ.ndim))
                src, dst = [], []
                for off in forward:
                    other = np.roll(labels, tuple(-o for o in off), axis=axes)
                    touch = (labels > 0) & (other > 0) & (labels != other)  # only across the wrap
                    for a, (o, p) in enumerate(zip(off, periodic)):
                        if o and not p:  # no wrap across an open axis
                            touch &= ((index[a] + o >= 0) & (index[a] + o < shape[a]))[None]
                    src.append(labels[touch])
                    dst.append(other[touch])
                src, dst = np.concatenate(src), np.concatenate(dst)
                if src.size:
                    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(n_labels + 1, n_labels + 1))
                    _, comp = connected_components(graph, directed=False)
            label_sample = np.zeros(n_labels + 1, dtype=np.int64)
            flat = labels.reshape(n, -1)
            s_idx = np.broadcast_to(np.arange(n)[:, None], flat.shape)
            label_sample[flat[flat > 0]] = s_idx[flat > 0]
            sizes_per_label = np.bincount(labels.ravel(), minlength=n_labels + 1)
            roots, inverse = np.unique(comp[1:], return_inverse=True)
            self._sizes = np.bincount(inverse, weights=sizes_per_label[1:]).astype(np.int64)
            self._sample = np.zeros(roots.size, dtype=np.int64)
            self._sample[inverse] = label_sample[1:]
            order = np.lexsort((self._sizes, self._sample))
            self._sizes, self._sample = self._sizes[order], self._sample[order]
        self._n = n
        self._computed = True

    @property
    def sizes(self) -> np.ndarray:
        """Size (number of sites) of every cluster, shape (n_clusters,), int64, sorted within samples."""
        self._need()
        return self._sizes

    @property
    def sample_index(self) -> np.ndarray:
        """Sample each cluster belongs to, shape (n_clusters,), int64."""
        self._need()
        return self._sample

    @property
    def size_counts(self) -> np.ndarray:
        """Number of clusters of each size 0..max, pooled, shape (max_size + 1,), int64."""
        self._need()
        return np.bincount(self._sizes, minlength=1)

    def per_sample(self) -> list[np.ndarray]:
        """Cluster sizes of each sample (list of n arrays)."""
        self._need()
        return [self._sizes[self._sample == s] for s in range(self._n)]


class StructureFactor(_Analysis):
    """Radially averaged structure factor S(k) of the occupied sites.

    S(k) = Σ_s |ρ_s(k)|² / Σ_s N_s with ρ_s(k) = Σ_j (n_j - N_s / M) e^{-i k·r_j},
    over the lattice wave vectors k = 2π (p/H, q/W), k ≠ 0, averaged in
    shells of width Δk = 2π / min(H, W) up to |k| = π√2.  With this
    normalisation the ideal lattice gas gives S(k) = 1 - ρ (site exclusion).
    The FFT treats each sample as periodic; for open samples S(k) is smeared
    by the window (no taper is applied).
    """

    def compute(self, occupied: np.ndarray) -> "StructureFactor":
        """Compute from ``occupied`` of shape (n, H, W) (bool); returns self."""
        occ = np.asarray(occupied, dtype=bool)
        n, h, w = occ.shape
        power = np.zeros((h, w))
        chunk = max(1, _FFT_CHUNK_ELEMENTS // (h * w))
        for start in range(0, n, chunk):
            x = occ[start : start + chunk].astype(np.float64)
            x -= x.mean(axis=(1, 2), keepdims=True)
            f = sfft.fft2(x)
            power += (f.real**2 + f.imag**2).sum(axis=0)
        self._store(power, occ.sum())
        return self

    def _store(self, power: np.ndarray, total: int) -> None:
        """Shell averages of ``power`` (the summed |ρ(k)|² over the lattice's FFT grid) per ``total`` particles.

        Shells of width 2π / (smallest side) from |k| = 0.5 Δk up to π √ndim.
        """
        ks = np.meshgrid(*(2 * np.pi * np.fft.fftfreq(m) for m in power.shape), indexing="ij")
        kk = np.hypot(ks[0], ks[1]) if power.ndim == 2 else np.sqrt(sum(k**2 for k in ks))
        dk = 2 * np.pi / min(power.shape)
        edges = np.arange(0.5 * dk, np.pi * math.sqrt(power.ndim) + dk, dk)
        idx = np.digitize(kk.ravel(), edges) - 1
        ok = (idx >= 0) & (idx < edges.size - 1)
        nb = edges.size - 1
        s_sum = np.bincount(idx[ok], weights=power.ravel()[ok], minlength=nb)
        k_sum = np.bincount(idx[ok], weights=kk.ravel()[ok], minlength=nb)
        cnt = np.bincount(idx[ok], minlength=nb)
        keep = cnt > 0
        self._k = k_sum[keep] / cnt[keep]
        self._s = s_sum[keep] / cnt[keep] / total if total > 0 else np.full(int(keep.sum()), np.nan)
        self._computed = True

    @property
    def k(self) -> np.ndarray:
        """Mean |k| of each shell (radians per lattice spacing), shape (n_bins,)."""
        self._need()
        return self._k

    @property
    def S(self) -> np.ndarray:  # noqa: N802 (physics name)
        """S(k) per shell, shape (n_bins,); NaN if there are no particles."""
        self._need()
        return self._s


def shells(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial |k| shells of width 2π/min(shape) up to π√ndim (k = 0 excluded), as in StructureFactor.

    Returns
    -------
    index : ndarray of int, shape (prod(shape),)
        Shell of each wave vector (-1: not in any shell).
    k_mean : ndarray, shape (n_shells,)
    count : ndarray, shape (n_shells,)
        Wave vectors per shell.
    """
    if len(shape) == 2:
        h, w = shape
        kk = np.hypot(2 * np.pi * np.fft.fftfreq(h)[:, None], 2 * np.pi * np.fft.fftfreq(w)[None, :]).ravel()
    else:
        ks = np.meshgrid(*(2 * np.pi * np.fft.fftfreq(m) for m in shape), indexing="ij")
        kk = np.sqrt(sum(k**2 for k in ks)).ravel()
    dk = 2 * np.pi / min(shape)
    edges = np.arange(0.5 * dk, np.pi * math.sqrt(len(shape)) + dk, dk)
    idx = np.digitize(kk, edges) - 1
    idx[(idx < 0) | (idx >= edges.size - 1)] = -1
    nb = edges.size - 1
    cnt = np.bincount(idx[idx >= 0], minlength=nb)
    keep = np.flatnonzero(cnt > 0)
    remap = np.full(nb, -1)
    remap[keep] = np.arange(keep.size)
    idx = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
    k_mean = np.bincount(idx[idx >= 0], weights=kk[idx >= 0], minlength=keep.size) / cnt[keep]
    return idx, k_mean, cnt[keep].astype(float)



# --------------------------------------------------------------------------------------
# scalar statistics


def densities(occupied: np.ndarray) -> np.ndarray:
    """Fraction of sites occupied in each sample, shape (n,), float64."""
    occ = np.asarray(occupied, dtype=bool)
    return occ.reshape(occ.shape[0], -1).mean(axis=1)


def bond_counts(a: np.ndarray, b: np.ndarray, periodic: bool) -> np.ndarray:
    """Σ over nearest-neighbour bonds {i, j} (each once) of a_i b_j + b_i a_j, per sample.

    For ``a is b`` this is twice the number of a-a bonds; see :func:`nn_pair_density`.
    The bond sum of the Monte Carlo Hamiltonian (:func:`mapsim.montecarlo.hamiltonian.bond_sum`).

    Parameters
    ----------
    a, b : ndarray of bool, shape (n, H, W)
    periodic : bool
        Include the bonds across the edges.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    return bond_sum(a, b, periodic, ndim=2)


def nn_pair_density(occupied: np.ndarray, periodic: bool) -> np.ndarray:
    """Nearest-neighbour particle-particle bonds per site, per sample, shape (n,).

    Each bond counts once; ideal lattice gas: 2ρ² (periodic), a little less when open.
    """
    occ = np.asarray(occupied, dtype=bool)
    sites = occ.shape[1] * occ.shape[2]
    return bond_counts(occ, occ, periodic) / 2 / sites


def recorded_hamiltonian(dataset: Dataset, hamiltonian: Hamiltonian | None) -> tuple[Hamiltonian | None, str | None]:
    """The Hamiltonian to score ``dataset`` with: the one given, else the one its metadata record.

    Returns
    -------
    hamiltonian : Hamiltonian or None
        None when none is given or recorded, or when the recorded run had a solvent the data do
        not keep (its bonds and chemical potential are part of H but were not saved).
    note : str or None
        Why the energy is not computed, in that last case.
    """
    params = dataset.metadata.get("params")
    if hamiltonian is None and Hamiltonian.in_mapping(params):
        if params.get("solvent") and "solvent" not in dataset.classes:
            return None, "not computed: the simulation had a solvent that the dataset does not keep"
        hamiltonian = Hamiltonian.from_mapping(params)
    return hamiltonian, None


def energy_per_site(grids: np.ndarray, hamiltonian: Hamiltonian, periodic: bool,
                    particle_id: int = 1, solvent_id: int | None = 2) -> np.ndarray:
    """Energy of each sample under ``hamiltonian``, divided by the number of sites.

    Parameters
    ----------
    grids : ndarray of int, shape (n, H, W)
        Class ids (Monte Carlo convention: empty 0, particle 1, solvent 2).
    hamiltonian : Hamiltonian
        The Monte Carlo Hamiltonian (:class:`mapsim.montecarlo.hamiltonian.Hamiltonian`).
    periodic : bool
        Include bonds across the edges (open: only bonds inside the sample).
    particle_id, solvent_id : int
        Class ids of n and l; ``solvent_id=None`` when there is no solvent.

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    g = np.asarray(grids)
    if g.ndim == 2:
        g = g[None]
    return hamiltonian.energy(g, periodic, ndim=2, particle=particle_id, solvent=solvent_id) / (g.shape[1] * g.shape[2])
