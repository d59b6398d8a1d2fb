"""Numba kernels: Metropolis particle hops and solvent flips on a flat square lattice.

Layout
------
A lattice of ``H x W`` sites is stored flat (``s = y * W + x``); directions are
up, down, left, right. Two site encodings are used:

* **particle-only systems** (``lg_*``, lattice gas): ``state[s] = occupied | m << 1
  | edges << 4`` (N entries) where ``m`` is the number of occupied neighbours, kept
  up to date on every accepted hop, and ``edges`` marks the directions that leave
  the box. ΔE of a hop is ``e_nn * (m_t - 1 - m_s)``, from the two sites' codes
  alone, and neighbours come from the edge bits (no table lookups).
* **systems with solvent** (``sv_*``): ``state[s]`` in {EMPTY=0 (vapour), PARTICLE=1,
  SOLVENT=2 (liquid)}, plus one extra entry ``N = H * W``, the *wall* (WALL=4).
  ``nbr[s, d]`` (shape ``(N, 4)``) is the neighbour of ``s``; with open boundaries
  a missing neighbour is the wall, which can never be entered and interacts with
  nothing. ``v & 1`` counts particles and ``(v >> 1) & 1`` liquid among neighbours.

Acceptance
----------
Metropolis, ``p = min(1, exp(-ΔE / T))``. ΔE takes only a few values per move
type, so each kernel reads a precomputed table indexed by the local neighbour
counts (``*_index`` functions below; ``*_delta_table`` gives the matching ΔE).
A table entry is ``p`` in fixed point: ``hi = floor(p * 2**30)`` compared with a
30-bit field of the move's random number, and on a tie (probability 2**-30) a
second draw against ``lo``, the next 64 bits of ``p``. So ``p`` is used to double
precision (absolute resolution 2**-94) while almost every move costs one draw.

**T = 0**: moves with ΔE <= 0 are accepted (ΔE = 0 too, so diffusion on flat
terrain does not freeze), moves with ΔE > 0 rejected; ΔE counts as 0 within
``tol`` (rounding of sums of couplings). This is the T -> 0 limit of Metropolis.

Random numbers
--------------
One xoshiro256** draw per attempt, split into fields: bits 32-63 pick the particle
(or site) by multiply-shift, bits 30-31 the direction, bits 0-29 the acceptance
test. The multiply-shift pick is uniform to within N / 2**32; since the reverse
move picks the same particle (or site), detailed balance holds regardless.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mapsim.montecarlo.rng import xoshiro_next

EMPTY, PARTICLE, SOLVENT, WALL = 0, 1, 2, 4

_MASK30 = np.uint64((1 << 30) - 1)
_ONE30 = float(1 << 30)
_TWO64 = 18446744073709551616.0
_MAX_LO = 18446744073709549568.0  # largest double below 2**64
_U32 = np.uint64(32)
_U30 = np.uint64(30)
_U3 = np.uint64(3)
_U32MASK = np.uint64(0xFFFFFFFF)

# Neighbours per site, and the sides of the ΔE tables of :class:`.hamiltonian.Hamiltonian`
# (``move_deltas(4)``: x and y over -z..z; ``insertion_deltas(4)``: counts 0..z).
_Z = 4
_MOVE_SIDE = 2 * _Z + 1
_INS_SIDE = _Z + 1

# ---------------------------------------------------------------------------
# geometry


def neighbour_table(height: int, width: int, periodic: bool) -> np.ndarray:
    """Neighbour indices of a flat ``height x width`` lattice.

    Returns
    -------
    ndarray of int32, shape (H*W, 4)
        ``[s, d]`` = neighbour of site ``s`` in direction d (up, down, left, right);
        with open boundaries a missing neighbour is the wall site ``H*W``.
    """
    n = height * width
    y, x = np.divmod(np.arange(n), width)
    out = np.empty((n, 4), np.int64)
    if periodic:
        out[:, 0] = ((y - 1) % height) * width + x
        out[:, 1] = ((y + 1) % height) * width + x
        out[:, 2] = y * width + (x - 1) % width
        out[:, 3] = y * width + (x + 1) % width
    else:
        out[:, 0] = np.where(y > 0, (y - 1) * width + x, n)
        out[:, 1] = np.where(y < height - 1, (y + 1) * width + x, n)
        out[:, 2] = np.where(x > 0, y * width + x - 1, n)
        out[:, 3] = np.where(x < width - 1, y * width + x + 1, n)
    return out.astype(np.int32)


# ---------------------------------------------------------------------------
# acceptance tables


@njit(cache=True)
def fill_thresholds(dE, T, tol, hi, lo):
    """Fixed-point Metropolis probabilities for an array of energy changes.

    Parameters
    ----------
    dE : float64 array (K,)
    T : float, >= 0
    tol : float
        |ΔE| <= tol counts as 0 (matters only at T = 0).
    hi, lo : uint64 arrays (K,), written
        ``hi = floor(p 2**30)``, ``lo = floor(frac(p 2**30) 2**64)``.
    """
    for k in range(dE.shape[0]):
        e = dE[k]
        if e <= tol:
            p = 1.0
        elif T <= 0.0:
            p = 0.0
        else:
            p = math.exp(-e / T)
        x = p * _ONE30
        h = math.floor(x)
        f = (x - h) * _TWO64
        if f > _MAX_LO:
            f = _MAX_LO
        hi[k] = np.uint64(h)
        lo[k] = np.uint64(f)


def acceptance_tables(dE: np.ndarray, T: float, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` fixed-point acceptance probabilities for ``dE`` (see module doc)."""
    dE = np.ascontiguousarray(dE, np.float64).ravel()
    hi = np.empty(dE.size, np.uint64)
    lo = np.empty(dE.size, np.uint64)
    fill_thresholds(dE, float(T), float(tol), hi, lo)
    return hi, lo


