"""Fidelity of a generated dataset: distances to a reference, each with a noise floor.

What is compared
----------------
For one class (default ``particle``), six statistics of
:mod:`mapsim.analysis.structure`, each with its own distance:

============  ============================================  ======================================
key           statistic                                     distance
============  ============================================  ======================================
g_r           pooled g(r), lattice bins r ≤ r_max           root mean square difference over bins
neighbours4   particle-neighbour histogram (of 4)           total variation ½ Σ |p - q|
neighbours8   particle-neighbour histogram (of 8)           total variation
clusters4     cluster sizes, 4-connected (one per cluster)  Wasserstein-1 of the size distributions
clusters8     cluster sizes, 8-connected                    Wasserstein-1
density       per-sample (per-crop) densities               Wasserstein-1
============  ============================================  ======================================

Generated samples
-----------------
The first ``skip_rows`` rows of every generated sample are dropped (the
autoregressive chain's start-up; default 2 × the model's L_c when the
metadata records ``context_range``, else 0).  The rest, the *interior*, is
treated as open unless the metadata says periodic and no row was dropped.
g(r) and the neighbour histograms are intensive and use the whole interior.
Densities and cluster sizes depend on the sample size, so they are computed
on non-overlapping crops of one common size, the element-wise minimum of
the two sample shapes (normally the reference's shape, so the reference is
not cropped), tiled from the top-left of the interior.  Cluster sizes wrap
around the edges only if both sides' crops are whole periodic samples;
otherwise both sides are labelled open, so like is compared with like.

Noise floor
-----------
The noise of a distance is what the same distance would be between two
datasets drawn from the *same* distribution with the same amounts of data as
the comparison.  It is estimated from the reference alone:

1. Split the reference samples at random into two disjoint halves X, Y
   (whole samples, so correlations inside a sample stay together; all crops
   of a sample go with it) and compute the distance d(X, Y) exactly as for
   the comparison.
2. The halves hold less data than the comparison (n/2 and n/2 samples rather
   than the whole reference and the whole generated set), so d(X, Y)
   overstates the comparison's noise.  Every distance here is a norm of the
   difference of two estimates, whose fluctuation under the null is, by the
   central limit theorem, proportional to sqrt(1/w_1 + 1/w_2), with w the
   amount of data behind each estimate (sites for g(r), counted sites for
   the neighbour histograms, crop sites for densities and clusters).  So
   d(X, Y) is multiplied by ``scale = sqrt((1/w_ref + 1/w_gen) / (1/w_X + 1/w_Y))``.
   Without this rescaling, two halves of 50 samples would set the noise of a
   100-against-100 comparison √2 too high, and a ratio under 2 would be
   granted too easily.
3. Repeat with ``n_bootstrap`` random splits (seeded).  The noise is the
   root mean square of the rescaled distances (``<stat>_noise``); their
   standard deviation and 95th percentile are reported beside it.

``<stat>_ratio = <stat>_distance / <stat>_noise``; below 2 the verdict is
"within noise".  The root mean square (rather than the mean) makes the
ratio a z-score for a statistic with one degree of freedom (|Z| / σ), so
a same-distribution comparison exceeds 2 about 5 % of the time in that
worst case; for statistics with many degrees of freedom (g(r)) the
distance concentrates near its typical value and exceeding 2 is rare.

Calibration (measured; under the null the root mean square of the ratio
should be 1).  Disjoint datasets drawn from 1000 Monte Carlo samples of
64x64 (40 comparisons each): fluid-hot-attractive 100 vs 100 samples, RMS
ratios 0.92 - 0.99 per statistic; 100 vs 300, 0.90 - 1.02;
fluid-hot-repulsive 100 vs 100, 1.02 - 1.13; ideal gas 40 vs 40 of 32x32,
0.86 - 1.01.  At least one of the six ratios exceeded 2 in 2 - 10 % of
these same-distribution comparisons (each single ratio in 0 - 8 %), so
read one ratio slightly above 2 accordingly.  Drawing a pseudo-reference
and a pseudo-generated set with replacement from the whole reference
(sizes matched, no rescaling) calibrated the same within these errors, and
so did extrapolating from halves and quarters; the halves, whose two sides
never share a sample, are kept.

4. Discreteness floor: a statistic that never varies in the reference
   (e.g. no particle contacts at all in a cold repulsive fluid, or a fixed
   particle number) has a bootstrap noise of exactly 0, which would make any
   difference, however small, infinitely significant.  But data are counts:
   the reference cannot resolve a rate below about one count.  So the noise
   is ``hypot(bootstrap RMS, resolution)``, where the resolution is the
   change of the distance when one count changes on each side (one particle
   moved between histogram bins, one cluster one site larger, one particle
   more in a crop, one pair more per g(r) bin), added in quadrature over the
   two sides (``<stat>_noise_resolution``).  Where the bootstrap noise is
   non-zero this changes it negligibly.

Caveats: the rescaling is asymptotic (many particles per half, samples much
larger than the correlation length); histogram bins holding a handful of
particles scale more slowly than sqrt, which makes the total-variation
ratios somewhat high (mean up to ~1.15) for small references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
from scipy.stats import wasserstein_distance

from mapsim.analysis.structure import (
    ClusterSizes,
    NeighbourCounts,
    PairCorrelation,
    check_r_max,
    densities,
    is_periodic,
    lattice_r2,
    max_r_allowed,
    normalised,
    occupancy,
    pooled_g,
    resolve_class,
)
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset

STATS: tuple[str, ...] = ("g_r", "neighbours4", "neighbours8", "clusters4", "clusters8", "density")
"""Statistic keys, in report order; JSON keys are ``<stat>_distance``, ``_noise``, ``_ratio``."""

RATIO_WITHIN = 2.0
"""Ratios below this are reported as "within noise"."""

DEFAULT_BOOTSTRAP = 200


def model_context_range(metadata: dict[str, Any]) -> int | None:
    """The generating model's L_c: ``metadata["context_range"]`` or ``metadata["model"]["context_range"]``."""
    for holder in (metadata, metadata.get("model") if isinstance(metadata.get("model"), dict) else None):
        if holder and "context_range" in holder:
            try:
                return int(holder["context_range"])
            except (TypeError, ValueError):
                raise MapsimError(f"metadata context_range: expected an integer, found {holder['context_range']!r}") from None
    return None


