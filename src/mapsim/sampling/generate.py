"""Generate a dataset from any MAP model: the one place where the sampler is chosen.

Every sampler has the signature of :func:`mapsim.sampling.reference.sample_reference`::

    sampler(model, n_samples, height, width, *, seed, beta, boundary, progress) -> SampleResult

and is listed in :data:`SAMPLERS` as ``"module:function"`` (imported on demand).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from mapsim import __version__
from mapsim.errors import MapsimError
from mapsim.lattice import MC_CLASSES, Dataset
from mapsim.sampling.common import Boundary, check_beta
from mapsim.sampling.rng import UNIFORMS_VERSION

if TYPE_CHECKING:  # importing torch here would slow down `mapsim --help`
    from mapsim.models.base import MapModel

SAMPLERS: dict[str, str] = {
    "fast": "mapsim.sampling.fast:sample_fast",
    "reference": "mapsim.sampling.reference:sample_reference",
}
"""Sampler name -> "module:function"."""

DEFAULT_SAMPLER = "fast"


def get_sampler(name: str) -> Callable:
    """The sampler function registered under ``name``."""
    if name not in SAMPLERS:
        raise MapsimError(f"unknown sampler {name!r}; known samplers: {sorted(SAMPLERS)}")
    module, func = SAMPLERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def model_classes(model: "MapModel") -> tuple[str, ...]:
    """Class names of a model: from its config, else empty/particle/solvent, else class<k>."""
    names = getattr(model.config, "classes", None)
    if names is not None and len(names) == model.n_classes:
        return tuple(str(c) for c in names)
    if model.n_classes <= len(MC_CLASSES):
        return MC_CLASSES[: model.n_classes]
    return tuple(f"class{k}" for k in range(model.n_classes))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise MapsimError(f"{name} must be a positive integer, found {value!r}")
    return int(value)


def generate(model: "MapModel", n_samples: int, height: int, width: int, *, seed: int = 0, beta: float = 1.0,
             boundary: Boundary | None = None, sampler: str = DEFAULT_SAMPLER, progress: Callable | None = None,
             boundary_spec: str | None = None) -> Dataset:
    """Sample ``n_samples`` grids of ``height`` x ``width`` from ``model`` as a dataset.

    Parameters
    ----------
    model : MapModel
    n_samples, height, width : int
        K, H, W (positive).
    seed : int
        Seed of the uniforms U (K, H, W) (and of boundary noise).
    beta : float
        Inverse temperature (> 0).
    boundary : Boundary, optional
        Rows above the sample; default outside.
    sampler : str
        A key of :data:`SAMPLERS`.
    progress : callable, optional
        Called with the number of rows finished.
    boundary_spec : str, optional
        How the boundary was given (CLI syntax), recorded in the metadata
        instead of ``boundary.describe()``.

    Returns
    -------
    Dataset
        ``grids`` (K, H, W) uint8, the model's class names, extra ``log_probs``
        (K, H, W) float32 (natural log of each drawn pixel's probability under
        softmax(beta * logits)), and metadata with ``context_range``, ``beta``,
        ``boundary``, ``seed``, ``sampler``, ``uniforms`` (the version of the
        uniforms contract, :mod:`mapsim.sampling.rng`) and ``model``
        (``model.describe()``).
    """
    K, H, W = _positive("n_samples", n_samples), _positive("height", height), _positive("width", width)
    beta = check_beta(beta)
    boundary = boundary or Boundary()
    sample = get_sampler(sampler)
    result = sample(model, K, H, W, seed=seed, beta=beta, boundary=boundary, progress=progress)
    metadata = {
        "generator": "mapsim generate",
        "mapsim_version": __version__,
        "context_range": model.context_range,
        "beta": beta,
        "boundary": boundary_spec if boundary_spec is not None else boundary.describe(),
        "seed": seed if isinstance(seed, (int, np.integer)) else None,
        "sampler": sampler,
        "uniforms": UNIFORMS_VERSION,
        "n_samples": K,
        "height": H,
        "width": W,
        "model": model.describe(),
    }
    return Dataset(result.grids.astype(np.uint8), model_classes(model), metadata,
                   {"log_probs": result.log_probs.astype(np.float32)})
