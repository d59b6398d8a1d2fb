"""The sampler core: the one draw rule, the uniforms contract, N-D schedules, a continuous head."""

import itertools
import math

import numpy as np
import pytest
import torch
from numba import njit

from mapsim.errors import MapsimError
from mapsim.sampling import draw as draw_module
from mapsim.sampling.core import front_schedule, raster_schedule, run
from mapsim.sampling.draw import draw, draw_pixel
from mapsim.sampling.rng import POSITION, line_uniforms, seed_entropy, uniforms

from draw_checks import replace_rule


# ---------------------------------------------------------------------------
# the draw rule
# ---------------------------------------------------------------------------
def test_draw_is_the_cumulative_rule_with_exact_log_probs():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 4)) * 2
    u = rng.random(500)
    for beta in (1.0, 0.4, 3.0):
        c, lp = draw(z, beta, u)
        p = np.exp(beta * z - np.logaddexp.reduce(beta * z, axis=1, keepdims=True))
        cum = np.cumsum(p, axis=1)
        expected = np.minimum((cum <= u[:, None]).sum(1), 3)
        assert np.array_equal(c, expected)
        np.testing.assert_allclose(lp, np.log(p[np.arange(500), c]), rtol=0, atol=1e-12)


def test_draw_never_takes_a_class_of_probability_zero():
    z = np.array([[0.0, -np.inf], [-np.inf, 0.0], [0.3, -np.inf], [0.1, 0.2]])
    # u just below 1: rounding of the cumulative sum must not select the impossible last class
    c, lp = draw(z, 1.0, np.full(4, np.nextafter(1.0, 0.0)))
    assert list(c) == [0, 1, 0, 1]
    assert np.isfinite(lp).all()
    c, _ = draw(z, 1.0, np.zeros(4))
    assert list(c) == [0, 1, 0, 0]


def test_float32_logits_draw_like_their_float64_values():
    z = np.random.default_rng(1).normal(size=(200, 3)).astype(np.float32)
    u = np.random.default_rng(2).random(200)
    a = draw(z, 1.3, u)
    b = draw(z.astype(np.float64), 1.3, u)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ---------------------------------------------------------------------------
# uniforms contract
# ---------------------------------------------------------------------------
def test_uniforms_are_addressable_by_sample_and_line():
    U = uniforms(7, 3, 4, 5)
    assert U.shape == (3, 4, 5) and U.dtype == np.float64
    for k, i in itertools.product(range(3), range(4)):
        assert np.array_equal(U[k, i], line_uniforms(7, k, (i,), 5))
    # a worker's share: samples 1..2 alone
    assert np.array_equal(uniforms(7, 2, 4, 5, first_sample=1), U[1:])
    # a wider sample starts every line with the same numbers (one stream per line)
    assert np.array_equal(uniforms(7, 3, 4, 9)[..., :5], U)
    # 3D: lines along the last axis of every (plane, row)
    V = uniforms(7, 2, 3, 4, 5)
    assert np.array_equal(V[1, 2, 3], line_uniforms(7, 1, (2, 3), 5))
    assert not np.array_equal(uniforms(8, 3, 4, 5), U)


def test_position_stream_is_separate_and_generator_seeds_are_consumed_once():
    U = uniforms(3, 2, 3, 4)
    P = uniforms(3, 2, 3, 4, stream=POSITION, ndim=2)
    assert P.shape == (2, 3, 4, 2)
    assert not np.allclose(P[..., 0], U)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    e = seed_entropy(g1)
    assert np.array_equal(uniforms(g2, 2, 3, 4), uniforms(e, 2, 3, 4))
    with pytest.raises(MapsimError, match="seed"):
        seed_entropy(-1)


# ---------------------------------------------------------------------------
# N-D schedules and the core loop with a toy N-D provider
# ---------------------------------------------------------------------------
def _causal(idx, jdx, L):
    """Is point jdx in the causal context of idx (earlier in raster order, within L on every axis)?"""
    return tuple(jdx) < tuple(idx) and all(abs(a - b) <= L for a, b in zip(idx, jdx))


@pytest.mark.parametrize("shape, L", [((7,), 2), ((4, 6), 1), ((3, 5), 3), ((3, 3, 4), 1), ((2, 4, 3), 2)])
def test_front_schedule_draws_every_point_once_after_its_context(shape, L):
    step = np.full(shape, -1)
    sched = front_schedule(shape, L)
    for t, index in enumerate(sched):
        assert (step[index] == -1).all()
        step[index] = t
    assert (step >= 0).all()
    pts = list(np.ndindex(*shape))
    for p in pts:
        for q in pts:
            if _causal(p, q, L):
                assert step[q] < step[p], (p, q)
    # slabs along axis 0 complete in order
    done = [sched.slabs_done_after(t) for t in range(len(sched))]
    assert done[-1] == shape[0] and all(a <= b for a, b in zip(done, done[1:]))


class _BoxProvider:
    """Toy N-D MAP: logits from the classes in the causal box of range L (NumPy)."""

    def __init__(self, n_classes, L, ndim, seed=0):
        rng = np.random.default_rng(seed)
        self.n_classes, self.L = n_classes, L
        self.offsets = [d for d in itertools.product(range(-L, L + 1), repeat=ndim)
                        if _causal((0,) * ndim, d, L)]
        self.w = rng.normal(size=(len(self.offsets), n_classes + 1, n_classes))
        self.calls = 0

    def start(self, K, shape):
        L = self.L
        self.x = np.full((K,) + tuple(n + 2 * L for n in shape), self.n_classes)
        self.x[(slice(None),) + tuple(slice(L, L + n) for n in shape)] = 0

    def logits(self, index):
        self.calls += 1
        K, n = self.x.shape[0], index[0].size
        out = np.zeros((K, n, self.n_classes))
        for q, d in enumerate(self.offsets):
            nb = self.x[(slice(None),) + tuple(ix + self.L + dd for ix, dd in zip(index, d))]  # (K, n)
            out += self.w[q][nb]
        return out

    def commit(self, index, classes):
        self.x[(slice(None),) + tuple(ix + self.L for ix in index)] = classes


