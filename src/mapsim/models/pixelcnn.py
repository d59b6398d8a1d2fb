"""Gated PixelCNN MAP model with valid (unpadded) convolutions.

Architecture (van den Oord et al. 2016, with WaveNet-style skips as in the MAP
paper's Appendix A).  Kernel size k is odd, p = k // 2; gate(a) = tanh(a_1) * sigmoid(a_2)
over the two channel halves.  Layer l = 0 .. n-1:

* vertical:   v_pre = conv_v(v_in)           kernel (p, k) on the input for l = 0 (rows
  strictly above), (p + 1, k) on v_{l-1} otherwise;  v_l = gate(v_pre)
* horizontal: h_pre = conv_h(h_in) + v2h(v_pre)   kernel (1, p) on the input for l = 0
  (pixels strictly left), (1, p + 1) on h_{l-1} otherwise; v2h is 1x1
* g = gate(h_pre);  h_l = h_res(g) + h_{l-1}  (no residual at l = 0);  skip += skip_l(g)
* output: logits = out2(relu(out1(relu(skip))))   (two 1x1 layers)

Padding convention: hidden features are never padded.  The input canvas is
padded with the outside class (L rows above, L columns each side, see
:mod:`mapsim.models.base`), and every convolution is "valid", so each layer is
defined only where its full receptive field lies on the canvas.  After n layers
the receptive field is exactly the causal neighbourhood of range L_c = n * p.

Position bookkeeping on a canvas of shape (Hc, Wc): after layer l (1-based count
m = l + 1), both stacks live at canvas rows [m p, Hc) and columns [m p, Wc - m p),
so after the last layer they cover exactly the sample pixels.

Speed (same parameters, same function): the 1x1 skips are evaluated on the
sample pixels only, the horizontal convolutions on trimmed inputs, and the last
layer's unused v and h are not computed (so ``h_res[-1]`` gets no gradient).
(A sigmoid-based tanh was tried for CPU training, since this torch build's tanh
is slow, but its extra memory passes made it no faster on a shared machine.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mapsim.errors import MapsimError
from mapsim.models.base import MapModel, register_model


@dataclass
class PixelCNNConfig:
    """Hyper-parameters of the Gated PixelCNN.

    Attributes
    ----------
    n_classes : int
        Real classes N_c (the input has one more: outside).
    layers : int
        Gated layers n; receptive field L_c = layers * (kernel // 2).
    filters : int
        Channels after gating (2 * filters before).
    kernel : int
        Odd convolution size k >= 3.
    out_width : int
        Channels of the skip sum and of the hidden 1x1 output layer.
    classes : list of str
        Class names (index = class id), copied into generated datasets.
    """

    n_classes: int = 2
    layers: int = 5
    filters: int = 32
    kernel: int = 3
    out_width: int = 64
    classes: list = field(default_factory=lambda: ["empty", "particle"])

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise MapsimError(f"n_classes must be >= 2, found {self.n_classes}")
        if self.layers < 1:
            raise MapsimError(f"layers must be >= 1, found {self.layers}")
        if self.filters < 1 or self.out_width < 1:
            raise MapsimError(f"filters and out_width must be >= 1, found {self.filters}, {self.out_width}")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise MapsimError(f"kernel must be odd and >= 3, found {self.kernel}")
        if len(self.classes) != self.n_classes:
            raise MapsimError(f"classes {self.classes} must name n_classes={self.n_classes} classes")


def gate(a: torch.Tensor) -> torch.Tensor:
    """tanh(first half) * sigmoid(second half) along the channel axis."""
    x, y = a.chunk(2, dim=1)
    return torch.tanh(x) * torch.sigmoid(y)


@register_model
class GatedPixelCNN(MapModel):
    """Gated PixelCNN on outside-padded canvases (see the module docstring)."""

    kind = "pixelcnn"
    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig) -> None:
        p = config.kernel // 2
        super().__init__(config.n_classes, config.layers * p)
        self.config = config
        self.p = p
        c_in = config.n_classes + 1
        f, k, s = config.filters, config.kernel, config.out_width
        self.v_convs = nn.ModuleList()
        self.h_convs = nn.ModuleList()
        self.v2h = nn.ModuleList()
        self.h_res = nn.ModuleList()
        self.skips = nn.ModuleList()
        for layer in range(config.layers):
            first = layer == 0
            self.v_convs.append(nn.Conv2d(c_in if first else f, 2 * f, (p if first else p + 1, k)))
            self.h_convs.append(nn.Conv2d(c_in if first else f, 2 * f, (1, p if first else p + 1)))
            self.v2h.append(nn.Conv2d(2 * f, 2 * f, 1))
            self.h_res.append(nn.Conv2d(f, f, 1))
            self.skips.append(nn.Conv2d(f, s, 1))
        self.out1 = nn.Conv2d(s, s, 1)
        self.out2 = nn.Conv2d(s, config.n_classes, 1)

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        L, p, n = self.context_range, self.p, self.config.layers
        Hc, Wc = canvas.shape[-2:]
        if Hc <= L or Wc <= 2 * L:
            raise MapsimError(f"canvas {Hc}x{Wc} too small for L_c={L}: need more than {L} rows and {2 * L} columns")
        x = self.one_hot(canvas)  # (B, C, Hc, Wc)

        def final(t: torch.Tensor, m: int) -> torch.Tensor:
            # the sample pixels (rows [L, Hc), cols [L, Wc - L)) of a tensor after m layers;
            # skips are 1x1, so they are evaluated there only
            d = L - m * p
            return t[:, :, d:, d : t.shape[-1] - d] if d else t

        # layer 0: vertical sees rows r-p..r-1, horizontal sees columns c-p..c-1.
        v_pre = self.v_convs[0](x[:, :, :-1, :])  # rows [p, Hc), cols [p, Wc-p)
        h_pre = self.h_convs[0](x[:, :, p:, : Wc - p - 1]) + self.v2h[0](v_pre)  # same positions
        g = gate(h_pre)
        skip = self.skips[0](final(g, 1))
        if n > 1:
            v = gate(v_pre)
            h = self.h_res[0](g)
        for layer in range(1, n):
            # v, h live at rows [m p, Hc), cols [m p, Wc - m p) with m = layer.
            v_pre = self.v_convs[layer](v)  # rows [(m+1)p, Hc), cols [(m+1)p, Wc-(m+1)p)
            h_pre = self.h_convs[layer](h[:, :, p:, : h.shape[-1] - p]) + self.v2h[layer](v_pre)  # same positions
            g = gate(h_pre)
            skip = skip + self.skips[layer](final(g, layer + 1))
            if layer < n - 1:  # the last layer's v and h feed nothing (so h_res[-1] is never used)
                v = gate(v_pre)
                h = self.h_res[layer](g) + h[:, :, p:, p:-p]
        return self.out2(F.relu(self.out1(F.relu(skip))))
