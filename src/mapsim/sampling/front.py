"""The anti-diagonal front: which pixels can be drawn at the same step.

With context range L, pixel (i, j) depends on row i - 1 up to column j + L,
so row i may lag row i - 1 by L + 1 columns: pixel (i, j) is drawn at step
t = j + (L + 1) i, and an H x W sample needs (L + 1)(H - 1) + W steps.
"""

from __future__ import annotations

import numpy as np


def n_steps(height: int, width: int, context_range: int) -> int:
    """Number of sequential steps for an H x W sample."""
    return (context_range + 1) * (height - 1) + width


def front_rows(t: int, height: int, width: int, context_range: int) -> tuple[int, int]:
    """Rows [r0, r1) that hold a drawable pixel at step t (column t - (L+1) r)."""
    lag = context_range + 1
    r1 = min(height, t // lag + 1)
    r0 = max(0, -(-(t - width + 1) // lag))
    return r0, r1


def front_pixels(t: int, height: int, width: int, context_range: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels drawn at step t."""
    r0, r1 = front_rows(t, height, width, context_range)
    rows = np.arange(r0, r1)
    return rows, t - (context_range + 1) * rows


def rows_done(t: int, height: int, width: int, context_range: int) -> int:
    """Rows completely drawn once steps 0..t are done."""
    lag = context_range + 1
    return max(0, min(height, (t - width + 1) // lag + 1))