def acceptance_probability(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The probabilities encoded by ``(hi, lo)`` (for tests and diagnostics)."""
    return (hi.astype(np.float64) + lo.astype(np.float64) / _TWO64) / _ONE30


# ---------------------------------------------------------------------------
# particle-only systems (lattice gas)

LG_TABLE_SIZE = 128
_FLAG_SHIFT = 4  # bits 4..7 of a lattice-gas code: site is on the edge crossed by direction 0..3


@njit(cache=True)
def lg_delta_table(dE_move):
    """ΔE of a hop for each table index of :func:`lg_index`. Shape (128,).

    ``dE_move`` is ``Hamiltonian.move_deltas(4)`` (the one source of ΔE). Index
    ``(code_t & 15) * 8 + m_s``; for an empty target ``code_t & 15 = 2 m_t`` and ΔE is
    the move's with x = m_t - 1 - m_s (the target's count includes the mover), i.e.
    ``e_nn * (m_t - 1 - m_s)``. Odd ``code_t`` (target occupied) gives +inf: never
    accepted. Putting the target's occupancy into the table index removes the
    unpredictable occupied/empty branch from the hot loop.
    """
    out = np.full(LG_TABLE_SIZE, np.inf)
    for m_t in range(1, 5):
        for m_s in range(4):
            out[(2 * m_t) * 8 + m_s] = dE_move[(m_t - 1 - m_s + _Z) * _MOVE_SIDE + _Z]
    return out


@njit(inline="always", cache=True)
def lg_index(code_target, code_source):
    """Table index of a hop from the target's and the source's site codes."""
    return (np.int64(code_target) & 15) * 8 + ((np.int64(code_source) >> 1) & 7)


@njit(inline="always", cache=True)
def lg_edge(code, d):
    """1 if the site with lattice-gas ``code`` lies on the edge crossed by direction d."""
    return (np.int64(code) >> (_FLAG_SHIFT + d)) & 1


@njit(inline="always", cache=True)
def lg_neighbour(site, code, d, off, wrap):
    """Neighbour of ``site`` in direction d on a periodic lattice (branch-free).

    With open boundaries the caller must first reject ``lg_edge(code, d) == 1``.
    """
    return site + off[d] + wrap[d] * lg_edge(code, d)


def lg_encode(occupied: np.ndarray, nbr: np.ndarray, width: int) -> np.ndarray:
    """Lattice-gas site codes from an occupancy array.

    Parameters
    ----------
    occupied : array of bool or 0/1, shape (N,)
    nbr : int32 array (N, 4) from :func:`neighbour_table` (fixes the boundary kind)
    width : int
        Lattice width W (N = H * W).

    Returns
    -------
    ndarray of uint8, shape (N,)
        ``occupied | m << 1 | edges << 4``: occupancy, the number ``m`` of occupied
        neighbours, and one bit per direction whose step leaves the H x W box.
        Neighbours are computed from these bits instead of read from a table,
        which keeps the hot loop's memory to the codes and the particle list.
    """
    occ = np.asarray(occupied, np.uint8).ravel()
    n = occ.size
    height = n // width
    ext = np.concatenate([occ, np.zeros(1, np.uint8)])
    counts = ext[nbr].sum(axis=1).astype(np.uint8)
    y, x = np.divmod(np.arange(n), width)
    edges = (y == 0) * 1 + (y == height - 1) * 2 + (x == 0) * 4 + (x == width - 1) * 8
    return (occ | (counts << 1) | (edges << _FLAG_SHIFT)).astype(np.uint8)


@njit(cache=True)
def lg_hop_attempts(state, width, periodic, pos, thr_hi, thr_lo, n_attempts, rng):
    """``n_attempts`` Metropolis hop attempts of random particles to a random neighbour.

    Parameters
    ----------
    state : uint8 array (N,), updated
        Lattice-gas codes (:func:`lg_encode`).
    width : int
        Lattice width W.
    periodic : bool
        Periodic boundaries; else a hop off the lattice is rejected.
    pos : int32 array (n_particles,), updated
        Site of each particle.
    thr_hi, thr_lo : uint64 arrays (128,)
        Acceptance tables of :func:`lg_delta_table`.
    n_attempts : int
    rng : uint64 array (4,), updated
        xoshiro256** state.

    Returns
    -------
    int
        Number of accepted hops.
    """
    npart = pos.shape[0]
    if npart == 0:
        return 0
    off, wrap = lg_steps(width, state.shape[0])
    npu = np.uint64(npart)
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    accepted = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        p = np.int64(((r >> _U32) * npu) >> _U32)
        d = np.int64((r >> _U30) & _U3)
        site = np.int64(pos[p])
        ss = state[site]
        if not periodic and lg_edge(ss, d):
            continue
        tgt = lg_neighbour(site, ss, d, off, wrap)
        st = state[tgt]
        k = lg_index(st, ss)
        a = r & _MASK30
        h = thr_hi[k]
        if a >= h:
            if a > h:
                continue
            r2, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
            if r2 >= thr_lo[k]:
                continue
        state[site] = ss - 1
        state[tgt] = st + 1
        for j in range(4):
            if periodic or not lg_edge(ss, j):
                state[lg_neighbour(site, ss, j, off, wrap)] -= 2
        for j in range(4):
            if periodic or not lg_edge(st, j):
                state[lg_neighbour(tgt, st, j, off, wrap)] += 2
        pos[p] = tgt
        accepted += 1
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3
    return accepted


@njit(cache=True)
def lg_steps(width, n_sites):
    """Per-direction site offsets and wrap corrections for :func:`lg_neighbour`.

    Returns
    -------
    off, wrap : int64 arrays (4,)
        The neighbour of ``s`` in direction d is ``s + off[d]``, plus ``wrap[d]``
        when ``s`` lies on the edge that direction d crosses (periodic lattices).
    """
    off = np.empty(4, np.int64)
    wrap = np.empty(4, np.int64)
    off[0], off[1], off[2], off[3] = -width, width, -1, 1
    wrap[0], wrap[1], wrap[2], wrap[3] = n_sites, -n_sites, width, -width
    return off, wrap


@njit(cache=True)
def lg_run_sweeps(state, width, periodic, pos, dE_move, T_schedule, mobility, tol, rng):
    """Sweeps of a particle-only system; sweep ``i`` runs at ``T_schedule[i]``.

    A sweep is ``mobility * n_particles`` hop attempts.

    Returns
    -------
    int
        Accepted hops.
    """
    dE = lg_delta_table(dE_move)
    hi = np.empty(LG_TABLE_SIZE, np.uint64)
    lo = np.empty(LG_TABLE_SIZE, np.uint64)
    n_per_sweep = mobility * pos.shape[0]
    accepted = 0
    T_prev = -1.0
    for i in range(T_schedule.shape[0]):
        T = T_schedule[i]
        if T != T_prev:
            fill_thresholds(dE, T, tol, hi, lo)
            T_prev = T
        accepted += lg_hop_attempts(state, width, periodic, pos, hi, lo, n_per_sweep, rng)
    return accepted


# ---------------------------------------------------------------------------
# systems with solvent

SV_FLIP_TABLE_SIZE = 50


@njit(inline="always", cache=True)
def sv_counts(state, nbr, s):
    """(particle, liquid) neighbour counts of site ``s``."""
    n = 0
    l = 0
    for d in range(4):
        v = np.int64(state[nbr[s, d]])
        n += v & 1
        l += (v >> 1) & 1
    return n, l


@njit(inline="always", cache=True)
def sv_flip_index(state, nbr, s):
    """Table index of the liquid <-> vapour flip of non-particle site ``s``.

    ``(liquid now) * 25 + n * 5 + l`` with (n, l) the neighbour counts.
    """
    n, l = sv_counts(state, nbr, s)
    return (np.int64(state[s]) >> 1) * 25 + n * 5 + l


@njit(cache=True)
def sv_flip_delta_table(e_ll, e_nl, mu):
    """ΔE of a solvent flip per :func:`sv_flip_index`. Shape (50,).

    Vapour -> liquid: ``mu + e_ll l + e_nl n``; liquid -> vapour: the negative.
    """
    out = np.empty(SV_FLIP_TABLE_SIZE, np.float64)
    for n in range(5):
        for l in range(5):
            e = mu + e_ll * l + e_nl * n
            out[n * 5 + l] = e
            out[25 + n * 5 + l] = -e
    return out


@njit(cache=True)
def sv_flip_attempts(state, nbr, n_sites, thr_hi, thr_lo, n_attempts, rng):
    """``n_attempts`` liquid <-> vapour flip attempts at uniformly random sites.

    A pick of a particle site counts as a rejected attempt. Returns the number accepted.
    """
    nsu = np.uint64(n_sites)
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    accepted = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        s = np.int64(((r >> _U32) * nsu) >> _U32)
        c = state[s]
        if c & 1:
            continue
        k = sv_flip_index(state, nbr, s)
        a = r & _MASK30
        h = thr_hi[k]
        if a >= h:
            if a > h:
                continue
            r2, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
            if r2 >= thr_lo[k]:
                continue
        state[s] = c ^ 2
        accepted += 1
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3
    return accepted


@njit(cache=True)
def sv_hop_attempts(state, nbr, pos, thr_hi, thr_lo, n_attempts, rng):
    """``n_attempts`` particle hops, each an exchange with a liquid neighbour.

    Hops towards vapour, a particle or the wall are rejected. Returns the number accepted.
    """
    npart = pos.shape[0]
    if npart == 0:
        return 0
    npu = np.uint64(npart)
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    accepted = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        p = np.int64(((r >> _U32) * npu) >> _U32)
        d = np.int64((r >> _U30) & _U3)
        site = pos[p]
        tgt = nbr[site, d]
        if state[tgt] != SOLVENT:
            continue
        k = sv_move_index(state, nbr, site, tgt, 1)
        a = r & _MASK30
        h = thr_hi[k]
        if a >= h:
            if a > h:
                continue
            r2, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
            if r2 >= thr_lo[k]:
                continue
        state[site] = SOLVENT
        state[tgt] = PARTICLE
        pos[p] = tgt
        accepted += 1
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3
    return accepted


@njit(cache=True)
def sv_run_sweeps(state, nbr, pos, dE_move, e_ll, e_nl, T_schedule, mu_schedule, mobility, tol, rng):
    """Sweeps of a system with solvent; sweep ``i`` runs at ``T_schedule[i]``, ``mu_schedule[i]``.

    A sweep is ``N`` flip attempts at random sites, then ``mobility * n_particles``
    hop attempts. Each part satisfies detailed balance, so their composition
    leaves the Boltzmann distribution invariant.

    Returns
    -------
    (int, int)
        Accepted flips and accepted hops.
    """
    n_sites = nbr.shape[0]
    dE_hop = dE_move  # Hamiltonian.move_deltas(4), indexed by sv_move_index
    hop_hi = np.empty(dE_hop.shape[0], np.uint64)
    hop_lo = np.empty(dE_hop.shape[0], np.uint64)
    flip_hi = np.empty(SV_FLIP_TABLE_SIZE, np.uint64)
    flip_lo = np.empty(SV_FLIP_TABLE_SIZE, np.uint64)
    n_hops = mobility * pos.shape[0]
    flips = 0
    hops = 0
    T_prev = -1.0
    mu_prev = math.nan
    for i in range(T_schedule.shape[0]):
        T = T_schedule[i]
        mu = mu_schedule[i]
        if T != T_prev or mu != mu_prev:
            fill_thresholds(sv_flip_delta_table(e_ll, e_nl, mu), T, tol, flip_hi, flip_lo)
        if T != T_prev:
            fill_thresholds(dE_hop, T, tol, hop_hi, hop_lo)
        T_prev = T
        mu_prev = mu
        flips += sv_flip_attempts(state, nbr, n_sites, flip_hi, flip_lo, n_sites, rng)
        hops += sv_hop_attempts(state, nbr, pos, hop_hi, hop_lo, n_hops, rng)
    return flips, hops


# ---------------------------------------------------------------------------
# energy terms and traced runs
#
# The energy trace of a run is recorded inside numba: the counts (nn, ll, nl, l, n) of
# ``hamiltonian.TERMS`` after each requested sweep, so that short runs (the paper's
# fluids) do not pay a Python round trip per trace point.


@njit(cache=True)
def lg_terms(state, pos, out):
    """Energy terms of a particle-only lattice into ``out`` (int64 (5,)): bonds from the codes' counts."""
    m = 0
    for p in range(pos.shape[0]):
        m += (np.int64(state[pos[p]]) >> 1) & 7
    out[0] = m // 2  # every bond is counted from both its particles
    out[1] = 0
    out[2] = 0
    out[3] = 0
    out[4] = pos.shape[0]