@pytest.mark.parametrize("shape, L", [((9,), 2), ((5, 6), 1), ((3, 4, 5), 1)])
def test_raster_and_front_give_the_same_samples_in_any_dimension(shape, L):
    u = uniforms(4, 3, *shape)
    a = run(_BoxProvider(3, L, len(shape)), raster_schedule(shape), u, beta=0.8)
    p = _BoxProvider(3, L, len(shape))
    b = run(p, front_schedule(shape, L), u, beta=0.8)
    assert np.array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=0, atol=1e-12)
    assert p.calls == len(front_schedule(shape, L))
    if len(shape) > 1:  # in 1D every point waits for the one before it
        assert p.calls < int(np.prod(shape))
    assert len(np.unique(a.classes)) == 3


class _HeadProvider(_BoxProvider):
    """With a continuous head: position = its uniform, density 2 on [0, 1/2) x [0, 1) for class 1."""

    def positions(self, index, classes, v):
        xy = v.copy()
        xy[..., 0] *= 0.5
        return xy, np.where(classes > 0, math.log(2.0), 0.0)


def test_a_continuous_head_leaves_the_class_draws_unchanged_and_uses_its_own_stream():
    shape = (4, 5)
    u = uniforms(9, 2, *shape)
    plain = run(_BoxProvider(2, 1, 2), front_schedule(shape, 1), u)
    head = run(_HeadProvider(2, 1, 2), front_schedule(shape, 1), u, position_seed=9)
    assert np.array_equal(plain.classes, head.classes)
    v = uniforms(9, 2, *shape, stream=POSITION, ndim=2)
    np.testing.assert_array_equal(head.positions[..., 1], v[..., 1])
    np.testing.assert_allclose(head.log_probs - plain.log_probs, np.where(plain.classes > 0, math.log(2.0), 0.0))


# ---------------------------------------------------------------------------
# every sampler draws through the one draw function
# ---------------------------------------------------------------------------
@njit(cache=False)
def _always_last(logits, beta, u):
    return logits.shape[0] - 1, 0.0


def _all_samplers():
    """Each sampler of the package, on a small problem, returning its drawn classes."""
    from mapsim.analysis.chain_sampling import sample_rows, sample_table_sequences
    from mapsim.analysis.context_states import random_softmax_table
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from mapsim.models.pixelcnn3d import GatedPixelCNN3D, PixelCNN3DConfig
    from mapsim.sampling.fast import sample_front
    from mapsim.sampling.volume import sample_volume
    from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached
    from mapsim.sampling.reference import sample_reference
    from mapsim.sampling.rho_eff import hard_core_lattices

    torch.manual_seed(0)
    # (the cached kernel is compiled once per dtype; float32, the dtype of trained models, is checked here
    # and float64 against the reference in test_fast_sampler)
    m = GatedPixelCNN(PixelCNNConfig(n_classes=3, layers=2, kernel=3, filters=4, out_width=4, classes=["a", "b", "c"])).double().eval()
    m32 = GatedPixelCNN(PixelCNNConfig(n_classes=3, layers=2, kernel=3, filters=4, out_width=4, classes=["a", "b", "c"])).eval()
    m3d = GatedPixelCNN3D(PixelCNN3DConfig(n_classes=3, layers=2, kernel=3, filters=4, out_width=4,
                                           classes=["a", "b", "c"])).eval()

    def cond(canvas):
        return np.log(np.full((canvas.shape[0], 3, 1, 1), 1 / 3))

    cond.n_classes, cond.context_range = 3, 1
    return {
        "reference": lambda: sample_reference(m, 2, 4, 5, seed=1).grids,
        "reference-full": lambda: sample_reference(m, 2, 3, 4, seed=1, window=False).grids,
        "front": lambda: sample_front(m, 2, 4, 5, seed=1).grids,
        "cached-float32": lambda: sample_pixelcnn_cached(m32, 2, 4, 5, seed=1, threads=1).grids,
        "reference-3d": lambda: sample_volume(m3d, 2, 2, 3, 4, seed=1, evaluation="pixel").grids,
        "cached-3d": lambda: sample_volume(m3d, 2, 2, 3, 4, seed=1, evaluation="cached", threads=1).grids,
        "rho-eff": lambda: hard_core_lattices(0.3, 1.0, uniforms(1, 2, 6, 6))[1] * 2,
        "chain-rows": lambda: sample_rows(cond, 2, 4, 5, seed=1),
        "chain-table": lambda: sample_table_sequences(random_softmax_table(3, 2, seed=0), 20, 3, seed=1)[:, 2:],
    }


def test_every_sampler_draws_through_the_one_draw_function(monkeypatch):
    samplers = _all_samplers()
    normal = {name: np.asarray(f()) for name, f in samplers.items()}
    for name, g in normal.items():
        assert (g != 2).any(), name  # the real rule draws other classes too
    replace_rule(monkeypatch, "draw_pixel", _always_last)
    for name, f in samplers.items():
        out = np.asarray(f())
        assert (out == 2).all(), f"{name} does not draw through mapsim.sampling.draw.draw_pixel"
    monkeypatch.undo()
    assert draw_module.draw_pixel is draw_pixel
