"""Analytic MAP models: the ideal gas (paper Eqs. 6-7) and the cold hard-core fluid (Eqs. 10-16).

Both follow the canvas convention of :mod:`mapsim.models.base`.  Logits are
given relative to class 0 (the empty class, logit 0): softmax is unchanged by a
common shift, so the binary ideal gas with logits (0, ln(rho / (1 - rho))) is
Eq. 7's symmetric form (-c_b1, c_b1) with c_b1 = (1/2) ln(rho / (1 - rho)).
The outside class (id N_c) never counts as a particle.

The hard-core model's rho_eff (Eq. 10) is not known in closed form; it is
solved numerically by :func:`mapsim.sampling.rho_eff.solve_rho_eff`, whose method and accuracy are
described there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mapsim.errors import MapsimError
from mapsim.models.base import MapModel, causal_offsets, register_model

BINARY_CLASSES: tuple[str, ...] = ("empty", "particle")


def _check_classes(classes, n_expected: int | None, where: str) -> tuple[str, ...]:
    names = tuple(str(c) for c in classes)
    if len(names) < 2:
        raise MapsimError(f"{where}: needs at least 2 class names, found {list(names)}")
    if len(set(names)) != len(names):
        raise MapsimError(f"{where}: repeated class names {list(names)}")
    if n_expected is not None and len(names) != n_expected:
        raise MapsimError(f"{where}: expected {n_expected} class names, found {list(names)}")
    return names


# ---------------------------------------------------------------------------
# Ideal gas
# ---------------------------------------------------------------------------
@dataclass
class IdealGasConfig:
    """Ideal gas: every pixel independent, class k with probability ``densities[k-1]``.

    Parameters
    ----------
    densities : tuple of float
        Grid occupation density of each non-empty class 1 .. N_c-1 (the empty
        class takes the rest); each > 0, sum < 1.
    classes : tuple of str
        Class names, index = class id; ``len(classes) == len(densities) + 1``.
    ndim : int
        2: samples (H, W); 3: volumes (D, H, W) (the density-only control of 3D data).
    """

    densities: tuple[float, ...] = (0.05,)
    classes: tuple[str, ...] = BINARY_CLASSES
    ndim: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.densities, (int, float)):
            self.densities = (self.densities,)
        self.densities = tuple(float(d) for d in self.densities)
        self.classes = _check_classes(self.classes, len(self.densities) + 1, "ideal gas classes")
        if isinstance(self.ndim, bool) or not isinstance(self.ndim, int) or self.ndim not in (2, 3):
            raise MapsimError(f"ideal gas ndim must be 2 (samples) or 3 (volumes), found {self.ndim!r}")
        for d in self.densities:
            if not (math.isfinite(d) and 0.0 < d < 1.0):
                raise MapsimError(f"ideal gas density must lie strictly between 0 and 1, found {d}")
        if sum(self.densities) >= 1.0:
            raise MapsimError(f"ideal gas densities must sum to less than 1, found {sum(self.densities):g}")


@register_model
class IdealGas(MapModel):
    """Ideal gas (Eqs. 6-7): logits are the density bias alone, L_c = 0.

    ``logits[k] = ln(rho_k / rho_0)`` with rho_0 = 1 - sum(rho_k), so the
    probability of class k is exactly rho_k whatever the context.  With
    ``config.ndim == 3`` it is a model of volumes (canvases (B, D, H, W)).
    """

    kind = "ideal-gas"
    config_class = IdealGasConfig

    def __init__(self, config: IdealGasConfig) -> None:
        super().__init__(len(config.classes), 0)
        self.config = config
        self.ndim = config.ndim  # the class default (2) unless the config says volumes
        rho = np.array(config.densities, dtype=np.float64)
        bias = np.concatenate([[0.0], np.log(rho / (1.0 - rho.sum()))])
        # derived from the config, so not part of the state dict
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float64), persistent=False)

    def make_canvas(self, grids: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """L = 0: the canvas is the sample itself (no boundary to place), in 2D and 3D."""
        return grids.long()

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        if canvas.dim() != self.ndim + 1:
            raise MapsimError(f"a {self.ndim}D ideal gas needs canvases of {self.ndim + 1} dimensions, found shape "
                              f"{tuple(canvas.shape)}")
        B, *spatial = canvas.shape  # L = 0: the canvas is the sample
        return self.bias.view(1, -1, *[1] * self.ndim).expand(B, self.n_classes, *spatial).clone()


# ---------------------------------------------------------------------------
# Hard-core fluid
# ---------------------------------------------------------------------------
@dataclass
class HardCoreConfig:
    """Cold hard-core fluid with exclusion range R_c (binary: empty, particle).

    Parameters
    ----------
    rho_eff : float
        Probability of a particle at a pixel with no earlier particle within
        R_c (Eq. 10); in (0, 1).  Use :func:`mapsim.sampling.rho_eff.hard_core_for_density` to get it
        from a target density.
    range : float
        R_c: an earlier particle at Euclidean distance <= R_c forbids a
        particle (>= 1; L_c = ceil(R_c)).
    density : float or None
        The density rho_eff was solved for (informational), if any.
    classes : tuple of str
        Two class names: empty, particle.
    """

    rho_eff: float = 0.05
    range: float = 1.0
    density: float | None = None
    classes: tuple[str, ...] = BINARY_CLASSES

    def __post_init__(self) -> None:
        self.classes = _check_classes(self.classes, 2, "hard-core classes")
        self.rho_eff = float(self.rho_eff)
        self.range = float(self.range)
        if not (math.isfinite(self.rho_eff) and 0.0 < self.rho_eff < 1.0):
            raise MapsimError(f"hard-core rho_eff must lie strictly between 0 and 1, found {self.rho_eff}")
        if not (math.isfinite(self.range) and self.range >= 1.0):
            raise MapsimError(f"hard-core range R_c must be a finite number >= 1 (lattice spacing), found {self.range}")
        if self.density is not None:
            self.density = float(self.density)


def hard_core_offsets(range_: float) -> list[tuple[int, int]]:
    """Causal offsets (di, dj) within Euclidean distance <= R_c, raster order."""
    L = math.ceil(range_)
    r2 = range_ * range_ + 1e-9
    return [(di, dj) for di, dj in causal_offsets(L) if di * di + dj * dj <= r2]


@register_model
class HardCore(MapModel):
    """Hard-core fluid (Eqs. 10-16): p(particle) = 0 next to an earlier particle, else rho_eff.

    Blocked pixels get the logit -inf for the particle class (Eq. 16,
    c_11 = -inf); free pixels get ln(rho_eff / (1 - rho_eff)) (Eq. 15 up to
    the common shift).  L_c = ceil(R_c).
    """

    kind = "hard-core"
    config_class = HardCoreConfig

    def __init__(self, config: HardCoreConfig) -> None:
        L = math.ceil(config.range)
        super().__init__(2, L)
        self.config = config
        kernel = torch.zeros(1, 1, L + 1, 2 * L + 1, dtype=torch.float64)
        for di, dj in hard_core_offsets(config.range):
            kernel[0, 0, L + di, L + dj] = 1.0
        self.register_buffer("kernel", kernel, persistent=False)
        r = config.rho_eff
        self.free_logit = math.log(r / (1.0 - r))

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        occ = (canvas == 1).to(self.kernel.dtype).unsqueeze(1)  # (B, 1, H+L, W+2L); outside is not a particle
        n_near = torch.nn.functional.conv2d(occ, self.kernel)  # (B, 1, H, W): earlier particles within R_c
        particle = torch.where(n_near > 0.5, torch.tensor(-math.inf, dtype=occ.dtype, device=occ.device),
                               torch.tensor(self.free_logit, dtype=occ.dtype, device=occ.device))
        return torch.cat([torch.zeros_like(particle), particle], dim=1)  # (B, 2, H, W)
