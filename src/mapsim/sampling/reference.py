"""The reference raster sampler: simple and obviously exact.

Pixels are drawn one at a time in raster order through the sampler core
(:mod:`mapsim.sampling.core`). By default each pixel's logits come from the
model evaluated on the smallest canvas crop holding its causal neighbourhood
(exact by the canvas convention of :mod:`mapsim.models.base`);
``window=False`` instead runs the model on the whole canvas for every pixel
(the naive O((HW)^2) baseline, kept to check the crop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapsim.sampling.common import Boundary, check_beta
from mapsim.sampling.core import raster_schedule, run
from mapsim.sampling.providers import CropProvider, torch_evaluator
from mapsim.sampling.rng import seed_entropy, uniforms


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


def prepare(model, n_samples: int, height: int, width: int, seed, boundary: Boundary | None,
            u: np.ndarray | None):
    """Uniforms and boundary rows for a run (shared by every sampler).

    Returns
    -------
    u : ndarray of float64, shape (K, H, W)
        The class uniforms of the contract (:mod:`mapsim.sampling.rng`), or ``u`` as given.
    top : ndarray of int64, shape (K, L, W + 2L)
    """
    boundary = boundary or Boundary()
    entropy = seed_entropy(seed)  # once: a Generator seed is consumed by this call only
    if u is None:
        u = uniforms(entropy, n_samples, height, width)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n_samples, height, width):
        raise ValueError(f"uniforms must have shape {(n_samples, height, width)}, found {u.shape}")
    top = boundary.top_rows(n_samples, model.context_range, width, model.n_classes, entropy)
    return u, top


def sample_reference(model, n_samples: int, height: int, width: int, *, seed: int | np.random.Generator = 0,
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
    u, top = prepare(model, n_samples, height, width, seed, boundary, u)
    provider = CropProvider(torch_evaluator(model), model.n_classes, model.context_range, top,
                            mode="pixel" if window else "full")
    res = run(provider, raster_schedule((height, width)), u, beta=beta, progress=progress,
              stop_after_slabs=stop_after_rows)
    return SampleResult(res.classes.astype(np.uint8), res.log_probs.astype(np.float32), top)
