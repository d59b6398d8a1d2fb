"""Analytic models: ideal gas (Eqs. 6-7) and hard-core fluid (Eqs. 10-16)."""

import math

import numpy as np
import pytest
import torch
from model_checks import check_autoregressive, check_crop_invariance, check_sampler_log_probs

from mapsim.errors import MapsimError
from mapsim.models.analytic import HardCore, HardCoreConfig, IdealGas, IdealGasConfig, hard_core_offsets
from mapsim.sampling.rho_eff import bulk_density, hard_core_for_density, hard_core_lattices, solve_rho_eff
from mapsim.models.expansion import Expansion, ExpansionConfig
from mapsim.models.io import load_model, save_model
from mapsim.sampling.common import Boundary
from mapsim.sampling.reference import sample_reference


def test_ideal_gas_probabilities_are_the_densities():
    m = IdealGas(IdealGasConfig(densities=(0.2, 0.1), classes=("empty", "a", "b")))
    p = torch.softmax(m.logits(torch.zeros(1, 3, 4, dtype=torch.long)), dim=1)
    assert p.shape == (1, 3, 3, 4)
    np.testing.assert_allclose(p[0, :, 1, 2].numpy(), [0.7, 0.2, 0.1], rtol=1e-12)


def test_ideal_gas_matches_eq7():
    rho = 0.05
    c_b1 = 0.5 * math.log(-rho / (rho - 1))  # Eq. 7, symmetric logits (-c, c)
    m = IdealGas(IdealGasConfig(densities=(rho,)))
    logits = m.logits(torch.zeros(1, 1, 1, dtype=torch.long))[0, :, 0, 0]
    assert float(logits[1] - logits[0]) == pytest.approx(2 * c_b1, rel=1e-12)


def test_ideal_gas_samples_at_its_density():
    rho = 0.1
    m = IdealGas(IdealGasConfig(densities=(rho,)))
    g = sample_reference(m, 8, 32, 32, seed=5).grids
    n = g.size
    # pixels are independent: binomial bound, 4 standard deviations
    assert abs(g.mean() - rho) <= 4 * math.sqrt(rho * (1 - rho) / n)


def test_ideal_gas_of_volumes(tmp_path):
    """ndim = 3: logits (B, N_c, D, H, W) at the densities, volumes at the density, exact NLL, file round trip."""
    from mapsim.models.score import score_volumes
    from mapsim.sampling.volume import generate_volume

    rho = 0.1
    m = IdealGas(IdealGasConfig(densities=(rho,), ndim=3))
    assert m.ndim == 3 and IdealGas(IdealGasConfig(densities=(rho,))).ndim == 2
    p = torch.softmax(m.logits(torch.zeros(2, 3, 4, 5, dtype=torch.long)), dim=1)
    assert p.shape == (2, 2, 3, 4, 5)
    np.testing.assert_allclose(p[1, :, 2, 3, 4].numpy(), [1 - rho, rho], rtol=1e-12)
    ds = generate_volume(m, 4, 8, 8, 8, seed=3)
    g = ds.grids
    assert g.shape == (4, 8, 8, 8) and abs(g.mean() - rho) <= 4 * math.sqrt(rho * (1 - rho) / g.size)
    # the NLL of the bulk voxels: -(n1 ln rho + n0 ln(1 - rho)) / voxels per sample, averaged over samples
    sc = score_volumes(m, g, skip_planes=2, skip_rows=1, skip_cols=3)
    inner = g[:, 2:, 1:7, 3:5]
    n1 = inner.reshape(4, -1).sum(axis=1)
    want = -(n1 * math.log(rho) + (inner[0].size - n1) * math.log(1 - rho)) / inner[0].size
    assert sc.pixels_per_sample == inner[0].size and sc.skip_planes == 2
    assert sc.nll_nats == pytest.approx(want.mean(), rel=1e-12)
    assert sc.nll_nats_se == pytest.approx(want.std(ddof=1) / 2, rel=1e-9)
    save_model(tmp_path / "m.pt", m)
    assert load_model(tmp_path / "m.pt").ndim == 3
    with pytest.raises(MapsimError, match="leaves no voxel"):
        score_volumes(m, g, skip_rows=4)
    with pytest.raises(MapsimError, match="2D model"):
        score_volumes(IdealGas(IdealGasConfig(densities=(rho,))), g)


@pytest.mark.parametrize("bad", [dict(densities=(0.1,), ndim=4), dict(densities=(0.1,), ndim=True),
                                 dict(densities=(0.0,)), dict(densities=(1.0,)), dict(densities=(0.6, 0.5), classes=("e", "a", "b")),
                                 dict(densities=(0.1,), classes=("e", "a", "b")), dict(densities=(float("nan"),))])
def test_ideal_gas_rejects_bad_config(bad):
    with pytest.raises(MapsimError):
        IdealGasConfig(**bad)


def test_hard_core_offsets():
    assert hard_core_offsets(1.0) == [(-1, 0), (0, -1)]
    assert hard_core_offsets(1.5) == [(-1, -1), (-1, 0), (-1, 1), (0, -1)]
    assert len(hard_core_offsets(2.0)) == 6


