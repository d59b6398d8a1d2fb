"""Sampling 3D MAP models (volumes) through the sampler core.

A volume (D, H, W) is drawn voxel by voxel in raster order (plane, row,
column) or along the 3D front schedule of :mod:`mapsim.sampling.core`
(voxel (z, y, x) at step x + (L + 1) y + (L + 1)^2 z: a plane-wide
anti-diagonal front of voxels whose causal box is complete), with the
uniforms contract of :mod:`mapsim.sampling.rng` (one line per (sample, plane,
row)) and the one draw rule.  The model is evaluated on minimal canvas crops
(the 3D canvas convention of :mod:`mapsim.models.pixelcnn3d`): one voxel at a
time (``pixel``, the reference), the whole canvas per voxel (``full``, to
check the crop) or all voxels of a front step in one batch (``batch``, any
model, any device); the 3D Gated PixelCNN on the CPU has a cached kernel that
computes every layer once per voxel (``cached``,
:mod:`mapsim.sampling.pixelcnn3d_fast`, the default of :func:`generate_volume`).
"""

from __future__ import annotations

import numpy as np

from mapsim.errors import MapsimError
from mapsim.sampling.common import check_beta
from mapsim.sampling.core import front_schedule, raster_schedule, run
from mapsim.sampling.providers import CropProvider, torch_evaluator
from mapsim.sampling.reference import SampleResult
from mapsim.sampling.rng import seed_entropy, uniforms

EVALUATIONS = ("pixel", "full", "batch", "cached")


def outside_planes(model, n_samples: int, height: int, width: int) -> np.ndarray:
    """The default boundary: L planes of the outside class, (K, L, H + 2L, W + 2L)."""
    L = model.context_range
    return np.full((n_samples, L, height + 2 * L, width + 2 * L), model.n_classes, dtype=np.int64)


def volume_inputs(model, n_samples: int, shape: tuple[int, int, int], seed, beta: float, u: np.ndarray | None,
                  top: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray]:
    """Checked beta, uniforms (K, D, H, W) and boundary planes (K, L, H + 2L, W + 2L) of a volume run."""
    if getattr(model, "ndim", 2) != 3:
        raise MapsimError(f"a {getattr(model, 'ndim', 2)}D model ({model.kind}) cannot generate volumes")
    beta = check_beta(beta)
    K = n_samples
    if u is None:
        u = uniforms(seed_entropy(seed), K, *shape)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (K,) + tuple(shape):
        raise ValueError(f"uniforms must have shape {(K,) + tuple(shape)}, found {u.shape}")
    top = outside_planes(model, K, shape[1], shape[2]) if top is None else np.asarray(top, dtype=np.int64)
    L = model.context_range
    if top.shape != (K, L, shape[1] + 2 * L, shape[2] + 2 * L):
        raise ValueError(f"boundary planes must have shape {(K, L, shape[1] + 2 * L, shape[2] + 2 * L)}, "
                         f"found {top.shape}")
    return beta, u, top


def default_evaluation(model) -> str:
    """The fastest exact path for ``model``: ``cached`` for a 3D Gated PixelCNN on the CPU, else ``batch``."""
    cpu = getattr(getattr(model, "device", None), "type", "cpu") == "cpu"
    return "cached" if getattr(model, "kind", None) == "pixelcnn3d" and cpu else "batch"


