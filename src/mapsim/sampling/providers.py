"""Conditional providers for 2D models that follow the canvas convention.

A provider keeps the canvas (K, H + L, W + 2L) of class ids (outside = N_c,
see :mod:`mapsim.models.base`), gives the logits of the points of a step and
writes the drawn classes into the canvas.  The model is reached through an
*evaluator*: a function from an integer canvas (B, h + L, w + 2L) to logits
(B, N_c, h, w) as a NumPy array; :func:`torch_evaluator` wraps a MAP model,
and the Markov-chain tools pass NumPy conditionals directly.

Three ways to evaluate, so that each checks the others:

``pixel``  the smallest crop holding one pixel's causal neighbourhood, sliced
           out of the canvas, one pixel at a time (the reference sampler);
``full``   the whole canvas, once per pixel (the naive baseline; checks the crop);
``batch``  the crops of all the step's pixels gathered into one batch (the
           front sampler: one model call per step, any device).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Evaluator = Callable[[np.ndarray], np.ndarray]


def torch_evaluator(model) -> Evaluator:
    """Evaluate a MAP model on NumPy canvases (no gradients; logits as float64)."""
    import torch

    dev = model.device

    def evaluate(canvas: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(canvas, dtype=torch.long, device=dev)).double().cpu().numpy()

    return evaluate


class CropProvider:
    """Logits of canvas pixels from a model evaluated on canvas crops.

    Parameters
    ----------
    evaluate : callable
        Canvas (B, h + L, w + 2L) -> logits (B, N_c, h, w).
    n_classes : int
        N_c (the outside class is N_c).
    context_range : int
        L.
    top : ndarray of int, shape (K, L, W + 2L)
        Rows above the sample.
    left : ndarray of int, shape (K, H, L), optional
        Columns left of the sample (default outside): a 1D chain's initial context.
    mode : {"pixel", "full", "batch"}
        See the module docstring.
    """

    def __init__(self, evaluate: Evaluator, n_classes: int, context_range: int, top: np.ndarray,
                 left: np.ndarray | None = None, mode: str = "pixel") -> None:
        if mode not in ("pixel", "full", "batch"):
            raise ValueError(f"mode must be pixel, full or batch, found {mode!r}")
        self.evaluate = evaluate
        self.n_classes = int(n_classes)
        self.L = int(context_range)
        self.top = np.asarray(top)
        self.left = left
        self.mode = mode
        self.canvas: np.ndarray | None = None

    def start(self, n_samples: int, shape: tuple[int, ...]) -> None:
        H, W = shape
        L = self.L
        c = np.full((n_samples, H + L, W + 2 * L), self.n_classes, dtype=np.int64)
        if L:
            c[:, :L] = self.top
        if self.left is not None and L:
            c[:, L:, :L] = self.left
        c[:, L:, L : L + W] = 0  # undrawn pixels: never in a drawn pixel's causal context
        self.canvas = c

    def logits(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        rows, cols = index
        L, c = self.L, self.canvas
        K, n = c.shape[0], rows.size
        if self.mode == "batch":
            rr = rows.reshape(n, 1, 1) + np.arange(L + 1).reshape(1, L + 1, 1)
            cc = cols.reshape(n, 1, 1) + np.arange(2 * L + 1).reshape(1, 1, 2 * L + 1)
            crops = c[:, rr, cc].reshape(K * n, L + 1, 2 * L + 1)
            return self.evaluate(crops)[:, :, 0, 0].reshape(K, n, -1)
        out = np.empty((K, n, self.n_classes))
        for q in range(n):
            i, j = int(rows[q]), int(cols[q])
            if self.mode == "pixel":
                out[:, q] = self.evaluate(c[:, i : i + L + 1, j : j + 2 * L + 1])[:, :, 0, 0]
            else:
                out[:, q] = self.evaluate(c)[:, :, i, j]
        return out

    def commit(self, index: tuple[np.ndarray, ...], classes: np.ndarray) -> None:
        rows, cols = index
        self.canvas[:, rows + self.L, cols + self.L] = classes

    def grids(self) -> np.ndarray:
        """The sample part of the canvas, (K, H, W) int64."""
        L = self.L
        W = self.canvas.shape[2] - 2 * L
        return self.canvas[:, L:, L : L + W]
