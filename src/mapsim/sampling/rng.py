"""The randomness contract of every sampler: uniforms addressable by (sample, line).

Contract ``lines-v2``
---------------------
A sample has shape ``(n_0, ..., n_{d-1})`` (``d`` = 1, 2 or 3).  A *line* is
the run of points along the last axis at a fixed leading index ``idx`` (a row
of a 2D sample, a row of one plane of a 3D sample, the whole of a 1D one).
Line ``idx`` of sample ``k`` draws from its own generator::

    PCG64(SeedSequence(seed, spawn_key=(stream, k, *idx)))

and the uniform of point ``(*idx, j)`` is the j-th value it gives.  So any
line of any sample can be made alone: generation can stream rows to disk,
resume after a crash and split samples over workers with identical bytes.

Streams: ``CLASS`` (0) drives the class draws (U, shape (K, *shape)), the
drawn class being the first whose cumulative probability exceeds U;
``POSITION`` (1) drives a continuous head (positions inside a pixel, V of
shape (K, *shape, ndim): the j-th *ndim* values of the line); ``BOUNDARY`` (2)
the noise boundary (one generator per sample).  A class-only model never
touches the position stream, so adding a position head leaves its class
uniforms unchanged.

Versions: ``lines-v2`` (this one, mapsim >= 0.2) replaced ``array-v1``, in
which U was ``default_rng(seed).random((K, H, W))`` in one stream; the same
seed therefore gives other samples than mapsim 0.1.  Generated datasets
record the version in ``metadata["uniforms"]``.
"""

from __future__ import annotations

import numpy as np

from mapsim.errors import MapsimError

UNIFORMS_VERSION = "lines-v2"
CLASS, POSITION, BOUNDARY = 0, 1, 2


def seed_entropy(seed: int | np.integer | np.random.Generator) -> int:
    """The integer seed behind ``seed`` (a Generator gives one draw of 63 bits)."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise MapsimError(f"seed must be a non-negative integer or a numpy Generator, found {seed!r}")
    return int(seed)


def line_generator(entropy: int, stream: int, sample: int, index: tuple[int, ...] = ()) -> np.random.Generator:
    """The generator of one line (see the module docstring)."""
    key = (int(stream), int(sample)) + tuple(int(i) for i in index)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


def line_uniforms(entropy: int, sample: int, index: tuple[int, ...], length: int, *, stream: int = CLASS,
                  ndim: int | None = None) -> np.ndarray:
    """Uniforms of one line, shape (length,) or (length, ndim) for the position stream."""
    g = line_generator(entropy, stream, sample, index)
    return g.random(length) if ndim is None else g.random((length, ndim))


def uniforms(seed: int | np.random.Generator, n_samples: int, *shape: int, stream: int = CLASS,
             first_sample: int = 0, first_row: int = 0, ndim: int | None = None) -> np.ndarray:
    """Uniforms of samples ``first_sample .. first_sample + n_samples - 1``.

    Parameters
    ----------
    seed : int or Generator
    n_samples : int
        K.
    *shape : int
        Sample shape (n_0, ..., n_{d-1}), e.g. H, W.
    stream : int
        ``CLASS`` (default) or ``POSITION``.
    first_sample : int
        Index of the first sample (a worker's share of a larger run).
    first_row : int
        Index along axis 0 of the first slab (a block of rows of a larger sample).
    ndim : int, optional
        Values per point (position stream: the number of coordinates).

    Returns
    -------
    ndarray of float64, shape (K, *shape) or (K, *shape, ndim)
        Values in [0, 1).
    """
    entropy = seed_entropy(seed)
    if not shape:
        raise ValueError("uniforms need a sample shape")
    lead, length = tuple(shape[:-1]), shape[-1]
    tail = () if ndim is None else (ndim,)
    out = np.empty((n_samples,) + tuple(shape) + tail, dtype=np.float64)
    for k in range(n_samples):
        for idx in np.ndindex(*lead):
            line = (idx[0] + first_row,) + idx[1:] if idx else idx
            out[(k,) + idx] = line_uniforms(entropy, first_sample + k, line, length, stream=stream, ndim=ndim)
    return out


def boundary_generator(seed: int | np.random.Generator, sample: int) -> np.random.Generator:
    """Generator of sample ``sample``'s noise boundary (stream ``BOUNDARY``)."""
    return line_generator(seed_entropy(seed), BOUNDARY, sample)
