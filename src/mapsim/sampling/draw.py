"""The one draw rule of every sampler.

A point with logits z (N_c,) is drawn at inverse temperature beta from
p = softmax(beta z) with its uniform u: the drawn class is the first c whose
cumulative probability p_0 + ... + p_c exceeds u.  A class of probability 0
(logit -inf) is never drawn: if rounding leaves the total below u, the last
class of non-zero probability is taken.  The log-probability of the drawn
class is returned with it, in float64.

:func:`draw_pixel` is compiled (numba) so that compiled backends call this
very function (they import it by name and numba compiles it into them), and
every Python sampler goes through :func:`draw`, which calls it too.  The
tests replace ``draw_pixel`` where each backend looks it up, recompile the
backend and see its output change.  (Passing the rule as a first-class
function argument would say the same at run time, but numba cannot cache a
kernel with a function-typed argument across processes: every run would
recompile for half a minute.)

Positions inside a pixel (models with a position head) have their own rule,
:func:`draw_position`, used by compiled backends the same way: one coordinate from B bin logits and one
uniform v of the ``POSITION`` stream by the inverse CDF of the piecewise
uniform density (bin b chosen like a class, then the position inside it from
the same v), so a coordinate costs one uniform and its density is exact.  A joint density over
B x B cells (a position density with a pair term) is drawn by :func:`draw_position_joint`: the y bin
from the row sums, then x from the chosen row, each by :func:`draw_position`.
"""

from __future__ import annotations

import math

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


POSITION_EDGE = 2.0**-12
"""Drawn positions keep this fraction of a bin from the bin's edges: with at most 1024 bins
the float32 value of the position then lies in its bin (2^-22 from an edge against a float32
spacing of at most 2^-24 below 1), so the stored offsets give back the drawn bins and the
density is unchanged but for a 2^-11 sliver of every bin."""


@njit(cache=True)
def draw_position(logits, v):
    """Draw one coordinate in [0, 1) from B bin logits by the inverse CDF.

    The density is p_b * B on bin b = [b/B, (b+1)/B), p = softmax(logits).  With
    cumulative probabilities c_b = p_0 + ... + p_{b-1}, the drawn bin is the first
    with c_b + p_b > v and the coordinate ``(b + (v - c_b) / p_b) / B``, kept
    :data:`POSITION_EDGE` of a bin inside it and rounded to float32 (module
    docstring); if rounding leaves the total below v, the last bin of non-zero
    probability is taken at its upper end.

    Parameters
    ----------
    logits : ndarray, shape (B,)
        Any float dtype, finite or -inf.
    v : float
        Uniform in [0, 1).

    Returns
    -------
    (int, float, float)
        The bin, the coordinate (pixel units, a float32 value) and the log-density of the
        coordinate per unit length (log p_b + log B, nats).
    """
    nb = logits.shape[0]
    mx = -np.inf
    for b in range(nb):
        z = np.float64(logits[b])
        if z > mx:
            mx = z
    tot = 0.0
    for b in range(nb):
        tot += math.exp(np.float64(logits[b]) - mx)
    lse = mx + math.log(tot)
    cum = 0.0
    last = 0
    frac = 1.0 - POSITION_EDGE
    found = False
    for b in range(nb):
        z = np.float64(logits[b])
        if z == -np.inf:
            continue
        pb = math.exp(z - lse)
        last = b
        if cum + pb > v:
            frac = (v - cum) / pb
            found = True
            break
        cum += pb
    if not found:
        frac = 1.0 - POSITION_EDGE
    frac = min(max(frac, POSITION_EDGE), 1.0 - POSITION_EDGE)
    t = np.float64(np.float32((last + frac) / nb))
    return last, t, np.float64(logits[last]) - lse + math.log(nb)


@njit(cache=True)
def _draw_position_rows(logits, v):
    n = logits.shape[0]
    bins = np.empty(n, np.int64)
    t = np.empty(n, np.float64)
    logd = np.empty(n, np.float64)
    for i in range(n):
        b, x, ld = draw_position(logits[i], v[i])
        bins[i] = b
        t[i] = x
        logd[i] = ld
    return bins, t, logd



@njit(cache=True)
def draw_position_joint(joint, vy, vx, rows):
    """Draw (y, x) in [0, 1)^2 from log-weights ``joint`` (B, B) of the cells (y bin, x bin).

    y is drawn by :func:`draw_position` from the row log-sums (``rows``, (B,) float64 scratch)
    with ``vy``, then x from the chosen row with ``vx``.  Returns (y bin, y, x bin, x, log-density
    per unit pixel area) = log p(cell) + 2 log B with p = the normalised ``exp(joint)``.
    """
    nb = joint.shape[0]
    for b in range(nb):
        mx = -np.inf
        for q in range(nb):
            z = np.float64(joint[b, q])
            if z > mx:
                mx = z
        if mx == -np.inf:
            rows[b] = -np.inf
            continue
        tot = 0.0
        for q in range(nb):
            tot += math.exp(np.float64(joint[b, q]) - mx)
        rows[b] = mx + math.log(tot)
    by, y, ldy = draw_position(rows, vy)
    bx, x, ldx = draw_position(joint[by], vx)
    return by, y, bx, x, ldy + ldx


@njit(cache=True)
def _draw_joint_rows(joint, v):
    n = joint.shape[0]
    out = np.empty((n, 2), np.float64)
    logd = np.empty(n, np.float64)
    rows = np.empty(joint.shape[1], np.float64)
    for i in range(n):
        _, y, _, x, ld = draw_position_joint(joint[i], v[i, 0], v[i, 1], rows)
        out[i, 0] = y
        out[i, 1] = x
        logd[i] = ld
    return out, logd


def draw_positions_joint(joint: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw many positions with :func:`draw_position_joint`.

    Parameters
    ----------
    joint : ndarray, shape (n, B, B)
        Log-weights of the cells (y bin, x bin).
    v : ndarray, shape (n, 2)
        Uniforms for y and x.

    Returns
    -------
    positions : ndarray of float64, shape (n, 2)
        (y, x) in [0, 1), pixel units (float32 values).
    log_density : ndarray of float64, shape (n,)
        Per unit pixel area.
    """
    joint = np.ascontiguousarray(np.asarray(joint, dtype=np.float64))
    return _draw_joint_rows(joint, np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(-1, 2)))


def draw_positions(logits: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw many coordinates with :func:`draw_position`.

    Parameters
    ----------
    logits : ndarray, shape (n, B)
    v : ndarray, shape (n,)

    Returns
    -------
    bins : ndarray of int64, shape (n,)
    coords : ndarray of float64, shape (n,)
        In [0, 1), pixel units (float32 values).
    log_density : ndarray of float64, shape (n,)
        Per unit length (pixel units).
    """
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float64):
        logits = logits.astype(np.float64)
    flat = np.ascontiguousarray(logits.reshape(-1, logits.shape[-1]))
    vv = np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(-1))
    return _draw_position_rows(flat, vv)


@njit(cache=True)
def _draw_rows(logits, beta, u):
    n = logits.shape[0]
    cls = np.empty(n, np.int64)
    logp = np.empty(n, np.float64)
    for i in range(n):
        c, lp = draw_pixel(logits[i], beta, u[i])
        cls[i] = c
        logp[i] = lp
    return cls, logp



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
    cls, logp = _draw_rows(flat, float(beta), uu)
    return cls.reshape(shape), logp.reshape(shape)
