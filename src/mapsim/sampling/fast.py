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
import torch

from mapsim.models.base import MapModel
from mapsim.sampling.common import Boundary, check_beta, draw
from mapsim.sampling.front import front_rows, n_steps, rows_done
from mapsim.sampling.reference import SampleResult, prepare


@torch.no_grad()
def sample_front(model: MapModel, n_samples: int, height: int, width: int, *, seed=0, beta: float = 1.0,
                 boundary: Boundary | None = None, u: np.ndarray | None = None, progress=None) -> SampleResult:
    """Windowed evaluation on the anti-diagonal front (any model kind, any device).

    Parameters and returns as :func:`mapsim.sampling.reference.sample_reference`
    (``progress`` is called with the number of rows finished).
    """
    beta = check_beta(beta)
    K, H, W = n_samples, height, width
    L = model.context_range
    u, top = prepare(model, K, H, W, seed, boundary, u)
    dev = model.device
    # undrawn pixels are 0: masked out of every conditional that matters
    canvas = model.make_canvas(torch.zeros((K, H, W), dtype=torch.long, device=dev), torch.as_tensor(top, device=dev))
    logp_out = np.zeros((K, H, W), dtype=np.float32)
    di = torch.arange(L + 1, device=dev).view(1, L + 1, 1)
    dj = torch.arange(2 * L + 1, device=dev).view(1, 1, 2 * L + 1)
    T = n_steps(H, W, L)
    done = 0
    for t in range(T):
        r0, r1 = front_rows(t, H, W, L)
        rows = np.arange(r0, r1)
        cols = t - (L + 1) * rows
        nr = rows.size
        # crop of pixel (r, c): canvas rows r .. r+L, columns c .. c+2L, for every sample
        rr = torch.as_tensor(rows, device=dev).view(nr, 1, 1) + di
        cc = torch.as_tensor(cols, device=dev).view(nr, 1, 1) + dj
        crops = canvas[:, rr, cc].reshape(K * nr, L + 1, 2 * L + 1)
        logits = model(crops)[:, :, 0, 0]
        logp = torch.log_softmax(beta * logits.double(), dim=1).cpu().numpy()
        uu = u[:, rows, cols].reshape(K * nr)
        k = draw(np.exp(logp), uu)
        chosen = logp[np.arange(K * nr), k].reshape(K, nr)
        k = k.reshape(K, nr)
        canvas[:, torch.as_tensor(rows + L, device=dev), torch.as_tensor(cols + L, device=dev)] = torch.as_tensor(k, device=dev)
        logp_out[:, rows, cols] = chosen
        if progress is not None and rows_done(t, H, W, L) > done:
            done = rows_done(t, H, W, L)
            progress(done)
    grids = canvas[:, L:, L : L + W].cpu().numpy().astype(np.uint8)
    return SampleResult(grids, logp_out, top)


def sample_fast(model: MapModel, n_samples: int, height: int, width: int, *, seed=0, beta: float = 1.0,
                boundary: Boundary | None = None, u: np.ndarray | None = None, progress=None,
                threads: int | None = None) -> SampleResult:
    """Fast exact sampling with the best available path for ``model``.

    The cached numba path is used for a Gated PixelCNN on the CPU; every other
    case uses :func:`sample_front`.
    """
    if getattr(model, "kind", None) == "pixelcnn" and model.device.type == "cpu":
        from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached

        return sample_pixelcnn_cached(model, n_samples, height, width, seed=seed, beta=beta, boundary=boundary,
                                      u=u, progress=progress, threads=threads)
    return sample_front(model, n_samples, height, width, seed=seed, beta=beta, boundary=boundary, u=u,
                        progress=progress)
