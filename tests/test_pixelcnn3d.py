"""The 3D Gated PixelCNN: exactly causal on the causal box, sampled exactly through the core."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from mapsim.errors import MapsimError
from mapsim.models.pixelcnn3d import GatedPixelCNN3D, PixelCNN3DConfig
from mapsim.sampling.rng import uniforms
from mapsim.sampling.volume import sample_volume
from test_training import interrupted_and_resumed


def _model(layers=2, kernel=3, n_classes=2, seed=0, filters=4):
    torch.manual_seed(seed)
    cfg = PixelCNN3DConfig(n_classes=n_classes, layers=layers, kernel=kernel, filters=filters, out_width=5,
                           classes=[f"c{i}" for i in range(n_classes)])
    m = GatedPixelCNN3D(cfg).double().eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.normal_(0.0, 0.6)
        # positive biases before the output ReLUs: no voxel's gradient dies there by chance
        m.skips[-1].bias.add_(3.0)
        m.out1.bias.add_(3.0)
    return m


def _box(L, point, shape):
    """Canvas positions of the causal box of ``point`` (sample coordinates) on a canvas of ``shape``."""
    out = np.zeros(shape, bool)
    for d in itertools.product(range(-L, 1), range(-L, L + 1), range(-L, L + 1)):
        if d < (0, 0, 0):
            out[L + point[0] + d[0], L + point[1] + d[1], L + point[2] + d[2]] = True
    return out


@pytest.mark.parametrize("layers, kernel", [(1, 3), (2, 3), (3, 3), (2, 5)])
def test_gradient_support_is_exactly_the_causal_box(layers, kernel):
    m = _model(layers, kernel)
    L = m.context_range
    D, H, W = L + 2, 2 * L + 3, 2 * L + 2
    g = torch.randint(0, 2, (1, D, H, W), generator=torch.Generator().manual_seed(1))
    canvas = m.make_canvas(g)
    x = m.one_hot(canvas).requires_grad_(True)
    m.one_hot = lambda c, dtype=None: x  # differentiate with respect to the one-hot input
    for point in [(D - 1, H // 2, W // 2), (0, 0, 0), (D - 1, H - 1, W - 1), (1, 0, W - 1)]:
        x.grad = None
        m(canvas)[0, :, point[0], point[1], point[2]].sum().backward()
        support = x.grad.abs().sum(1)[0] > 0
        assert np.array_equal(support.numpy(), _box(L, point, support.shape)), point


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 1, 1), (2, 1, 6), (4, 3, 1)])
def test_reference_full_and_front_sampling_agree_draw_for_draw(shape):
    m = _model(2, 3, n_classes=3, seed=sum(shape))
    u = uniforms(4, 2, *shape)
    ref = sample_volume(m, 2, *shape, u=u, evaluation="pixel", beta=0.8)
    front = sample_volume(m, 2, *shape, u=u, evaluation="batch", beta=0.8)
    assert np.array_equal(ref.grids, front.grids)
    np.testing.assert_allclose(front.log_probs, ref.log_probs, atol=1e-6, rtol=0)
    if shape == (3, 4, 5):
        full = sample_volume(m, 2, *shape, u=u, evaluation="full", beta=0.8)
        assert np.array_equal(ref.grids, full.grids)
        assert len(np.unique(ref.grids)) == 3
    # teacher forcing: the model's log-likelihood of the drawn volumes is the sampler's sum
    with torch.no_grad():
        lp = (0.8 * m.logits(torch.as_tensor(ref.grids, dtype=torch.long))).log_softmax(1)
        tf = lp.gather(1, torch.as_tensor(ref.grids, dtype=torch.long)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(ref.log_probs, tf, atol=1e-6, rtol=0)


@pytest.mark.parametrize("evaluation", ["batch", "cached"])
def test_sampled_2x2x2_volumes_follow_the_model_probabilities(evaluation):
    m = _model(1, 3, seed=5)
    grids = np.array(list(itertools.product([0, 1], repeat=8))).reshape(-1, 2, 2, 2)
    with torch.no_grad():
        p = np.exp(m.log_likelihood(torch.as_tensor(grids)).numpy())
    assert abs(p.sum() - 1) < 1e-9
    n = 20000
    res = sample_volume(m, n, 2, 2, 2, seed=123, evaluation=evaluation)
    codes = (res.grids.reshape(n, -1).astype(np.int64) * (2 ** np.arange(8)[::-1])).sum(1)
    counts = np.bincount(codes, minlength=256)
    keep = p * n >= 5  # pool the rare outcomes into one cell (chi-squared validity)
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(p[keep] * n, p[~keep].sum() * n)
    _, pval = stats.chisquare(obs, exp)
    assert pval > 1e-4  # one seeded draw: false-alarm chance 1e-4


def test_a_2d_model_cannot_make_volumes_and_canvases_are_checked():
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

    with pytest.raises(MapsimError, match="cannot generate volumes"):
        sample_volume(GatedPixelCNN(PixelCNNConfig(layers=1)), 1, 2, 2, 2)
    m = _model()
    with pytest.raises(MapsimError, match="3D model needs canvases"):
        m(torch.zeros((1, 5, 5), dtype=torch.long))


def test_checkpoint_round_trip(tmp_path):
    from mapsim.models.io import load_model, save_model

    m = _model(2, 3)
    m2 = load_model(save_model(tmp_path / "m3.pt", m))
    assert isinstance(m2, GatedPixelCNN3D) and m2.config == m.config
    g = torch.randint(0, 2, (2, 3, 4, 4))
    with torch.no_grad():
        assert torch.allclose(m.log_likelihood(g), m2.double().log_likelihood(g))


def test_generate_cli_writes_volumes_and_refuses_mismatched_depth(tmp_path, capsys):
    from mapsim.cli import main
    from mapsim.lattice import load_dataset
    from mapsim.models.io import save_model
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

    m = _model(2, 3, seed=2)
    path = save_model(tmp_path / "m3.pt", m.float())
    base = ["generate", str(path), "--height", "4", "--width", "5", "--samples", "2", "--seed", "3"]
    assert main(base + ["--depth", "3", "--out", str(tmp_path / "v.npz")]) == 0
    ds = load_dataset(tmp_path / "v.npz")
    assert ds.grids.shape == (2, 3, 4, 5) and ds.ndim == 3
    ref = sample_volume(m, 2, 3, 4, 5, seed=3, evaluation="pixel")
    assert np.array_equal(ds.grids, ref.grids)
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "x.npz")]) == 2  # no --depth for a 3D model
    p2 = save_model(tmp_path / "m2.pt", GatedPixelCNN(PixelCNNConfig(layers=1)))
    assert main(["generate", str(p2), "--height", "4", "--width", "4", "--samples", "1", "--seed", "0",
                 "--depth", "2", "--out", str(tmp_path / "y.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--depth needs a 3D model" in err[1]
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.npz").exists()


def test_training_on_volumes_learns_beyond_the_density_and_resumes_exactly(tmp_path):
    """A 3D hard-core-like lattice gas (no two particles adjacent along an axis): the 3D model learns the
    exclusion (validation NLL well below the density-only value) and an interrupted run resumes exactly."""
    from mapsim.lattice import Dataset
    from mapsim.training import TrainConfig, train

    rng = np.random.default_rng(0)
    n, D, H, W = 24, 5, 6, 6
    g = np.zeros((n, D, H, W), np.uint8)
    for k in range(n):  # random sequential adsorption with 6-neighbour exclusion
        for z, y, x in itertools.product(range(D), range(H), range(W)):
            free = all(not (0 <= z + a < D and 0 <= y + b < H and 0 <= x + c < W and g[k, z + a, y + b, x + c])
                       for a, b, c in ((-1, 0, 0), (0, -1, 0), (0, 0, -1)))
            g[k, z, y, x] = free and rng.random() < 0.5
    ds = Dataset(g, ("empty", "particle"), {"generator": "test"})
    cfg = TrainConfig(layers=1, filters=8, out_width=16, batch=4, lr=1e-2, epochs=6, seed=1, patience=0)
    full = train(ds, cfg, tmp_path / "a", device="cpu")
    assert full.model.kind == "pixelcnn3d" and full.epochs_done == 6
    # the exclusion is learnt: far below the density-only NLL of the validation samples
    assert full.best_val_nll < 0.8 * full.density_only_nll, (full.best_val_nll, full.density_only_nll)
    resumed = interrupted_and_resumed(ds, cfg, tmp_path / "b", at=3)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k
