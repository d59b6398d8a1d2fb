"""The reference raster sampler with MAP models: exactness, the randomness contract, boundaries."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from mapsim.models.analytic import IdealGas, IdealGasConfig
from mapsim.models.expansion import Expansion, ExpansionConfig
from mapsim.sampling.common import Boundary
from mapsim.sampling.rng import uniforms
from mapsim.sampling.reference import sample_reference


def _expansion(L=1, order=3, n_classes=2, seed=0):
    m = Expansion(ExpansionConfig(range=L, order=order, classes=tuple(f"c{k}" for k in range(n_classes)))).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.5)
        m.coef.copy_(torch.randn(m.coef.shape, generator=g, dtype=torch.float64))
    return m


def test_same_seed_same_samples_and_explicit_uniforms():
    m = _expansion()
    a = sample_reference(m, 3, 5, 6, seed=4)
    b = sample_reference(m, 3, 5, 6, seed=4)
    c = sample_reference(m, 3, 5, 6, u=uniforms(4, 3, 5, 6))
    assert np.array_equal(a.grids, b.grids) and np.array_equal(a.grids, c.grids)
    assert np.array_equal(a.log_probs, c.log_probs)
    assert not np.array_equal(a.grids, sample_reference(m, 3, 5, 6, seed=5).grids)


def test_windowed_and_full_canvas_evaluation_agree():
    m = _expansion(L=2, order=3, n_classes=3)
    for boundary in (Boundary(), Boundary("noise", density=0.4)):
        a = sample_reference(m, 2, 4, 5, seed=1, boundary=boundary)
        b = sample_reference(m, 2, 4, 5, seed=1, boundary=boundary, window=False)
        assert np.array_equal(a.grids, b.grids)
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-6)


def test_draw_rule_is_the_first_class_whose_cumulative_probability_exceeds_u():
    m = IdealGas(IdealGasConfig(densities=(0.2, 0.3), classes=("e", "a", "b")))
    u = uniforms(0, 2, 6, 7)
    g = sample_reference(m, 2, 6, 7, u=u).grids
    assert np.array_equal(g, np.where(u < 0.5, 0, np.where(u < 0.7, 1, 2)))


@pytest.mark.parametrize("boundary", [Boundary(), Boundary("grid", grid=np.array([[1, 0], [0, 1]]))],
                         ids=["outside", "grid"])
def test_sampled_frequencies_match_full_enumeration(boundary):
    """chi^2 of 4000 samples of a 2x3 lattice against the exact MAP probabilities of all 64 grids."""
    m = _expansion(L=1, order=3, seed=3)
    H, W, K = 2, 3, 4000
    res = sample_reference(m, K, H, W, seed=7, boundary=boundary)
    top = torch.as_tensor(res.top[:1])
    configs = torch.as_tensor(np.array(list(itertools.product((0, 1), repeat=H * W))).reshape(-1, H, W))
    with torch.no_grad():
        logp = m.log_likelihood(configs, top=top.expand(len(configs), -1, -1)).numpy()
    p = np.exp(logp)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)  # the MAP is normalised over all grids
    code = (res.grids.reshape(K, -1) * (2 ** np.arange(H * W)[::-1])).sum(1)
    observed = np.bincount(code, minlength=len(p))
    expected = p * K
    keep = expected >= 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum() + \
        (observed[~keep].sum() - expected[~keep].sum()) ** 2 / max(expected[~keep].sum(), 1e-9)
    dof = keep.sum()
    assert stats.chi2.sf(chi2, dof) > 1e-3


def test_boundary_rows_returned():
    m = _expansion(L=2, order=2)
    grid = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]])
    res = sample_reference(m, 2, 3, 7, seed=0, boundary=Boundary("grid", grid=grid))
    # the last L rows of the grid, tiled along the width; sides outside (class 2)
    expected_rows = np.tile(grid[-2:], (1, 3))[:, :7]
    assert np.array_equal(res.top[0, :, 2:9], expected_rows) and np.all(res.top[:, :, :2] == 2)
    noise = sample_reference(m, 50, 1, 20, seed=0, boundary=Boundary("noise", density=0.3)).top
    assert set(np.unique(noise[:, :, 2:22])) <= {0, 1} and abs(noise[:, :, 2:22].mean() - 0.3) < 0.05


def test_high_beta_tends_to_the_most_likely_class():
    m = _expansion(L=1, order=2, seed=1)
    res = sample_reference(m, 4, 4, 5, seed=0, beta=200.0)
    with torch.no_grad():
        logits = m.logits(torch.as_tensor(res.grids.astype(np.int64)), top=torch.as_tensor(res.top))
    assert np.array_equal(res.grids, logits.argmax(1).numpy())
