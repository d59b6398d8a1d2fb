"""Gated PixelCNN for volumes: causal depth, vertical and horizontal stacks (3D MAP).

Canvas convention (3D)
----------------------
A sample of shape (D, H, W) (planes, rows, columns; raster order is plane,
then row, then column) sits on a canvas of shape (D + L, H + 2L, W + 2L):
L planes before the sample (the boundary: outside by default) and L rows
and L columns on both sides of every plane (always outside).  Voxel
(z, y, x) sits at canvas[L + z, L + y, L + x].  ``model(canvas)`` returns the
logits of every sample voxel, (B, N_c, D, H, W).  The logits of voxel
(z, y, x) depend exactly on the *causal box* of range L: every voxel before
it in raster order within L along every axis, i.e. planes z - L .. z - 1 at
rows y - L .. y + L and columns x - L .. x + L, plane z at rows y - L .. y - 1
and columns x - L .. x + L, and row y at columns x - L .. x - 1.

Architecture (the 2D model of :mod:`mapsim.models.pixelcnn` with one more
stack; kernel k odd, p = k // 2, gate(a) = tanh(a_1) sigmoid(a_2)).  Layer
l = 0 .. n-1:

* depth:      z_pre = conv_z(z_in), kernel (p, k, k) on the input for l = 0
  (planes strictly before), (p + 1, k, k) on z_{l-1};  z_l = gate(z_pre)
* vertical:   v_pre = conv_v(v_in) + z2v(z_pre), kernel (1, p, k) on the input
  for l = 0 (rows strictly above, same plane), (1, p + 1, k) on v_{l-1}
* horizontal: h_pre = conv_h(h_in) + v2h(v_pre), kernel (1, 1, p) for l = 0
  (voxels strictly left), (1, 1, p + 1) on h_{l-1}
* g = gate(h_pre); h_l = h_res(g) + h_{l-1}; skip += skip_l(g)
* logits = out2(relu(out1(relu(skip)))) (1x1x1 layers)

Every convolution is valid (no padding of hidden features); after m layers
every stack lives at canvas planes [m p, Dc), rows [m p, Hc - m p) and
columns [m p, Wc - m p), so after n layers (L_c = n p) exactly at the sample
voxels.  The depth stack at (z, y, x) sees only planes before z, so adding it
to the vertical stack there (and the vertical stack, which sees only rows
above y, to the horizontal one) keeps the model causal; the union of the
three paths is exactly the causal box (tested through the gradient support).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mapsim.errors import MapsimError
from mapsim.models.base import MapModel, register_model
from mapsim.models.pixelcnn import check_sizes, gate


@dataclass
class PixelCNN3DConfig:
    """Hyper-parameters of the 3D Gated PixelCNN (as :class:`mapsim.models.pixelcnn.PixelCNNConfig`).

    Attributes
    ----------
    n_classes : int
    layers : int
        Receptive field L_c = layers * (kernel // 2).
    filters, kernel, out_width : int
    classes : list of str
    """

    n_classes: int = 2
    layers: int = 4
    filters: int = 32
    kernel: int = 3
    out_width: int = 64
    classes: list = field(default_factory=lambda: ["empty", "particle"])

    def __post_init__(self) -> None:
        check_sizes(self)


@register_model
class GatedPixelCNN3D(MapModel):
    """Gated PixelCNN on outside-padded 3D canvases (see the module docstring)."""

    kind = "pixelcnn3d"
    config_class = PixelCNN3DConfig
    ndim = 3
    positions = False  # no position head in 3D (yet)

    def __init__(self, config: PixelCNN3DConfig) -> None:
        p = config.kernel // 2
        super().__init__(config.n_classes, config.layers * p)
        self.config = config
        self.p = p
        c_in = config.n_classes + 1
        f, k, s = config.filters, config.kernel, config.out_width
        self.z_convs, self.v_convs, self.h_convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.z2v, self.v2h, self.h_res, self.skips = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for layer in range(config.layers):
            first = layer == 0
            cin = c_in if first else f
            self.z_convs.append(nn.Conv3d(cin, 2 * f, (p if first else p + 1, k, k)))
            self.v_convs.append(nn.Conv3d(cin, 2 * f, (1, p if first else p + 1, k)))
            self.h_convs.append(nn.Conv3d(cin, 2 * f, (1, 1, p if first else p + 1)))
            self.z2v.append(nn.Conv3d(2 * f, 2 * f, 1))
            self.v2h.append(nn.Conv3d(2 * f, 2 * f, 1))
            self.h_res.append(nn.Conv3d(f, f, 1))
            self.skips.append(nn.Conv3d(f, s, 1))
        self.out1 = nn.Conv3d(s, s, 1)
        self.out2 = nn.Conv3d(s, config.n_classes, 1)

    # -- the 3D canvas convention ----------------------------------------------
    def one_hot(self, canvas: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One-hot encode a canvas over N_c + 1 input classes: (B, N_c+1, Dc, Hc, Wc)."""
        dtype = dtype or self.dtype
        return F.one_hot(canvas.long(), self.n_classes + 1).permute(0, 4, 1, 2, 3).to(dtype)

    def make_canvas(self, grids: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """Place volumes (B, D, H, W) on a canvas (B, D + L, H + 2L, W + 2L); ``top`` = the L planes before."""
        L = self.context_range
        B, D, H, W = grids.shape
        canvas = torch.full((B, D + L, H + 2 * L, W + 2 * L), self.outside_class, dtype=torch.long,
                            device=grids.device)
        canvas[:, L:, L : L + H, L : L + W] = grids
        if top is not None and L > 0:
            if tuple(top.shape) != (B, L, H + 2 * L, W + 2 * L):
                raise MapsimError(f"boundary planes must have shape {(B, L, H + 2 * L, W + 2 * L)}, "
                                  f"found {tuple(top.shape)}")
            canvas[:, :L] = top.to(canvas.device)
        return canvas

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        """Logits of every sample voxel of canvases (B, D + L, H + 2L, W + 2L): (B, N_c, D, H, W)."""
        L, p, n = self.context_range, self.p, self.config.layers
        if canvas.dim() != 4:
            raise MapsimError(f"a 3D model needs canvases (B, D + L, H + 2L, W + 2L), found shape {tuple(canvas.shape)}")
        Dc, Hc, Wc = canvas.shape[-3:]
        if Dc <= L or Hc <= 2 * L or Wc <= 2 * L:
            raise MapsimError(f"canvas {Dc}x{Hc}x{Wc} too small for L_c={L}")
        x = self.one_hot(canvas)  # (B, C, Dc, Hc, Wc)

        def final(t: torch.Tensor, m: int) -> torch.Tensor:
            # the sample voxels of a tensor after m layers (1x1x1 skips are evaluated there only)
            d = L - m * p
            return t[:, :, d:, d : t.shape[-2] - d, d : t.shape[-1] - d] if d else t

        z_pre = self.z_convs[0](x[:, :, :-1])  # planes [p, Dc), rows [p, Hc-p), cols [p, Wc-p)
        v_pre = self.v_convs[0](x[:, :, p:, : Hc - p - 1, :]) + self.z2v[0](z_pre)
        h_pre = self.h_convs[0](x[:, :, p:, p : Hc - p, : Wc - p - 1]) + self.v2h[0](v_pre)
        g = gate(h_pre)
        skip = self.skips[0](final(g, 1))
        if n > 1:
            z, v, h = gate(z_pre), gate(v_pre), self.h_res[0](g)
        for layer in range(1, n):
            z_pre = self.z_convs[layer](z)
            v_pre = self.v_convs[layer](v[:, :, p:, :-p, :]) + self.z2v[layer](z_pre)
            h_pre = self.h_convs[layer](h[:, :, p:, p:-p, :-p]) + self.v2h[layer](v_pre)
            g = gate(h_pre)
            skip = skip + self.skips[layer](final(g, layer + 1))
            if layer < n - 1:  # the last layer's stacks feed nothing
                z, v = gate(z_pre), gate(v_pre)
                h = self.h_res[layer](g) + h[:, :, p:, p:-p, p:-p]
        return self.out2(F.relu(self.out1(F.relu(skip))))
