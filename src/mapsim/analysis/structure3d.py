"""Structure statistics of 3-D voxel samples on the simple cubic lattice.

The 3-D counterparts of :mod:`mapsim.analysis.structure` (same estimators, same boundary
rules, same analysis-object pattern): g(r) binned by exact cubic-lattice distances, neighbour
histograms among the 6 and the 26 nearest voxels, 6- and 26-connected clusters with periodic
wrap, densities, the energy per site and S(k) in radial |k| shells. Inputs are occupation
arrays ``occupied`` of shape (n, D, H, W), bool (axes z, y, x). ``periodic`` is one bool for
all three axes or a triple (z, y, x); an open axis is a window edge: nothing is assumed
beyond it.

NumPy/SciPy only.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mapsim.analysis.structure import (
    _FFT_CHUNK_ELEMENTS,
    DEFAULT_R_MAX,
    ClusterSizes,
    PairCorrelation,
    StructureFactor,
    _Analysis,
    densities,
    normalised,
    recorded_hamiltonian,
    resolve_class,
)
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, periodic_axes
from mapsim.montecarlo.hamiltonian import Hamiltonian, bond_sum

__all__ = ["occupancy3d", "axes3", "max_r_allowed_3d", "check_r_max_3d", "lattice_r2_3d", "autocorrelation3d",
           "PairCorrelation3D", "NeighbourCounts3D", "ClusterSizes3D", "StructureFactor3D", "nn_pair_density_3d",
           "energy_per_site_3d", "analyze3d"]

#: Offsets of the 6 face neighbours and the 26 voxels of the 3x3x3 block around a voxel.
_FULL = {
    6: tuple(o for o in itertools.product((-1, 0, 1), repeat=3) if sum(map(abs, o)) == 1),
    26: tuple(o for o in itertools.product((-1, 0, 1), repeat=3) if any(o)),
}
#: Half of each neighbourhood: every neighbour pair is reached once, from one end.
_FORWARD = {k: tuple(o for o in v if o > (0, 0, 0)) for k, v in _FULL.items()}


def occupancy3d(grids: np.ndarray, class_id: int) -> np.ndarray:
    """Where 3-D grids hold ``class_id``: bool (n, D, H, W) from grids (n, D, H, W) or (D, H, W)."""
    g = np.asarray(grids)
    if g.ndim == 3:
        g = g[None]
    if g.ndim != 4:
        raise MapsimError(f"grids: expected shape (n, D, H, W) or (D, H, W), found shape {g.shape}")
    return g == class_id


def axes3(periodic: bool | Sequence[bool]) -> tuple[bool, bool, bool]:
    """``periodic`` as (z, y, x): one bool for every axis, or a triple."""
    if isinstance(periodic, (tuple, list, np.ndarray)):
        if len(periodic) != 3:
            raise MapsimError(f"periodic: expected one bool or three (z, y, x), found {list(periodic)}")
        return bool(periodic[0]), bool(periodic[1]), bool(periodic[2])
    return (bool(periodic),) * 3


def _norm(periodic: bool | Sequence[bool]) -> bool | tuple[bool, bool, bool]:
    per = axes3(periodic)
    return per[0] if len(set(per)) == 1 else per


def max_r_allowed_3d(shape: tuple[int, int, int], periodic: bool | Sequence[bool]) -> int:
    """Largest g(r) range: per axis ``n // 2`` (periodic) or ``n - 1`` (open), the smallest of the three."""
    return max(min(n // 2 if p else n - 1 for n, p in zip(shape, axes3(periodic))), 0)


def check_r_max_3d(r_max: int | None, shape: tuple[int, int, int], periodic: bool | Sequence[bool],
                   where: str = "samples") -> int:
    """Validate ``r_max`` (None: ``min(DEFAULT_R_MAX, allowed)``)."""
    limit = max_r_allowed_3d(shape, periodic)
    r_max = min(DEFAULT_R_MAX, limit) if r_max is None else int(r_max)
    if r_max < 1:
        raise MapsimError(f"r_max must be at least 1, found {r_max} ({where} of shape {tuple(shape)}; a periodic "
                          "axis needs at least 2 voxels, an open one 2)")
    if r_max > limit:
        raise MapsimError(f"r_max {r_max} too large for {where} of shape {tuple(shape)} (periodic (z, y, x) = "
                          f"{axes3(periodic)}): at most {limit}")
    return r_max


def lattice_r2_3d(r_max: int) -> np.ndarray:
    """Squared distances r² = dz² + dy² + dx² ≤ r_max² on the cubic lattice, sorted, int64.

    1, 2, 3, 4, 5, 6, 8, 9, ...: every integer except those of the form 4^a (8b + 7) (7, 15, 23, 28, ...).
    """
    d = np.arange(-r_max, r_max + 1)
    r2 = np.unique((d[:, None, None] ** 2 + d[None, :, None] ** 2 + d[None, None, :] ** 2).ravel())
    return r2[(r2 > 0) & (r2 <= r_max * r_max)]


def _displacements(r_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = np.arange(-r_max, r_max + 1)
    dz, dy, dx = (a.ravel() for a in np.meshgrid(d, d, d, indexing="ij"))
    r2 = dz**2 + dy**2 + dx**2
    keep = (r2 > 0) & (r2 <= r_max * r_max)
    return dz[keep], dy[keep], dx[keep], np.searchsorted(lattice_r2_3d(r_max), r2[keep])


def autocorrelation3d(x: np.ndarray, periodic: bool | Sequence[bool], r_max: int) -> np.ndarray:
    """Pair counts C[s, d] = Σ_i x[s, i] x[s, i + d] for |dz|, |dy|, |dx| ≤ r_max, by FFT.

    Parameters
    ----------
    x : ndarray of bool or float, shape (n, D, H, W)
    periodic : bool or (bool, bool, bool)
        Circular along periodic axes; open axes are zero-padded to at least n + r_max.
    r_max : int

    Returns
    -------
    ndarray of float64, shape (n, 2 r_max + 1, 2 r_max + 1, 2 r_max + 1)
        ``C[s, r_max + dz, r_max + dy, r_max + dx]``; integer valued up to FFT rounding.
    """
    n = x.shape[0]
    shape = tuple(m if p else sfft.next_fast_len(m + r_max, real=True) for m, p in zip(x.shape[1:], axes3(periodic)))
    lags = np.arange(-r_max, r_max + 1)
    iz, iy, ix = (lags % m for m in shape)
    out = np.empty((n, lags.size, lags.size, lags.size))
    chunk = max(1, _FFT_CHUNK_ELEMENTS // int(np.prod(shape)))
    for start in range(0, n, chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float64)
        f = sfft.rfftn(block, s=shape, axes=(1, 2, 3))
        ac = sfft.irfftn(f.real**2 + f.imag**2, s=shape, axes=(1, 2, 3))
        out[start : start + chunk] = ac[:, iz][:, :, iy][:, :, :, ix]
    return out


class PairCorrelation3D(PairCorrelation):
    """g(r) on the cubic lattice, binned by exact distances (the estimator and results of
    :class:`mapsim.analysis.structure.PairCorrelation`): pair counts C_s(d) by FFT against the
    ideal-gas expectation A(d) N_s (N_s - 1) / (M (M - 1)), A(d) the site pairs at displacement d
    inside a sample (M periodic, Π (n_a - |d_a|) along open axes). Exactly 1 in expectation for
    random occupation at any particle number.

    Parameters
    ----------
    r_max : int
    periodic : bool or (bool, bool, bool)
        All axes, or (z, y, x).
    """

    def __init__(self, r_max: int = DEFAULT_R_MAX, periodic: bool | Sequence[bool] = False) -> None:
        self.r_max = int(r_max)
        self.periodic = _norm(periodic)

    def compute(self, occupied: np.ndarray) -> "PairCorrelation3D":
        """Compute from ``occupied`` (n, D, H, W) bool; returns self."""
        occ = np.asarray(occupied, dtype=bool)
        shape = occ.shape[1:]
        r_max = check_r_max_3d(self.r_max, shape, self.periodic)
        dz, dy, dx, bins = _displacements(r_max)
        ac = np.rint(autocorrelation3d(occ, self.periodic, r_max))[:, r_max + dz, r_max + dy, r_max + dx]
        if all(axes3(self.periodic)):
            avail = np.full(dz.size, float(np.prod(shape)))
        else:
            ones = np.ones((1, *shape), bool)
            avail = np.rint(autocorrelation3d(ones, self.periodic, r_max)[0])[r_max + dz, r_max + dy, r_max + dx]
        self._store(occ, ac, avail, bins, lattice_r2_3d(r_max))
        return self


def _shifted(pad: np.ndarray, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    dz, dy, dx = offset
    d, h, w = shape
    return pad[:, 1 + dz : 1 + dz + d, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


class NeighbourCounts3D(_Analysis):
    """How many of the 6 face neighbours and of the 26 voxels around each particle are particles.

    Periodic axes wrap; along an open axis only particles whose whole 3x3x3 block lies inside
    are counted (a voxel outside the window is unknown, not empty).

    Parameters
    ----------
    periodic : bool or (bool, bool, bool)
    """

    def __init__(self, periodic: bool | Sequence[bool] = False) -> None:
        self.periodic = _norm(periodic)

    def compute(self, occupied: np.ndarray) -> "NeighbourCounts3D":
        """Compute from ``occupied`` (n, D, H, W) bool; returns self."""
        occ = np.asarray(occupied, dtype=bool)
        n, shape = occ.shape[0], occ.shape[1:]
        per = axes3(self.periodic)
        pad = occ
        centre = occ.copy()
        for a, p in enumerate(per):
            widths = [(0, 0)] * 4
            widths[a + 1] = (1, 1)
            pad = np.pad(pad, widths, mode="wrap" if p else "constant")
            if not p:
                idx = [slice(None)] * 4
                idx[a + 1] = [0, shape[a] - 1]
                centre[tuple(idx)] = False
        s = np.nonzero(centre)[0]
        self._counts = {}
        for k in (6, 26):
            nb = sum(_shifted(pad, o, shape).astype(np.int8) for o in _FULL[k])
            self._counts[k] = np.bincount(s * (k + 1) + nb[centre].astype(np.int64),
                                          minlength=n * (k + 1)).reshape(n, k + 1)
        self._sites = int(np.prod([m if p else max(m - 2, 0) for m, p in zip(shape, per)]))
        self._computed = True
        return self

    @property
    def counts6(self) -> np.ndarray:
        """Particles with 0..6 particle face neighbours, per sample, shape (n, 7), int64."""
        self._need()
        return self._counts[6]

    @property
    def counts26(self) -> np.ndarray:
        """Particles with 0..26 particles in their 3x3x3 block, per sample, shape (n, 27), int64."""
        self._need()
        return self._counts[26]

    @property
    def hist6(self) -> np.ndarray:
        """Fraction of counted particles with 0..6 particle neighbours (of 6), shape (7,)."""
        self._need()
        return normalised(self._counts[6].sum(axis=0))

    @property
    def hist26(self) -> np.ndarray:
        """Fraction of counted particles with 0..26 particle neighbours (of 26), shape (27,)."""
        self._need()
        return normalised(self._counts[26].sum(axis=0))

    @property
    def sites_per_sample(self) -> int:
        """Voxels whose particles are counted, per sample."""
        self._need()
        return self._sites


class ClusterSizes3D(ClusterSizes):
    """Sizes of 6- or 26-connected clusters of particles (results as :class:`ClusterSizes`).

    :func:`scipy.ndimage.label` with a 3-D structure labels each sample; along periodic axes
    labels that touch across the wrap (across faces, edges and corners for 26-connectivity) are
    merged as connected components of the label graph, as in 2-D, so a cluster crossing a face
    or winding round the torus counts once.

    Parameters
    ----------
    connectivity : {6, 26}
    periodic : bool or (bool, bool, bool)
    """

    def __init__(self, connectivity: int = 6, periodic: bool | Sequence[bool] = False) -> None:
        if connectivity not in (6, 26):
            raise MapsimError(f"3-D cluster connectivity must be 6 or 26, found {connectivity}")
        self.connectivity = int(connectivity)
        self.periodic = _norm(periodic)

    def compute(self, occupied: np.ndarray) -> "ClusterSizes3D":
        """Compute from ``occupied`` (n, D, H, W) bool; returns self."""
        occ = np.asarray(occupied, dtype=bool)
        structure = np.zeros((3, 3, 3, 3), dtype=bool)  # no connection along the sample axis
        structure[1] = ndimage.generate_binary_structure(3, 1 if self.connectivity == 6 else 3)
        self._store(occ, structure, _FORWARD[self.connectivity], axes3(self.periodic))
        return self


class StructureFactor3D(StructureFactor):
    """Radially averaged S(k) = Σ_s |ρ_s(k)|² / Σ_s N_s over k = 2π (p/D, q/H, r/W), k ≠ 0.

    Shells of width 2π / min(D, H, W) up to |k| = π√3; the ideal lattice gas gives 1 - ρ. The
    FFT treats every sample as periodic (open samples: smeared by the window).
    """

    def compute(self, occupied: np.ndarray) -> "StructureFactor3D":
        """Compute from ``occupied`` (n, D, H, W) bool; returns self."""
        occ = np.asarray(occupied, dtype=bool)
        n, shape = occ.shape[0], occ.shape[1:]
        power = np.zeros(shape)
        chunk = max(1, _FFT_CHUNK_ELEMENTS // int(np.prod(shape)))
        for start in range(0, n, chunk):
            x = occ[start : start + chunk].astype(np.float64)
            x -= x.mean(axis=(1, 2, 3), keepdims=True)
            f = sfft.fftn(x, axes=(1, 2, 3))
            power += (f.real**2 + f.imag**2).sum(axis=0)
        self._store(power, occ.sum())
        return self


def nn_pair_density_3d(occupied: np.ndarray, periodic: bool) -> np.ndarray:
    """Face-neighbour particle pairs per voxel, per sample, shape (n,); ideal gas: 3ρ² (periodic)."""
    occ = np.asarray(occupied, dtype=bool)
    return bond_sum(occ, occ, periodic, ndim=3) / 2 / int(np.prod(occ.shape[1:]))


def energy_per_site_3d(grids: np.ndarray, hamiltonian: Hamiltonian, periodic: bool, particle_id: int = 1,
                       solvent_id: int | None = 2) -> np.ndarray:
    """Energy of each 3-D sample (n, D, H, W) under ``hamiltonian`` (6 neighbours) per voxel, shape (n,)."""
    g = np.asarray(grids)
    if g.ndim == 3:
        g = g[None]
    return hamiltonian.energy(g, periodic, ndim=3, particle=particle_id, solvent=solvent_id) / int(np.prod(g.shape[1:]))


def analyze3d(dataset: Dataset, class_name: str | int | None = None, *, periodic: bool | None = None,
              r_max: int | None = None, hamiltonian: Hamiltonian | None = None) -> dict[str, Any]:
    """All statistics of a 3-D dataset for one class, as a JSON-ready dict.

    Parameters
    ----------
    dataset : Dataset
        With grids (n, D, H, W).
    class_name, periodic, r_max, hamiltonian
        As :func:`mapsim.analysis.blockwise.analyze`; ``periodic`` overrides the metadata's
        boundary for all three axes.

    Returns
    -------
    dict
        ``class``, ``periodic`` (one bool, or [z, y, x]), ``n_samples``, ``shape`` [D, H, W],
        ``density_mean``, ``density_std``, ``densities`` (n,), ``r``, ``r2``, ``g_r``,
        ``neighbours6`` (7,), ``neighbours26`` (27,), ``cluster_sizes6``, ``cluster_sizes26``,
        mean cluster sizes, ``nn_pairs_per_site``, ``energy_per_site`` (or None), ``k``, ``S_k``.
    """
    if dataset.ndim != 3:
        raise MapsimError(f"{dataset.source}: holds 2-D samples; analyze3d needs grids (n, D, H, W)")
    cid = resolve_class(dataset, class_name)
    per = _norm(periodic_axes(dataset.metadata, periodic, dataset.source, ndim=3))
    shape = dataset.spatial_shape
    r_max = check_r_max_3d(r_max, shape, per, f"{dataset.source}: samples")
    occ = occupancy3d(dataset.grids, cid)
    rho = densities(occ)
    pc = PairCorrelation3D(r_max, per).compute(occ)
    nbc = NeighbourCounts3D(per).compute(occ)
    cl6 = ClusterSizes3D(6, per).compute(occ)
    cl26 = ClusterSizes3D(26, per).compute(occ)
    sk = StructureFactor3D().compute(occ)
    hamiltonian, energy_note = recorded_hamiltonian(dataset, hamiltonian)
    all_periodic = all(axes3(per))
    energy = None
    if hamiltonian is not None:
        pid = dataset.classes.index("particle") if "particle" in dataset.classes else 1
        sid = dataset.classes.index("solvent") if "solvent" in dataset.classes else None
        energy = float(energy_per_site_3d(dataset.grids, hamiltonian, all_periodic, pid, sid).mean())
    return {
        "class": dataset.classes[cid], "class_id": cid, "ndim": 3,
        "periodic": list(per) if isinstance(per, tuple) else per,
        "n_samples": dataset.n_samples, "shape": list(shape),
        "density_mean": float(rho.mean()), "density_std": float(rho.std(ddof=1)) if rho.size > 1 else 0.0,
        "densities": rho, "r_max": r_max, "r2": pc.r2, "r": pc.r, "g_r": pc.g,
        "neighbours6": nbc.hist6, "neighbours26": nbc.hist26,
        "cluster_sizes6": cl6.size_counts, "cluster_sizes26": cl26.size_counts,
        "cluster_mean6": float(cl6.sizes.mean()) if cl6.sizes.size else None,
        "cluster_mean26": float(cl26.sizes.mean()) if cl26.sizes.size else None,
        "nn_pairs_per_site": float(nn_pair_density_3d(occ, all_periodic).mean()),
        "energy_per_site": energy, "energy_note": energy_note,
        "hamiltonian": None if hamiltonian is None else asdict(hamiltonian),
        "k": sk.k, "S_k": sk.S,
    }
