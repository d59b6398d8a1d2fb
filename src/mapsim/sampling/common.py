"""What every sampler shares: the boundary above the sample and argument checks.

The random numbers are in :mod:`mapsim.sampling.rng` (the uniforms contract)
and the draw rule in :mod:`mapsim.sampling.draw`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapsim.errors import MapsimError
from mapsim.sampling.rng import boundary_generator, seed_entropy


@dataclass(frozen=True)
class Boundary:
    """What lies above the sample (the sides are always outside).

    Parameters
    ----------
    mode : {"outside", "noise", "grid"}
        ``outside``: the outside class (default, as in the paper);
        ``noise``: random points, class 1 with probability ``density``, else class 0;
        ``grid``: the last rows of ``grid`` tiled along the width.
    density : float
        For ``noise``.
    grid : ndarray of int, shape (Hg, Wg), optional
        For ``grid``: e.g. a training sample. If Hg < L the rows above it are outside.
    """

    mode: str = "outside"
    density: float = 0.0
    grid: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("outside", "noise", "grid"):
            raise MapsimError(f"boundary mode must be outside, noise or grid, found {self.mode!r}")
        if self.mode == "noise" and not (0.0 <= self.density <= 1.0):
            raise MapsimError(f"noise boundary density must lie in [0, 1], found {self.density}")
        if self.mode == "grid":
            if self.grid is None:
                raise MapsimError("grid boundary needs a grid")
            g = np.asarray(self.grid)
            if g.ndim != 2 or g.size == 0:
                raise MapsimError(f"grid boundary must be a non-empty 2-D grid, found shape {g.shape}")

    def describe(self) -> str:
        if self.mode == "noise":
            return f"noise:{self.density:g}"
        if self.mode == "grid":
            return f"grid:{self.grid.shape[0]}x{self.grid.shape[1]}"
        return "outside"

    def top_rows(self, n_samples: int, context_range: int, width: int, n_classes: int,
                 seed: int | np.random.Generator = 0, first_sample: int = 0) -> np.ndarray:
        """Canvas rows above the sample, shape (K, L, W + 2L), ids in 0..N_c (N_c = outside)."""
        L = context_range
        top = np.full((n_samples, L, width + 2 * L), n_classes, dtype=np.int64)
        if L == 0 or self.mode == "outside":
            return top
        if self.mode == "noise":
            seed = seed_entropy(seed)
            for k in range(n_samples):  # one generator per sample: samples can be made apart
                noise = boundary_generator(seed, first_sample + k).random((L, width))
                top[k, :, L : L + width] = (noise < self.density).astype(np.int64)
            return top
        g = np.asarray(self.grid, dtype=np.int64)
        if g.max() >= n_classes or g.min() < 0:
            raise MapsimError(f"grid boundary holds class ids {int(g.min())}..{int(g.max())}, the model has {n_classes} classes")
        rows = g[-L:]  # the rows nearest the sample
        reps = -(-width // g.shape[1])
        tiled = np.tile(rows, (1, reps))[:, :width]
        top[:, L - rows.shape[0] :, L : L + width] = tiled[None]
        return top


def parse_boundary(spec: str) -> Boundary:
    """Parse ``outside``, ``noise:DENSITY`` or ``grid:FILE[:INDEX]`` (CLI syntax)."""
    if spec == "outside":
        return Boundary()
    if spec.startswith("noise:"):
        try:
            d = float(spec.split(":", 1)[1])
        except ValueError:
            raise MapsimError(f"--boundary {spec!r}: expected noise:DENSITY with a number") from None
        if not np.isfinite(d):
            raise MapsimError(f"--boundary {spec!r}: density must be finite")
        return Boundary("noise", density=d)
    if spec.startswith("grid:"):
        from mapsim.lattice import load_dataset

        rest = spec.split(":", 1)[1]
        index = 0
        path = rest
        head, _, tail = rest.rpartition(":")
        if head and tail.isdigit():
            path, index = head, int(tail)
        ds = load_dataset(Path(path))
        if index >= ds.n_samples:
            raise MapsimError(f"--boundary {spec!r}: index {index} out of range, {path} has {ds.n_samples} samples")
        return Boundary("grid", grid=ds.grids[index].astype(np.int64))
    raise MapsimError(f"--boundary {spec!r}: expected outside, noise:DENSITY or grid:FILE[:INDEX]")


def check_beta(beta: float) -> float:
    b = float(beta)
    if not np.isfinite(b) or b <= 0:
        raise MapsimError(f"beta (inverse temperature) must be a positive finite number, found {beta}")
    return b
