"""Fast exact sampling: every pixel whose context is complete is drawn at once.

Two paths, both exact with respect to the model's own conditionals (the canvas
convention of :mod:`mapsim.models.base`) and driven by the same uniforms as the
reference sampler, so they give identical samples for the same seed:

* :func:`sample_front` works for every model: at each step of the anti-diagonal
  front (:mod:`mapsim.sampling.front`) it evaluates the model once on the batch
  of minimal canvas crops of all ready pixels of all samples (CPU or CUDA).
* for the Gated PixelCNN on the CPU, :mod:`mapsim.sampling.pixelcnn_fast` caches
  every layer's activations and computes each layer only where it became
  computable (numba), which is far faster.

:func:`sample_fast` picks the best path.
"""

from __future__ import annotations

import numpy as np

from mapsim.sampling.common import Boundary, check_beta
from mapsim.sampling.core import front_schedule, run
from mapsim.sampling.providers import CropProvider, PositionCropProvider, torch_evaluator
from mapsim.sampling.reference import SampleResult, has_positions, offsets_of, prepare


def sample_front(model, n_samples: int, height: int, width: int, *, seed=0, beta: float = 1.0,
                 boundary: Boundary | None = None, u: np.ndarray | None = None, top: np.ndarray | None = None,
                 progress=None, threads: int | None = None, v: np.ndarray | None = None,
                 top_offsets: np.ndarray | None = None) -> SampleResult:
    """Windowed evaluation on the anti-diagonal front (any model kind, any device).

    The sampler core with the front schedule and one batched model call per
    step on the crops of all ready pixels of all samples.  Parameters and
    returns as :func:`mapsim.sampling.reference.sample_reference` (``progress``
    is called with the number of rows finished).
    """
    beta = check_beta(beta)
    u, top, entropy = prepare(model, n_samples, height, width, seed, boundary, u, top, with_entropy=True)
    if has_positions(model):
        provider = PositionCropProvider(model, top, mode="batch", top_offsets=top_offsets)
    else:
        provider = CropProvider(torch_evaluator(model), model.n_classes, model.context_range, top, mode="batch")
    res = run(provider, front_schedule((height, width), model.context_range), u, beta=beta, progress=progress,
              position_seed=entropy, v=v)
    return SampleResult(res.classes.astype(np.uint8), res.log_probs.astype(np.float32), top,
                        offsets_of(res.positions))


def sample_fast(model, n_samples: int, height: int, width: int, *, seed=0, beta: float = 1.0,
                boundary: Boundary | None = None, u: np.ndarray | None = None, top: np.ndarray | None = None,
                progress=None, threads: int | None = None, v: np.ndarray | None = None,
                top_offsets: np.ndarray | None = None) -> SampleResult:
    """Fast exact sampling with the best available path for ``model``.

    The cached numba path is used for a Gated PixelCNN on the CPU; every other
    case uses :func:`sample_front`.
    """
    if getattr(model, "kind", None) == "pixelcnn" and model.device.type == "cpu":
        from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached

        return sample_pixelcnn_cached(model, n_samples, height, width, seed=seed, beta=beta, boundary=boundary,
                                      u=u, top=top, progress=progress, threads=threads, v=v,
                                      top_offsets=top_offsets)
    return sample_front(model, n_samples, height, width, seed=seed, beta=beta, boundary=boundary, u=u, top=top,
                        progress=progress, v=v, top_offsets=top_offsets)
