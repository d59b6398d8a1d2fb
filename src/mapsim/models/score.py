"""A model's negative log-likelihood per pixel on a dataset (how users compare models)."""

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
    nll_bits, nll_bits_se : float
        The same in bits.
    n_samples, pixels_per_sample, skip_rows, skip_cols : int
    """

    nll_nats: float
    nll_nats_se: float
    nll_bits: float
    nll_bits_se: float
    n_samples: int
    pixels_per_sample: int
    skip_rows: int
    skip_cols: int

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def score_grids(model: MapModel, grids: np.ndarray, *, skip_rows: int = 0, skip_cols: int = 0,
                batch: int = 16) -> Score:
    """Teacher-forced NLL of ``grids`` (n, H, W) under ``model`` (outside boundary).

    Only pixels at row >= ``skip_rows`` and ``skip_cols`` <= column < W - ``skip_cols``
    are scored (interior pixels: periodic data never saw the outside class).
    """
    grids = np.asarray(grids)
    n, H, W = grids.shape
    if skip_rows < 0 or skip_cols < 0:
        raise MapsimError(f"skip rows/cols must be non-negative, found {skip_rows}, {skip_cols}")
    if skip_rows >= H or 2 * skip_cols >= W:
        raise MapsimError(f"--skip-rows {skip_rows} / --skip-cols {skip_cols} leave no pixel of the {H}x{W} samples")
    if int(grids.max()) >= model.n_classes:
        raise MapsimError(f"data hold class id {int(grids.max())}, but the model has {model.n_classes} classes")
    per_sample = []
    for s in range(0, n, batch):
        g = torch.as_tensor(grids[s : s + batch].astype(np.int64), device=model.device)
        lp = model.log_prob_pixels(g)[:, skip_rows:, skip_cols : W - skip_cols]
        per_sample.append((-lp.double()).flatten(1).mean(1).cpu().numpy())
    v = np.concatenate(per_sample)
    mean = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 and np.isfinite(mean) else 0.0
    ln2 = math.log(2.0)
    return Score(mean, se, mean / ln2, se / ln2, n, (H - skip_rows) * (W - 2 * skip_cols), skip_rows, skip_cols)
