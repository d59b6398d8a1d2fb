"""Statistics of the real atoms (off-lattice), computed with freud, in physical units.

Sources
-------
* datasets with ``offsets`` (or without: atoms at pixel centres), positions from
  :func:`mapsim.lattice.atom_positions`, generated samples restricted to their interior
  (:func:`mapsim.lattice.interior`);
* structure files read through ASE (any format ``mapsim import`` reads).

Each sample becomes an :class:`AtomSample`: positions (x, y), species (class ids), the window
it shows and whether each axis is periodic.

Statistics (per sample, as sums, so that samples pool and can be relabelled)
---------------------------------------------------------------------------
==============  ============================================================  =====================
key             statistic                                                     distance
==============  ============================================================  =====================
g_r             g(r) over all species, bins of ``dr`` up to ``r_max``          RMS over bins
coordination    distribution of neighbours within the reference's first        total variation
                minimum of g(r), ``r_shell``
psi6, psi4      mean |ψ_k| over atoms, ψ_k(i) = (1/N_b) Σ_j exp(i k φ_ij),    absolute difference
                the same neighbours (|ψ| = 0 for an atom without neighbours)
close_pairs     fraction of neighbour pairs (r < r_shell) closer than the      absolute difference
                reference's 1st-percentile neighbour distance ``r_close``
density         number density N / window area                                absolute difference
g_r:A-B         partial g(r) of species A around species B (several species)   RMS over bins
==============  ============================================================  =====================

Every statistic is ``Σ num / Σ den`` over the samples of a side (:class:`SampleSums`): g(r)
pools pair counts over the ideal-gas counts ``n_query ρ 2π r dr``, the others pool counts over
atoms or pairs. :func:`atom_verdict` hands them to the project's permutation machinery
(:mod:`mapsim.analysis.permutation`: samples relabelled, max-T step-down family verdict).

Open edges
----------
freud's boxes are periodic. Along an open axis the box is padded by ``2 r_max`` so no
neighbour wraps, and only atoms at least ``r_max`` from every open edge are *query points*
(their neighbourhoods up to r_max are complete). Periodic axes keep the cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mapsim.errors import MapsimError

__all__ = ["AtomSample", "SampleSums", "AtomStatistics", "samples_from_dataset", "samples_from_structures",
           "split_windows", "pooled_values",
           "atom_verdict", "AtomVerdict", "pooled"]


@dataclass
class AtomSample:
    """Atoms of one sample.

    Attributes
    ----------
    xy : ndarray of float64, shape (n, 2)
        Positions (x, y) in ``length_unit``.
    species : ndarray of int64, shape (n,)
        Class id (>= 1) of every atom.
    lo, hi : ndarray of float64, shape (2,)
        The window the sample shows, (x, y) each: atoms lie in [lo, hi).
    periodic : (bool, bool)
        Periodicity along (x, y). A periodic axis wraps at its window.
    where : str
        Name for messages (file and frame, or dataset and sample).
    length_unit : str or None
        The unit recorded with the positions (None: unrecorded).
    """

    xy: np.ndarray
    species: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    periodic: tuple[bool, bool]
    where: str = "sample"
    length_unit: str | None = None

    @property
    def area(self) -> float:
        return float(np.prod(self.hi - self.lo))


@dataclass
class SampleSums:
    """Per-sample sums of one statistic: the pooled value of a set A of samples is ``Σ_A num / Σ_A den``.

    Attributes
    ----------
    name : str
    kind : {"rms", "tv", "abs"}
        Distance between pooled values (:class:`mapsim.analysis.permutation.Statistic`).
    num : ndarray, shape (n_samples, D)
    den : ndarray, shape (n_samples, D) or (n_samples, 1)
    support : ndarray, shape (D,)
        Bin centres (r for g(r), neighbour count for coordination), for plots.
    """

    name: str
    kind: str
    num: np.ndarray
    den: np.ndarray
    support: np.ndarray | None = None


def pooled(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` summed over the leading (sample) axis; NaN where ``den`` is 0."""
    n, d = np.asarray(num, float).sum(0), np.asarray(den, float).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, n / np.where(d > 0, d, 1.0), np.nan)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------

