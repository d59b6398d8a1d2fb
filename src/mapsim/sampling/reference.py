"""The reference raster sampler: simple and obviously exact.

Pixels are drawn one at a time in raster order. By default each pixel's
logits come from the model evaluated on the smallest canvas crop holding its
causal neighbourhood (exact by the canvas convention of
:mod:`mapsim.models.base`); ``window=False`` instead runs the model on the
whole canvas for every pixel (the naive O((HW)^2) baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mapsim.models.base import MapModel
from mapsim.sampling.common import Boundary, check_beta, draw, uniforms


@dataclass
class SampleResult:
    """Samples and the log-probability of every drawn pixel.

    Attributes
    ----------
    grids : ndarray of uint8, shape (K, H, W)
    log_probs : ndarray of float32, shape (K, H, W)
        Natural log of the probability of each drawn pixel under softmax(beta * logits).
    top : ndarray of int64, shape (K, L, W + 2L)
        The boundary rows used (outside = N_c).
    """

    grids: np.ndarray
    log_probs: np.ndarray
    top: np.ndarray


def prepare(model: MapModel, n_samples: int, height: int, width: int, seed, boundary: Boundary | None,
            u: np.ndarray | None):
    """Uniforms and boundary rows for a run (shared by every sampler)."""
    boundary = boundary or Boundary()
    if u is None:
        u = uniforms(seed, n_samples, height, width)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n_samples, height, width):
        raise ValueError(f"uniforms must have shape {(n_samples, height, width)}, found {u.shape}")
    top = boundary.top_rows(n_samples, model.context_range, width, model.n_classes, seed)
    return u, top


@torch.no_grad()
def sample_reference(model: MapModel, n_samples: int, height: int, width: int, *, seed: int | np.random.Generator = 0,
                     beta: float = 1.0, boundary: Boundary | None = None, u: np.ndarray | None = None,
                     window: bool = True, progress=None, stop_after_rows: int | None = None) -> SampleResult:
    """Generate samples pixel by pixel in raster order.

    Parameters
    ----------
    model : MapModel
    n_samples, height, width : int
        K, H, W.
    seed : int or Generator
        Source of the uniforms U (K, H, W) and of boundary noise.
    beta : float
        Inverse temperature: probabilities are softmax(beta * logits).
    boundary : Boundary, optional
        Default outside.
    u : ndarray (K, H, W), optional
        Explicit uniforms (overrides those from ``seed``).
    window : bool
        Evaluate a minimal crop per pixel (True) or the whole canvas (False).
    progress : callable, optional
        Called with the number of rows finished.
    stop_after_rows : int, optional
        Stop after this many rows (the rest stay 0); for timing the naive sampler.

    Returns
    -------
    SampleResult
    """
    beta = check_beta(beta)
    K, H, W = n_samples, height, width
    L = model.context_range
    u, top = prepare(model, K, H, W, seed, boundary, u)
    dev = model.device
    # undrawn pixels are 0: masked out of every conditional that matters
    canvas = model.make_canvas(torch.zeros((K, H, W), dtype=torch.long, device=dev), torch.as_tensor(top, device=dev))
    logp_out = np.zeros((K, H, W), dtype=np.float32)
    for i in range(H):
        for j in range(W):
            if window:
                crop = canvas[:, i : i + L + 1, j : j + 2 * L + 1]
                logits = model(crop)[:, :, 0, 0]
            else:
                logits = model(canvas)[:, :, i, j]
            logp = torch.log_softmax(beta * logits.double(), dim=1).cpu().numpy()
            k = draw(np.exp(logp), u[:, i, j])
            canvas[:, L + i, L + j] = torch.as_tensor(k, device=dev)
            logp_out[:, i, j] = logp[np.arange(K), k]
        if progress is not None:
            progress(i + 1)
        if stop_after_rows is not None and i + 1 >= stop_after_rows:
            break
    grids = canvas[:, L:, L : L + W].cpu().numpy().astype(np.uint8)
    return SampleResult(grids, logp_out, top)
