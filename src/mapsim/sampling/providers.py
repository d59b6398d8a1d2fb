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

:class:`PositionCropProvider` adds the continuous head of a model with
positions (:mod:`mapsim.models.pixelcnn`): it keeps the offset channels beside
the canvas and draws each occupied pixel's position, y then x given y, with
:func:`mapsim.sampling.draw.draw_positions`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mapsim.sampling.draw import draw_positions, draw_positions_joint

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
    top : ndarray of int, shape (K, L, W + 2L) (3D: (K, L, H + 2L, W + 2L))
        Rows (planes) before the sample.
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
        L = self.L
        # axis 0 (rows in 2D, planes in 3D): L before the sample; every later axis: L on both sides
        c = np.full((n_samples, shape[0] + L) + tuple(n + 2 * L for n in shape[1:]), self.n_classes, dtype=np.int64)
        if L:
            c[:, :L] = self.top
        if self.left is not None and L:
            c[:, L:, :L] = self.left
        c[(slice(None), slice(L, None)) + tuple(slice(L, L + n) for n in shape[1:])] = 0  # undrawn: never read
        self.canvas = c

    def _crop(self, point: tuple[int, ...]) -> tuple[slice, ...]:
        """Canvas slices of the smallest crop holding ``point``'s causal neighbourhood."""
        L = self.L
        return (slice(None), slice(point[0], point[0] + L + 1)) + tuple(slice(i, i + 2 * L + 1) for i in point[1:])

    def logits(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        L, c = self.L, self.canvas
        K, n, d = c.shape[0], index[0].size, len(index)
        tail = (0,) * d
        if self.mode == "batch":
            # index arrays of shape (n, L+1, 2L+1, ..., 2L+1): every crop of the step, gathered at once
            widths = [L + 1] + [2 * L + 1] * (d - 1)
            grid = []
            for a, ix in enumerate(index):
                shape = [1] * (d + 1)
                shape[a + 1] = widths[a]
                grid.append(ix.reshape((n,) + (1,) * d) + np.arange(widths[a]).reshape(shape))
            crops = c[(slice(None),) + tuple(grid)].reshape((K * n,) + tuple(widths))
            return self.evaluate(crops)[(slice(None), slice(None)) + tail].reshape(K, n, -1)
        out = np.empty((K, n, self.n_classes))
        for q in range(n):
            point = tuple(int(ix[q]) for ix in index)
            if self.mode == "pixel":
                out[:, q] = self.evaluate(c[self._crop(point)])[(slice(None), slice(None)) + tail]
            else:
                out[:, q] = self.evaluate(c)[(slice(None), slice(None)) + point]
        return out

    def commit(self, index: tuple[np.ndarray, ...], classes: np.ndarray) -> None:
        self.canvas[(slice(None),) + tuple(ix + self.L for ix in index)] = classes


class PositionCropProvider(CropProvider):
    """:class:`CropProvider` for a model with a position head (``pixel`` and ``batch`` modes).

    The offset channels (K, 2, H + L, W + 2L) travel with the canvas (0 on the boundary,
    the sides and undrawn pixels); :meth:`logits` keeps the trunk features of the step's
    points for :meth:`positions`.

    Parameters
    ----------
    model : GatedPixelCNN
        With ``config.positions``.
    top : ndarray of int, shape (K, L, W + 2L)
    mode : {"pixel", "batch"}
    top_offsets : ndarray of float, shape (K, L, W + 2L, 2), optional
        Positions of the boundary rows' atoms (pixel units, NaN where none); default: atoms at
        their pixel centres (channels 0).  A block of rows of a larger sample passes the rows above.
    """

    def __init__(self, model, top: np.ndarray, mode: str = "pixel", top_offsets: np.ndarray | None = None) -> None:
        if mode not in ("pixel", "batch"):
            raise ValueError(f"mode must be pixel or batch, found {mode!r}")
        super().__init__(self._evaluate, model.n_classes, model.context_range, top, mode=mode)
        self.model = model
        self.offs: np.ndarray | None = None
        self.top_offsets = top_offsets
        self._hidden: list[np.ndarray] = []

    def _evaluate(self, canvas: np.ndarray) -> np.ndarray:
        import torch

        # the offset channels of the same crop were cut by logits() into _crop_offsets
        m = self.model
        with torch.no_grad():
            hidden = m.features(torch.as_tensor(canvas, dtype=torch.long, device=m.device),
                                torch.as_tensor(self._crop_offsets, device=m.device))
            logits = m.out2(hidden)
        # features of the crop's one pixel, for positions(); float64 holds float32 features exactly
        self._hidden.append(hidden[:, :, 0, 0].double().cpu().numpy())
        return logits.double().cpu().numpy()

    def start(self, n_samples: int, shape: tuple[int, ...]) -> None:
        super().start(n_samples, shape)
        self.offs = np.zeros((n_samples, 2) + self.canvas.shape[1:], dtype=np.float64)
        if self.top_offsets is not None and self.L:
            self.offs[:, :, : self.L] = top_offset_channels(self.top_offsets)

    def logits(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        rows, cols = index
        L, K, n = self.L, self.canvas.shape[0], rows.size
        self._hidden = []
        if self.mode == "batch":
            rr = rows.reshape(n, 1, 1) + np.arange(L + 1).reshape(1, L + 1, 1)
            cc = cols.reshape(n, 1, 1) + np.arange(2 * L + 1).reshape(1, 1, 2 * L + 1)
            self._crop_offsets = self.offs[:, :, rr, cc].transpose(0, 2, 1, 3, 4).reshape(K * n, 2, L + 1, 2 * L + 1)
            out = super().logits(index)
            self._step_hidden = self._hidden[0].reshape(K, n, -1)
            return self._joint_terms(out, rows, cols)
        out = np.empty((K, n, self.n_classes))
        hid = []
        for q in range(n):
            i, j = int(rows[q]), int(cols[q])
            self._crop_offsets = self.offs[:, :, i : i + L + 1, j : j + 2 * L + 1]
            out[:, q] = self.evaluate(self.canvas[:, i : i + L + 1, j : j + 2 * L + 1])[:, :, 0, 0]
            hid.append(self._hidden[-1])
        self._step_hidden = np.stack(hid, axis=1)  # (K, n, S)
        return self._joint_terms(out, rows, cols)

    def _joint_terms(self, out: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Class logits (K, n, N_c) plus, for a model with ``joint_pairs``, log Z_c of the occupied
        classes (:meth:`mapsim.models.pixelcnn.GatedPixelCNN.class_log_z`)."""
        import torch

        m = self.model
        if not m.config.joint_pairs:
            return out
        K, n = out.shape[:2]
        dt = m.out2.weight.dtype
        t = lambda a: torch.as_tensor(a, device=m.device)  # noqa: E731
        kk, qq = (a.reshape(-1) for a in np.meshgrid(np.arange(K), np.arange(n), indexing="ij"))
        with torch.no_grad():
            nbrs = m.pair_neighbours(t(self.canvas), t(self.offs).to(dt), t(kk), t(rows[qq] + self.L),
                                     t(cols[qq] + self.L))
            z = m.class_log_z(t(self._step_hidden.reshape(K * n, -1)).to(dt), *nbrs)
        out[:, :, 1:] += z.double().cpu().numpy().reshape(K, n, -1)
        return out

    def positions(self, index: tuple[np.ndarray, ...], classes: np.ndarray, v: np.ndarray):
        """Draw the positions of the step's occupied points, y then x given y.

        Parameters
        ----------
        index : (rows, cols), each int (n,)
        classes : ndarray of int64, shape (K, n)
            Just drawn (and committed).
        v : ndarray of float64, shape (K, n, 2)
            Position uniforms (stream ``POSITION``): v[..., 0] for y, v[..., 1] for x.

        Returns
        -------
        positions : ndarray of float64, shape (K, n, 2)
            (y, x) in pixel units in [0, 1); NaN where the class is empty.
        log_density : ndarray of float64, shape (K, n)
            Per unit pixel area; 0 where empty.
        """
        import torch

        m = self.model
        rows, cols = index
        K, n = classes.shape
        pos = np.full((K, n, 2), np.nan)
        logd = np.zeros((K, n))
        occ = classes > 0
        if occ.any() and m.config.position_pairs:
            dt = m.out2.weight.dtype
            kk, qq = np.nonzero(occ)
            h = torch.as_tensor(self._step_hidden[occ], dtype=dt, device=m.device)
            c = torch.as_tensor(classes[occ], device=m.device)
            t = lambda a: torch.as_tensor(a, device=m.device)  # noqa: E731
            with torch.no_grad():
                nbrs = m.pair_neighbours(t(self.canvas), t(self.offs).to(dt), t(kk), t(rows[qq] + self.L),
                                         t(cols[qq] + self.L))
                joint = m.position_joint_log_probs(h, c, *nbrs).double().cpu().numpy()
            xy, ld = draw_positions_joint(joint, v[occ])
            pos[occ] = xy
            logd[occ] = ld
        elif occ.any():
            dt = m.out2.weight.dtype
            h = torch.as_tensor(self._step_hidden[occ], dtype=dt, device=m.device)
            c = torch.as_tensor(classes[occ], device=m.device)
            with torch.no_grad():
                ly = m.position_logits_y(h, c).double().cpu().numpy()
                by, y, ldy = draw_positions(ly, v[occ][:, 0])
                lx = m.position_logits_x(h, c, torch.as_tensor(by, device=m.device)).double().cpu().numpy()
            _, x, ldx = draw_positions(lx, v[occ][:, 1])
            pos[occ, 0], pos[occ, 1] = y, x
            logd[occ] = ldy + ldx
        kk, qq = np.nonzero(occ)
        self.offs[kk, 0, rows[qq] + self.L, cols[qq] + self.L] = pos[kk, qq, 0] - 0.5
        self.offs[kk, 1, rows[qq] + self.L, cols[qq] + self.L] = pos[kk, qq, 1] - 0.5
        return pos, logd


def top_offset_channels(top_offsets: np.ndarray) -> np.ndarray:
    """Offset channels (K, 2, L, W + 2L) of boundary rows given as positions (K, L, W + 2L, 2), NaN where none."""
    return np.nan_to_num(np.asarray(top_offsets, dtype=np.float64) - 0.5, nan=0.0).transpose(0, 3, 1, 2)