@njit(cache=True)
def sv_terms(state, nbr, out):
    """Energy terms of a lattice with solvent into ``out`` (int64 (5,)); each bond counted from its lower site."""
    nn = ll = nl = n_l = n_n = 0
    for s in range(nbr.shape[0]):
        a = np.int64(state[s])
        n_n += a & 1
        n_l += (a >> 1) & 1
        for d in range(4):
            t = np.int64(nbr[s, d])
            if t <= s or t == nbr.shape[0]:  # the other end counts it; the wall is nobody
                continue
            b = np.int64(state[t])
            nn += (a & b) & 1
            ll += ((a & b) >> 1) & 1
            nl += ((a & 1) & (b >> 1)) | ((a >> 1) & (b & 1))
    out[0] = nn
    out[1] = ll
    out[2] = nl
    out[3] = n_l
    out[4] = n_n


@njit(cache=True)
def lg_run_traced(state, width, periodic, pos, dE_move, T_schedule, at, mobility, tol, rng, terms):
    """:func:`lg_run_sweeps` in pieces, with the energy terms after sweep ``at[i]`` in ``terms[i]``.

    ``at`` (int64 (n_points,)) starts at 0 and ends at ``len(T_schedule)``; returns accepted hops.
    """
    accepted = 0
    lg_terms(state, pos, terms[0])
    for i in range(1, at.shape[0]):
        accepted += lg_run_sweeps(state, width, periodic, pos, dE_move, T_schedule[at[i - 1]:at[i]], mobility, tol,
                                  rng)
        lg_terms(state, pos, terms[i])
    return accepted


