"""Explicit random-number state for the numba kernels: xoshiro256** seeded via SeedSequence.

The kernels never touch a global RNG. Each sample owns a ``uint64[4]`` state that
goes into a kernel and comes out advanced, so a run is reproducible from its seed
alone, whatever the number of worker processes.

xoshiro256** (Blackman & Vigna, 2018) passes BigCrush in all 64 bits, so the
kernels may split one draw into several independent bit fields.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["sample_seed_sequence", "xoshiro_state", "xoshiro_next", "random_u64"]

_U5 = np.uint64(5)
_U9 = np.uint64(9)
_U17 = np.uint64(17)


@njit(inline="always", cache=True)
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(inline="always", cache=True)
def xoshiro_next(s0, s1, s2, s3):
    """One xoshiro256** step on a state held in four local ``uint64`` values.

    Returns
    -------
    (r, s0, s1, s2, s3)
        The 64-bit output and the advanced state. Kernels keep the state in
        locals (registers) in their hot loop and store it back once at the end.
    """
    r = _rotl(s1 * _U5, 7) * _U9
    t = s1 << _U17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return r, s0, s1, s2, s3


@njit(cache=True)
def random_u64(state, n):
    """``n`` raw 64-bit outputs; advances ``state`` (uint64[4]) in place. For tests."""
    out = np.empty(n, np.uint64)
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    for i in range(n):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        out[i] = r
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return out


def sample_seed_sequence(seed: int, k: int) -> np.random.SeedSequence:
    """The seed sequence of sample ``k`` of a run with seed ``seed``.

    Equal to ``SeedSequence(seed).spawn(k + 1)[k]``, so sample ``k`` does not
    depend on how many samples or workers there are.
    """
    return np.random.SeedSequence(seed, spawn_key=(k,))


def xoshiro_state(ss: np.random.SeedSequence) -> np.ndarray:
    """A ``uint64[4]`` xoshiro256** state drawn from a seed sequence (never all zero)."""
    st = ss.generate_state(4, np.uint64)
    if not st.any():  # the one forbidden state; probability 2**-256
        st[0] = np.uint64(0x9E3779B97F4A7C15)
    return st
