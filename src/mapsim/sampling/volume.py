"""Sampling 3D MAP models (volumes) through the sampler core.

A volume (D, H, W) is drawn voxel by voxel in raster order (plane, row,
column) or along the 3D front schedule of :mod:`mapsim.sampling.core`
(voxel (z, y, x) at step x + (L + 1) y + (L + 1)^2 z: a plane-wide
anti-diagonal front of voxels whose causal box is complete), with the
uniforms contract of :mod:`mapsim.sampling.rng` (one line per (sample, plane,
row)) and the one draw rule.  The model is evaluated on minimal canvas crops
(the 3D canvas convention of :mod:`mapsim.models.pixelcnn3d`): one voxel at a
time (``pixel``, the reference), the whole canvas per voxel (``full``, to
check the crop) or all voxels of a front step in one batch (``batch``, fast).
"""

from __future__ import annotations

import numpy as np

from mapsim.errors import MapsimError
from mapsim.sampling.common import check_beta
from mapsim.sampling.core import front_schedule, raster_schedule, run
from mapsim.sampling.providers import CropProvider, torch_evaluator
from mapsim.sampling.reference import SampleResult
from mapsim.sampling.rng import seed_entropy, uniforms

EVALUATIONS = ("pixel", "full", "batch")


def outside_planes(model, n_samples: int, height: int, width: int) -> np.ndarray:
    """The default boundary: L planes of the outside class, (K, L, H + 2L, W + 2L)."""
    L = model.context_range
    return np.full((n_samples, L, height + 2 * L, width + 2 * L), model.n_classes, dtype=np.int64)


def sample_volume(model, n_samples: int, depth: int, height: int, width: int, *, seed=0, beta: float = 1.0,
                  u: np.ndarray | None = None, top: np.ndarray | None = None, evaluation: str = "batch",
                  progress=None) -> SampleResult:
    """Generate volumes from a 3D MAP model.

    Parameters
    ----------
    model : MapModel with ``ndim == 3``
    n_samples, depth, height, width : int
        K, D, H, W.
    seed : int or Generator
        Seed of the uniforms U (K, D, H, W).
    beta : float
        Inverse temperature.
    u : ndarray (K, D, H, W), optional
        Explicit uniforms.
    top : ndarray of int (K, L, H + 2L, W + 2L), optional
        The planes before the volume (default outside).
    evaluation : {"pixel", "full", "batch"}
        ``pixel`` and ``full`` draw in raster order (the reference); ``batch``
        draws every ready voxel of a front step at once (same samples).
    progress : callable, optional
        Called with the number of complete planes.

    Returns
    -------
    SampleResult
        ``grids`` (K, D, H, W) uint8, ``log_probs`` (K, D, H, W) float32, ``top``.
    """
    if getattr(model, "ndim", 2) != 3:
        raise MapsimError(f"a {getattr(model, 'ndim', 2)}D model ({model.kind}) cannot generate volumes")
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, found {evaluation!r}")
    beta = check_beta(beta)
    K, shape = n_samples, (depth, height, width)
    if u is None:
        u = uniforms(seed_entropy(seed), K, *shape)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (K,) + shape:
        raise ValueError(f"uniforms must have shape {(K,) + shape}, found {u.shape}")
    top = outside_planes(model, K, height, width) if top is None else np.asarray(top, dtype=np.int64)
    provider = CropProvider(torch_evaluator(model), model.n_classes, model.context_range, top, mode=evaluation)
    schedule = front_schedule(shape, model.context_range) if evaluation == "batch" else raster_schedule(shape)
    res = run(provider, schedule, u, beta=beta, progress=progress)
    return SampleResult(res.classes.astype(np.uint8), res.log_probs.astype(np.float32), top)


def generate_volume(model, n_samples: int, depth: int, height: int, width: int, *, seed: int = 0,
                    beta: float = 1.0, sampler: str = "fast", progress=None):
    """Sample volumes from a 3D model as a dataset (grids (K, D, H, W) uint8, extra ``log_probs``).

    ``sampler``: ``fast`` (the 3D front, one batched model call per step) or
    ``reference`` (voxel by voxel); the same samples for the same seed.
    """
    from mapsim import __version__
    from mapsim.lattice import Dataset
    from mapsim.sampling.generate import check_request, model_classes
    from mapsim.sampling.rng import UNIFORMS_VERSION

    K, H, W, beta = check_request(n_samples, height, width, beta)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth <= 0:
        raise MapsimError(f"depth must be a positive integer, found {depth!r}")
    if sampler not in ("fast", "reference"):
        raise MapsimError(f"unknown sampler {sampler!r} for volumes; known: fast, reference")
    res = sample_volume(model, K, int(depth), H, W, seed=seed, beta=beta,
                        evaluation="batch" if sampler == "fast" else "pixel", progress=progress)
    metadata = {"generator": "mapsim generate", "mapsim_version": __version__, "context_range": model.context_range,
                "beta": beta, "boundary": "outside", "seed": int(seed), "sampler": sampler,
                "uniforms": UNIFORMS_VERSION, "n_samples": K, "depth": int(depth), "height": H, "width": W,
                "periodic": [False, False, False], "model": model.describe()}
    return Dataset(res.grids, model_classes(model), metadata, {"log_probs": res.log_probs})
