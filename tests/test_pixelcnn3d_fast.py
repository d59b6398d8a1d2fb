"""The cached 3D sampler gives exactly the reference 3D sampler's draws and log-probabilities."""

import numpy as np
import pytest
import torch

from mapsim.errors import MapsimError
from mapsim.sampling.pixelcnn3d_fast import planes_done, sample_pixelcnn3d_cached, total_steps
from mapsim.sampling.rng import uniforms
from mapsim.sampling.volume import generate_volume, outside_planes, sample_volume
from test_fast_sampler import _assert_draws_follow_the_rule
from test_pixelcnn3d import _model

CASES = [
    # n_classes, layers, kernel, K, (D, H, W)
    (2, 1, 3, 2, (3, 4, 5)),
    (3, 2, 3, 2, (3, 4, 5)),
    (2, 3, 3, 1, (4, 3, 6)),   # H below L_c = 3
    (3, 2, 5, 2, (3, 5, 4)),   # p = 2
    (2, 4, 3, 2, (5, 4, 3)),   # W below L_c = 4
    (3, 3, 3, 2, (2, 7, 1)),   # one column
    (2, 2, 3, 3, (1, 1, 1)),
]


def _random_top(model, K, H, W, seed):
    """Boundary planes with every class and the outside class: the depth stack's boundary planes matter."""
    top = outside_planes(model, K, H, W)
    return np.random.default_rng(seed).integers(0, model.n_classes + 1, top.shape)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("boundary", ["outside", "random"])
def test_cached_volumes_match_the_reference_draw_for_draw(case, boundary):
    nc, layers, kernel, K, shape = case
    m = _model(layers, kernel, n_classes=nc, seed=layers * 10 + kernel)
    top = None if boundary == "outside" else _random_top(m, K, shape[1], shape[2], seed=sum(shape))
    seen = set()
    for beta in (1.0, 0.5, 2.5):
        u = uniforms(11, K, *shape)
        ref = sample_volume(m, K, *shape, u=u, top=top, beta=beta, evaluation="pixel")
        fast = sample_volume(m, K, *shape, u=u, top=top, beta=beta, evaluation="cached", threads=1)
        assert np.array_equal(ref.grids, fast.grids)
        np.testing.assert_allclose(fast.log_probs, ref.log_probs, atol=1e-6, rtol=0)
        assert np.array_equal(ref.top, fast.top)
        seen |= set(np.unique(ref.grids).tolist())
    if K * np.prod(shape) > 3:  # the comparison has power: more than one class drawn
        assert len(seen) > 1


@pytest.mark.parametrize("case", [(2, 3, 3, 2, (4, 6, 7)), (3, 2, 5, 2, (3, 7, 5)), (4, 4, 3, 1, (5, 9, 3))])
def test_cached_float32_volumes_follow_the_draw_rule(case):
    """float32 models (fast gates, float32 BLAS): every voxel is the rule applied to the float64
    conditionals, except within 1e-5 of a cumulative boundary (as for the 2D kernel)."""
    nc, layers, kernel, K, shape = case
    m = _model(layers, kernel, n_classes=nc, seed=5 + layers, filters=8).float()
    top = _random_top(m, K, shape[1], shape[2], seed=3)
    for beta in (1.0, 0.5, 2.5):
        u = uniforms(2, K, *shape)
        res = sample_pixelcnn3d_cached(m, K, *shape, u=u, top=top, beta=beta)
        _assert_draws_follow_the_rule(m, res, u, beta)


@pytest.mark.parametrize("steps_per_call, substeps", [(5, 1), (64, 1), (7, 3), (64, 16)])
def test_cached_volumes_cross_the_chunk_boundary_and_threads_change_nothing(monkeypatch, steps_per_call, substeps):
    """Any number of steps per compiled call and of sub-steps per macro-step (S = 1: one step at a time),
    one or two threads: the same volumes."""
    import mapsim.sampling.pixelcnn3d_fast as pf

    monkeypatch.setattr(pf, "STEPS_PER_CALL", steps_per_call)
    monkeypatch.setattr(pf, "SUBSTEPS", substeps)
    m = _model(2, 3, n_classes=3, seed=12)
    K, shape = 2, (6, 5, 6)
    assert total_steps(*shape, m.context_range, m.p, substeps) > 64
    planes = []
    ref = sample_volume(m, K, *shape, seed=6, evaluation="batch")
    one = sample_volume(m, K, *shape, seed=6, evaluation="cached", threads=1)
    two = sample_volume(m, K, *shape, seed=6, evaluation="cached", threads=2, progress=planes.append)
    assert np.array_equal(ref.grids, one.grids) and np.array_equal(one.grids, two.grids)
    assert np.array_equal(one.log_probs, two.log_probs)
    assert planes[-1] == shape[0] and planes == sorted(planes)


