"""The one sampler core: a schedule, a conditional provider and the one draw rule.

A sample of shape ``(n_0, ..., n_{d-1})`` is generated in steps.  A
**schedule** says which points are drawn at each step (the same points for
every one of the K samples); a **provider** gives the logits of those points
given everything drawn before and records the drawn classes; the draw rule
(:func:`mapsim.sampling.draw.draw`) turns logits and the uniforms of the
contract (:mod:`mapsim.sampling.rng`) into classes.  :func:`run` is the loop.

Schedules
---------
``raster``: one point per step, in raster order (the definition of a MAP).
``front``: with context range L, point ``idx`` is drawn at step
``t = sum_a idx[a] (L + 1)^(d - 1 - a)``, i.e. ``j + (L + 1) i`` in 2D and
``j + (L + 1) i + (L + 1)^2 p`` in 3D (plane p): every point whose causal
context is complete is drawn at once.  The causal context of a point reaches
L back along the first axis that differs and at most L either way along later
axes, and ``(L + 1)^m > L sum_{b<m} (L + 1)^b`` makes every context point's
step smaller.  Both give the same samples, since the draws are the same.

Providers
---------
An object with ``n_classes`` and three methods::

    start(n_samples, shape)          -> None   (make the canvas and caches)
    logits(index)                    -> ndarray (K, n, N_c)
    commit(index, classes)           -> None   (classes (K, n) int64)

``index`` is a tuple of d integer arrays of length n (the step's points).
A provider with a **continuous head** (positions inside a pixel) also has
``positions(index, classes, v) -> (positions (K, n, d), log_density (K, n))``,
called after ``commit`` with its own uniforms v (K, n, d) from the
``POSITION`` stream; the point's log-probability is the class part plus the
log-density.  Class-only providers do not define it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from mapsim.sampling import draw as draw_module
from mapsim.sampling.rng import POSITION, uniforms


class Provider(Protocol):
    n_classes: int

    def start(self, n_samples: int, shape: tuple[int, ...]) -> None: ...

    def logits(self, index: tuple[np.ndarray, ...]) -> np.ndarray: ...

    def commit(self, index: tuple[np.ndarray, ...], classes: np.ndarray) -> None: ...


class Schedule:
    """Points drawn at each step, and when each leading slab is complete.

    Iterating gives, for every step, the index tuple (d integer arrays of
    equal length) of its points; ``slabs_done_after(t)`` is the number of
    complete slabs along axis 0 (rows in 2D) once step t is done.
    """

    shape: tuple[int, ...]

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def slabs_done_after(self, t: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class RasterSchedule(Schedule):
    """One point per step, in raster order (made on the fly: no per-point storage)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self._slab = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        for idx in np.ndindex(*self.shape):
            yield tuple(np.array([i]) for i in idx)

    def slabs_done_after(self, t: int) -> int:
        return (t + 1) // self._slab


class FrontSchedule(Schedule):
    """Every point whose causal context is complete at once (see the module docstring)."""

    def __init__(self, shape: tuple[int, ...], context_range: int) -> None:
        self.shape = tuple(int(n) for n in shape)
        w = front_weights(len(self.shape), context_range)
        t_of = np.zeros(self.shape, np.int64)
        for a, ia in enumerate(np.indices(self.shape)):
            t_of += w[a] * ia
        flat = t_of.ravel()
        order = np.argsort(flat, kind="stable")  # raster order within a step
        cuts = np.flatnonzero(np.diff(flat[order])) + 1
        groups = np.split(order, cuts)
        self._steps = [np.unravel_index(g, self.shape) for g in groups]
        step_no = np.empty(flat.size, np.int64)
        for s, g in enumerate(groups):
            step_no[g] = s
        # slab i along axis 0 is complete at the step of its last point
        last = np.sort(step_no.reshape(self.shape[0], -1).max(axis=1))
        self._done = np.searchsorted(last, np.arange(len(groups)), side="right")

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        return iter(self._steps)

    def slabs_done_after(self, t: int) -> int:
        return int(self._done[t])


def raster_schedule(shape: tuple[int, ...]) -> Schedule:
    """One point per step, in raster order."""
    return RasterSchedule(shape)


def front_weights(ndim: int, context_range: int) -> np.ndarray:
    """Step weights of the front schedule: (L + 1)^(d - 1 - a) for axis a."""
    return (int(context_range) + 1) ** np.arange(ndim - 1, -1, -1, dtype=np.int64)


def front_schedule(shape: tuple[int, ...], context_range: int) -> Schedule:
    """Every point whose causal context is complete at once (see the module docstring)."""
    return FrontSchedule(shape, context_range)


@dataclass
class CoreResult:
    """Classes and log-probabilities of every drawn point.

    Attributes
    ----------
    classes : ndarray of int64, shape (K, *shape)
    log_probs : ndarray of float64, shape (K, *shape)
    positions : ndarray of float64, shape (K, *shape, d), or None
        For providers with a continuous head (NaN where the head was not asked).
    """

    classes: np.ndarray
    log_probs: np.ndarray
    positions: np.ndarray | None = None


def run(provider: Provider, schedule: Schedule, u: np.ndarray, *, beta: float = 1.0,
        position_seed: int | None = None, progress: Callable[[int], None] | None = None,
        stop_after_slabs: int | None = None, v: np.ndarray | None = None) -> CoreResult:
    """Draw K samples point by point along ``schedule``.

    Parameters
    ----------
    provider : Provider
    schedule : Schedule
    u : ndarray of float64, shape (K, *schedule.shape)
        Class uniforms (contract of :mod:`mapsim.sampling.rng`).
    beta : float
        Inverse temperature of the class draws.
    position_seed : int, optional
        Seed of the position stream, for providers with a continuous head.
    progress : callable, optional
        Called with the number of complete slabs (rows in 2D) when it grows.
    stop_after_slabs : int, optional
        Stop once this many slabs are complete (the rest stay class 0); for timing.
    v : ndarray of float64, shape (K, *schedule.shape, d), optional
        Explicit position uniforms (overrides ``position_seed``; e.g. a block of rows).

    Returns
    -------
    CoreResult
    """
    K = u.shape[0]
    shape = schedule.shape
    if u.shape != (K,) + shape:
        raise ValueError(f"uniforms must have shape {(K,) + shape}, found {u.shape}")
    provider.start(K, shape)
    classes = np.zeros((K,) + shape, dtype=np.int64)
    logp = np.zeros((K,) + shape, dtype=np.float64)
    head = hasattr(provider, "positions")
    pos = None
    if head:
        pos = np.full((K,) + shape + (len(shape),), np.nan)
        v_all = v if v is not None else uniforms(0 if position_seed is None else position_seed, K, *shape,
                                                 stream=POSITION, ndim=len(shape))
        if v_all.shape != (K,) + shape + (len(shape),):
            raise ValueError(f"position uniforms must have shape {(K,) + shape + (len(shape),)}, found {v_all.shape}")
    done = 0
    for t, index in enumerate(schedule):
        z = provider.logits(index)  # (K, n, N_c)
        sel = (slice(None),) + tuple(index)
        c, lp = draw_module.draw(z, beta, u[sel])
        provider.commit(index, c)
        if head:
            xy, ld = provider.positions(index, c, v_all[sel])
            pos[sel] = xy
            lp = lp + ld
        classes[sel] = c
        logp[sel] = lp
        if schedule.slabs_done_after(t) > done:
            done = schedule.slabs_done_after(t)
            if progress is not None:
                progress(done)
            if stop_after_slabs is not None and done >= stop_after_slabs:
                break
    return CoreResult(classes, logp, pos)