def sample_volume(model, n_samples: int, depth: int, height: int, width: int, *, seed=0, beta: float = 1.0,
                  u: np.ndarray | None = None, top: np.ndarray | None = None, evaluation: str = "batch",
                  progress=None, threads: int | None = None) -> SampleResult:
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
    evaluation : {"pixel", "full", "batch", "cached"}
        ``pixel`` and ``full`` draw in raster order (the reference); ``batch``
        draws every ready voxel of a front step at once (same samples);
        ``cached`` is the cached numba kernel of :mod:`mapsim.sampling.pixelcnn3d_fast`
        (3D Gated PixelCNN on the CPU only; the same samples, float32 models up to rounding).
    progress : callable, optional
        Called with the number of complete planes.
    threads : int, optional
        Threads of the ``cached`` kernel (default: numba's thread count).

    Returns
    -------
    SampleResult
        ``grids`` (K, D, H, W) uint8, ``log_probs`` (K, D, H, W) float32, ``top``.
    """
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, found {evaluation!r}")
    beta, u, top = volume_inputs(model, n_samples, (depth, height, width), seed, beta, u, top)
    K, shape = n_samples, (depth, height, width)
    if evaluation == "cached":
        from mapsim.sampling.pixelcnn3d_fast import sample_pixelcnn3d_cached

        return sample_pixelcnn3d_cached(model, K, *shape, u=u, top=top, beta=beta, progress=progress,
                                        threads=threads)
    provider = CropProvider(torch_evaluator(model), model.n_classes, model.context_range, top, mode=evaluation)
    schedule = front_schedule(shape, model.context_range) if evaluation == "batch" else raster_schedule(shape)
    res = run(provider, schedule, u, beta=beta, progress=progress)
    return SampleResult(res.classes.astype(np.uint8), res.log_probs.astype(np.float32), top)


VOLUME_SAMPLERS = ("fast", "front", "reference")
"""Samplers of :func:`generate_volume`."""


def generate_volume(model, n_samples: int, depth: int, height: int, width: int, *, seed: int = 0,
                    beta: float = 1.0, sampler: str = "fast", progress=None, threads: int | None = None):
    """Sample volumes from a 3D model as a dataset (grids (K, D, H, W) uint8, extra ``log_probs``).

    ``sampler``: ``fast`` (:func:`default_evaluation`: the cached kernel for a 3D Gated
    PixelCNN on the CPU, else the front), ``front`` (the 3D front, one batched model call
    per step) or ``reference`` (voxel by voxel); the same samples for the same seed.
    """
    from mapsim import __version__
    from mapsim.lattice import Dataset
    from mapsim.sampling.generate import check_request, model_classes
    from mapsim.sampling.rng import UNIFORMS_VERSION

    K, H, W, beta = check_request(n_samples, height, width, beta)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth <= 0:
        raise MapsimError(f"depth must be a positive integer, found {depth!r}")
    if sampler not in VOLUME_SAMPLERS:
        raise MapsimError(f"unknown sampler {sampler!r} for volumes; known: {', '.join(VOLUME_SAMPLERS)}")
    evaluation = {"fast": default_evaluation(model), "front": "batch", "reference": "pixel"}[sampler]
    D, G = int(depth), volume_group(model, H, W)
    grids = np.empty((K, D, H, W), np.uint8)
    log_probs = np.empty((K, D, H, W), np.float32)
    entropy = seed_entropy(seed)
    for k0 in range(0, K, G):
        k1 = min(K, k0 + G)
        done = (lambda planes, base=(k0 // G) * D: progress(base + planes)) if progress is not None else None
        u = uniforms(entropy, k1 - k0, D, H, W, first_sample=k0)
        res = sample_volume(model, k1 - k0, D, H, W, u=u, beta=beta, evaluation=evaluation, progress=done,
                            threads=threads)
        grids[k0:k1], log_probs[k0:k1] = res.grids, res.log_probs
    metadata = {"generator": "mapsim generate", "mapsim_version": __version__, "context_range": model.context_range,
                "beta": beta, "boundary": "outside", "seed": int(seed), "sampler": sampler,
                "uniforms": UNIFORMS_VERSION, "n_samples": K, "depth": D, "height": H, "width": W,
                "samples_per_group": G, "periodic": [False, False, False], "model": model.describe()}
    return Dataset(grids, model_classes(model), metadata, {"log_probs": log_probs})


GROUP_BYTES = 1 << 30
"""Cache memory of the cached 3D kernel per group of volumes drawn together (:func:`volume_group`)."""


def volume_group(model, height: int, width: int) -> int:
    """Volumes drawn together by :func:`generate_volume`: as many as keep the cached kernel's caches
    ((H + 2L)(W + 2L) F ((p + 3)(n - 1) + 4n) values per volume) within :data:`GROUP_BYTES` (at least one).

    Part of the output contract, like the 2D group: float32 BLAS rounds a lane's row depending on how many
    rows it multiplies together, so the same seed gives the same bytes for the same group.
    """
    if getattr(model, "kind", None) != "pixelcnn3d":
        return 1 << 20  # no caches: one group
    cfg = model.config
    L, n, p = model.context_range, cfg.layers, model.p
    per_volume = (height + 2 * L) * (width + 2 * L) * cfg.filters * ((p + 3) * (n - 1) + 4 * n)
    itemsize = next(model.parameters()).element_size()  # the kernel computes in the model's precision
    return max(1, GROUP_BYTES // (per_volume * itemsize))