@njit(cache=True)
def sv_run_traced(state, nbr, pos, dE_move, e_ll, e_nl, T_schedule, mu_schedule, at, mobility, tol, rng, terms):
    """:func:`sv_run_sweeps` in pieces, recording as :func:`lg_run_traced`; returns (flips, hops)."""
    flips = 0
    hops = 0
    sv_terms(state, nbr, terms[0])
    for i in range(1, at.shape[0]):
        a, b = at[i - 1], at[i]
        f, h = sv_run_sweeps(state, nbr, pos, dE_move, e_ll, e_nl, T_schedule[a:b], mu_schedule[a:b], mobility, tol,
                             rng)
        flips += f
        hops += h
        sv_terms(state, nbr, terms[i])
    return flips, hops


# ---------------------------------------------------------------------------
# non-local and grand-canonical particle moves
#
# These kernels keep every site in ``order`` (int32, N), particles first: ``order[:n]`` are
# the particle sites, ``order[n:]`` the others, and ``slot`` (int32, N) is its inverse
# (``order[slot[s]] == s``). A uniformly random particle or non-particle site is then one
# multiply-shift pick, and a move, insertion or removal a swap of two entries: O(1) each.
# ΔE tables come from :class:`mapsim.montecarlo.hamiltonian.Hamiltonian` (``move_deltas(4)``
# and ``insertion_deltas(4)``), indexed as documented there with z = 4 neighbours.