@pytest.mark.parametrize("S", [1, 4])
def test_planes_done_counts_the_planes_whose_last_voxel_is_drawn(S):
    D, H, W, L, p = 3, 4, 5, 2, 1
    lag, plag = L + S, (L + S) * (L + 1)
    last = [plag * z + lag * (H + 2 * L - 2 * p - 1) + W + 2 * L - 2 * p - 1 for z in range(D)]
    assert last[-1] == total_steps(D, H, W, L, p, S) - 1
    for t in range(total_steps(D, H, W, L, p, S)):
        assert planes_done(t, D, H, W, L, p, S) == sum(s <= t for s in last)


def test_generate_volume_uses_the_cached_kernel_by_default_and_keeps_the_others():
    m = _model(2, 3, seed=4).float()
    runs = {s: generate_volume(m, 2, 3, 4, 5, seed=9, beta=1.5, sampler=s) for s in ("fast", "front", "reference")}
    for s, ds in runs.items():
        assert ds.metadata["sampler"] == s
        assert np.array_equal(ds.grids, runs["reference"].grids), s
        np.testing.assert_allclose(ds.extras["log_probs"], runs["reference"].extras["log_probs"], atol=1e-5)
    with pytest.raises(MapsimError, match="unknown sampler"):
        generate_volume(m, 1, 2, 2, 2, sampler="cached")


def test_generate_volume_draws_groups_of_volumes_with_the_samples_uniforms(monkeypatch):
    """Groups bound the caches' memory; each volume keeps its own uniform lines, so a float64 model gives the
    same volumes whatever the group."""
    import mapsim.sampling.volume as volume

    m = _model(2, 3, seed=7)
    whole = generate_volume(m, 5, 2, 3, 4, seed=3)
    assert whole.metadata["samples_per_group"] == volume.volume_group(m, 3, 4) >= 5
    L, n, p, F = 2, 2, 1, 4
    per_volume = (3 + 2 * L) * (4 + 2 * L) * F * ((p + 3) * (n - 1) + 4 * n) * 8  # bytes of one volume's caches
    monkeypatch.setattr(volume, "GROUP_BYTES", 2 * per_volume + 1)
    planes = []
    grouped = generate_volume(m, 5, 2, 3, 4, seed=3, progress=planes.append)
    assert grouped.metadata["samples_per_group"] == 2
    assert np.array_equal(whole.grids, grouped.grids)
    np.testing.assert_allclose(grouped.extras["log_probs"], whole.extras["log_probs"], atol=1e-6, rtol=0)
    assert planes[-1] == 2 * 3 and planes == sorted(planes)  # 3 groups of 2 planes


def test_the_cached_kernel_refuses_other_models():
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

    m2 = GatedPixelCNN(PixelCNNConfig(layers=1))
    with pytest.raises(MapsimError, match="pixelcnn3d"):
        sample_pixelcnn3d_cached(m2, 1, 2, 2, 2, u=np.zeros((1, 2, 2, 2)), top=np.zeros((1, 1, 4, 4), np.int64))
    with torch.no_grad():
        with pytest.raises(MapsimError, match="cannot generate volumes"):
            sample_volume(m2, 1, 2, 2, 2, evaluation="cached")


def test_bench_generate_depth_reports_the_cached_kernel_beside_the_front_and_2d(capsys):
    import json

    from mapsim.cli import main

    assert main(["bench", "generate", "--depth", "3", "--layers", "2", "--filters", "4", "--front-depth", "2",
                 "--repeats", "1", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"].startswith("cached") and out["volume"] == "3^3"
    for key in ("voxels_per_s", "gflops", "gemm_gflops", "gemm_fraction", "voxels_per_s_front", "ratio_vs_front",
                "gemm_fraction_2d", "gemm_fraction_cpu", "gemm_fraction_2d_cpu"):
        assert out[key] > 0, key
