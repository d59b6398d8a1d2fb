"""The permutation verdict for 3-D datasets (volumes): the tests of :mod:`mapsim.analysis.compare`
on windows cut from (n, D, H, W) samples.

Units and windows
-----------------
The generated *interior* drops the first ``skip_planes`` planes (the autoregressive start-up
along z; default 2 L_c from the metadata's ``context_range``) and ``skip_rows`` rows and
``skip_cols`` columns at each side (the voxels whose causal box reaches past the sample's side
faces; default L_c each), 0 for data not made by a model. Windows of the reference's sample
shape (or the interior's, where smaller) are tiled from the first corner; every sample of both
sides carries the same number k of windows (drawn at random, seeded, where a sample has more).
Windows are open unless both sides' windows are whole periodic samples.

Statistics (per window, pooled per side): g(r) on exact cubic-lattice bins, neighbour
histograms among 6 and 26 (``neighbours6``, ``neighbours26``), 6- and 26-connected cluster sizes
(``clusters6``, ``clusters26``), window densities, S(k) in radial |k| shells, and the energy per
site when the Hamiltonian is known; distances, tests (two-sample permutations, one-sample sign
flips for a reference without spread or with a fixed particle number) and the max-T family
verdict are those of the 2-D verdict. The drift tests of 2-D samples taller than the reference
have no 3-D counterpart yet (``drift`` is empty).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mapsim.analysis.compare import (
    Comparison,
    _adjusted,
    _expand,
    _shells,
    _statistics,
    _tests,
    _verdicts,
    _Windows,
    check_alpha,
    check_permutations,
    pick_windows,
    reference_hamiltonian,
)
from mapsim.analysis.permutation import relabellings, sign_flips
from mapsim.analysis.structure import DEFAULT_R_MAX, resolve_class
from mapsim.analysis.structure3d import (
    ClusterSizes3D,
    NeighbourCounts3D,
    PairCorrelation3D,
    check_r_max_3d,
    lattice_r2_3d,
    max_r_allowed_3d,
    occupancy3d,
)
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, check_same_dimension, context_range_of, periodic_axes
from mapsim.montecarlo.hamiltonian import Hamiltonian

__all__ = ["STATS3D", "compare_volumes", "volume_interior", "tile_windows_3d"]

STATS3D: tuple[str, ...] = ("g_r", "neighbours6", "neighbours26", "clusters6", "clusters26", "density", "S_k",
                            "energy")
"""Statistics of the 3-D verdict in report order (``energy`` only when a Hamiltonian is known)."""


def volume_interior(gen: Dataset, skip_planes: int | None = None, skip_rows: int | None = None,
                    skip_cols: int | None = None, where: str = "generated") -> tuple[int, int, int]:
    """Planes dropped at the start and rows / columns dropped at each side of generated volumes.

    Defaults: 2 L_c planes, L_c rows, L_c columns (L_c the generating model's context range from
    the metadata), 0 for data not made by a model.

    Raises
    ------
    MapsimError
        Negative skips, or skips that leave nothing of the (D, H, W) samples.
    """
    lc = context_range_of(gen.metadata, where)
    d, h, w = gen.spatial_shape
    sp = int(skip_planes) if skip_planes is not None else (2 * lc if lc else 0)
    sr = int(skip_rows) if skip_rows is not None else (lc or 0)
    sc = int(skip_cols) if skip_cols is not None else (lc or 0)
    if min(sp, sr, sc) < 0:
        raise MapsimError(f"{where}: skipped planes/rows/columns must be non-negative, found {sp}, {sr}, {sc}")
    if sp >= d or 2 * sr >= h or 2 * sc >= w:
        raise MapsimError(f"{where}: dropping {sp} plane(s), {sr} row(s) and {sc} column(s) at each side leaves "
                          f"nothing of {d}x{h}x{w} samples (give smaller skips)")
    return sp, sr, sc


def tile_windows_3d(grids: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Non-overlapping windows of ``shape`` from grids (n, D, H, W), tiled from the first corner.

    Returns
    -------
    ndarray, shape (n, (D // d) (H // h) (W // w), d, h, w)
    """
    n, D, H, W = grids.shape
    d, h, w = shape
    nz, ny, nx = D // d, H // h, W // w
    g = grids[:, : nz * d, : ny * h, : nx * w].reshape(n, nz, d, ny, h, nx, w)
    return g.transpose(0, 1, 3, 5, 2, 4, 6).reshape(n, nz * ny * nx, d, h, w)


