"""A model's negative log-likelihood per pixel on a dataset (how users compare models).

For a model with positions (:mod:`mapsim.models.pixelcnn`) the NLL has two parts:
the class part (-ln p of each pixel's class) and the position part (-ln of each
atom's position density).  The position density is per unit *pixel* area, so its
value depends on the pixel size: per unit physical area (``length_unit``²) it is
the density per pixel area divided by a_y a_x, i.e. the NLL grows by
ln(a_y a_x) = 2 ln a per atom.  Only the physical figure compares across pixel
sizes; both are reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mapsim.errors import MapsimError
from mapsim.models.base import MapModel


@dataclass
class Score:
    """Mean NLL per pixel over samples, with its standard error.

    Attributes
    ----------
    nll_nats, nll_nats_se : float
        Mean over samples of each sample's mean -ln p per scored pixel, and the
        standard error of that mean (std over samples / sqrt(n); 0 for one sample).
        With positions: class part plus position part (per unit pixel area).
    nll_bits, nll_bits_se : float
        The same in bits.
    n_samples, pixels_per_sample, skip_rows, skip_cols : int
        (Volumes: voxels per sample, and rows and columns skipped at *each* side.)
    class_nll_nats, class_nll_nats_se : float or None
        Models with positions: the class part, nats per pixel.
    position_nll_nats, position_nll_nats_se : float or None
        The position part, nats per pixel, density per unit pixel area.
    position_nll_nats_physical, position_nll_nats_physical_se : float or None
        The position part, nats per pixel, density per unit physical area (length_unit²):
        each atom adds ln(a_y a_x).
    position_nll_per_atom, position_nll_per_atom_physical : float or None
        The position part per scored atom (all samples pooled), per unit pixel area and per
        unit physical area.
    atoms : int or None
        Scored atoms (all samples).
    pixel_size : list of float or None
        [a_y, a_x] used for the physical figures.
    skip_planes : int or None
        Volumes (:func:`score_volumes`): planes skipped at the start; None for 2D samples.
    """

    nll_nats: float
    nll_nats_se: float
    nll_bits: float
    nll_bits_se: float
    n_samples: int
    pixels_per_sample: int
    skip_rows: int
    skip_cols: int
    class_nll_nats: float | None = None
    class_nll_nats_se: float | None = None
    position_nll_nats: float | None = None
    position_nll_nats_se: float | None = None
    position_nll_nats_physical: float | None = None
    position_nll_nats_physical_se: float | None = None
    position_nll_per_atom: float | None = None
    position_nll_per_atom_physical: float | None = None
    atoms: int | None = None
    pixel_size: list | None = None
    skip_planes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    n = v.shape[0]
    mean = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 and np.isfinite(mean) else 0.0
    return mean, se


def check_positions_match(model: MapModel, offsets: np.ndarray | None, where: str = "data") -> None:
    """One-line errors when a model with positions meets data without offsets, or the reverse."""
    positions = bool(getattr(model.config, "positions", False))
    if positions and offsets is None:
        raise MapsimError(f"{where}: has no offsets (positions inside the pixels), but the model has a position "
                          "head and scores positions; give off-lattice data (with offsets)")
    if not positions and offsets is not None:
        raise MapsimError(f"{where}: has offsets (positions inside the pixels), but the model has no position head "
                          "and would leave the positions unscored; score it on lattice data (without offsets) "
                          "or train a model with positions")


@torch.no_grad()
def score_grids(model: MapModel, grids: np.ndarray, *, skip_rows: int = 0, skip_cols: int = 0,
                batch: int = 16, offsets: np.ndarray | None = None,
                pixel_size: tuple[float, float] | None = None) -> Score:
    """Teacher-forced NLL of ``grids`` (n, H, W) under ``model`` (outside boundary).

    Only pixels at row >= ``skip_rows`` and ``skip_cols`` <= column < W - ``skip_cols``
    are scored (interior pixels: periodic data never saw the outside class).

    Parameters
    ----------
    offsets : ndarray of float32, shape (n, H, W, 2), optional
        Positions inside the pixels; required exactly when the model has positions.
    pixel_size : (a_y, a_x), optional
        For the physical position figures; default the model's ``config.pixel_size``.
    """
    grids = np.asarray(grids)
    n, H, W = grids.shape
    if skip_rows < 0 or skip_cols < 0:
        raise MapsimError(f"skip rows/cols must be non-negative, found {skip_rows}, {skip_cols}")
    if skip_rows >= H or 2 * skip_cols >= W:
        raise MapsimError(f"--skip-rows {skip_rows} / --skip-cols {skip_cols} leave no pixel of the {H}x{W} samples")
    if int(grids.max()) >= model.n_classes:
        raise MapsimError(f"data hold class id {int(grids.max())}, but the model has {model.n_classes} classes")
    check_positions_match(model, offsets)
    positions = offsets is not None
    window = (slice(None), slice(skip_rows, None), slice(skip_cols, W - skip_cols))
    cls, pos, natoms = [], [], []
    for s in range(0, n, batch):
        g = torch.as_tensor(grids[s : s + batch].astype(np.int64), device=model.device)
        if positions:
            off = torch.as_tensor(offsets[s : s + batch], device=model.device)
            lp, ld = model.log_prob_parts(g, off)
            pos.append((-ld[window].double()).flatten(1).sum(1).cpu().numpy())
            natoms.append((g[window] != 0).flatten(1).sum(1).cpu().numpy())
        else:
            lp = model.log_prob_pixels(g)
        cls.append((-lp[window].double()).flatten(1).sum(1).cpu().numpy())
    pixels = (H - skip_rows) * (W - 2 * skip_cols)
    c = np.concatenate(cls) / pixels
    total = c.copy()
    extra: dict = {}
    if positions:
        psum = np.concatenate(pos)
        atoms = np.concatenate(natoms).astype(np.float64)
        total = c + psum / pixels
        a = pixel_size if pixel_size is not None else getattr(model.config, "pixel_size", None)
        extra["class_nll_nats"], extra["class_nll_nats_se"] = _mean_se(c)
        extra["position_nll_nats"], extra["position_nll_nats_se"] = _mean_se(psum / pixels)
        extra["atoms"] = int(atoms.sum())
        extra["position_nll_per_atom"] = float(psum.sum() / atoms.sum()) if atoms.sum() else None
        if a is not None:
            ln_area = math.log(float(a[0]) * float(a[1]))
            phys = (psum + atoms * ln_area) / pixels
            extra["position_nll_nats_physical"], extra["position_nll_nats_physical_se"] = _mean_se(phys)
            if atoms.sum():
                extra["position_nll_per_atom_physical"] = extra["position_nll_per_atom"] + ln_area
            extra["pixel_size"] = [float(a[0]), float(a[1])]
    mean, se = _mean_se(total)
    ln2 = math.log(2.0)
    return Score(mean, se, mean / ln2, se / ln2, n, pixels, skip_rows, skip_cols, **extra)


@torch.no_grad()
def score_volumes(model: MapModel, grids: np.ndarray, *, skip_planes: int = 0, skip_rows: int = 0,
                  skip_cols: int = 0, batch: int = 4) -> Score:
    """Teacher-forced NLL of volumes ``grids`` (n, D, H, W) under a 3D ``model`` (outside boundary).

    Only voxels at plane >= ``skip_planes``, ``skip_rows`` <= row < H - ``skip_rows`` and
    ``skip_cols`` <= column < W - ``skip_cols`` are scored: in 3D a voxel's causal box reaches
    ``L_c`` rows *below* it in the planes before, so the bulk drops rows at both sides (the interior
    of :func:`mapsim.analysis.compare3d.volume_interior`).

    Returns
    -------
    Score
        Nats per scored voxel (mean over samples, standard error over samples);
        ``pixels_per_sample`` counts the scored voxels of one sample.
    """
    grids = np.asarray(grids)
    if grids.ndim != 4:
        raise MapsimError(f"volumes must have shape (n, D, H, W), found {grids.shape}")
    if getattr(model, "ndim", 2) != 3:
        raise MapsimError(f"a {getattr(model, 'ndim', 2)}D model ({model.kind}) cannot score volumes")
    n, D, H, W = grids.shape
    if min(skip_planes, skip_rows, skip_cols) < 0:
        raise MapsimError(f"skipped planes/rows/cols must be non-negative, found {skip_planes}, {skip_rows}, "
                          f"{skip_cols}")
    if skip_planes >= D or 2 * skip_rows >= H or 2 * skip_cols >= W:
        raise MapsimError(f"skipping {skip_planes} plane(s), {skip_rows} row(s) and {skip_cols} column(s) at each "
                          f"side leaves no voxel of the {D}x{H}x{W} volumes")
    if int(grids.max()) >= model.n_classes:
        raise MapsimError(f"data hold class id {int(grids.max())}, but the model has {model.n_classes} classes")
    window = (slice(None), slice(skip_planes, None), slice(skip_rows, H - skip_rows), slice(skip_cols, W - skip_cols))
    nll = []
    for s in range(0, n, batch):
        g = torch.as_tensor(grids[s : s + batch].astype(np.int64), device=model.device)
        lp = model.log_prob_pixels(g)  # (b, D, H, W)
        nll.append((-lp[window].double()).flatten(1).sum(1).cpu().numpy())
    voxels = (D - skip_planes) * (H - 2 * skip_rows) * (W - 2 * skip_cols)
    mean, se = _mean_se(np.concatenate(nll) / voxels)
    ln2 = math.log(2.0)
    return Score(mean, se, mean / ln2, se / ln2, n, voxels, skip_rows, skip_cols, skip_planes=skip_planes)
