"""Numba kernels for particle-only systems on a hypercubic lattice of any dimension (cubic: 3-D).

The 2-D kernels (:mod:`.kernels`) pack neighbour counts and edge bits into one byte per site
and split one draw into fields for 4 directions; they stay as they are (the paper presets'
grids are byte-identical to older versions). These kernels read neighbours from a table
instead, so the same code serves 6 neighbours on a simple cubic lattice (or 4 on a square one,
which the tests use to check them against the 2-D kernels' statistics).

Layout
------
``nbr`` int32 ``(N, z)``, ``z = 2 * ndim``: ``nbr[s, d]`` is the neighbour of site ``s`` in
direction ``d`` (:func:`neighbour_table_nd`); with open boundaries a missing neighbour is the
*wall*, site ``N``. ``state`` uint8 ``(N + 1,)``: EMPTY 0, PARTICLE 1, and WALL 4 at index N
(it is never entered and counts as no particle). ``order``/``slot`` hold particles first, as
in the general 2-D kernels (:func:`.kernels.site_order`).

Moves (the 2-D move rules, ``params.SWEEP_DEFINITION``)
--------------------------------------------------------
* local hop: a uniformly random particle to a uniformly random one of its z neighbours,
  rejected unless that site is empty;
* non-local jump: a uniformly random particle to a uniformly random non-particle site;
* insertion/removal (ensemble grand): a uniformly random site.

Metropolis with ΔE from ``Hamiltonian.move_deltas(z)`` / ``insertion_deltas(z)``, in the 2-D
kernels' fixed-point acceptance tables (:func:`.kernels.fill_thresholds`).

Random numbers
--------------
Particle move: draw 1 bits 32-63 pick the particle, bits 0-31 the direction (multiply-shift
by z); with ``nl_cut > 0`` draw 2 decides local/non-local (bits 0-31) and picks the target
(bits 32-63); the acceptance test takes bits 34-63 of a further draw (a tie, probability
2**-30, one more draw against ``lo``). Insertion/removal: bits 32-63 pick the site, bits 0-29
test acceptance.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mapsim.montecarlo.kernels import (
    EMPTY,
    PARTICLE,
    WALL,
    _U32,
    _U32MASK,
    _accept,
    _pick,
    _store_counts,
    _swap,
    fill_thresholds,
)
from mapsim.montecarlo.rng import xoshiro_next

__all__ = ["neighbour_table_nd", "nd_encode", "nd_move_index", "nd_insertion_index", "nd_adjacent", "nd_particle_moves", "nd_exchanges", "nd_run_sweeps",
           "nd_run_traced", "nd_terms"]

_U34 = np.uint64(34)


def neighbour_table_nd(shape: tuple[int, ...], periodic: bool) -> np.ndarray:
    """Neighbour indices of a flat hypercubic lattice (C order, last axis fastest).

    Parameters
    ----------
    shape : tuple of int
        Lattice shape, e.g. (D, H, W).
    periodic : bool
        Periodic boundaries; else a missing neighbour is the wall site ``N = prod(shape)``.

    Returns
    -------
    ndarray of int32, shape (N, 2 * len(shape))
        Directions ``2a`` (index - 1 along axis a) and ``2a + 1`` (index + 1).
    """
    n = int(np.prod(shape))
    idx = np.indices(shape).reshape(len(shape), -1)
    flat = np.arange(n).reshape(shape)
    out = np.empty((n, 2 * len(shape)), np.int64)
    for a, size in enumerate(shape):
        for k, step in enumerate((-1, 1)):
            if periodic:
                out[:, 2 * a + k] = np.roll(flat, -step, axis=a).ravel()
            else:
                moved = idx[a] + step
                ok = (moved >= 0) & (moved < size)
                out[:, 2 * a + k] = np.where(ok, np.roll(flat, -step, axis=a).ravel(), n)
    return out.astype(np.int32)


def nd_encode(grid: np.ndarray) -> np.ndarray:
    """Kernel state of a 0/1 grid: uint8 ``(N + 1,)``, the grid flattened then the wall."""
    flat = np.asarray(grid, np.uint8).ravel()
    state = np.empty(flat.size + 1, np.uint8)
    state[:-1] = flat
    state[-1] = WALL
    return state


@njit(inline="always", cache=True)
def _count(state, nbr, s):
    """Particle neighbours of site ``s``."""
    m = 0
    for d in range(nbr.shape[1]):
        m += np.int64(state[nbr[s, d]]) & 1
    return m


@njit(inline="always", cache=True)
def nd_move_index(state, nbr, s, t, adj):
    """``Hamiltonian.move_deltas(z)`` index of moving the particle at ``s`` to the empty site ``t``.

    ``adj`` = 1 when they are neighbours (t's count then includes the mover).
    """
    z = nbr.shape[1]
    return (_count(state, nbr, t) - adj - _count(state, nbr, s) + z) * (2 * z + 1) + z


@njit(inline="always", cache=True)
def nd_insertion_index(state, nbr, s):
    """``Hamiltonian.insertion_deltas(z)`` index of inserting at (empty) or removing from (particle) site ``s``."""
    z1 = nbr.shape[1] + 1
    return (np.int64(state[s]) & 1) * z1 * z1 + _count(state, nbr, s) * z1


@njit(inline="always", cache=True)
def nd_adjacent(nbr, s, t):
    """1 if ``t`` is a nearest neighbour of ``s``."""
    adj = 0
    for d in range(nbr.shape[1]):
        if nbr[s, d] == t:
            adj = 1
    return adj


@njit(inline="always", cache=True)
def _accept_fresh(k, thr_hi, thr_lo, s0, s1, s2, s3):
    """Metropolis test of table entry ``k`` with the top 30 bits of a fresh draw (tie: one more)."""
    r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
    a = r >> _U34
    h = thr_hi[k]
    if a < h:
        return True, s0, s1, s2, s3
    if a > h:
        return False, s0, s1, s2, s3
    r2, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
    return r2 < thr_lo[k], s0, s1, s2, s3


@njit(cache=True)
def nd_particle_moves(state, nbr, order, slot, n_part, thr_hi, thr_lo, nl_cut, n_attempts, rng, counts):
    """Local hops and non-local jumps of a particle-only system (module docstring).

    Parameters
    ----------
    state : uint8 array (N + 1,), updated
    nbr : int32 array (N, z)
    order, slot : int32 arrays (N,), updated
    n_part : int
        Number of particles (``order[:n_part]``); unchanged.
    thr_hi, thr_lo : uint64 arrays ((2z + 1)**2,)
        Acceptance tables of ``Hamiltonian.move_deltas(z)``.
    nl_cut : int in [0, 2**32]
        Probability ``nl_cut / 2**32`` that a move is non-local.
    n_attempts : int
    rng : uint64 array (4,), updated
    counts : int64 array (8,), updated
        ``[local attempts, accepted, non-local attempts, accepted, ...]``.
    """
    n_sites = nbr.shape[0]
    z = nbr.shape[1]
    n_free = n_sites - n_part
    if n_part == 0:
        return
    zu = np.uint64(z)
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    n_jumps = 0
    acc_hops = 0
    acc_jumps = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        i = _pick(r, 0, n_part)
        site = np.int64(order[i])
        jump = False
        if nl_cut > 0:
            r2, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
            jump = nl_cut >= 4294967296 or (r2 & _U32MASK) < np.uint64(nl_cut)
        if jump:
            n_jumps += 1
            if n_free == 0:
                continue
            j = _pick(r2, n_part, n_free)
            tgt = np.int64(order[j])
            adj = nd_adjacent(nbr, site, tgt)
        else:
            d = np.int64(((r & _U32MASK) * zu) >> _U32)
            tgt = np.int64(nbr[site, d])
            if state[tgt] != EMPTY:  # a particle or the wall
                continue
            j = np.int64(slot[tgt])
            adj = 1
        k = nd_move_index(state, nbr, site, tgt, adj)
        ok, s0, s1, s2, s3 = _accept_fresh(k, thr_hi, thr_lo, s0, s1, s2, s3)
        if not ok:
            continue
        state[site] = EMPTY
        state[tgt] = PARTICLE
        _swap(order, slot, i, j)
        if jump:
            acc_jumps += 1
        else:
            acc_hops += 1
    _store_counts(counts, n_attempts, n_jumps, acc_hops, acc_jumps)
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3


@njit(cache=True)
def nd_exchanges(state, nbr, order, slot, n_part, thr_hi, thr_lo, n_attempts, rng, counts):
    """Grand-canonical insertion/removal at uniformly random sites; returns the new particle number.

    Acceptance tables of ``Hamiltonian.insertion_deltas(z)`` (index ``occupied (z+1)**2 + n (z+1)``);
    ``counts[4:6]`` gain attempts and accepted.
    """
    n_sites = nbr.shape[0]
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    accepted = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        site = _pick(r, 0, n_sites)
        occ = np.int64(state[site]) & 1
        k = nd_insertion_index(state, nbr, site)
        ok, s0, s1, s2, s3 = _accept(r, k, thr_hi, thr_lo, s0, s1, s2, s3)
        if not ok:
            continue
        if occ:
            n_part -= 1
            _swap(order, slot, np.int64(slot[site]), n_part)
            state[site] = EMPTY
        else:
            _swap(order, slot, np.int64(slot[site]), n_part)
            n_part += 1
            state[site] = PARTICLE
        accepted += 1
    counts[4] += n_attempts
    counts[5] += accepted
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3
    return n_part


@njit(cache=True)
def nd_terms(state, nbr, order, n_part, out):
    """Energy terms (``hamiltonian.TERMS``) into ``out`` (int64 (5,)): particle bonds and particles."""
    m = 0
    for p in range(n_part):
        m += _count(state, nbr, np.int64(order[p]))
    out[0] = m // 2  # every bond counted from both its particles
    out[1] = 0
    out[2] = 0
    out[3] = 0
    out[4] = n_part


@njit(cache=True)
def nd_run_sweeps(state, nbr, order, slot, n_part, dE_move, dE_ins, T_schedule, mobility, nl_cut, grand, tol, rng,
                  counts):
    """Sweeps: (``grand``) N insertion/removal attempts, then ``mobility * n_part`` particle moves.

    ``dE_move``, ``dE_ins``: ``Hamiltonian.move_deltas(z)`` and ``insertion_deltas(z)``. Returns the
    particle number afterwards.
    """
    n_sites = nbr.shape[0]
    mv_hi = np.empty(dE_move.shape[0], np.uint64)
    mv_lo = np.empty(dE_move.shape[0], np.uint64)
    in_hi = np.empty(dE_ins.shape[0], np.uint64)
    in_lo = np.empty(dE_ins.shape[0], np.uint64)
    T_prev = -1.0
    for i in range(T_schedule.shape[0]):
        T = T_schedule[i]
        if T != T_prev:
            fill_thresholds(dE_move, T, tol, mv_hi, mv_lo)
            fill_thresholds(dE_ins, T, tol, in_hi, in_lo)
            T_prev = T
        if grand:
            n_part = nd_exchanges(state, nbr, order, slot, n_part, in_hi, in_lo, n_sites, rng, counts)
        nd_particle_moves(state, nbr, order, slot, n_part, mv_hi, mv_lo, nl_cut, mobility * n_part, rng, counts)
    return n_part


@njit(cache=True)
def nd_run_traced(state, nbr, order, slot, n_part, dE_move, dE_ins, T_schedule, at, mobility, nl_cut, grand, tol,
                  rng, counts, terms):
    """:func:`nd_run_sweeps` in pieces, with the energy terms after sweep ``at[i]`` in ``terms[i]``."""
    nd_terms(state, nbr, order, n_part, terms[0])
    for i in range(1, at.shape[0]):
        n_part = nd_run_sweeps(state, nbr, order, slot, n_part, dE_move, dE_ins, T_schedule[at[i - 1]:at[i]],
                               mobility, nl_cut, grand, tol, rng, counts)
        nd_terms(state, nbr, order, n_part, terms[i])
    return n_part
