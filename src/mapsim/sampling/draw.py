"""The one draw rule of every sampler.

A point with logits z (N_c,) is drawn at inverse temperature beta from
p = softmax(beta z) with its uniform u: the drawn class is the first c whose
cumulative probability p_0 + ... + p_c exceeds u.  A class of probability 0
(logit -inf) is never drawn: if rounding leaves the total below u, the last
class of non-zero probability is taken.  The log-probability of the drawn
class is returned with it, in float64.

:func:`draw_pixel` is compiled (numba) so that compiled backends call this
very function; they receive it as an argument, looked up in this module when
the sampler is called (see :func:`current_draw`), and every Python sampler
goes through :func:`draw`, which does the same.  Replacing ``draw_pixel``
here therefore changes every sampler's output, which the tests check.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit


@njit(cache=True)
def draw_pixel(logits, beta, u):
    """Draw one class.

    Parameters
    ----------
    logits : ndarray, shape (N_c,)
        Any float dtype; -inf means probability 0.
    beta : float
        Inverse temperature.
    u : float
        Uniform in [0, 1).

    Returns
    -------
    (int, float)
        The class and its log-probability (nats).
    """
    nc = logits.shape[0]
    mx = -np.inf
    for c in range(nc):
        z = beta * np.float64(logits[c])
        if z > mx:
            mx = z
    if mx == -np.inf:
        return 0, -np.inf
    tot = 0.0
    for c in range(nc):
        tot += math.exp(beta * np.float64(logits[c]) - mx)
    lse = mx + math.log(tot)
    cum = 0.0
    last = 0
    for c in range(nc):
        z = beta * np.float64(logits[c])
        if z == -np.inf:
            continue
        last = c
        cum += math.exp(z - lse)
        if cum > u:
            return c, z - lse
    return last, beta * np.float64(logits[last]) - lse


@njit(cache=True)
def _draw_rows(logits, beta, u, draw_fn):
    n = logits.shape[0]
    cls = np.empty(n, np.int64)
    logp = np.empty(n, np.float64)
    for i in range(n):
        c, lp = draw_fn(logits[i], beta, u[i])
        cls[i] = c
        logp[i] = lp
    return cls, logp


def current_draw():
    """The draw function compiled backends must call (this module's ``draw_pixel`` now)."""
    return sys.modules[__name__].draw_pixel


def draw(logits: np.ndarray, beta: float, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw many points with :func:`draw_pixel`.

    Parameters
    ----------
    logits : ndarray, shape (..., N_c)
    beta : float
    u : ndarray, shape (...)

    Returns
    -------
    classes : ndarray of int64, shape (...)
    log_probs : ndarray of float64, shape (...)
    """
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float64):
        logits = logits.astype(np.float64)
    shape = logits.shape[:-1]
    flat = np.ascontiguousarray(logits.reshape(-1, logits.shape[-1]))
    uu = np.ascontiguousarray(np.broadcast_to(np.asarray(u, dtype=np.float64), shape).reshape(-1))
    cls, logp = _draw_rows(flat, float(beta), uu, current_draw())
    return cls.reshape(shape), logp.reshape(shape)