def crop_grid(grids: np.ndarray, crop: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping crops of size ``crop``, tiled from the top-left corner.

    Parameters
    ----------
    grids : ndarray, shape (n, H, W)
    crop : (h, w) with h ≤ H, w ≤ W

    Returns
    -------
    crops : ndarray, shape (n * (H // h) * (W // w), h, w)
        Sample-major order.
    sample : ndarray of int64, shape (n_crops,)
        The sample each crop came from.
    """
    n, H, W = grids.shape
    h, w = crop
    ny, nx = H // h, W // w
    g = grids[:, : ny * h, : nx * w].reshape(n, ny, h, nx, w).transpose(0, 1, 3, 2, 4).reshape(n * ny * nx, h, w)
    return g, np.repeat(np.arange(n), ny * nx)


@dataclass
class _Side:
    """Per-sample sufficient statistics of one dataset (reference or generated)."""

    n: int
    pairs: np.ndarray  # (n, n_bins)
    expected: np.ndarray  # (n, n_bins)
    g_weight: float  # site pairs per sample, summed over bins
    nb4: np.ndarray  # (n, 5)
    nb8: np.ndarray  # (n, 9)
    nb_weight: float  # counted sites per sample
    crop_density: np.ndarray  # (n_crops,)
    crop_sample: np.ndarray  # (n_crops,)
    crop_sites: int
    cl_sizes: dict[int, np.ndarray]  # connectivity -> (n_clusters,)
    cl_sample: dict[int, np.ndarray]  # connectivity -> sample of each cluster

    def estimates(self, index: np.ndarray | None = None, crop_index: np.ndarray | None = None) -> dict[str, Any]:
        """Every statistic pooled over the samples ``index`` (int, (k,); repeats allowed).

        ``crop_index`` selects the samples whose crops feed the size-dependent
        statistics (default: ``index``).
        """
        if index is None:
            index = np.arange(self.n)
        if crop_index is None:
            crop_index = index
        crops = _gather(self.crop_offsets, crop_index)
        return {
            "g_r": pooled_g(self.pairs, self.expected, index),
            "neighbours4": normalised(self.nb4[index].sum(axis=0)),
            "neighbours8": normalised(self.nb8[index].sum(axis=0)),
            "clusters4": self.cl_sizes[4][_gather(self.cl_offsets[4], crop_index)],
            "clusters8": self.cl_sizes[8][_gather(self.cl_offsets[8], crop_index)],
            "density": self.crop_density[crops],
        }

    @cached_property
    def crop_offsets(self) -> np.ndarray:
        """Crops of sample s are ``crop_offsets[s] .. crop_offsets[s + 1] - 1``."""
        return np.searchsorted(self.crop_sample, np.arange(self.n + 1))

    @cached_property
    def cl_offsets(self) -> dict[int, np.ndarray]:
        """Clusters of sample s, per connectivity (cluster arrays are sorted by sample)."""
        return {c: np.searchsorted(self.cl_sample[c], np.arange(self.n + 1)) for c in (4, 8)}

    def resolution(self) -> dict[str, float]:
        """Change of each statistic when one count of this side's data changes (discreteness floor).

        g(r): one pair more in every bin (RMS of 1 / expected pairs); neighbour
        histograms: one particle moved to another bin (1 / particles counted);
        cluster sizes: one cluster one site larger (1 / clusters); densities: one
        particle more in one crop (1 / sites of all crops).
        """
        exp = self.expected.sum(axis=0)
        with np.errstate(divide="ignore"):
            inv = np.where(exp > 0, 1.0 / np.maximum(exp, 1e-300), 0.0)
        n_part = max(1.0, float(self.nb4.sum()))
        return {
            "g_r": float(np.sqrt(np.mean(inv**2))) if inv.size else 0.0,
            "neighbours4": 1.0 / n_part,
            "neighbours8": 1.0 / n_part,
            "clusters4": 1.0 / max(1, self.cl_sizes[4].size),
            "clusters8": 1.0 / max(1, self.cl_sizes[8].size),
            "density": 1.0 / max(1, self.crop_sample.size * self.crop_sites),
        }

    def weights(self, n_samples: int | None = None) -> dict[str, float]:
        """Amount of data behind each statistic for ``n_samples`` samples (all by default)."""
        k = self.n if n_samples is None else n_samples
        crops_per_sample = self.crop_sample.size / self.n
        w_crop = k * crops_per_sample * self.crop_sites
        return {
            "g_r": k * self.g_weight,
            "neighbours4": k * self.nb_weight,
            "neighbours8": k * self.nb_weight,
            "clusters4": w_crop,
            "clusters8": w_crop,
            "density": w_crop,
        }


def _gather(offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Indices of the items of samples ``index`` (items of sample s: offsets[s] .. offsets[s+1]-1)."""
    start, stop = offsets[index], offsets[np.asarray(index) + 1]
    lengths = stop - start
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position within each run plus the run's start
    run_start = np.repeat(start - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return run_start + np.arange(total)


def _side(grids: np.ndarray, class_id: int, periodic: bool, r_max: int, crop: tuple[int, int],
          cluster_periodic: bool) -> _Side:
    occ = occupancy(grids, class_id)  # (n, H, W)
    n, h, w = occ.shape
    pc = PairCorrelation(r_max, periodic).compute(occ)
    nbc = NeighbourCounts(periodic).compute(occ)
    crops, crop_sample = crop_grid(occ, crop)
    cl_sizes, cl_sample = {}, {}
    for conn in (4, 8):
        cs = ClusterSizes(conn, cluster_periodic).compute(crops)
        cl_sizes[conn] = cs.sizes
        cl_sample[conn] = crop_sample[cs.sample_index]
    return _Side(
        n=n, pairs=pc.pair_counts, expected=pc.expected_counts, g_weight=float(pc.site_pairs.sum()),
        nb4=nbc.counts4, nb8=nbc.counts8, nb_weight=float(nbc.sites_per_sample),
        crop_density=densities(crops), crop_sample=crop_sample, crop_sites=crop[0] * crop[1],
        cl_sizes=cl_sizes, cl_sample=cl_sample,
    )


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else math.nan


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        return math.nan
    return float(0.5 * np.abs(p - q).sum())


def _w1(u: np.ndarray, v: np.ndarray) -> float:
    if u.size == 0 and v.size == 0:
        return 0.0
    if u.size == 0 or v.size == 0:
        return math.nan
    return float(wasserstein_distance(u, v))


def _w1_int(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 of two samples of non-negative integers: Σ_k |F_u(k) - F_v(k)|.

    Equal to :func:`scipy.stats.wasserstein_distance` on integer data, in O(n + max)
    instead of a sort (cluster-size lists run to tens of thousands per bootstrap half).
    """
    if u.size == 0 and v.size == 0:
        return 0.0
    if u.size == 0 or v.size == 0:
        return math.nan
    m = int(max(u.max(), v.max())) + 1
    fu = np.cumsum(np.bincount(u, minlength=m)) / u.size
    fv = np.cumsum(np.bincount(v, minlength=m)) / v.size
    return float(np.abs(fu - fv).sum())


DISTANCES: dict[str, Callable[[Any, Any], float]] = {
    "g_r": _rms,
    "neighbours4": _tv,
    "neighbours8": _tv,
    "clusters4": _w1_int,
    "clusters8": _w1_int,
    "density": _w1,
}
"""Distance of each statistic (symmetric, zero for equal estimates)."""


def _ratio(distance: float, noise: float) -> float:
    if not (math.isfinite(distance) and math.isfinite(noise)):
        return math.nan
    if noise == 0:
        return 0.0 if distance == 0 else math.inf
    return distance / noise


def verdict(ratio: float) -> str:
    """"within noise" (ratio < 2), "exceeds noise", or "undefined" (no estimate)."""
    if math.isnan(ratio):
        return "undefined"
    return "within noise" if ratio < RATIO_WITHIN else "exceeds noise"


@dataclass
class Comparison:
    """Result of :func:`compare_datasets`.

    Attributes
    ----------
    summary : dict
        JSON-ready: settings, and for every statistic ``<stat>_distance``,
        ``<stat>_noise``, ``<stat>_noise_std``, ``<stat>_noise_q95``,
        ``<stat>_noise_scale``, ``<stat>_ratio`` and ``<stat>_verdict``.
    reference, generated : dict
        Pooled estimates of every statistic (arrays), keys as :data:`STATS`.
    r : ndarray, shape (n_bins,)
        Bin distances of g(r).
    null_distances : ndarray, shape (n_bootstrap, len(STATS))
        Rescaled distances between reference halves.
    """

    summary: dict[str, Any]
    reference: dict[str, Any]
    generated: dict[str, Any]
    r: np.ndarray
    null_distances: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


def check_compatible(ref: Dataset, gen: Dataset, ref_name: str = "reference", gen_name: str = "generated") -> None:
    """Both datasets must name the same classes in the same order."""
    if ref.classes != gen.classes:
        raise MapsimError(
            f"{gen_name}: classes {list(gen.classes)} do not match {ref_name}'s classes {list(ref.classes)}"
        )


def resolve_skip_rows(gen: Dataset, skip_rows: int | None, gen_name: str = "generated") -> int:
    """``skip_rows`` if given, else 2 × the model's L_c from the metadata, else 0; checked against H."""
    if skip_rows is None:
        lc = model_context_range(gen.metadata)
        skip_rows = 2 * lc if lc is not None else 0
    skip_rows = int(skip_rows)
    if skip_rows < 0:
        raise MapsimError(f"skip_rows must be non-negative, found {skip_rows}")
    if skip_rows >= gen.shape[0]:
        raise MapsimError(
            f"{gen_name}: skipping {skip_rows} rows leaves nothing of samples with {gen.shape[0]} rows"
            " (pass a smaller --skip-rows)"
        )
    return skip_rows


def compare_datasets(ref: Dataset, gen: Dataset, class_name: str | int | None = None, *,
                     skip_rows: int | None = None, r_max: int | None = None, seed: int | np.random.Generator = 0,
                     n_bootstrap: int = DEFAULT_BOOTSTRAP, ref_periodic: bool | None = None,
                     gen_periodic: bool | None = None) -> Comparison:
    """Distances between a reference and a generated dataset, with noise floors.

    See the module docstring for the statistics, the treatment of generated
    samples and the noise-floor procedure.

    Parameters
    ----------
    ref, gen : Dataset
        Same classes; any sample shapes.
    class_name : str or int, optional
        Class compared (default ``particle``, else id 1).
    skip_rows : int, optional
        Rows dropped from the top of each generated sample (default 2 L_c or 0).
    r_max : int, optional
        Range of g(r) (default ``min(10, what both sides allow)``).
    seed : int or Generator
        Drives the random halves of the noise floor.
    n_bootstrap : int
        Number of random splits into halves.
    ref_periodic, gen_periodic : bool, optional
        Overrides of the boundary read from the metadata.

    Returns
    -------
    Comparison
    """
    check_compatible(ref, gen)
    cid = resolve_class(ref, class_name)
    if ref.n_samples < 2:
        raise MapsimError(f"reference: a noise floor needs at least 2 samples, found {ref.n_samples}")
    if n_bootstrap < 1:
        raise MapsimError(f"n_bootstrap must be at least 1, found {n_bootstrap}")
    skip = resolve_skip_rows(gen, skip_rows)
    ref_per = is_periodic(ref.metadata, ref_periodic)
    gen_per = is_periodic(gen.metadata, gen_periodic) and skip == 0
    gen_grids = gen.grids[:, skip:, :]
    (hr, wr), (hg, wg) = ref.shape, gen_grids.shape[1:]
    limit = min(max_r_allowed((hr, wr), ref_per), max_r_allowed((hg, wg), gen_per))
    if r_max is None:
        r_max = max(1, min(10, limit))
    check_r_max(r_max, (hr, wr), ref_per, "reference samples")
    check_r_max(r_max, (hg, wg), gen_per, "generated samples (after skipped rows)")
    crop = (min(hr, hg), min(wr, wg))
    cluster_periodic = ref_per and gen_per and crop == (hr, wr) == (hg, wg)

    R = _side(ref.grids, cid, ref_per, r_max, crop, cluster_periodic)
    G = _side(gen_grids, cid, gen_per, r_max, crop, cluster_periodic)
    est_r, est_g = R.estimates(), G.estimates()
    dist = {s: DISTANCES[s](est_r[s], est_g[s]) for s in STATS}

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = R.n
    null = np.empty((n_bootstrap, len(STATS)))
    a = n // 2
    w_ref, w_gen, w_x, w_y = R.weights(), G.weights(), R.weights(a), R.weights(n - a)
    scale = {s: math.sqrt((1 / w_ref[s] + 1 / w_gen[s]) / (1 / w_x[s] + 1 / w_y[s])) for s in STATS}
    for b in range(n_bootstrap):
        perm = rng.permutation(n)
        ex, ey = R.estimates(perm[:a]), R.estimates(perm[a:])
        for j, s in enumerate(STATS):
            null[b, j] = DISTANCES[s](ex[s], ey[s]) * scale[s]

    summary: dict[str, Any] = {
        "class": ref.classes[cid],
        "reference_samples": ref.n_samples,
        "reference_shape": [hr, wr],
        "reference_periodic": ref_per,
        "generated_samples": gen.n_samples,
        "generated_shape": list(gen.shape),
        "skip_rows": skip,
        "generated_periodic": gen_per,
        "crop_shape": list(crop),
        "reference_crops": int(R.crop_sample.size),
        "generated_crops": int(G.crop_sample.size),
        "clusters_periodic": cluster_periodic,
        "r_max": int(r_max),
        "seed": seed if isinstance(seed, int) else None,
        "n_bootstrap": int(n_bootstrap),
        "reference_density": float(R.crop_density.mean()),
        "reference_fixed_count": bool(np.ptp(R.crop_density) == 0),
        "generated_density": float(G.crop_density.mean()),
    }
    res_r, res_g = R.resolution(), G.resolution()
    for j, s in enumerate(STATS):
        col = null[:, j]
        col = col[np.isfinite(col)]
        resolution = math.hypot(res_r[s], res_g[s])
        noise = float(math.hypot(math.sqrt(np.mean(col**2)), resolution)) if col.size else math.nan
        summary[f"{s}_noise_resolution"] = resolution
        ratio = _ratio(dist[s], noise)
        summary[f"{s}_distance"] = dist[s]
        summary[f"{s}_noise"] = noise
        summary[f"{s}_noise_std"] = float(col.std(ddof=1)) if col.size > 1 else math.nan
        summary[f"{s}_noise_q95"] = float(np.quantile(col, 0.95)) if col.size else math.nan
        summary[f"{s}_noise_scale"] = scale[s]
        summary[f"{s}_ratio"] = ratio
        summary[f"{s}_verdict"] = verdict(ratio)
    return Comparison(summary, est_r, est_g, np.sqrt(lattice_r2(r_max)), null)