def samples_from_dataset(dataset, name: str = "dataset", interior_only: bool | None = None,
                         skip_rows: int | None = None, skip_cols: int | None = None,
                         centres: bool = False) -> list[AtomSample]:
    """The atoms of every sample of a dataset.

    Parameters
    ----------
    dataset : mapsim.lattice.Dataset
        With ``offsets`` the atoms' own positions, else pixel centres; lengths in the
        dataset's ``length_unit`` (pixel units without a ``pixel_size``).
    interior_only : bool, optional
        Restrict to :func:`mapsim.lattice.interior`; default: when the data were generated by a
        model (the metadata record its L_c) or skips are given.
    centres : bool
        Atoms at pixel centres even when the dataset has offsets (the lattice version of the data).

    Returns
    -------
    list of AtomSample
    """
    from mapsim.lattice import (atom_positions, context_range_of, interior, length_unit_of, periodic_axes,
                                sample_geometry)

    if interior_only is None:
        interior_only = context_range_of(dataset.metadata, name) is not None or skip_rows is not None \
            or skip_cols is not None
    if interior_only:
        inner = interior(dataset.metadata, dataset.shape, skip_rows, skip_cols, name)
    else:
        inner = interior({"periodic": list(periodic_axes(dataset.metadata, where=name))}, dataset.shape, 0, 0, name)
    out = []
    for k in range(dataset.n_samples):
        xy, cls = atom_positions(dataset, k, centres)
        origin, pixel = sample_geometry(dataset, k)
        r0, c0 = inner.origin
        lo = np.array([origin[1] + c0 * pixel[1], origin[0] + r0 * pixel[0]])
        hi = np.array([origin[1] + inner.cols.stop * pixel[1], origin[0] + inner.rows.stop * pixel[0]])
        rows = np.nonzero(dataset.grids[k])[0]
        cols = np.nonzero(dataset.grids[k])[1]
        keep = (rows >= inner.rows.start) & (rows < inner.rows.stop) & (cols >= inner.cols.start) & \
            (cols < inner.cols.stop)
        out.append(AtomSample(xy[keep], cls[keep], lo, hi, (inner.periodic[1], inner.periodic[0]),
                              f"{name} sample {k}", length_unit_of(dataset.metadata)))
    return out


def samples_from_structures(paths: Sequence[str | Path], fmt: str | None = None, frames: str = ":",
                            species_map: dict[str, str] | None = None,
                            classes: Sequence[str] | None = None) -> tuple[list[AtomSample], tuple[str, ...]]:
    """The atoms of every frame of structure files, read through ASE (xy projection, z ignored).

    Parameters
    ----------
    paths : sequence of path-like
    fmt, frames : str
        As for ``mapsim import``.
    species_map : dict, optional
        Species -> class name (``empty`` drops a species); default one class per species.
    classes : sequence of str, optional
        Class names to use for ids (e.g. the other side's); default ``("empty", *sorted names)``.

    Returns
    -------
    samples : list of AtomSample
        Periodic axes: the cell (rectangular in xy); open axes: the atoms' range.
    classes : tuple of str
    """
    from mapsim.exchange.atoms import _xy_cell, read_frames
    from mapsim.exchange.common import class_order

    loaded = []
    for path in paths:
        for i, atoms in enumerate(read_frames(path, fmt, frames)):
            loaded.append((atoms, f"{path} frame {i}"))
    mapping = dict(species_map) if species_map else None
    if mapping is None:
        present = sorted({s for a, _ in loaded for s in a.get_chemical_symbols()})
        mapping = {s: s for s in present}
    if classes is None:
        classes = class_order([c for c in mapping.values() if c != "empty"])
    index = {c: k for k, c in enumerate(classes)}
    out = []
    for atoms, where in loaded:
        sym = atoms.get_chemical_symbols()
        missing = sorted({s for s in sym if s not in mapping or (mapping[s] != "empty" and mapping[s] not in index)})
        if missing:
            raise MapsimError(f"{where}: species {missing} have no class among {list(classes)}; give a species map "
                              "(SPECIES=CLASS, or SPECIES=empty to drop them)")
        ids = np.array([index[mapping[s]] if mapping[s] != "empty" else 0 for s in sym], np.int64)
        keep = ids > 0
        xy = np.asarray(atoms.positions, float)[keep][:, :2] - np.asarray(atoms.get_celldisp(), float).reshape(-1)[:2]
        lx, ly, per_x, per_y = _xy_cell(atoms, where, None)
        lo, hi = np.zeros(2), np.zeros(2)
        for col, (L, per) in enumerate(((lx, per_x), (ly, per_y))):
            if per:
                xy[:, col] = np.mod(xy[:, col], L)
                xy[:, col][xy[:, col] >= L] = 0.0
                lo[col], hi[col] = 0.0, L
            else:
                if xy.shape[0] == 0:
                    raise MapsimError(f"{where}: no atoms and no periodic cell; the window is undefined")
                lo[col], hi[col] = xy[:, col].min(), np.nextafter(xy[:, col].max(), np.inf)
        unit = atoms.info.get("mapsim_length_unit")
        out.append(AtomSample(xy, ids[keep], lo, hi, (per_x, per_y), where, None if unit is None else str(unit)))
    return out, tuple(classes)


