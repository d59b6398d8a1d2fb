"""The one interface every MAP model implements, and the canvas convention.

Canvas convention
-----------------
A model with ``n_classes`` real classes (ids ``0 .. N_c-1``) reads inputs with one
extra class, **outside the sample**, id ``N_c``.  A sample of shape (H, W) is
placed on a *canvas* of shape (H + L, W + 2L), where L = ``context_range``:
L rows above the sample (the boundary: outside by default) and L columns on
each side (always outside).  Sample pixel (i, j) sits at canvas[L + i, L + j].

``model(canvas)`` returns the conditional logits of every sample pixel,
shape (B, N_c, H, W).  The logits of pixel (i, j) depend only on its causal
neighbourhood of range L: canvas rows i .. i+L-1 at columns j .. j+2L (the L
rows above), and canvas row i+L at columns j .. j+L-1 (the pixels to its left).
Hence evaluating any crop of the canvas that contains a pixel's neighbourhood
gives that pixel the same logits; every sampler relies on this.

Probabilities are softmax(beta * logits) over the N_c real classes. A logit of
-inf means probability 0 (hard constraints of analytic models).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mapsim.errors import MapsimError


MAX_CLASSES = 255
"""Most classes a model may have: class ids 0..N_c-1 and the outside class N_c fit in uint8."""


def causal_offsets(context_range: int) -> list[tuple[int, int]]:
    """Offsets (di, dj) of the causal neighbourhood of range L, in raster order.

    Rows -L .. -1 with columns -L .. L, then row 0 with columns -L .. -1;
    ``len(result) == 2 * L * (L + 1)``.
    """
    L = int(context_range)
    offs = [(di, dj) for di in range(-L, 0) for dj in range(-L, L + 1)]
    offs += [(0, dj) for dj in range(-L, 0)]
    return offs


class MapModel(nn.Module):
    """Base class of MAP models: conditionals p(X_ij = theta | causal context).

    Subclasses set ``kind`` (the checkpoint tag), keep their typed config
    dataclass in ``self.config`` and implement :meth:`forward` on canvases.
    """

    kind: ClassVar[str] = "abstract"
    config_class: ClassVar[type] = object
    ndim: ClassVar[int] = 2
    """Spatial dimensions of the samples (2: (H, W); 3: (D, H, W))."""

    def __init__(self, n_classes: int, context_range: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise MapsimError(f"n_classes must be at least 2, found {n_classes}")
        if n_classes > MAX_CLASSES:
            # grids and canvases are uint8 with the outside class N_c among the values
            raise MapsimError(f"n_classes must be at most {MAX_CLASSES} (grids are uint8 and the outside class "
                              f"takes id N_c), found {n_classes}")
        if context_range < 0:
            raise MapsimError(f"context_range must be non-negative, found {context_range}")
        self.n_classes = int(n_classes)
        self.context_range = int(context_range)
        self.config: Any = None

    @property
    def outside_class(self) -> int:
        """Input class id meaning "outside the sample" (= n_classes)."""
        return self.n_classes

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Conditional logits of every sample pixel of a canvas.

        Parameters
        ----------
        canvas : LongTensor, shape (B, H + L, W + 2L)
            Class ids in 0 .. N_c (N_c = outside).

        Returns
        -------
        Tensor, shape (B, N_c, H, W)
        """
        raise NotImplementedError

    # -- conveniences shared by every model ---------------------------------
    def one_hot(self, canvas: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One-hot encode a canvas over N_c + 1 input classes: (B, N_c+1, Hc, Wc)."""
        dtype = dtype or self.dtype
        return torch.nn.functional.one_hot(canvas.long(), self.n_classes + 1).permute(0, 3, 1, 2).to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def make_canvas(self, grids: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """Place grids on a canvas with outside sides and the given top boundary.

        Parameters
        ----------
        grids : LongTensor, shape (B, H, W)
        top : LongTensor, shape (B, L, W + 2L), optional
            Boundary rows above the sample; default all outside.

        Returns
        -------
        LongTensor, shape (B, H + L, W + 2L)
        """
        L = self.context_range
        B, H, W = grids.shape
        canvas = torch.full((B, H + L, W + 2 * L), self.outside_class, dtype=torch.long, device=grids.device)
        canvas[:, L:, L : L + W] = grids
        if top is not None and L > 0:
            if tuple(top.shape) != (B, L, W + 2 * L):
                raise MapsimError(f"boundary rows must have shape {(B, L, W + 2 * L)}, found {tuple(top.shape)}")
            canvas[:, :L, :] = top.to(canvas.device)
        return canvas

    def logits(self, grids: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced conditional logits of every pixel, (B, N_c, H, W)."""
        return self(self.make_canvas(grids.long(), top))

    def log_prob_pixels(self, grids: torch.Tensor, beta: float = 1.0, top: torch.Tensor | None = None) -> torch.Tensor:
        """log p(X_ij = x_ij | context) under softmax(beta * logits), shape (B, H, W)."""
        logp = torch.log_softmax(beta * self.logits(grids, top), dim=1)
        return logp.gather(1, grids.long().unsqueeze(1)).squeeze(1)

    def log_likelihood(self, grids: torch.Tensor, beta: float = 1.0, top: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample log-likelihood (nats), shape (B,)."""
        return self.log_prob_pixels(grids, beta, top).flatten(1).sum(1)

    def describe(self) -> dict[str, Any]:
        """Kind, class count, L_c and the config, for metadata and reports."""
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {}
        return {"kind": self.kind, "n_classes": self.n_classes, "context_range": self.context_range, "config": cfg}


def to_long_tensor(grids: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Grids (B, H, W) of class ids as a LongTensor on ``device``."""
    if isinstance(grids, torch.Tensor):
        return grids.long().to(device) if device is not None else grids.long()
    return torch.as_tensor(np.asarray(grids, dtype=np.int64), device=device)


MODEL_KINDS: dict[str, type[MapModel]] = {}
"""Model kind -> class, filled by :func:`register_model` as each model module is imported.

It lives here rather than in :mod:`mapsim.models.io` so that the model modules, which
register themselves, and io, which imports them by name on demand, do not import each
other.
"""


def register_model(cls: type[MapModel]) -> type[MapModel]:
    """Class decorator: make a model kind loadable from model files."""
    MODEL_KINDS[cls.kind] = cls
    return cls
