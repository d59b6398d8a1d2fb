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

Off-lattice MAP: positions inside the pixels (``config.positions``)
--------------------------------------------------------------------
With positions the model describes the exact structure: a class per pixel and,
for an occupied pixel (class > 0; class 0 is empty), the position of its atom
inside the pixel, ``(y, x)`` in pixel units in [0, 1)^2 from the pixel corner
(the ``offsets`` of :mod:`mapsim.lattice`).

*Input.*  Two more input channels beside the one-hot classes: ``offset - 0.5``
per axis (y, x) on occupied pixels, 0 on empty and outside pixels
(:func:`offset_canvas`).  Centred so that an atom at its pixel centre reads as
0; boundary rows, which carry classes only, therefore show their atoms at the
pixel centres.  The channels enter the same masked first-layer convolutions as
the classes, so the causal support is unchanged (nothing of the current pixel,
in particular not its own position, reaches its prediction).

*Output.*  The class head is unchanged.  The position density given class c and
the context factorises as p(y | c, ctx) p(x | y, c, ctx); each factor is a
categorical over B = ``position_bins`` equal bins with uniform density inside
a bin (piecewise-constant density on [0, 1)).  With ``hidden`` the trunk's last
features (the input of ``out2``, width S):

* y: logits ``pos_y(hidden)[c - 1]`` (one block of B per occupied class);
* x: logits ``pos_x(relu(pos_x_in(hidden) + pos_embed[bin(y)]))[c - 1]``: the
  y bin is embedded into the width S and added to a projection of the features
  of its own before a ReLU, a small head in which x depends jointly on y and the
  context (an atom diagonally above excludes a corner of the pixel: small x
  only where y is small) at the cost of one S x S and one S x B product.  (In
  the Lennard-Jones liquid of the README the head without the projection,
  relu(hidden + embedding), generated 3.6 times the data's fraction of close
  pairs, this one 2.5 times, with the same trunk and training.)

log p(y, x | c, ctx) per unit pixel area = log P(bin y) + log P(bin x | bin y) + 2 log B.

*Pair term* (``position_pairs`` = R > 0).  The heads above, read from the trunk's features,
put about twice the data's probability on positions closer than the liquid's 1st-percentile
distance to an atom already drawn (teacher-forced on held-out Lennard-Jones samples: 6.4 % of
the mass against 3.3 % of the atoms), although the class head's occupancy matches the data at
every free area of the pixel: the features do not resolve a neighbour's exact position
sharply enough to cut its core out of the pixel.  With R > 0 the density over the B x B cells
is the heads' joint density times a learned pair factor of the atoms already drawn within R
pixels (the causal pixels ``pair_slots(R)``, read from the input canvas, so the support is
unchanged), renormalised over the cells:

    log p(cell) = log P(bin y) + log P(bin x | bin y) + sum_j w[c, c_j](d_j) - log Z,

with d_j the distance (in y-pixel units) from the cell's centre to atom j and w a piecewise
linear function per class pair on knots 1/``pair_knots`` pixel apart (16 by default), zero from R
pixels on (initialised to zero, so training starts from the factorised heads; stored in units of
``PAIR_SCALE`` nats).  Draws go through the same rule: the y bin from the joint's row sums, then x
from the chosen row (:func:`mapsim.sampling.draw.draw_position_joint`), still exactly normalised.  The cost is the x
head for all B rows and the pair sum over B^2 cells per atom.

*Joint normalisation* (``joint_pairs``).  Renormalising the pair factor over the cells makes the
position density see the neighbours' cores, but not the class: an occupied class is drawn from the
class head alone, and an atom drawn where the cores leave little free area must still go
somewhere in it.  With ``joint_pairs`` the pair factor weighs class and position together,

    p(c, cell) = exp(l_c + log P_c(cell) + sum_j w[c, c_j](d_j)) / Z,