def test_hard_core_conditionals():
    m = HardCore(HardCoreConfig(rho_eff=0.2, range=1.0))
    g = torch.zeros(1, 3, 3, dtype=torch.long)
    g[0, 1, 1] = 1
    p = torch.softmax(m.logits(g), dim=1)[0, 1]  # p(particle)
    expected = torch.full((3, 3), 0.2, dtype=p.dtype)
    expected[2, 1] = 0  # below the particle
    expected[1, 2] = 0  # right of it
    torch.testing.assert_close(p, expected)
    # the outside class never counts as a particle, even in the boundary rows
    top = torch.full((1, 1, 5), 2, dtype=torch.long)
    assert torch.allclose(torch.softmax(m.logits(torch.zeros(1, 1, 3, dtype=torch.long), top), 1)[0, 1],
                          torch.tensor(0.2, dtype=torch.float64))


@pytest.mark.parametrize("R", [1.0, 1.5, 2.0])
def test_hard_core_equals_expansion_with_very_negative_pair_coefficients(R):
    hc = HardCore(HardCoreConfig(rho_eff=0.3, range=R))
    ex = Expansion(ExpansionConfig(range=hc.context_range, order=2)).double()
    with torch.no_grad():
        ex.bias.fill_(math.log(0.3 / 0.7))  # Eq. 15 (up to the common shift)
        for off in hard_core_offsets(R):
            ex.coef[ex.cluster_index([off], 1)] = -200.0  # Eq. 16: c_11 -> -inf
    rng = np.random.default_rng(1)
    g = torch.as_tensor((rng.random((4, 9, 11)) < 0.25).astype(np.int64))
    top = torch.as_tensor(rng.integers(0, 3, (4, hc.context_range, 11 + 2 * hc.context_range)))
    p_hc = torch.softmax(hc.logits(g, top), 1)
    p_ex = torch.softmax(ex.logits(g, top), 1)
    torch.testing.assert_close(p_ex, p_hc, atol=1e-30, rtol=1e-12)


def test_sampled_hard_core_respects_exclusion():
    m = HardCore(HardCoreConfig(rho_eff=0.5, range=1.5))
    g = sample_reference(m, 4, 12, 12, seed=0).grids
    for k in range(4):
        pts = np.argwhere(g[k] == 1)
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, 100)
        assert d2.min() > 1.5**2
    assert g.mean() > 0.1


def test_solved_rho_eff_gives_the_requested_density():
    rho, R = 0.05, 1.0
    sol = solve_rho_eff(rho, R, n_lattices=4, size=128)
    assert sol.rho_eff > rho and abs(sol.density - rho) <= 1e-6 + 3 * sol.stderr
    # independent check with other uniforms: the sampled bulk density matches
    # within 4 standard errors of the (Rao-Blackwellised) estimate
    u = np.random.default_rng(99).random((8, 128, 128))
    reps = bulk_density(sol.rho_eff, R, u)
    se = math.hypot(reps.std(ddof=1) / math.sqrt(len(reps)), sol.stderr)
    assert abs(reps.mean() - rho) <= 4 * se
    # the torch model sampled by the reference sampler agrees with the numba kernel draw for draw
    m = HardCore(HardCoreConfig(rho_eff=sol.rho_eff, range=R))
    u_small = np.random.default_rng(3).random((2, 20, 20))
    res = sample_reference(m, 2, 20, 20, u=u_small)
    p_drawn = np.exp(res.log_probs.astype(np.float64))
    p = np.where(res.grids == 1, p_drawn, 1.0 - p_drawn)  # p(particle | context)
    assert bulk_density(sol.rho_eff, R, u_small, margin=0) == pytest.approx(p.reshape(2, -1).mean(1), rel=1e-5)


def test_unreachable_density_is_an_error():
    with pytest.raises(MapsimError, match="not reachable"):
        solve_rho_eff(0.6, 1.0, n_lattices=2, size=32)
    with pytest.raises(MapsimError):
        solve_rho_eff(0.05, 0.5)


def model_zoo():
    torch.manual_seed(0)
    return [IdealGas(IdealGasConfig(densities=(0.2, 0.1), classes=("e", "a", "b"))),
            HardCore(HardCoreConfig(rho_eff=0.4, range=1.0)),
            HardCore(HardCoreConfig(rho_eff=0.4, range=2.3))]


@pytest.mark.parametrize("model", model_zoo(), ids=lambda m: f"{m.kind}-L{m.context_range}")
def test_masking_and_crops(model):
    check_autoregressive(model)
    check_crop_invariance(model)


@pytest.mark.parametrize("model", model_zoo(), ids=lambda m: f"{m.kind}-L{m.context_range}")
@pytest.mark.parametrize("boundary", [Boundary(), Boundary("noise", density=0.2)], ids=["outside", "noise"])
def test_sampler_log_probs_match_teacher_forcing(model, boundary):
    check_sampler_log_probs(model, boundary=boundary)
    check_sampler_log_probs(model, boundary=boundary, beta=2.5)


@pytest.mark.parametrize("model", model_zoo(), ids=lambda m: f"{m.kind}-L{m.context_range}")
def test_checkpoint_round_trip(model, tmp_path):
    p = save_model(tmp_path / "m.pt", model)
    back = load_model(p)
    assert type(back) is type(model) and back.config == model.config
    g = torch.as_tensor(np.random.default_rng(0).integers(0, model.n_classes, (2, 5, 6)))
    torch.testing.assert_close(back.logits(g), model.logits(g))


def test_hard_core_for_density_records_request():
    m = hard_core_for_density(0.02, 2.0, n_lattices=2, size=64)
    assert m.config.density == 0.02 and m.context_range == 2 and m.config.rho_eff > 0.02
