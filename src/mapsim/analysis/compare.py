"""Fidelity of a generated dataset: permutation tests on every statistic and a family verdict.

Units and windows
-----------------
A test needs exchangeable units of one shape and one edge treatment on both
sides.  The generated *interior* is each generated sample without its first
``skip_rows`` rows (the autoregressive start-up; default 2 L_c from the
metadata's ``context_range``) and without ``skip_cols`` columns at each side
(the pixels that see the outside class beside the sample; default L_c).  The
*window* shape is the reference's sample shape, or the interior's where the
interior is smaller (then reference samples are cropped too).  Windows are
tiled from the top-left corner; every sample of both sides carries the same
number k of windows (k = the smaller of the two sides' windows per sample; a
sample with more has k of them drawn at random, seeded).  Windows are open
(nothing assumed outside them) unless both sides' windows are whole periodic
samples.  Only the windows kept are read, a band of window rows at a time,
and their statistics are accumulated by :mod:`mapsim.analysis.blockwise`
(the drift bands likewise), so a zarr store (:func:`mapsim.lattice.open_dataset`)
on either side is never read whole.

Statistics (computed once per window, pooled per side as sums)
---------------------------------------------------------------
============  =========================================  ==========================================
key           statistic                                  distance
============  =========================================  ==========================================
g_r           pooled g(r), lattice bins r ≤ r_max        RMS difference over bins
neighbours4   particle-neighbour histogram (of 4)        total variation ½ Σ |p - q|
neighbours8   particle-neighbour histogram (of 8)        total variation
clusters4     cluster sizes, 4-connected                 Wasserstein-1 of the size distributions
clusters8     cluster sizes, 8-connected                 Wasserstein-1
density       window densities                           Wasserstein-1 of their distributions
S_k           structure factor, radial |k| shells        RMS difference over shells
energy        energy per site (known Hamiltonian only)   absolute difference of the means
============  =========================================  ==========================================

Because a pooled statistic is a ratio of sums over windows, relabelling the
units costs one matrix product (:mod:`mapsim.analysis.permutation`), never a
new image analysis.

Tests
-----
*Two-sample permutation test.*  ``n_permutations`` random relabellings of
the n_ref + n_gen units (whole samples, their windows together) into groups
of the observed sizes; the null distances give ``<stat>_noise`` (their RMS),
``<stat>_effect = <stat>_ratio = distance / noise`` and the raw p-value
``(1 + #{null ≥ observed}) / (B + 1)`` on the standardised scale.

*No spread in the reference.*  When every reference window gives the same
value of a statistic (canonical Monte Carlo or NVT MD: a fixed particle
number; a cold repulsive fluid: no contacts at all), the reference value is
known exactly and a permutation would test the generated spread instead (a
MAP is not canonical; its fluctuations are expected).  Such a statistic is
tested one-sample: the pooled generated value against the reference value,
with a null from random sign flips of each generated sample's deviation, i.e.
judged by the generated samples' own standard error.  The density is
compared on its mean whenever every reference *sample* holds the same
number of particles: one-sample as above when the windows are whole samples
(the reference value is exact); when they are crops (a crop of a fixed-N
sample has a spread far below a grand-canonical window's, but its mean is
noisy), by a two-sample permutation test of the difference of mean window
densities, studentised (Welch) so that the two sides' different spreads do
not decide it.  Nothing is ever divided by a zero spread.

*Drift.*  When generated samples are taller than the reference, each
intensive statistic (density, contacts per site, energy per site) is followed
in bands of ``band_rows`` rows (default L_c) from the top boundary
(:mod:`mapsim.analysis.drift`); one slope per generated sample over the
interior bands, and the mean slope is tested against zero by sign flips of
the per-sample slopes (keys ``trend_<stat>_...``).

*Family.*  All tests share one stream of B draws (a relabelling and a sign
vector each), so the joint null keeps the strong dependence between the
statistics; the Westfall–Young max-T step-down, on the p-value scale of every
statistic (minP, :func:`mapsim.analysis.permutation.rank_scale`), gives
``<stat>_p_adjusted``, which controls the family-wise error rate at
``alpha``; ``rejected`` lists the statistics with ``p_adjusted ≤ alpha`` and
``family_reject`` says whether there is any.  A statistic that cannot be
computed on the generated side (no particles, no pairs) counts as rejected
(its p-values are null).  The sign-flip nulls assume deviations symmetric
about zero under the null; the combination of sign flips and relabellings in
one max-T treats the drift and fixed-reference statistics as independent of
the two-sample ones under the null (they are computed from the generated
samples alone).  Measured calibration: ``mapsim bench calibrate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from mapsim.analysis.drift import DRIFT_STATS, piece_statistics, trend_slopes
from mapsim.analysis.permutation import (
    Statistic,
    maxt_stepdown,
    null_rms,
    rank_scale,
    relabellings,
    sign_flips,
    standardise,
)
from mapsim.analysis.structure import (
    check_r_max,
    is_periodic,
    lattice_r2,
    max_r_allowed,
    resolve_class,
)
from mapsim.analysis.structure import shells as _shells
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, StoredDataset
from mapsim.montecarlo.hamiltonian import COUPLINGS

STATS: tuple[str, ...] = ("g_r", "neighbours4", "neighbours8", "clusters4", "clusters8", "density", "S_k", "energy")
"""Two-sample statistics in report order (``energy`` only when a Hamiltonian is known)."""

TREND_STATS: tuple[str, ...] = tuple(f"trend_{s}" for s in DRIFT_STATS)
"""Drift trend tests (only when generated samples are taller than the reference)."""

RESULT_KEYS: tuple[str, ...] = ("distance", "p", "p_adjusted", "effect", "noise", "ratio")
"""Per-statistic JSON keys ``<stat>_<key>``."""

SHOWN = "|distance"
"""Suffix of the entries of ``_tests``' results holding a reported distance that differs from the test statistic."""