def acceptance_ratios(params, counts: np.ndarray) -> dict[str, float]:
    """Acceptance ratios of a run of the general (and the cubic) kernels from their ``counts``.

    Parameters
    ----------
    params : SimParams
    counts : int64 array (8,)
        Attempts and accepted: local, non-local, insertion/removal, solvent flips.

    Returns
    -------
    dict
        ``hop_acceptance`` (unless moves=nonlocal), ``nonlocal_acceptance`` (unless local),
        ``exchange_acceptance`` (ensemble grand).
    """
    c = counts
    stats = {}
    if params.moves != "nonlocal":
        stats["hop_acceptance"] = c[1] / c[0] if c[0] else 0.0
    if params.moves != "local":
        stats["nonlocal_acceptance"] = c[3] / c[2] if c[2] else 0.0
    if params.ensemble == "grand":
        stats["exchange_acceptance"] = c[5] / c[4] if c[4] else 0.0
    return stats


def site_order(pos: np.ndarray, n_sites: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, slot)`` for particles at ``pos`` (int32 (n,)) among ``n_sites`` sites (see above)."""
    rest = np.ones(n_sites, bool)
    rest[pos] = False
    order = np.concatenate([np.asarray(pos, np.int64), np.flatnonzero(rest)]).astype(np.int32)
    slot = np.empty(n_sites, np.int32)
    slot[order] = np.arange(n_sites, dtype=np.int32)
    return order, slot


@njit(inline="always", cache=True)
def _swap(order, slot, i, j):
    """Exchange entries i and j of ``order`` and keep ``slot`` its inverse."""
    a = order[i]
    b = order[j]
    order[i] = b
    order[j] = a
    slot[b] = i
    slot[a] = j


@njit(inline="always", cache=True)
def _accept(r, k, thr_hi, thr_lo, s0, s1, s2, s3):
    """Metropolis test of table entry ``k`` with the 30-bit field of ``r`` (tie: a second draw)."""
    a = r & _MASK30
    h = thr_hi[k]
    if a < h:
        return True, s0, s1, s2, s3
    if a > h:
        return False, s0, s1, s2, s3
    r2, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
    return r2 < thr_lo[k], s0, s1, s2, s3


@njit(inline="always", cache=True)
def _pick(r, lo, count):
    """Index ``lo + floor(count * (r >> 32) / 2**32)``: uniform in lo .. lo + count - 1 (to N / 2**32)."""
    return lo + np.int64(((r >> _U32) * np.uint64(count)) >> _U32)


@njit(inline="always", cache=True)
def _store_counts(counts, n_attempts, n_jumps, acc_hops, acc_jumps):
    counts[0] += n_attempts - n_jumps
    counts[1] += acc_hops
    counts[2] += n_jumps
    counts[3] += acc_jumps


@njit(inline="always", cache=True)
def _lg_adjacent(site, code, tgt, periodic, off, wrap):
    """1 if ``tgt`` is a nearest neighbour of ``site`` (lattice-gas codes)."""
    dist = abs(tgt - site)
    if off[1] < dist < -wrap[1] - off[1]:  # W < |t - s| < N - W: no neighbour (almost every jump)
        return 0
    for d in range(4):
        if (periodic or not lg_edge(code, d)) and lg_neighbour(site, code, d, off, wrap) == tgt:
            return 1
    return 0


@njit(inline="always", cache=True)
def lg_move_index(code_s, code_t, adj):
    """``Hamiltonian.move_deltas(4)`` index of moving the particle of code ``code_s`` to the empty site of
    code ``code_t``; ``adj`` = 1 if they are neighbours (t's count then includes the mover)."""
    x = ((np.int64(code_t) >> 1) & 7) - adj - ((np.int64(code_s) >> 1) & 7)
    return (x + _Z) * _MOVE_SIDE + _Z


@njit(inline="always", cache=True)
def lg_insertion_index(code):
    """``Hamiltonian.insertion_deltas(4)`` index of inserting at (empty) or removing from (particle) a site."""
    return (np.int64(code) & 1) * _INS_SIDE * _INS_SIDE + ((np.int64(code) >> 1) & 7) * _INS_SIDE


@njit(inline="always", cache=True)
def sv_adjacent(nbr, s, t):
    """1 if ``t`` is a nearest neighbour of ``s`` (neighbour table)."""
    adj = 0
    for d in range(4):
        if nbr[s, d] == t:
            adj = 1
    return adj


@njit(inline="always", cache=True)
def sv_move_index(state, nbr, s, t, adj):
    """``Hamiltonian.move_deltas(4)`` index of exchanging the particle at ``s`` with liquid at ``t``.

    An adjacent pair (``adj`` = 1) counts each other: the mover among t's particles and
    t's liquid among s's neighbours; neither is a neighbour of the site it moves to.
    """
    ns, ls = sv_counts(state, nbr, s)
    nt, lt = sv_counts(state, nbr, t)
    return (nt - adj - ns + _Z) * _MOVE_SIDE + (lt - ls + adj + _Z)


@njit(inline="always", cache=True)
def sv_insertion_index(state, nbr, s):
    """``Hamiltonian.insertion_deltas(4)`` index of inserting at vapour / removing a particle at ``s``."""
    n, l = sv_counts(state, nbr, s)
    return (np.int64(state[s]) & 1) * _INS_SIDE * _INS_SIDE + n * _INS_SIDE + l


@njit(inline="always", cache=True)
def _lg_set(state, site, code, periodic, off, wrap, sign):
    """Add (sign 1) or remove (sign -1) the particle at ``site``: its bit and its neighbours' counts."""
    state[site] = np.uint8(np.int64(state[site]) + sign)
    for j in range(4):
        if periodic or not lg_edge(code, j):
            t = lg_neighbour(site, code, j, off, wrap)
            state[t] = np.uint8(np.int64(state[t]) + 2 * sign)


@njit(cache=True)
def lg_particle_moves(state, width, periodic, order, slot, n_part, thr_hi, thr_lo, nl_cut, n_attempts, rng, counts):
    """Particle moves of a particle-only system: local hops and non-local jumps.

    Parameters
    ----------
    state : uint8 array (N,), updated
        Lattice-gas codes (:func:`lg_encode`).
    width : int
    periodic : bool
    order, slot : int32 arrays (N,), updated
        Particles first (:func:`site_order`).
    n_part : int
        Number of particles (``order[:n_part]``); unchanged by these moves.
    thr_hi, thr_lo : uint64 arrays ((2z+1)**2,)
        Acceptance tables of ``Hamiltonian.move_deltas(4)``.
    nl_cut : int in [0, 2**32]
        A move is non-local when the low 32 bits of its second draw are below ``nl_cut``
        (probability ``nl_cut / 2**32``); 0: only local hops (no second draw), 2**32: only jumps.
    n_attempts : int
    rng : uint64 array (4,), updated
    counts : int64 array (6,), updated
        ``[local attempts, local accepted, non-local attempts, non-local accepted, ...]``.
    """
    n_sites = state.shape[0]
    n_free = n_sites - n_part
    if n_part == 0:
        return
    off, wrap = lg_steps(width, n_sites)
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    # counters in locals, not in ``counts``, and no helper returning the move as a tuple: an array
    # store per attempt, or numba's tuples, keep the loop from holding its state in registers
    # (each measured 1.6-5x slower)
    n_jumps = 0
    acc_hops = 0
    acc_jumps = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        i = _pick(r, 0, n_part)
        site = np.int64(order[i])
        ss = state[site]
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
            st = state[tgt]
            adj = _lg_adjacent(site, ss, tgt, periodic, off, wrap)
        else:
            d = np.int64((r >> _U30) & _U3)
            if not periodic and lg_edge(ss, d):
                continue
            tgt = lg_neighbour(site, ss, d, off, wrap)
            st = state[tgt]
            if st & 1:
                continue
            j = np.int64(slot[tgt])
            adj = 1
        k = lg_move_index(ss, st, adj)
        ok, s0, s1, s2, s3 = _accept(r, k, thr_hi, thr_lo, s0, s1, s2, s3)
        if not ok:
            continue
        _lg_set(state, site, ss, periodic, off, wrap, -1)
        _lg_set(state, tgt, state[tgt], periodic, off, wrap, 1)
        _swap(order, slot, i, j)
        if jump:
            acc_jumps += 1
        else:
            acc_hops += 1
    _store_counts(counts, n_attempts, n_jumps, acc_hops, acc_jumps)
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3


@njit(cache=True)
def lg_exchanges(state, width, periodic, order, slot, n_part, thr_hi, thr_lo, n_attempts, rng, counts):
    """Grand-canonical insertion/removal attempts at uniformly random sites (particle-only system).

    An empty site proposes an insertion, a particle site a removal (symmetric proposal);
    acceptance tables of ``Hamiltonian.insertion_deltas(4)``. ``counts[4:6]`` gain attempts
    and accepted. Returns the new number of particles.
    """
    n_sites = state.shape[0]
    off, wrap = lg_steps(width, n_sites)
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    accepted = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        site = _pick(r, 0, n_sites)
        c = state[site]
        occ = np.int64(c) & 1
        k = lg_insertion_index(c)
        ok, s0, s1, s2, s3 = _accept(r, k, thr_hi, thr_lo, s0, s1, s2, s3)
        if not ok:
            continue
        if occ:
            n_part -= 1
            _swap(order, slot, np.int64(slot[site]), n_part)
            _lg_set(state, site, c, periodic, off, wrap, -1)
        else:
            _swap(order, slot, np.int64(slot[site]), n_part)
            n_part += 1
            _lg_set(state, site, c, periodic, off, wrap, 1)
        accepted += 1
    counts[4] += n_attempts
    counts[5] += accepted
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3
    return n_part


@njit(cache=True)
def sv_particle_moves(state, nbr, order, slot, n_part, thr_hi, thr_lo, nl_cut, n_attempts, rng, counts):
    """Particle moves with solvent: exchange with a liquid neighbour (local) or any liquid site.

    A non-local move picks a uniformly random non-particle site and is rejected unless it
    holds liquid, so an accepted target is a uniformly random solvent site and the proposal
    is symmetric. Arguments as :func:`lg_particle_moves` (``nbr`` as :func:`sv_hop_attempts`).
    """
    n_sites = nbr.shape[0]
    n_free = n_sites - n_part
    if n_part == 0:
        return
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    # counters in locals, not in ``counts``: an array store per attempt keeps the loop from
    # holding its state in registers (measured 5x slower)
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
        adj = 1
        j = np.int64(-1)
        if jump:
            n_jumps += 1
            if n_free == 0:
                continue
            j = _pick(r2, n_part, n_free)
            tgt = np.int64(order[j])
            adj = sv_adjacent(nbr, site, tgt)
        else:
            tgt = np.int64(nbr[site, np.int64((r >> _U30) & _U3)])
        if state[tgt] != SOLVENT:
            continue
        if not jump:
            j = np.int64(slot[tgt])
        k = sv_move_index(state, nbr, site, tgt, adj)
        ok, s0, s1, s2, s3 = _accept(r, k, thr_hi, thr_lo, s0, s1, s2, s3)
        if not ok:
            continue
        state[site] = SOLVENT
        state[tgt] = PARTICLE
        _swap(order, slot, i, j)
        if jump:
            acc_jumps += 1
        else:
            acc_hops += 1
    _store_counts(counts, n_attempts, n_jumps, acc_hops, acc_jumps)
    rng[0], rng[1], rng[2], rng[3] = s0, s1, s2, s3


@njit(cache=True)
def sv_exchanges(state, nbr, order, slot, n_part, thr_hi, thr_lo, n_attempts, rng, counts):
    """Grand-canonical insertion at vapour / removal (to vapour) of particles; liquid picks are rejected.

    Arguments and return value as :func:`lg_exchanges`.
    """
    n_sites = nbr.shape[0]
    s0, s1, s2, s3 = rng[0], rng[1], rng[2], rng[3]
    accepted = 0
    for _ in range(n_attempts):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        site = _pick(r, 0, n_sites)
        c = np.int64(state[site])
        if c == SOLVENT:
            continue
        k = sv_insertion_index(state, nbr, site)
        ok, s0, s1, s2, s3 = _accept(r, k, thr_hi, thr_lo, s0, s1, s2, s3)
        if not ok:
            continue
        if c & 1:
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
def general_run_sweeps(state, width, nbr, periodic, solvent, order, slot, n_part, dE_move, dE_ins,
                       T_schedule, mu_schedule, e_ll, e_nl, mobility, nl_cut, grand, tol, rng, counts):
    """Sweeps with non-local or grand-canonical particle moves (see ``params.SWEEP_DEFINITION``).

    A sweep: (``solvent``) N solvent flips, then (``grand``) N insertion/removal attempts,
    then ``mobility * n_part`` particle moves (local or non-local per ``nl_cut``). Each
    part satisfies detailed balance and the particle moves keep ``n_part``, so the sweep
    leaves the Boltzmann distribution invariant.

    Parameters
    ----------
    state : uint8 array, updated
        Lattice-gas codes (N,) without solvent, 0/1/2 plus the wall (N + 1,) with solvent.
    width : int
    nbr : int32 array (N, 4)
    periodic, solvent, grand : bool
    order, slot : int32 arrays (N,), updated
    n_part : int
    dE_move, dE_ins : float64 arrays
        ``Hamiltonian.move_deltas(4)`` and ``insertion_deltas(4)``.
    T_schedule, mu_schedule : float64 arrays (sweeps,)
    e_ll, e_nl : float
        Solvent couplings (flip tables).
    mobility, nl_cut : int
    tol : float
    rng : uint64 array (4,), updated
    counts : int64 array (8,), updated
        Attempts and accepted: local, non-local, insertion/removal, solvent flips.

    Returns
    -------
    int
        The number of particles afterwards.
    """
    n_sites = nbr.shape[0]
    mv_hi = np.empty(dE_move.shape[0], np.uint64)
    mv_lo = np.empty(dE_move.shape[0], np.uint64)
    in_hi = np.empty(dE_ins.shape[0], np.uint64)
    in_lo = np.empty(dE_ins.shape[0], np.uint64)
    fl_hi = np.empty(SV_FLIP_TABLE_SIZE, np.uint64)
    fl_lo = np.empty(SV_FLIP_TABLE_SIZE, np.uint64)
    T_prev = -1.0
    mu_prev = math.nan
    for i in range(T_schedule.shape[0]):
        T = T_schedule[i]
        mu = mu_schedule[i]
        if solvent and (T != T_prev or mu != mu_prev):
            fill_thresholds(sv_flip_delta_table(e_ll, e_nl, mu), T, tol, fl_hi, fl_lo)
        if T != T_prev:
            fill_thresholds(dE_move, T, tol, mv_hi, mv_lo)
            fill_thresholds(dE_ins, T, tol, in_hi, in_lo)
        T_prev = T
        mu_prev = mu
        if solvent:
            counts[6] += n_sites
            counts[7] += sv_flip_attempts(state, nbr, n_sites, fl_hi, fl_lo, n_sites, rng)
            if grand:
                n_part = sv_exchanges(state, nbr, order, slot, n_part, in_hi, in_lo, n_sites, rng, counts)
            sv_particle_moves(state, nbr, order, slot, n_part, mv_hi, mv_lo, nl_cut, mobility * n_part, rng, counts)
        else:
            if grand:
                n_part = lg_exchanges(state, width, periodic, order, slot, n_part, in_hi, in_lo, n_sites, rng, counts)
            lg_particle_moves(state, width, periodic, order, slot, n_part, mv_hi, mv_lo, nl_cut,
                              mobility * n_part, rng, counts)
    return n_part


@njit(cache=True)
def general_run_traced(state, width, nbr, periodic, solvent, order, slot, n_part, dE_move, dE_ins, T_schedule,
                       mu_schedule, at, e_ll, e_nl, mobility, nl_cut, grand, tol, rng, counts, terms):
    """:func:`general_run_sweeps` in pieces, recording as :func:`lg_run_traced`; returns the particle number."""
    for i in range(at.shape[0]):
        if i > 0:
            a, b = at[i - 1], at[i]
            n_part = general_run_sweeps(state, width, nbr, periodic, solvent, order, slot, n_part, dE_move, dE_ins,
                                        T_schedule[a:b], mu_schedule[a:b], e_ll, e_nl, mobility, nl_cut, grand, tol,
                                        rng, counts)
        if solvent:
            sv_terms(state, nbr, terms[i])
        else:
            lg_terms(state, order[:n_part], terms[i])
    return n_part