(P_c the heads' normalised density of the cells, l_c the class logit, l_0 alone for the empty
class), so the class logits become l_c + log Z_c with Z_c = sum_cells P_c(cell) exp(pair term),
and the position given the class is the renormalised density above, unchanged.  Z_c = 1 where no
atom is within reach.  A pixel whose free area the neighbours' cores cut down is then occupied
less often by construction, in training and in every sampler alike (the class uniforms and the
draw rule are unchanged; the cost is the x head and the pair sum at every pixel, not only at
the occupied ones).

*Core* (``pair_core``).  The data never put two atoms deep inside each other's cores, so maximum
likelihood learns the table only where atoms can still be: at the wall it reaches a few nats below
zero, and closer in it stays where training stopped moving it (the mixture of the README: -3.7 nats
for the unlike pair at 0.71 sigma, -1.6 at 0.2 sigma; the Lennard-Jones liquid: -5.0 at 0.89 sigma),
so an atom drawn a little off the data's positions can overlap another one.  The
data say more: no two atoms of classes (c, c') came closer than the closest such pair of the training
data, d_min (``pair_core``, y-pixel units, measured within each training sample by
:func:`mapsim.models.pair_term.closest_pairs` when training with it).  Every knot at least two knots
inside d_min, k <= d_min kpp - 2, holds -``PAIR_CORE_NATS``, so the density vanishes there for all
practical purposes while the last knot spacing below d_min stays learned (a held-out pair slightly
closer than any training pair keeps a learned weight).  A fixed constraint from the data, not learned:
those knots get no gradient.

Why bins and not truncated logistic mixtures: the density is exactly normalised
by construction (a softmax, no truncation constants), its inverse CDF is closed
form and cheap in the compiled sampler (one cumulative sum, one division:
:func:`mapsim.sampling.draw.draw_position`), the likelihood is a plain
cross-entropy that trains as stably as the class head, and B sets the
resolution.  The cost is a density that is flat within a bin, which bounds what
the log-likelihood can gain below the bin size, and which moves every atom by up
to a bin from where the data would put it: harmless for the spread of atoms in a
liquid, but not at the foot of a core, where the pair distribution rises by
several nats per tenth of sigma.  Redrawing the training data's own positions
uniformly inside their bins (what a perfect binned model does) raises the
fraction of pairs below the 1st-percentile distance from 1.12 % to 1.29 % for
the README's Lennard-Jones liquid at B = 32 (pixel 0.71 sigma), to 1.17 % at 64
and 1.13 % at 128 (mixture, pixel 0.57 sigma: 1.14 % to 1.27, 1.17, 1.15 %), so
liquids want B = 64 at such pixels.  A mixture would be smooth but
needs CDF inversion by iteration and is prone to collapsing components.

The class temperature ``beta`` applies to class probabilities only; positions
are always drawn from the model's density (beta = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mapsim.errors import MapsimError
from mapsim.models.base import MapModel, register_model
from mapsim.models.pair_term import PairTerm

PAIR_KNOTS_PER_PIXEL = 16
"""Knots of the pair term per pixel of distance by default (``pair_knots``; module docstring)."""

PAIR_SCALE = 8.0
"""The pair table is learnt in units of 8 nats: Adam moves a weight by about the learning rate per
step, and a core takes several nats (LJ liquid: the unscaled table had reached -1 nat at 0.9 sigma
after 1100 steps, the Boltzmann factor there is about -6.6)."""

PAIR_CORE_NATS = 30.0
"""Depth of the pair table inside ``pair_core``: a cell there weighs e^-30 (about 1e-13) of one outside, so
no draw lands there, while a held-out pair that does still scores finitely."""

CHUNK_CELLS = 2 ** 21
"""Cells of the pair term's joint density (atoms x B^2) computed at once in teacher forcing: 8 MB in
float32.  Larger temporaries come as fresh pages from the system at every step (glibc maps them)."""

MAX_POSITION_BINS = 1024
"""Most bins per axis: the draw rule keeps positions 2^-12 of a bin from its edges, which float32
offsets then resolve (:func:`mapsim.sampling.draw.draw_position`)."""


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
    positions : bool
        Off-lattice MAP: offset input channels and a position head (module docstring).
    position_bins : int
        B, bins per axis of the position density (2 .. 1024).
    position_pairs : int
        R, reach in pixels of the pair term of the position density (module docstring); 0 = none.
        At most the context range L_c.
    joint_pairs : bool
        With a pair term: normalise class and position jointly, so that the pair term also
        weighs the class probabilities (module docstring, *Joint normalisation*).
    pair_knots : int
        Knots of the pair table per pixel of distance (1 .. 256; 16 before this setting existed).
    pair_core : list of list of float or None
        With a pair term: per pair of occupied classes, the closest pair of the training data in
        y-pixel units; the table holds -``PAIR_CORE_NATS`` a knot inside it (module docstring, *Core*).
    pixel_size : list of float or None
        ``[a_y, a_x]`` of the training data in ``length_unit`` (copied into generated datasets;
        required with ``positions``).
    length_unit : str or None
        Unit of ``pixel_size``, as the training data give it.
    species_map : dict or None
        Chemical species -> class name, from the training data.
    """

    n_classes: int = 2
    layers: int = 5
    filters: int = 32
    kernel: int = 3
    out_width: int = 64
    classes: list = field(default_factory=lambda: ["empty", "particle"])
    positions: bool = False
    position_bins: int = 32
    position_pairs: int = 0
    joint_pairs: bool = False
    pair_knots: int = PAIR_KNOTS_PER_PIXEL
    pair_core: list | None = None
    pixel_size: list | None = None
    length_unit: str | None = None
    species_map: dict | None = None

    def __post_init__(self) -> None:
        check_sizes(self)
        if isinstance(self.position_bins, bool) or not isinstance(self.position_bins, int) \
                or not 2 <= self.position_bins <= MAX_POSITION_BINS:
            raise MapsimError(f"position_bins must be an integer in 2..{MAX_POSITION_BINS}, found {self.position_bins!r}")
        reach = self.layers * (self.kernel // 2)
        if isinstance(self.position_pairs, bool) or not isinstance(self.position_pairs, int) \
                or not 0 <= self.position_pairs <= reach:
            raise MapsimError(f"position_pairs must be an integer in 0..{reach} (the context range), "
                              f"found {self.position_pairs!r}")
        if self.position_pairs and not self.positions:
            raise MapsimError("position_pairs needs a model with positions")
        if not isinstance(self.joint_pairs, bool):
            raise MapsimError(f"joint_pairs must be true or false, found {self.joint_pairs!r}")
        if self.joint_pairs and not self.position_pairs:
            raise MapsimError("joint_pairs needs a pair term (position_pairs > 0)")
        if isinstance(self.pair_knots, bool) or not isinstance(self.pair_knots, int) \
                or not 1 <= self.pair_knots <= 256:
            raise MapsimError(f"pair_knots must be an integer in 1..256, found {self.pair_knots!r}")
        if self.pair_core is not None:
            occ = self.n_classes - 1
            core = np.asarray(self.pair_core, dtype=np.float64) if _is_nested_numbers(self.pair_core) else None
            if core is None or core.shape != (occ, occ) or not np.all(np.isfinite(core)) or np.any(core < 0):
                raise MapsimError(f"pair_core must be {occ} x {occ} non-negative distances, found {self.pair_core!r}")
            if not self.position_pairs:
                raise MapsimError("pair_core needs a pair term (position_pairs > 0)")
            self.pair_core = core.tolist()
        if self.pixel_size is not None:
            if isinstance(self.pixel_size, (int, float)):
                self.pixel_size = [float(self.pixel_size)] * 2
            self.pixel_size = [float(v) for v in self.pixel_size]
            if len(self.pixel_size) != 2 or not all(math.isfinite(v) and v > 0 for v in self.pixel_size):
                raise MapsimError(f"pixel_size must be [a_y, a_x] with positive sizes, found {self.pixel_size}")
        if self.positions and self.pixel_size is None:
            raise MapsimError("a model with positions needs the pixel_size of its training data")


def _is_nested_numbers(v) -> bool:
    """Whether ``v`` is a list (of lists) of real numbers, no booleans or strings."""
    if isinstance(v, (list, tuple)):
        return all(_is_nested_numbers(x) for x in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_sizes(config) -> None:
    """Validate the sizes every Gated PixelCNN config shares (2D and 3D): one-line errors."""
    if config.n_classes < 2:
        raise MapsimError(f"n_classes must be >= 2, found {config.n_classes}")
    if config.layers < 1:
        raise MapsimError(f"layers must be >= 1, found {config.layers}")
    if config.filters < 1 or config.out_width < 1:
        raise MapsimError(f"filters and out_width must be >= 1, found {config.filters}, {config.out_width}")
    if config.kernel < 3 or config.kernel % 2 == 0:
        raise MapsimError(f"kernel must be odd and >= 3, found {config.kernel}")
    if len(config.classes) != config.n_classes:
        raise MapsimError(f"classes {config.classes} must name n_classes={config.n_classes} classes")


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
        c_in = config.n_classes + 1 + (2 if config.positions else 0)
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
        if config.positions:
            nb, occupied = config.position_bins, config.n_classes - 1
            self.pos_y = nn.Linear(s, occupied * nb)
            self.pos_embed = nn.Embedding(nb, s)
            self.pos_x_in = nn.Linear(s, s)
            self.pos_x = nn.Linear(s, occupied * nb)
            if config.position_pairs:
                knots = config.pair_knots * config.position_pairs
                self.pos_pair = nn.Parameter(torch.zeros(occupied, occupied, knots))

    @property
    def positions(self) -> bool:
        """Whether the model has the position head (module docstring)."""
        return bool(self.config.positions)

    def inputs(self, canvas: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """The input channels: one-hot classes, then (positions) the two offset channels.

        Parameters
        ----------
        canvas : LongTensor, shape (B, Hc, Wc)
        offsets : Tensor, shape (B, 2, Hc, Wc), optional
            :func:`offset_canvas`; required exactly when the model has positions.

        Returns
        -------
        Tensor, shape (B, N_c + 1 (+ 2), Hc, Wc)
        """
        x = self.one_hot(canvas)
        if not self.positions:
            if offsets is not None:
                raise MapsimError("this model has no position head; it takes classes only (no offsets)")
            return x
        if offsets is None:
            raise MapsimError("this model has a position head and needs the offsets of the context")
        if offsets.shape != (x.shape[0], 2) + tuple(x.shape[2:]):
            raise MapsimError(f"offset channels must have shape {(x.shape[0], 2) + tuple(x.shape[2:])}, "
                              f"found {tuple(offsets.shape)}")
        return torch.cat([x, offsets.to(x.dtype)], 1)

    def forward(self, canvas: torch.Tensor, offsets: torch.Tensor | None = None, targets=None):
        """Class logits of every sample pixel (and, given targets, the positions' log-density).

        Parameters
        ----------
        canvas : LongTensor, shape (B, H + L, W + 2L)
        offsets : Tensor, shape (B, 2, H + L, W + 2L), optional
            Offset channels (:func:`offset_canvas`), for models with positions.
        targets : (LongTensor (B, H, W), Tensor (B, H, W, 2)), optional
            Classes and positions (pixel units, NaN where empty) of the sample pixels.

        Returns
        -------
        logits : Tensor, shape (B, N_c, H, W)
        log_density : Tensor, shape (B, H, W)
            Only with ``targets``: :meth:`position_log_density` (per unit pixel area; 0 where empty).
            Computed here, not by the caller, so that DistributedDataParallel sees every parameter
            used in ``forward``.
        """
        hidden = self.features(canvas, offsets)
        logits = self.out2(hidden)
        if self.config.joint_pairs:
            logits = logits + self.class_log_z_map(hidden, canvas, offsets)
        if targets is None:
            return logits
        return logits, self.position_log_density(hidden, *targets, canvas=canvas, offsets=offsets)

    def features(self, canvas: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's last features (input of ``out2`` and of the position head), (B, S, H, W)."""
        L, p, n = self.context_range, self.p, self.config.layers
        Hc, Wc = canvas.shape[-2:]
        if Hc <= L or Wc <= 2 * L:
            raise MapsimError(f"canvas {Hc}x{Wc} too small for L_c={L}: need more than {L} rows and {2 * L} columns")
        x = self.inputs(canvas, offsets)  # (B, C, Hc, Wc)

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
        return F.relu(self.out1(F.relu(skip)))

    # -- the position head ------------------------------------------------------
    def _class_block(self, out: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Rows of (N, (N_c - 1) B) position logits -> the B logits of each row's class, (N, B)."""
        nb = self.config.position_bins
        _check_occupied(classes)
        return out.view(out.shape[0], -1, nb).gather(1, (classes.long() - 1).view(-1, 1, 1).expand(-1, 1, nb))[:, 0]

    def _x_logits(self, hx: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The x head's output layer for each row's own class: features ``hx`` (N, ..., S) of rows of
        class ``classes`` (N,) >= 1 -> logits (N, ..., B); one product per class, not every class's
        logits for every row."""
        _check_occupied(classes)
        nb = self.config.position_bins
        w, bias = self.pos_x.weight.view(-1, nb, hx.shape[-1]), self.pos_x.bias.view(-1, nb)
        if w.shape[0] == 1:
            return F.linear(hx, w[0], bias[0])
        lx = hx.new_empty(hx.shape[:-1] + (nb,))
        for c in range(1, w.shape[0] + 1):
            rows = classes == c
            lx[rows] = F.linear(hx[rows], w[c - 1], bias[c - 1])
        return lx

    def position_logits_y(self, hidden: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Logits of the y bin, (N, B), from features ``hidden`` (N, S) of pixels of class ``classes`` (N,) >= 1."""
        return self._class_block(self.pos_y(hidden), classes)

    def position_logits_x(self, hidden: torch.Tensor, classes: torch.Tensor, y_bins: torch.Tensor) -> torch.Tensor:
        """Logits of the x bin given the y bin ``y_bins`` (N,), (N, B)."""
        return self._x_logits(F.relu(self.pos_x_in(hidden) + self.pos_embed(y_bins.long())), classes)

    def pair_neighbours(self, canvas: torch.Tensor, offsets: torch.Tensor, b: torch.Tensor, r: torch.Tensor,
                        c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The atoms in the pair slots of canvas pixels (b, r, c) (each (N,), canvas coordinates).

        Returns classes (N, M), 0 where a slot holds no atom (empty or outside), and positions
        (N, M, 2) in pixel units relative to the corner of pixel (r, c) (offset channel + 0.5 plus
        the slot's displacement), M = ``len(pair_slots(position_pairs))``.
        """
        slots = torch.as_tensor(pair_slots(self.config.position_pairs), device=canvas.device)  # (M, 2)
        rr, cc = r[:, None] + slots[:, 0], c[:, None] + slots[:, 1]  # (N, M)
        bb = b[:, None].expand_as(rr)
        cls = canvas[bb, rr, cc]
        cls = torch.where(cls < self.n_classes, cls, torch.zeros_like(cls))  # outside holds no atom
        pos = torch.stack([offsets[bb, 0, rr, cc], offsets[bb, 1, rr, cc]], -1) + 0.5 + slots.to(offsets.dtype)
        return cls, pos

    def position_joint_logits(self, hidden: torch.Tensor, classes: torch.Tensor, n_classes: torch.Tensor,
                              n_pos: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-weights of the B x B cells (y bin, x bin), (N, B, B), with the pair term.

        ``hidden`` (N, S) and ``classes`` (N,) as for the heads; ``n_classes`` (N, M) and
        ``n_pos`` (N, M, 2) from :meth:`pair_neighbours`.
        """
        ly = torch.log_softmax(self.position_logits_y(hidden, classes), 1)  # (N, B)
        hx = F.relu(self.pos_x_in(hidden)[:, None, :] + self.pos_embed.weight[None])  # (N, B y, S)
        lx = self._x_logits(hx, classes)  # (N, B y, B x)
        return ly[:, :, None] + torch.log_softmax(lx, 2) + self.pair_term(classes, n_classes, n_pos)

    def position_joint_log_probs(self, hidden: torch.Tensor, classes: torch.Tensor, n_classes: torch.Tensor,
                                 n_pos: torch.Tensor) -> torch.Tensor:
        """Normalised log-probabilities of the B x B cells, (N, B, B): :meth:`position_joint_logits`
        minus their log-sum."""
        joint = self.position_joint_logits(hidden, classes, n_classes, n_pos)
        N = joint.shape[0]
        return (joint.view(N, -1) - torch.logsumexp(joint.view(N, -1), 1, keepdim=True)).view(joint.shape)

    def class_log_z(self, hidden: torch.Tensor, n_classes: torch.Tensor, n_pos: torch.Tensor) -> torch.Tensor:
        """log Z_c of every occupied class c: the log of the heads' joint density times the pair factor,
        summed over the B x B cells, (N, N_c - 1); 0 where no atom is within reach (``joint_pairs``,
        module docstring).  ``hidden`` (N, S) of any pixels; ``n_classes``, ``n_pos`` from
        :meth:`pair_neighbours`.
        """
        nb, occ = self.config.position_bins, self.n_classes - 1
        N = hidden.shape[0]
        ly = torch.log_softmax(self.pos_y(hidden).view(N, occ, nb), 2)  # (N, occ, B y)
        hx = F.relu(self.pos_x_in(hidden)[:, None, :] + self.pos_embed.weight[None])  # (N, B y, S)
        lx = torch.log_softmax(self.pos_x(hx).view(N, nb, occ, nb), 3)  # (N, B y, occ, B x)
        out = []
        for c in range(1, occ + 1):
            cls = torch.full((N,), c, dtype=torch.long, device=hidden.device)
            joint = ly[:, c - 1, :, None] + lx[:, :, c - 1] + self.pair_term(cls, n_classes, n_pos)
            out.append(torch.logsumexp(joint.view(N, -1), 1))
        return torch.stack(out, 1)

    def class_log_z_map(self, hidden: torch.Tensor, canvas: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The class logits' joint-normalisation terms of every sample pixel, (B, N_c, H, W): 0 for the
        empty class, :meth:`class_log_z` for the others.  ``hidden`` (B, S, H, W); ``canvas`` and
        ``offsets`` the input canvas and its offset channels."""
        Bn, S, H, W = hidden.shape
        L = self.context_range
        b, r, c = (t.reshape(-1) for t in torch.meshgrid(torch.arange(Bn, device=hidden.device),
                                                          torch.arange(H, device=hidden.device),
                                                          torch.arange(W, device=hidden.device), indexing="ij"))
        z = self.class_log_z(hidden.permute(0, 2, 3, 1).reshape(-1, S),
                             *self.pair_neighbours(canvas, offsets.to(hidden.dtype), b, r + L, c + L))
        return F.pad(z.view(Bn, H, W, -1).permute(0, 3, 1, 2), (0, 0, 0, 0, 1, 0))

    def pair_table(self) -> torch.Tensor:
        """The pair term's table in nats, (pairs of classes, knots + 2), ending in two zero knots (0 from
        R pixels on), held at -``PAIR_CORE_NATS`` inside ``pair_core``."""
        occ = self.n_classes - 1
        table = PAIR_SCALE * self.pos_pair.reshape(occ * occ, -1)
        core = getattr(self.config, "pair_core", None)
        if core is not None:
            # knots k <= d kpp - 2: the data's closest pair lies a knot beyond the last one held
            d = torch.tensor(core, dtype=torch.float64, device=table.device).reshape(-1, 1)
            knots = torch.arange(table.shape[1], device=table.device)[None, :]
            held = knots <= torch.floor(d * self.config.pair_knots) - 2
            table = torch.where(held, torch.full_like(table, -PAIR_CORE_NATS), table)
        return F.pad(table, (0, 2))

    def pair_term(self, classes: torch.Tensor, n_classes: torch.Tensor, n_pos: torch.Tensor) -> torch.Tensor:
        """Sum over the neighbours of w[c, c_j](d_j) at every cell centre, (N, B, B) (module docstring)."""
        nb, occ = self.config.position_bins, self.n_classes - 1
        atom, slot = torch.nonzero(n_classes > 0, as_tuple=True)  # (P,) pairs
        row = (classes[atom].long() - 1) * occ + (n_classes[atom, slot].long() - 1)
        table = self.pair_table()
        ratio = self.config.pixel_size[1] / self.config.pixel_size[0]
        return PairTerm.apply(table, classes.shape[0], nb, atom, row, n_pos[atom, slot, 0], n_pos[atom, slot, 1],
                              ratio, float(self.config.pair_knots))

    def position_bins_of(self, pos: torch.Tensor) -> torch.Tensor:
        """Bin index (long, same shape) of positions in [0, 1), computed in float64 (exact for float32 inputs)."""
        nb = self.config.position_bins
        return torch.clamp(torch.floor(pos.double() * nb), 0, nb - 1).long()

    def position_log_density(self, hidden: torch.Tensor, grids: torch.Tensor, pos: torch.Tensor,
                             canvas: torch.Tensor | None = None, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """log p(position | class, context) per unit pixel area of every pixel; 0 where empty.

        Parameters
        ----------
        hidden : Tensor, shape (B, S, H, W)
            :meth:`features`.
        grids : LongTensor, shape (B, H, W)
        pos : Tensor, shape (B, H, W, 2)
            (y, x) in pixel units in [0, 1); ignored (may be NaN) where empty.
        canvas, offsets : Tensor, shapes (B, H + L, W + 2L) and (B, 2, H + L, W + 2L)
            The input canvas and offset channels, needed with the pair term (``position_pairs``).

        Returns
        -------
        Tensor, shape (B, H, W), in the dtype of ``hidden``
        """
        if not self.positions:
            raise MapsimError("this model has no position head")
        nb = self.config.position_bins
        occ = grids != 0
        h = hidden.permute(0, 2, 3, 1)[occ]  # (N, S): occupied pixels only
        c = grids[occ]
        bins = self.position_bins_of(pos[occ])  # (N, 2)
        if self.config.position_pairs:
            if canvas is None or offsets is None:
                raise MapsimError("a position density with a pair term needs the canvas and its offset channels")
            L = self.context_range
            b, r, cc = torch.nonzero(occ, as_tuple=True)
            n_classes, n_pos = self.pair_neighbours(canvas, offsets, b, r + L, cc + L)
            parts = []
            # in chunks of CHUNK_CELLS: at 64 bins one (atoms, B, B) piece made a training step 1.7x slower
            step = max(1, CHUNK_CELLS // nb ** 2)
            for i in range(0, len(c), step):
                j = slice(i, i + step)
                joint = self.position_joint_logits(h[j], c[j], n_classes[j], n_pos[j])
                # the observed cell minus the log-sum: normalising all B^2 cells would cost as much again
                picked = joint[torch.arange(joint.shape[0], device=joint.device), bins[j, 0], bins[j, 1]]
                parts.append(picked - torch.logsumexp(joint.flatten(1), 1))
            out = hidden.new_zeros(grids.shape)
            out[occ] = torch.cat(parts) + 2.0 * math.log(nb) if parts else hidden.new_zeros(0)
            return out
        ly = torch.log_softmax(self.position_logits_y(h, c), 1).gather(1, bins[:, :1])[:, 0]
        lx = torch.log_softmax(self.position_logits_x(h, c, bins[:, 0]), 1).gather(1, bins[:, 1:])[:, 0]
        out = hidden.new_zeros(grids.shape)
        out[occ] = ly + lx + 2.0 * math.log(nb)
        return out

    # -- teacher forcing with positions -------------------------------------------
    def log_prob_parts(self, grids: torch.Tensor, offsets: torch.Tensor | None = None, beta: float = 1.0,
                       top: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class log-probability and position log-density of every pixel, teacher-forced.

        Parameters
        ----------
        grids : LongTensor, shape (B, H, W)
        offsets : Tensor, shape (B, H, W, 2), optional
            Positions inside the pixels (pixel units, NaN where empty); required with positions.
        beta : float
            Inverse temperature of the class probabilities (positions are not tempered).
        top : LongTensor, shape (B, L, W + 2L), optional
            Boundary rows (their atoms sit at the pixel centres).

        Returns
        -------
        class_logp : Tensor, shape (B, H, W)
        position_logd : Tensor, shape (B, H, W), or None for a class-only model
            Per unit pixel area; 0 where empty.
        """
        grids = grids.long()
        canvas = self.make_canvas(grids, top)
        if self.positions:
            if offsets is None:
                raise MapsimError("this model has a position head: the data need offsets")
            offsets = torch.as_tensor(offsets, device=grids.device)
            logits, logd = self(canvas, offset_canvas(offsets, self.context_range), (grids, offsets))
        else:
            logits, logd = self(canvas), None
        logp = torch.log_softmax(beta * logits, dim=1).gather(1, grids.unsqueeze(1)).squeeze(1)
        return logp, logd

    def log_prob_pixels(self, grids: torch.Tensor, beta: float = 1.0, top: torch.Tensor | None = None,
                        offsets: torch.Tensor | None = None) -> torch.Tensor:
        """log p of every pixel, (B, H, W): class part plus, with positions, the position log-density."""
        logp, logd = self.log_prob_parts(grids, offsets, beta, top)
        return logp if logd is None else logp + logd

    def log_likelihood(self, grids: torch.Tensor, beta: float = 1.0, top: torch.Tensor | None = None,
                       offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample log-likelihood (nats; positions per unit pixel area), shape (B,)."""
        return self.log_prob_pixels(grids, beta, top, offsets).flatten(1).sum(1)


def _check_occupied(classes: torch.Tensor) -> None:
    """The position head serves occupied classes (>= 1) only."""
    if classes.numel() and int(classes.min()) < 1:
        raise MapsimError("the position head was asked for class 0 (empty), which holds no atom")


def pair_slots(reach: int) -> list[tuple[int, int]]:
    """The causal pixels (dr, dc) of the pair term: rows -reach..0, columns -reach..reach, raster-earlier."""
    return [(dr, dc) for dr in range(-reach, 1) for dc in range(-reach, reach + 1) if dr < 0 or dc < 0]


def offset_channels(offsets: torch.Tensor) -> torch.Tensor:
    """Input channels of positions (B, H, W, 2) with NaN where empty: offset - 0.5, 0 where NaN, (B, 2, H, W)."""
    off = torch.as_tensor(offsets)
    return torch.nan_to_num(off - 0.5, nan=0.0).permute(0, 3, 1, 2)


def offset_canvas(offsets: torch.Tensor, context_range: int) -> torch.Tensor:
    """Offset channels on the canvas (B, 2, H + L, W + 2L): 0 on the boundary rows and sides.

    Boundary and outside pixels carry classes only: their channel value 0 places a boundary
    atom at its pixel centre.
    """
    ch = offset_channels(offsets)
    L = int(context_range)
    return F.pad(ch, (L, L, L, 0))
