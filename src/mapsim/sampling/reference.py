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
from mapsim.sampling.providers import CropProvider, PositionCropProvider, torch_evaluator
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
    offsets : ndarray of float32, shape (K, H, W, 2), or None
        Models with positions: (y, x) of each atom inside its pixel, pixel units in [0, 1),
        NaN where empty; ``log_probs`` then include the position log-density per unit pixel area.
    """

    grids: np.ndarray
    log_probs: np.ndarray
    top: np.ndarray
    offsets: np.ndarray | None = None


def prepare(model, n_samples: int, height: int, width: int, seed, boundary: Boundary | None,
            u: np.ndarray | None, top: np.ndarray | None = None, with_entropy: bool = False):
    """Uniforms and boundary rows for a run (shared by every sampler).

    ``u`` and ``top`` given explicitly take precedence over ``seed`` and
    ``boundary`` (a block of rows of a larger sample, or a worker's samples).

    Returns
    -------
    u : ndarray of float64, shape (K, H, W)
        The class uniforms of the contract (:mod:`mapsim.sampling.rng`), or ``u`` as given.
    top : ndarray of int64, shape (K, L, W + 2L)
    entropy : int
        Only with ``with_entropy``: the integer seed, for the position stream.
    """
    boundary = boundary or Boundary()
    entropy = seed_entropy(seed)  # once: a Generator seed is consumed by this call only
    if u is None:
        u = uniforms(entropy, n_samples, height, width)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n_samples, height, width):
        raise ValueError(f"uniforms must have shape {(n_samples, height, width)}, found {u.shape}")
    L = model.context_range
    if top is None:
        top = boundary.top_rows(n_samples, L, width, model.n_classes, entropy)
    top = np.asarray(top, dtype=np.int64)
    if top.shape != (n_samples, L, width + 2 * L):
        raise ValueError(f"boundary rows must have shape {(n_samples, L, width + 2 * L)}, found {top.shape}")
    return (u, top, entropy) if with_entropy else (u, top)


def has_positions(model) -> bool:
    """Whether ``model`` has a position head (models with ``config.positions``)."""
    return bool(getattr(getattr(model, "config", None), "positions", False))


def offsets_of(positions: np.ndarray | None) -> np.ndarray | None:
    """Sampler positions (K, H, W, 2) float64 (NaN where empty) as dataset offsets (float32)."""
    return None if positions is None else positions.astype(np.float32)


def sample_reference(model, n_samples: int, height: int, width: int, *, seed: int | np.random.Generator = 0,
                     beta: float = 1.0, boundary: Boundary | None = None, u: np.ndarray | None = None,
                     top: np.ndarray | None = None, window: bool = True, progress=None,
                     stop_after_rows: int | None = None, threads: int | None = None,
                     v: np.ndarray | None = None, top_offsets: np.ndarray | None = None) -> SampleResult:
    """Generate samples pixel by pixel in raster order.

    Parameters
    ----------
    model : MapModel
    n_samples, height, width : int
        K, H, W.
    seed : int or Generator
        Source of the uniforms U (K, H, W), of boundary noise and (models with positions) of the
        position uniforms V (K, H, W, 2) (stream ``POSITION``).
    beta : float
        Inverse temperature: probabilities are softmax(beta * logits).
    boundary : Boundary, optional
        Default outside.
    u : ndarray (K, H, W), optional
        Explicit uniforms (overrides those from ``seed``).
    top : ndarray of int (K, L, W + 2L), optional
        Explicit canvas rows above the sample (overrides ``boundary``).
    window : bool
        Evaluate a minimal crop per pixel (True) or the whole canvas (False).
    progress : callable, optional
        Called with the number of rows finished.
    stop_after_rows : int, optional
        Stop after this many rows (the rest stay 0); for timing the naive sampler.
    threads : int, optional
        Accepted for a common signature; the model's own threading applies.
    v : ndarray (K, H, W, 2), optional
        Models with positions: explicit position uniforms (overrides those from ``seed``).
    top_offsets : ndarray (K, L, W + 2L, 2), optional
        Models with positions: positions of the atoms in ``top`` (NaN where none); default at
        their pixel centres.

    Returns
    -------
    SampleResult
    """
    beta = check_beta(beta)
    u, top, entropy = prepare(model, n_samples, height, width, seed, boundary, u, top, with_entropy=True)
    if has_positions(model):
        if not window:
            raise ValueError("window=False (full-canvas evaluation) is not implemented for models with positions")
        provider = PositionCropProvider(model, top, mode="pixel", top_offsets=top_offsets)
    else:
        provider = CropProvider(torch_evaluator(model), model.n_classes, model.context_range, top,
                                mode="pixel" if window else "full")
    res = run(provider, raster_schedule((height, width)), u, beta=beta, progress=progress,
              stop_after_slabs=stop_after_rows, position_seed=entropy, v=v)
    return SampleResult(res.classes.astype(np.uint8), res.log_probs.astype(np.float32), top,
                        offsets_of(res.positions))