def _energy_function_3d(classes: tuple[str, ...], ham: dict[str, float], periodic: bool):
    """Energy per site of volumes (m, d, h, w) under ``ham`` (6 neighbours; particle 1, solvent 2)."""
    lut = np.zeros(len(classes), dtype=np.uint8)
    lut[classes.index("particle")] = 1
    if "solvent" in classes:
        lut[classes.index("solvent")] = 2
    hamiltonian = Hamiltonian.from_mapping(ham)

    def energy(grids: np.ndarray) -> np.ndarray:
        g = lut[grids]
        return np.atleast_1d(hamiltonian.energy(g, periodic, ndim=3)) / int(np.prod(g.shape[-3:]))

    return energy


def _window_features_3d(windows: np.ndarray, class_id: int, periodic: bool, r_max: int, energy) -> _Windows:
    occ = occupancy3d(windows, class_id)  # (N, d, h, w)
    N, shape = occ.shape[0], occ.shape[1:]
    pc = PairCorrelation3D(r_max, periodic).compute(occ)
    nbc = NeighbourCounts3D(periodic).compute(occ)
    sizes, owner = {}, {}
    for conn in (6, 26):
        cs = ClusterSizes3D(conn, periodic).compute(occ)
        sizes[conn], owner[conn] = cs.sizes, cs.sample_index
    idx, _, cnt = _shells(shape)
    power = np.zeros((N, cnt.size))
    ok = idx >= 0
    chunk = max(1, (4 << 20) // int(np.prod(shape)))  # bound the FFT work arrays
    for s in range(0, N, chunk):
        x = occ[s : s + chunk].astype(np.float64)
        x -= x.mean(axis=(1, 2, 3), keepdims=True)
        f = np.fft.fftn(x, axes=(1, 2, 3))
        p = (f.real**2 + f.imag**2).reshape(x.shape[0], -1)
        np.add.at(power[s : s + chunk].T, idx[ok], p[:, ok].T)
    return _Windows(
        n_windows=N, pairs=pc.pair_counts, expected=pc.expected_counts, nb={6: nbc.counts6, 26: nbc.counts26},
        count=occ.reshape(N, -1).sum(axis=1), cl_sizes=sizes, cl_window=owner, sk_power=power, sk_count=cnt,
        energy=None if energy is None else energy(windows),
    )


def compare_volumes(ref: Dataset, gen: Dataset, class_name: str | int | None = None, *,
                    skip_planes: int | None = None, skip_rows: int | None = None, skip_cols: int | None = None,
                    r_max: int | None = None, seed: int | np.random.Generator = 0, n_permutations: int = 1000,
                    alpha: float = 0.05, ref_periodic: bool | None = None, gen_periodic: bool | None = None,
                    hamiltonian: Mapping[str, float] | None = None, ref_name: str = "reference",
                    gen_name: str = "generated") -> Comparison:
    """Permutation tests of generated volumes against reference volumes, with a family verdict.

    Parameters
    ----------
    ref, gen : Dataset
        3-D datasets (grids (n, D, H, W)) with the same classes; the reference needs >= 2 samples.
    class_name : str or int, optional
        Class compared (default ``particle``, else id 1).
    skip_planes, skip_rows, skip_cols : int, optional
        The generated interior (:func:`volume_interior`).
    r_max, seed, n_permutations, alpha, ref_periodic, gen_periodic, hamiltonian
        As :func:`mapsim.analysis.compare.compare_datasets`; the periodic overrides apply to all three axes.

    Returns
    -------
    Comparison
        ``summary`` with the keys of the 2-D verdict (shapes with three entries, ``skip_planes``),
        ``reference``/``generated`` pooled estimates (``neighbours6``, ``neighbours26``, ``clusters6``,
        ``clusters26``, ...), ``r``, ``k``, ``null_distances``; ``drift`` empty.
    """
    check_same_dimension([ref, gen], [ref_name, gen_name])
    if ref.ndim != 3:
        raise MapsimError(f"{ref_name}: holds 2-D samples; compare_volumes compares 3-D datasets")
    if ref.classes != gen.classes:
        raise MapsimError(f"{gen_name}: classes {list(gen.classes)} do not match {ref_name}'s classes "
                          f"{list(ref.classes)}")
    alpha = check_alpha(alpha)
    n_perm = check_permutations(n_permutations)
    cid = resolve_class(ref, class_name)
    name = ref.classes[cid]
    if ref.n_samples < 2:
        raise MapsimError(f"{ref_name}: a permutation test needs at least 2 samples, found {ref.n_samples}")
    if not (ref.grids == cid).any():
        raise MapsimError(f"{ref_name}: no voxel holds the compared class {name!r}; nothing to compare against")
    sp, sr, sc = volume_interior(gen, skip_planes, skip_rows, skip_cols, gen_name)
    ham, energy_note = reference_hamiltonian(ref, hamiltonian)

    D, H, W = gen.spatial_shape
    interior = gen.grids[:, sp:, sr : H - sr, sc : W - sc]
    rs, gs = ref.spatial_shape, interior.shape[1:]
    win = tuple(min(a, b) for a, b in zip(rs, gs))
    ref_per = all(periodic_axes(ref.metadata, ref_periodic, ref_name, ndim=3))
    gen_per = all(periodic_axes(gen.metadata, gen_periodic, gen_name, ndim=3)) and sp == sr == sc == 0
    periodic = ref_per and gen_per and win == tuple(rs) == tuple(gs)
    if r_max is None:
        r_max = max(1, min(DEFAULT_R_MAX, max_r_allowed_3d(win, periodic)))
    r_max = check_r_max_3d(r_max, win, periodic, "comparison windows")

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    r_win, g_win = tile_windows_3d(ref.grids, win), tile_windows_3d(interior, win)
    k = min(r_win.shape[1], g_win.shape[1])

    r_win, g_win = pick_windows(r_win, k, rng), pick_windows(g_win, k, rng)
    n_ref, n_gen = ref.n_samples, gen.n_samples
    windows = np.concatenate([r_win.reshape(-1, *win), g_win.reshape(-1, *win)])
    energy = _energy_function_3d(ref.classes, ham, periodic) if ham is not None else None
    F = _window_features_3d(windows, cid, periodic, r_max, energy)
    sites = int(np.prod(win))
    per_window, units = _statistics(F, k, sites)
    n_rw = n_ref * k
    counts = (ref.grids == cid).reshape(n_ref, -1).sum(axis=1)
    fixed_count = bool(np.ptp(counts) == 0)

    labels = relabellings(n_ref, n_gen, n_perm, rng)
    signs = sign_flips(n_gen, n_perm, rng)
    tested, observed, nulls, test_kind, fixed, ref_est, gen_est = _tests(
        STATS3D, per_window, units, F, n_ref, n_gen, k, sites, fixed_count, labels, signs)
    noise, p_raw, p_adj = _adjusted(tested, observed, nulls, n_perm)
    summary: dict[str, Any] = {
        "class": name, "ndim": 3,
        "reference_samples": n_ref, "reference_shape": list(rs), "reference_periodic": ref_per,
        "generated_samples": n_gen, "generated_shape": [D, H, W],
        "skip_planes": sp, "skip_rows": sr, "skip_cols": sc, "generated_periodic": gen_per,
        "window_shape": list(win), "windows_per_sample": k, "reference_windows": n_rw,
        "generated_windows": n_gen * k, "windows_periodic": periodic, "r_max": int(r_max),
        "seed": seed if isinstance(seed, int) else None, "alpha": alpha, "permutations": n_perm,
        "reference_density": float(F.count[:n_rw].sum() / (n_rw * sites)),
        "generated_density": float(F.count[n_rw:].sum() / (n_gen * k * sites)),
        "reference_fixed_count": fixed_count, "fixed_in_reference": fixed, "hamiltonian": ham,
        "energy_note": None if ham is not None else energy_note, "statistics": tested,
    }
    _verdicts(summary, tested, observed, noise, p_raw, p_adj, test_kind, alpha)
    for est, idx in ((ref_est, np.arange(n_rw)), (gen_est, np.arange(n_rw, F.n_windows))):
        for c in (6, 26):
            est[f"clusters{c}"] = np.rint(_expand(per_window[f"clusters{c}"], idx)).astype(np.int64)
        est["density"] = F.count[idx] / sites
    return Comparison(summary, ref_est, gen_est, np.sqrt(lattice_r2_3d(r_max)), _shells(win)[1],
                      np.column_stack([nulls[s] for s in tested]) if tested else np.zeros((n_perm, 0)), {})