def pooled_values(sums: dict[str, SampleSums]) -> dict[str, np.ndarray | float]:
    """Pooled value of every statistic (:meth:`AtomStatistics.compute` output): arrays for g(r) and
    the coordination distribution, floats for the one-bin statistics."""
    out: dict[str, np.ndarray | float] = {}
    for k, v in sums.items():
        p = pooled(v.num, v.den)
        out[k] = float(p[0]) if p.size == 1 else p
    return out


def split_windows(samples: Sequence[AtomSample], size: Sequence[float]) -> list[AtomSample]:
    """Cut samples into non-overlapping windows of (about) ``size`` = (w_x, w_y), tiled from ``lo``.

    A sample at least twice as large as ``size`` along an axis is cut into ``floor(extent / w)``
    equal windows along it (the remainder, under one window, is dropped); a cut axis becomes
    open. Smaller axes are kept whole. So a large generated structure gives several windows of
    the reference's size, the units a permutation test relabels.

    Returns
    -------
    list of AtomSample
        Named ``<where> window (a, b)``.
    """
    out = []
    for s in samples:
        extent = s.hi - s.lo
        counts = [int(extent[c] // size[c]) if extent[c] >= 2 * size[c] else 1 for c in range(2)]
        if counts == [1, 1]:
            out.append(s)
            continue
        step = np.array([extent[c] / counts[c] if counts[c] == 1 else size[c] for c in range(2)])
        per = tuple(bool(s.periodic[c]) and counts[c] == 1 for c in range(2))
        for a in range(counts[0]):
            for b in range(counts[1]):
                lo = s.lo + np.array([a, b]) * step
                hi = lo + step
                m = np.all((s.xy >= lo) & (s.xy < hi), axis=1)
                out.append(AtomSample(s.xy[m], s.species[m], lo, hi, per, f"{s.where} window ({a}, {b})",
                                      s.length_unit))
    return out


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def _freud_system(s: AtomSample, pad: float):
    """A freud 2-D box and 3-D points for a sample: periodic axes keep the window, open axes are
    padded by ``pad`` so that no neighbour within ``pad`` wraps."""
    import freud

    size = s.hi - s.lo
    L = np.array([size[c] if s.periodic[c] else size[c] + 2.0 * pad for c in range(2)])
    centre = s.lo + 0.5 * size
    pts = np.zeros((s.xy.shape[0], 3), np.float64)
    pts[:, :2] = s.xy - centre
    for c in range(2):  # periodic axes: wrap into [-L/2, L/2)
        if s.periodic[c]:
            pts[:, c] -= L[c] * np.floor(pts[:, c] / L[c] + 0.5)
    box = freud.box.Box(Lx=float(L[0]), Ly=float(L[1]), is2D=True)
    return box, pts.astype(np.float32)


def _query_mask(s: AtomSample, r: float) -> np.ndarray:
    """Atoms at least ``r`` from every open edge (all atoms on a periodic axis)."""
    m = np.ones(s.xy.shape[0], bool)
    for c in range(2):
        if not s.periodic[c]:
            m &= (s.xy[:, c] >= s.lo[c] + r) & (s.xy[:, c] <= s.hi[c] - r)
    return m


def _check_window(s: AtomSample, r_max: float) -> None:
    for c in range(2):
        size = s.hi[c] - s.lo[c]
        if s.periodic[c] and r_max >= 0.5 * size:
            raise MapsimError(f"{s.where}: r_max {r_max:g} is not below half the periodic cell ({size:g}) along "
                              f"{'xy'[c]}; give a smaller --r-max")
        if not s.periodic[c] and 2 * r_max >= size:
            raise MapsimError(f"{s.where}: no atom is r_max = {r_max:g} from both open edges along {'xy'[c]} "
                              f"(window {size:g}); give a smaller --r-max or larger samples")


class AtomStatistics:
    """Off-lattice statistics with settings taken from a reference (freud-style analysis object).

    Parameters
    ----------
    r_max : float, optional
        Range of g(r) in length units; default (set by :meth:`fit`) ``min(4 r_peak, limit)``, with
        r_peak the position of the reference's g(r) maximum and ``limit`` just below half the
        smallest periodic cell (open axes: 0.49 of the window, so query atoms remain).
    bins : int
        g(r) bins over (0, r_max].
    r_shell, r_close : float, optional
        Neighbour cut-off (first minimum of g(r) after its peak) and close-pair distance (1st
        percentile of neighbour distances); default from the reference in :meth:`fit`.
    partial : bool
        Add partial g(r) for every ordered species pair when there are several species.

    Attributes
    ----------
    r_max_, r_shell_, r_close_, r_peak_ : float
        Settings after :meth:`fit`.
    """

    def __init__(self, r_max: float | None = None, bins: int = 100, r_shell: float | None = None,
                 r_close: float | None = None, partial: bool = True) -> None:
        self.r_max = r_max
        self.bins = bins
        self.r_shell = r_shell
        self.r_close = r_close
        self.partial = partial

    def fit(self, reference: Sequence[AtomSample]) -> "AtomStatistics":
        """Choose r_max, r_shell and r_close from the reference atoms; returns self."""
        from mapsim.exchange.common import require

        require("freud", "io", "off-lattice statistics")
        if not reference:
            raise MapsimError("reference: no samples")
        limit = min(min(0.5 * (s.hi[c] - s.lo[c]) * (0.999 if s.periodic[c] else 0.49) for c in range(2))
                    for s in reference)
        # first pass on a coarse grid to find the peak and first minimum
        r_try = min(self.r_max or limit, limit)
        r, g = self._g_total(reference, r_try, max(self.bins, 50))
        if not np.isfinite(g).any() or np.nanmax(g) <= 0:
            raise MapsimError("reference: no pairs within reach; cannot set the g(r) range")
        ip = int(np.nanargmax(g))
        self.r_peak_ = float(r[ip])
        self.r_max_ = float(self.r_max) if self.r_max is not None else float(min(4.0 * self.r_peak_, limit))
        if self.r_shell is not None:
            self.r_shell_ = float(self.r_shell)
        else:
            after = np.where(r > r[ip])[0]
            seg = g[after]
            seg = np.where(np.isfinite(seg), seg, np.inf)
            # first local minimum after the peak (smoothed over 3 bins), else 1.4 x the peak
            sm = np.convolve(seg, np.ones(3) / 3, mode="same") if seg.size >= 3 else seg
            mins = [i for i in range(1, sm.size - 1) if sm[i] <= sm[i - 1] and sm[i] <= sm[i + 1] and sm[i] < 1.0]
            self.r_shell_ = float(r[after[mins[0]]]) if mins else 1.4 * self.r_peak_
        if self.r_shell_ > self.r_max_:
            raise MapsimError(f"neighbour cut-off {self.r_shell_:g} exceeds r_max {self.r_max_:g}; give a larger --r-max")
        d = np.concatenate([self._neighbour_distances(s) for s in reference])
        self.r_close_ = float(self.r_close) if self.r_close is not None else \
            (float(np.percentile(d, 1.0)) if d.size else 0.0)
        return self

    # -- pieces ---------------------------------------------------------------------------------
    def _g_total(self, samples, r_max, bins):
        edges = np.linspace(0.0, r_max, bins + 1)
        num, den = np.zeros(bins), np.zeros(bins)
        for s in samples:
            n, d = self._pair_hist(s, edges, None, None)
            num += n
            den += d
        with np.errstate(invalid="ignore", divide="ignore"):
            return 0.5 * (edges[1:] + edges[:-1]), np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    def _bonds(self, s: AtomSample, r: float):
        """(query index, neighbour index, distance) of all pairs within r, query atoms >= r_pad from open edges."""
        import freud

        pad = self.r_max_ if hasattr(self, "r_max_") else r
        box, pts = _freud_system(s, max(pad, r))
        if pts.shape[0] == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
        nl = freud.locality.AABBQuery(box, pts).query(pts, {"r_max": float(r), "exclude_ii": True}).toNeighborList()
        return (np.asarray(nl.query_point_indices, np.int64), np.asarray(nl.point_indices, np.int64),
                np.asarray(nl.distances, np.float64))

    def _pair_hist(self, s: AtomSample, edges, a, b):
        """Pair counts of species b around query atoms of species a (None: any), and the ideal-gas counts."""
        r_max = float(edges[-1])
        q = _query_mask(s, r_max)
        if a is not None:
            q &= s.species == a
        inside = s.xy.shape[0] if b is None else int(np.count_nonzero(s.species == b))
        rho = inside / s.area
        i, j, d = self._bonds(s, r_max)
        keep = q[i] if i.size else np.zeros(0, bool)
        if b is not None and i.size:
            keep &= s.species[j] == b
        num = np.histogram(d[keep], edges)[0].astype(float)
        den = int(q.sum()) * rho * np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
        return num, den

    def _neighbour_distances(self, s: AtomSample) -> np.ndarray:
        q = _query_mask(s, self.r_max_)
        i, j, d = self._bonds(s, self.r_shell_)
        return d[q[i]] if i.size else d

    def _order(self, s: AtomSample):
        """Neighbour counts and |ψ6|, |ψ4| of the query atoms, and their neighbour distances."""
        import freud

        q = _query_mask(s, self.r_max_)
        box, pts = _freud_system(s, self.r_max_)
        n = pts.shape[0]
        if n == 0 or not q.any():
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0)
        nl = freud.locality.AABBQuery(box, pts).query(pts, {"r_max": float(self.r_shell_),
                                                            "exclude_ii": True}).toNeighborList()
        counts = np.bincount(np.asarray(nl.query_point_indices), minlength=n)
        psi = []
        for k in (6, 4):
            h = freud.order.Hexatic(k=k).compute(system=(box, pts), neighbors=nl)
            v = np.abs(np.asarray(h.particle_order))
            psi.append(np.where(counts > 0, np.nan_to_num(v), 0.0))
        qi = np.asarray(nl.query_point_indices)
        d = np.asarray(nl.distances, np.float64)[q[qi]]
        return counts[q], psi[0][q], psi[1][q], d

    # -- public ---------------------------------------------------------------------------------
    def compute(self, samples: Sequence[AtomSample]) -> dict[str, SampleSums]:
        """Per-sample sums of every statistic (see the module docstring).

        Returns
        -------
        dict of str to SampleSums
            Keys ``g_r``, ``coordination``, ``psi6``, ``psi4``, ``close_pairs``, ``density`` and,
            with several species, ``g_r:A-B`` (species ids A around B).
        """
        if not hasattr(self, "r_max_"):
            raise MapsimError("AtomStatistics.compute before fit: call fit(reference) first")
        edges = np.linspace(0.0, self.r_max_, self.bins + 1)
        centres = 0.5 * (edges[1:] + edges[:-1])
        species = sorted({int(t) for s in samples for t in np.unique(s.species)})
        n_max = 16
        rows: dict[str, list] = {k: [] for k in ("g_r", "coordination", "psi6", "psi4", "close_pairs", "density")}
        pairs = [(a, b) for a in species for b in species] if self.partial and len(species) > 1 else []
        part: dict[tuple[int, int], list] = {p: [] for p in pairs}
        for s in samples:
            _check_window(s, self.r_max_)
            rows["g_r"].append(self._pair_hist(s, edges, None, None))
            for p in pairs:
                part[p].append(self._pair_hist(s, edges, p[0], p[1]))
            counts, p6, p4, d = self._order(s)
            nq = counts.size
            rows["coordination"].append((np.bincount(np.minimum(counts, n_max), minlength=n_max + 1).astype(float),
                                         np.array([float(nq)])))
            rows["psi6"].append((np.array([p6.sum()]), np.array([float(nq)])))
            rows["psi4"].append((np.array([p4.sum()]), np.array([float(nq)])))
            rows["close_pairs"].append((np.array([float(np.count_nonzero(d < self.r_close_))]),
                                        np.array([float(d.size)])))
            rows["density"].append((np.array([float(s.xy.shape[0])]), np.array([s.area])))
        kinds = {"g_r": "rms", "coordination": "tv", "psi6": "abs", "psi4": "abs", "close_pairs": "abs",
                 "density": "abs"}
        support = {"g_r": centres, "coordination": np.arange(n_max + 1, dtype=float)}
        out = {}
        for key, vals in rows.items():
            out[key] = SampleSums(key, kinds[key], np.array([v[0] for v in vals]), np.array([v[1] for v in vals]),
                                  support.get(key))
        for (a, b), vals in part.items():
            key = f"g_r:{a}-{b}"
            out[key] = SampleSums(key, "rms", np.array([v[0] for v in vals]), np.array([v[1] for v in vals]), centres)
        return out

    def settings(self) -> dict[str, float]:
        return {"r_max": self.r_max_, "bins": self.bins, "r_peak": self.r_peak_, "r_shell": self.r_shell_,
                "r_close": self.r_close_}


# ---------------------------------------------------------------------------------------------
# Verdict: permutation test over samples
# ---------------------------------------------------------------------------------------------

@dataclass
class AtomVerdict:
    """Result of :func:`atom_verdict`.

    Attributes
    ----------
    rows : dict of str to dict
        Per statistic: ``reference`` and ``generated`` pooled values (scalars for one-bin
        statistics), ``distance``, ``noise`` (RMS of the permutation null), ``ratio``, ``p``
        (raw permutation p-value) and ``p_adjusted`` (Westfall-Young max-T step-down over the
        statistics, :func:`mapsim.analysis.permutation.maxt_stepdown`).
    rejected : list of str
        Statistics with ``p_adjusted < alpha``.
    settings : dict
    """

    rows: dict[str, dict[str, Any]]
    rejected: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.rejected


def atom_verdict(ref: dict[str, SampleSums], gen: dict[str, SampleSums], n_perm: int = 999,
                 alpha: float = 0.05, seed: int | np.random.Generator = 0) -> AtomVerdict:
    """Permutation test of every statistic with the project's verdict machinery: are REF and GEN
    samples exchangeable?

    Parameters
    ----------
    ref, gen : dict of str to SampleSums
        From :meth:`AtomStatistics.compute` on each side (same settings). Whole samples are the
        units that are relabelled.
    n_perm : int
        Random relabellings of the pooled samples into groups of the two sizes.
    alpha : float
        Family-wise level of the max-T step-down adjustment.
    seed : int or Generator

    Returns
    -------
    AtomVerdict
        Distances standardised by their null RMS; p = (1 + #{T* >= T}) / (1 + n_perm).
    """
    from mapsim.analysis.permutation import Statistic, maxt_stepdown, null_rms, relabellings, standardise

    keys = [k for k in ref if k in gen]
    n_r = ref[keys[0]].num.shape[0]
    n_g = gen[keys[0]].num.shape[0]
    if n_r < 2 or n_g < 2:
        raise MapsimError(f"the permutation verdict needs at least 2 samples per side, found {n_r} and {n_g}")
    labels = relabellings(n_r, n_g, n_perm, seed)
    observed = np.r_[np.zeros(n_r), np.ones(n_g)][None, :]
    rows, t_obs, t_null = {}, [], []
    for k in keys:
        R, G = ref[k], gen[k]
        width = max(R.den.shape[1], G.den.shape[1])
        den = np.concatenate([np.broadcast_to(R.den, (n_r, width)), np.broadcast_to(G.den, (n_g, width))])
        st = Statistic(k, R.kind, np.concatenate([R.num, G.num]).astype(float), den.astype(float))
        obs = float(st.two_sample(observed)[0])
        null = st.two_sample(labels)
        # differences at rounding level (e.g. equal densities summed in another order) are no differences:
        # left in, their ratio to a rounding-level noise would be an arbitrary number entering max-T
        a, b = pooled(R.num, R.den), pooled(G.num, G.den)
        tol = 1e-9 * float(np.nanmax(np.abs(np.concatenate([a, b])), initial=0.0))
        obs = 0.0 if abs(obs) <= tol else obs
        null = np.where(np.abs(null) <= tol, 0.0, null)
        noise = null_rms(null)
        t, tn = standardise(obs, null, noise)
        t_obs.append(t)
        t_null.append(tn)
        rows[k] = {"reference": a.tolist() if a.size > 1 else float(a[0]),
                   "generated": b.tolist() if b.size > 1 else float(b[0]),
                   "distance": obs, "noise": noise, "ratio": obs / noise if noise > 0 else float("nan")}
    p_raw, p_adj = maxt_stepdown(np.array(t_obs), np.stack(t_null, axis=1))
    for i, k in enumerate(keys):
        rows[k]["p"], rows[k]["p_adjusted"] = float(p_raw[i]), float(p_adj[i])
    rejected = [k for k in keys if rows[k]["p_adjusted"] < alpha]
    return AtomVerdict(rows, rejected, {"n_perm": n_perm, "alpha": alpha, "n_reference": n_r, "n_generated": n_g,
                                        "adjustment": "Westfall-Young max-T step-down"})