DEFAULT_PERMUTATIONS = 1000
MIN_PERMUTATIONS = 100
DEFAULT_ALPHA = 0.05
HAMILTONIAN_KEYS = COUPLINGS
"""Hamiltonian parameters read from metadata or ``--energy`` (those of :mod:`mapsim.montecarlo.hamiltonian`)."""


def model_context_range(metadata: dict[str, Any]) -> int | None:
    """The generating model's L_c: ``metadata["context_range"]`` or ``metadata["model"]["context_range"]``
    (:func:`mapsim.lattice.context_range_of`)."""
    from mapsim.lattice import context_range_of

    return context_range_of(metadata, "generated data")


def tile_windows(grids: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Non-overlapping windows of ``shape``, tiled from the top-left corner.

    Parameters
    ----------
    grids : ndarray, shape (n, H, W)
    shape : (h, w) with h ≤ H, w ≤ W

    Returns
    -------
    ndarray, shape (n, (H // h) * (W // w), h, w)
        Windows of each sample in row-major order.
    """
    n, H, W = grids.shape
    h, w = shape
    ny, nx = H // h, W // w
    return grids[:, : ny * h, : nx * w].reshape(n, ny, h, nx, w).transpose(0, 1, 3, 2, 4).reshape(n, ny * nx, h, w)


def pick_windows(w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` windows of each sample, drawn at random (seeded) where a sample carries more.

    Parameters
    ----------
    w : ndarray, shape (n, m, *window)
    k : int, <= m

    Returns
    -------
    ndarray, shape (n, k, *window)
        Kept windows in their original order.
    """
    if w.shape[1] == k:
        return w
    choice = pick_index(w.shape[0], w.shape[1], k, rng)
    return np.take_along_axis(w, choice.reshape(*choice.shape, *([1] * (w.ndim - 2))), axis=1)


def pick_index(n: int, m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Which ``k`` of the ``m`` windows of each of ``n`` samples :func:`pick_windows` keeps, shape (n, k),
    sorted; draws from ``rng`` only when k < m."""
    if m == k:
        return np.broadcast_to(np.arange(m), (n, m))
    choice = np.argsort(rng.random((n, m)), axis=1)[:, :k]
    choice.sort(axis=1)
    return choice


def check_compatible(ref: Dataset, gen: Dataset, ref_name: str = "reference", gen_name: str = "generated") -> None:
    """Both datasets must name the same classes in the same order and hold 2-D samples.

    This verdict cuts 2-D windows (rows, columns); 3-D datasets are compared by
    :func:`mapsim.analysis.compare3d.compare_volumes` (``mapsim compare`` chooses it).
    """
    from mapsim.lattice import check_same_dimension, require_2d

    check_same_dimension([ref, gen], [ref_name, gen_name])
    require_2d(ref, ref_name, "compare_datasets (volumes: mapsim.analysis.compare3d.compare_volumes)")
    if ref.classes != gen.classes:
        raise MapsimError(
            f"{gen_name}: classes {list(gen.classes)} do not match {ref_name}'s classes {list(ref.classes)}"
        )


def resolve_skip_rows(gen: Dataset, skip_rows: int | None, gen_name: str = "generated") -> int:
    """``skip_rows`` if given, else 2 × the model's L_c from the metadata, else 0 (the interior's default,
    :func:`mapsim.lattice.interior_defaults`, shared with ``mapsim export --interior``); checked against H."""
    from mapsim.lattice import interior_defaults

    if skip_rows is None:
        skip_rows = interior_defaults(gen.metadata, gen_name)[0]
    skip_rows = int(skip_rows)
    if skip_rows < 0:
        raise MapsimError(f"skip_rows must be non-negative, found {skip_rows}")
    if skip_rows >= gen.shape[0]:
        raise MapsimError(
            f"{gen_name}: skipping {skip_rows} rows leaves nothing of samples with {gen.shape[0]} rows"
            " (pass a smaller --skip-rows)"
        )
    return skip_rows


def resolve_skip_cols(gen: Dataset, skip_cols: int | None, gen_name: str = "generated") -> int:
    """``skip_cols`` (each side) if given, else the model's L_c from the metadata, else 0 (the interior's
    default, :func:`mapsim.lattice.interior_defaults`); checked against W."""
    from mapsim.lattice import interior_defaults

    if skip_cols is None:
        skip_cols = interior_defaults(gen.metadata, gen_name)[1]
    skip_cols = int(skip_cols)
    if skip_cols < 0:
        raise MapsimError(f"skip_cols must be non-negative, found {skip_cols}")
    if 2 * skip_cols >= gen.shape[1]:
        raise MapsimError(
            f"{gen_name}: skipping {skip_cols} columns at each side leaves nothing of samples with {gen.shape[1]} "
            "columns (pass a smaller --skip-cols)"
        )
    return skip_cols


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise MapsimError(f"alpha must lie in (0, 1), found {alpha!r}")
    return alpha


def check_permutations(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < MIN_PERMUTATIONS:
        raise MapsimError(f"permutations must be an integer of at least {MIN_PERMUTATIONS}, found {n!r}")
    return int(n)


def reference_hamiltonian(ref: Dataset, hamiltonian: Mapping[str, float] | None
                          ) -> tuple[dict[str, float] | None, str | None]:
    """The Hamiltonian to score energies with, and a note when there is none.

    ``hamiltonian`` (couplings ``e_nn, e_ll, e_nl, mu, mu_n``, missing ones 0) wins;
    else the reference's Monte Carlo metadata ``params``.  It is used only when
    every class it involves is in the data: the particle, and the solvent when
    a solvent coupling or ``mu`` is non-zero (Monte Carlo data without
    ``--keep-solvent`` lose the solvent, so their energy cannot be recomputed).
    """
    note = None
    if hamiltonian is None:
        params = ref.metadata.get("params")
        if not (isinstance(params, Mapping) and any(k in params for k in HAMILTONIAN_KEYS)):
            return None, "no Hamiltonian in the reference metadata (give one with --energy)"
        hamiltonian = {k: params.get(k, 0.0) for k in HAMILTONIAN_KEYS}
        if params.get("solvent") and "solvent" not in ref.classes:
            return None, "not computed: the simulation had a solvent that the dataset does not keep"
    ham = {}
    for k in HAMILTONIAN_KEYS:
        v = hamiltonian.get(k, 0.0)
        try:
            ham[k] = float(0.0 if v is None else v)
        except (TypeError, ValueError):
            raise MapsimError(f"Hamiltonian parameter {k}: expected a number, found {v!r}") from None
        if not math.isfinite(ham[k]):
            raise MapsimError(f"Hamiltonian parameter {k}: expected a finite number, found {v!r}")
    needs = ["particle"] + (["solvent"] if any(ham[k] for k in ("e_ll", "e_nl", "mu")) else [])
    missing = [c for c in needs if c not in ref.classes]
    if missing:
        return None, f"not computed: the Hamiltonian involves class(es) {missing} absent from the data"
    return ham, note


def _energy_function(classes: tuple[str, ...], ham: dict[str, float], periodic: bool):
    """Energy per site of grids (m, h, w) in the Monte Carlo convention (particle 1, solvent 2)."""
    from mapsim.montecarlo.hamiltonian import total_energy

    lut = np.zeros(len(classes), dtype=np.uint8)
    lut[classes.index("particle")] = 1
    if "solvent" in classes:
        lut[classes.index("solvent")] = 2

    def energy(grids: np.ndarray) -> np.ndarray:
        g = lut[grids]
        return np.atleast_1d(total_energy(g, ham, periodic=periodic)) / (g.shape[-2] * g.shape[-1])

    return energy


def _hist_rows(values: np.ndarray, owner: np.ndarray, n_rows: int, support: np.ndarray) -> np.ndarray:
    """Counts of each support value per row: (n_rows, support.size)."""
    col = np.searchsorted(support, values)
    return np.bincount(owner * support.size + col, minlength=n_rows * support.size).reshape(n_rows, support.size)


@dataclass
class _Windows:
    """Per-window raw features of both sides (reference windows first)."""

    n_windows: int
    pairs: np.ndarray  # (N, n_bins)
    expected: np.ndarray  # (N, n_bins)
    nb: dict[int, np.ndarray]  # neighbourhood size (4, 8; 3D: 6, 26) -> (N, size + 1) counts
    count: np.ndarray  # (N,) particles per window
    cl_sizes: dict[int, np.ndarray]  # connectivity -> (n_clusters,)
    cl_window: dict[int, np.ndarray]  # connectivity -> window of each cluster
    sk_power: np.ndarray  # (N, n_shells)
    sk_count: np.ndarray  # (n_shells,)
    energy: np.ndarray | None  # (N,) energy per site
    sk_k: np.ndarray | None = None  # (n_shells,) mean |k| of the shells (None: recomputed from the shape)


def _window_features(windows, class_id: int, periodic: bool, r_max: int, energy_ids, ham,
                     block_pixels: int | None = None) -> _Windows:
    """Per-window features of the windows of a source (:class:`mapsim.analysis.blockwise.WindowSource`),
    read block by block."""
    from mapsim.analysis.blockwise import BlockStatistics

    st = BlockStatistics(class_id, periodic, r_max, energy_ids=energy_ids, block_pixels=block_pixels).compute(windows)
    sizes, owner = {}, {}
    for conn in (4, 8):
        sizes[conn], owner[conn] = st.clusters(conn)
    energy = None
    if ham is not None:
        from mapsim.montecarlo.hamiltonian import Hamiltonian

        h, w = windows.shape
        energy = np.atleast_1d(Hamiltonian.from_mapping(ham).energy_of_terms(st.energy_terms)) / (h * w)
    return _Windows(
        n_windows=windows.n_samples, pairs=st.pair_counts, expected=st.expected_counts,
        nb={4: st.neighbour_counts(4), 8: st.neighbour_counts(8)}, count=st.counts, cl_sizes=sizes,
        cl_window=owner, sk_power=st.sk_power, sk_count=st.shell_count, energy=energy, sk_k=st.k,
    )


def _statistics(F: _Windows, k: int, sites: int) -> tuple[dict[str, Statistic], dict[str, Statistic]]:
    """Per-window and per-unit :class:`Statistic` of every statistic.

    Windows are grouped k at a time into units (samples).
    """
    N = F.n_windows
    per_w: dict[str, tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = {}
    ones = np.ones((N, 1))
    per_w["g_r"] = ("rms", F.pairs, F.expected, None)
    for size, nb in F.nb.items():
        per_w[f"neighbours{size}"] = ("tv", nb.astype(float), nb.sum(axis=1, keepdims=True).astype(float), None)
    for conn in F.cl_sizes:
        support = np.unique(F.cl_sizes[conn])
        if support.size == 0:
            support = np.array([1])
        h = _hist_rows(F.cl_sizes[conn], F.cl_window[conn], N, support).astype(float)
        per_w[f"clusters{conn}"] = ("w1", h, h.sum(axis=1, keepdims=True), support.astype(float))
    support = np.unique(F.count)
    per_w["density"] = ("w1", _hist_rows(F.count, np.arange(N), N, support).astype(float), ones,
                        support / sites)
    per_w["S_k"] = ("rms", F.sk_power, F.count[:, None] * F.sk_count[None, :].astype(float), None)
    if F.energy is not None:
        per_w["energy"] = ("abs", F.energy[:, None], ones, None)
    windows = {s: Statistic(s, kind, num, den, sup) for s, (kind, num, den, sup) in per_w.items()}
    units = {s: Statistic(s, st.kind, st.num.reshape(N // k, k, -1).sum(axis=1),
                          st.den.reshape(N // k, k, -1).sum(axis=1), st.support) for s, st in windows.items()}
    return windows, units


def _welch(x: np.ndarray, labels: np.ndarray, n_ref: int) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Welch-studentised difference of means under relabellings.

    Parameters
    ----------
    x : ndarray, shape (n_units,)
        One value per unit (reference units first).
    labels : ndarray, shape (B, n_units)
        1 for units labelled GEN (see :func:`mapsim.analysis.permutation.relabellings`).
    n_ref : int

    Returns
    -------
    t_obs : float
        |m_gen - m_ref| / sqrt(v_gen / n_gen + v_ref / n_ref) of the observed labels.
    t_null : ndarray, shape (B,)
    d_obs : float
        |m_gen - m_ref|.
    d_null : ndarray, shape (B,)

    Notes
    -----
    A studentised permutation statistic stays asymptotically valid when the
    two sides' variances differ (Janssen 1997), which a plain difference of
    means does not for unequal group sizes.  Zero spread on both sides gives
    t = 0 for equal means and +inf otherwise.
    """
    n = x.size
    n_gen = n - n_ref
    obs_labels = np.zeros((1, n))
    obs_labels[0, n_ref:] = 1.0
    lab = np.vstack([obs_labels, labels])
    s1, s2 = lab @ x, lab @ (x * x)
    t1, t2 = x.sum(), (x * x).sum()
    mg, mr = s1 / n_gen, (t1 - s1) / n_ref
    vg = np.maximum(s2 - n_gen * mg**2, 0.0) / max(n_gen - 1, 1)
    vr = np.maximum(t2 - s2 - n_ref * mr**2, 0.0) / max(n_ref - 1, 1)
    d = np.abs(mg - mr)
    se = np.sqrt(vg / n_gen + vr / n_ref)
    # a difference below rounding of equal means is no difference
    d = np.where(d <= 1e-12 * np.maximum(np.abs(mg), np.abs(mr)), 0.0, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, d / np.where(se > 0, se, 1.0), np.where(d > 0, np.inf, 0.0))
    return float(t[0]), t[1:], float(d[0]), d[1:]


def _no_spread(st: Statistic, n_ref_windows: int) -> np.ndarray | None:
    """The common per-window value of a statistic over the reference windows, or None if it varies.

    Windows where the statistic is undefined (e.g. no particles for a
    histogram) do not count; at least two defined windows are required.
    """
    v = st.value(st.num[:n_ref_windows], st.den[:n_ref_windows])  # (n_ref_windows, D)
    defined = np.isfinite(v).any(axis=1)
    if defined.sum() < 2:
        return None
    v = v[defined]
    same_nan = (np.isnan(v) == np.isnan(v[0])).all()
    spread = np.nanmax(np.abs(v - v[0]), axis=0) if np.isfinite(v[0]).any() else np.array([np.inf])
    if same_nan and np.all(np.nan_to_num(spread, nan=0.0) <= 1e-12 * np.maximum(1.0, np.nanmax(np.abs(v)))):
        return v[0]
    return None


@dataclass
class Comparison:
    """Result of :func:`compare_datasets`.

    Attributes
    ----------
    summary : dict
        JSON-ready: settings, and for every tested statistic ``<stat>_distance``,
        ``_p``, ``_p_adjusted``, ``_effect``, ``_noise``, ``_ratio``, ``_test``,
        ``_verdict``; ``statistics``, ``alpha``, ``permutations``, ``rejected``,
        ``family_reject``.
    reference, generated : dict
        Pooled estimates for plots: ``g_r`` (n_bins,), ``neighbours4`` (5,),
        ``neighbours8`` (9,), ``clusters4``/``clusters8`` (every cluster size),
        ``density`` (every window density), ``S_k`` (n_shells,), ``energy`` (1,).
    r : ndarray, shape (n_bins,)
        Bin distances of g(r).
    k : ndarray, shape (n_shells,)
        Mean |k| of the S(k) shells.
    null_distances : ndarray, shape (n_permutations, n_tested)
        Distances under the null draws, columns in ``summary["statistics"]`` order.
    drift : dict
        Band profiles and trend results (empty when the generated samples are
        not taller than the reference); see :func:`mapsim.analysis.drift.plot_drift`.
    """

    summary: dict[str, Any]
    reference: dict[str, Any]
    generated: dict[str, Any]
    r: np.ndarray
    k: np.ndarray
    null_distances: np.ndarray
    drift: dict[str, Any] = field(default_factory=dict)


def _expand(st: Statistic, index: np.ndarray) -> np.ndarray:
    """Every value behind a ``w1`` histogram statistic of some windows (for plots)."""
    counts = st.num[index].sum(axis=0).astype(np.int64)
    return np.repeat(st.support, counts)


def compare_datasets(ref: Dataset | StoredDataset, gen: Dataset | StoredDataset, class_name: str | int | None = None, *,
                     skip_rows: int | None = None, skip_cols: int | None = None, r_max: int | None = None,
                     seed: int | np.random.Generator = 0, n_permutations: int = DEFAULT_PERMUTATIONS,
                     alpha: float = DEFAULT_ALPHA, ref_periodic: bool | None = None,
                     gen_periodic: bool | None = None, hamiltonian: Mapping[str, float] | None = None,
                     band_rows: int | None = None, block_pixels: int | None = None) -> Comparison:
    """Permutation tests of a generated dataset against a reference, with a family verdict.

    See the module docstring for windows, statistics and tests.

    Parameters
    ----------
    ref, gen : Dataset
        Same classes; any sample shapes.  The reference needs ≥ 2 samples and
        at least one site of the compared class.
    class_name : str or int, optional
        Class compared (default ``particle``, else id 1).
    skip_rows : int, optional
        Rows dropped from the top of each generated sample (default 2 L_c or 0).
    skip_cols : int, optional
        Columns dropped at each side of each generated sample (default L_c or 0).
    r_max : int, optional
        Range of g(r) (default ``min(10, what the windows allow)``).
    seed : int or Generator
        Drives window subsampling, relabellings and sign flips.
    n_permutations : int, ≥ 100
    alpha : float in (0, 1)
        Family-wise error rate of the verdict.
    ref_periodic, gen_periodic : bool, optional
        Overrides of the boundary read from the metadata.
    hamiltonian : mapping, optional
        Couplings ``e_nn, e_ll, e_nl, mu, mu_n`` for the energy statistic (default:
        the reference metadata's, see :func:`reference_hamiltonian`).
    band_rows : int, optional
        Rows per drift band (default L_c, else 4).
    block_pixels : int, optional
        Pixels read and analysed at a time (:func:`mapsim.analysis.blockwise.plan_blocks`): the
        datasets (an ``.npz`` in memory or a zarr store, :func:`mapsim.lattice.open_dataset`) are
        read one block of windows or rows at a time.

    Returns
    -------
    Comparison
    """
    from mapsim.analysis.blockwise import WindowSource
    from mapsim.data import class_counts

    check_compatible(ref, gen)
    alpha = check_alpha(alpha)
    n_perm = check_permutations(n_permutations)
    cid = resolve_class(ref, class_name)
    name = ref.classes[cid]
    if ref.n_samples < 2:
        raise MapsimError(f"reference: a permutation test needs at least 2 samples, found {ref.n_samples}")
    counts = class_counts(ref, ref.n_classes)[:, cid]  # read block by block  # (n_ref,) sites of the class per sample
    if not counts.any():
        raise MapsimError(f"reference: no site holds the compared class {name!r}; nothing to compare against")
    skip = resolve_skip_rows(gen, skip_rows)
    scol = resolve_skip_cols(gen, skip_cols)
    ham, energy_note = reference_hamiltonian(ref, hamiltonian)

    (hr, wr) = ref.shape
    hg, wg = gen.shape[0] - skip, gen.shape[1] - 2 * scol  # the generated interior
    win = (min(hr, hg), min(wr, wg))
    ref_per = is_periodic(ref.metadata, ref_periodic)
    gen_per = is_periodic(gen.metadata, gen_periodic) and skip == 0 and scol == 0
    periodic = ref_per and gen_per and win == (hr, wr) == (hg, wg)
    limit = max_r_allowed(win, periodic)
    if r_max is None:
        r_max = max(1, min(10, limit))
    check_r_max(r_max, win, periodic, "comparison windows")

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tiles = [(hr // win[0], wr // win[1]), (hg // win[0], wg // win[1])]  # windows down and across
    k = min(a * b for a, b in tiles)
    n_ref, n_gen = ref.n_samples, gen.n_samples
    choice = [pick_index(n, a * b, k, rng) for n, (a, b) in zip((n_ref, n_gen), tiles)]  # reference first
    windows = WindowSource([(ref, 0, 0, choice[0], tiles[0][1]), (gen, skip, scol, choice[1], tiles[1][1])], win)
    energy_ids = None
    if ham is not None:
        energy_ids = (ref.classes.index("particle"), ref.classes.index("solvent") if "solvent" in ref.classes else None)
    F = _window_features(windows, cid, periodic, r_max, energy_ids, ham, block_pixels)
    sites = win[0] * win[1]
    per_window, units = _statistics(F, k, sites)
    n_rw = n_ref * k
    fixed_count = bool(np.ptp(counts) == 0)  # canonical Monte Carlo, NVT MD: every sample holds N particles

    labels = relabellings(n_ref, n_gen, n_perm, rng)
    signs = sign_flips(n_gen, n_perm, rng)
    tested, observed, nulls, test_kind, fixed, ref_est, gen_est = _tests(
        STATS, per_window, units, F, n_ref, n_gen, k, sites, fixed_count, labels, signs)

    energy = _energy_function(ref.classes, ham, periodic) if ham is not None else None
    ref_windows = WindowSource([(ref, 0, 0, choice[0], tiles[0][1])], win)
    drift = _drift(ref_windows, gen, scol, cid, win, skip, band_rows, ref, energy, block_pixels)
    for s, slopes in drift.pop("slopes", {}).items():
        key = f"trend_{s}"
        ok = np.isfinite(slopes)
        if ok.sum() < 2:
            continue
        sl = slopes[ok]
        flips = signs[:, ok]
        null = np.abs(flips @ sl) / sl.size
        tested.append(key)
        observed[key], nulls[key] = float(abs(sl.mean())), null
        test_kind[key] = "sign flip of per-sample slopes (mean slope = 0)"

    noise, p_raw, p_adj = _adjusted(tested, observed, nulls, n_perm)

    summary: dict[str, Any] = {
        "class": name,
        "reference_samples": n_ref,
        "reference_shape": [hr, wr],
        "reference_periodic": ref_per,
        "generated_samples": n_gen,
        "generated_shape": list(gen.shape),
        "skip_rows": skip,
        "skip_cols": scol,
        "generated_periodic": gen_per,
        "window_shape": list(win),
        "windows_per_sample": k,
        "reference_windows": n_ref * k,
        "generated_windows": n_gen * k,
        "windows_periodic": periodic,
        "r_max": int(r_max),
        "seed": seed if isinstance(seed, int) else None,
        "alpha": alpha,
        "permutations": n_perm,
        "reference_density": float(F.count[:n_rw].sum() / (n_rw * sites)),
        "generated_density": float(F.count[n_rw:].sum() / (n_gen * k * sites)),
        "reference_fixed_count": fixed_count,
        "fixed_in_reference": fixed,
        "hamiltonian": ham,
        "energy_note": None if ham is not None else energy_note,
        "statistics": tested,
    }
    _verdicts(summary, tested, observed, noise, p_raw, p_adj, test_kind, alpha)
    if drift:
        drift["p_adjusted"] = {s: summary.get(f"trend_{s}_p_adjusted") for s in DRIFT_STATS}
    for est, idx in ((ref_est, np.arange(n_rw)), (gen_est, np.arange(n_rw, F.n_windows))):
        for c in (4, 8):
            est[f"clusters{c}"] = np.rint(_expand(per_window[f"clusters{c}"], idx)).astype(np.int64)
        est["density"] = F.count[idx] / sites
    return Comparison(summary, ref_est, gen_est, np.sqrt(lattice_r2(r_max)), F.sk_k,
                      np.column_stack([nulls[s] for s in tested]) if tested else np.zeros((n_perm, 0)), drift)


def _tests(order: tuple[str, ...], per_window: dict[str, Statistic], units: dict[str, Statistic], F: _Windows,
           n_ref: int, n_gen: int, k: int, sites: int, fixed_count: bool, labels: np.ndarray, signs: np.ndarray):
    """Observed distance and null draws of every statistic in ``order`` (module docstring: two-sample
    permutation, or one-sample sign flips when the reference has no spread / a fixed particle number).

    Returns
    -------
    tested, observed, nulls, test_kind, fixed, ref_est, gen_est
    """
    ref_idx, gen_idx = np.arange(n_ref), np.arange(n_ref, n_ref + n_gen)
    n_rw = n_ref * k
    tested: list[str] = []
    observed: dict[str, float] = {}
    nulls: dict[str, np.ndarray] = {}
    test_kind: dict[str, str] = {}
    fixed: list[str] = []
    ref_est, gen_est = {}, {}
    for s in order:
        if s not in units:
            continue
        st = units[s]
        ref_est[s], gen_est[s] = st.pooled(ref_idx), st.pooled(gen_idx)
        value = _no_spread(per_window[s], n_rw)
        if s == "density" and value is None and fixed_count:
            # crops of fixed-N samples: a crop keeps a spread far below a grand-canonical window's, and a
            # MAP is not canonical (its fluctuations are expected), so compare means, not distributions.
            # The reference mean is itself noisy here, so it is a two-sample test, studentised (Welch)
            # so that unequal spreads on the two sides do not decide it
            x = F.count.reshape(-1, k).sum(axis=1) / (k * sites)  # mean window density per unit, (n_units,)
            obs_t, null_t, obs_d, null_d = _welch(x, labels, n_ref)
            tested.append(s)
            fixed.append(s)
            observed[s], nulls[s] = obs_t, null_t
            # the distance reported, where the test statistic is another one (see _adjusted)
            observed[s + SHOWN], nulls[s + SHOWN] = obs_d, null_d
            test_kind[s] = "two-sample permutation of the mean, Welch-studentised (fixed particle number " \
                           "in the reference samples, cropped windows)"
            continue
        if s == "density" and value is not None:
            # fixed particle number in whole windows: the reference value is exact; compare the
            # generated windows' mean density with it, judged by the generated samples' spread
            st = Statistic(s, "abs", F.count[:, None].astype(float), np.full((F.n_windows, 1), float(sites)))
            st = Statistic(s, "abs", st.num.reshape(-1, k, 1).sum(axis=1), st.den.reshape(-1, k, 1).sum(axis=1))
            value = st.pooled(np.arange(n_ref))
        if value is not None:
            fixed.append(s)
            gst = Statistic(s, st.kind, st.num[gen_idx], st.den[gen_idx], st.support)
            null = gst.one_sample(value, signs)
            obs = float(gst.one_sample(value, np.ones((1, n_gen)))[0])
            test_kind[s] = ("one-sample sign flip (fixed particle number in the reference)" if s == "density"
                            else "one-sample sign flip (no spread in the reference)")
        else:
            null = st.two_sample(labels)
            obs = float(st.distance(ref_est[s], gen_est[s]))
            test_kind[s] = "two-sample permutation"
        tested.append(s)
        observed[s], nulls[s] = obs, null
    return tested, observed, nulls, test_kind, fixed, ref_est, gen_est


def _adjusted(tested: list[str], observed: dict[str, float], nulls: dict[str, np.ndarray], n_perm: int):
    """Null RMS per statistic and the raw and max-T step-down adjusted p-values (order of ``tested``)."""
    noise = {s: null_rms(nulls[s]) for s in tested}
    t_obs, t_null = np.empty(len(tested)), np.empty((n_perm, len(tested)))
    for j, s in enumerate(tested):
        t_obs[j], t_null[:, j] = standardise(observed[s], nulls[s], noise[s])
    for s in tested:
        if s + SHOWN in observed:  # report the distance, not the test statistic the p-values come from
            observed[s], nulls[s] = observed.pop(s + SHOWN), nulls.pop(s + SHOWN)
            noise[s] = null_rms(nulls[s])
    # max-T on the p-value scale (minP): statistics with differently shaped nulls get equal weight
    p_raw, p_adj = maxt_stepdown(*rank_scale(t_obs, t_null)) if tested else (np.zeros(0), np.zeros(0))
    return noise, p_raw, p_adj


def _verdicts(summary: dict[str, Any], tested: list[str], observed: dict[str, float], noise: dict[str, float],
              p_raw: np.ndarray, p_adj: np.ndarray, test_kind: dict[str, str], alpha: float) -> None:
    """Write every statistic's ``<stat>_*`` keys, ``rejected`` and ``family_reject`` into ``summary``."""
    rejected = []
    for j, s in enumerate(tested):
        undefined = not math.isfinite(observed[s])
        summary[f"{s}_distance"] = observed[s]
        summary[f"{s}_noise"] = noise[s]
        ratio = (observed[s] / noise[s] if noise[s] > 0 else (0.0 if observed[s] == 0 else math.inf)) \
            if not (undefined or math.isnan(noise[s])) else math.nan
        summary[f"{s}_effect"] = ratio
        summary[f"{s}_ratio"] = ratio
        summary[f"{s}_p"] = None if undefined else float(p_raw[j])
        summary[f"{s}_p_adjusted"] = None if undefined else float(p_adj[j])
        summary[f"{s}_test"] = test_kind[s]
        rej = undefined or p_adj[j] <= alpha
        summary[f"{s}_verdict"] = ("rejected (undefined on the generated side)" if undefined
                                   else "rejected" if rej else "not rejected")
        if rej:
            rejected.append(s)
    summary["rejected"] = rejected
    summary["family_reject"] = bool(rejected)


def _drift(ref_windows, gen, scol: int, cid: int, win: tuple[int, int], skip: int, band_rows: int | None,
           ref, energy, block_pixels: int | None = None) -> dict[str, Any]:
    """Band profiles of the generated samples (columns ``scol`` .. W - ``scol``), the reference value of
    each (from the reference windows), and per-sample slopes; both read a block of bands at a time."""
    from mapsim.analysis.blockwise import blockwise_pieces

    H = gen.shape[0]
    if H <= ref.shape[0]:
        return {}
    if band_rows is None:
        lc = model_context_range(gen.metadata)
        band_rows = lc if lc else 4
    band_rows = int(band_rows)
    if band_rows < 1:
        raise MapsimError(f"band_rows must be positive, found {band_rows}")
    w = win[1]
    if H // band_rows < 2 or ref_windows.shape[0] < band_rows:
        return {}

    def pieces_of(grids: np.ndarray) -> dict[str, np.ndarray]:
        return piece_statistics(grids, cid, band_rows, w, energy)

    g = blockwise_pieces(gen, band_rows, scol, gen.shape[1] - 2 * scol, pieces_of, block_pixels)  # (n_gen, nb, nc)
    r = blockwise_pieces(ref_windows, band_rows, 0, w, pieces_of, block_pixels)  # (n_ref*k, nb_r, 1)
    first = -(-skip // band_rows)  # first band entirely below the skipped rows
    nb = H // band_rows
    out: dict[str, Any] = {
        "band_rows": band_rows, "skip_rows": skip, "first_interior_band": first,
        "band_centre": (np.arange(nb) + 0.5) * band_rows,
        "generated": {}, "generated_stderr": {}, "reference": {}, "reference_halfwidth": {}, "slopes": {},
    }
    n_gen, _, nc = g["density"].shape
    for s, vals in g.items():
        per_sample = vals.mean(axis=2)  # (n_gen, nb)
        out["generated"][s] = per_sample.mean(axis=0)
        out["generated_stderr"][s] = per_sample.std(axis=0, ddof=1) / math.sqrt(n_gen) if n_gen > 1 else \
            np.full(nb, np.nan)
        rv = r[s].reshape(-1)
        out["reference"][s] = float(rv.mean())
        # 95 % band of a band mean over n_gen samples x nc pieces if the pieces came from the
        # reference (pieces treated as independent: a display aid, the trend test is below)
        out["reference_halfwidth"][s] = float(1.96 * rv.std(ddof=1) / math.sqrt(n_gen * nc)) if rv.size > 1 else 0.0
        if first <= nb - 2:
            out["slopes"][s] = trend_slopes(per_sample, first, band_rows)
    return out
