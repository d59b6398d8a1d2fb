"""The fast samplers give exactly the reference sampler's draws and log-probabilities."""

import copy
import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from mapsim.models.base import MapModel
from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from mapsim.sampling.common import Boundary
from mapsim.sampling.rng import uniforms
from mapsim.sampling.fast import sample_fast, sample_front
from mapsim.sampling.front import front_rows, n_steps
from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached
from mapsim.sampling.reference import sample_reference


def _pixelcnn(n_classes, layers, kernel, seed=0, filters=4, dtype=torch.float64):
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(n_classes=n_classes, layers=layers, kernel=kernel, filters=filters, out_width=6,
                         classes=[f"c{i}" for i in range(n_classes)])
    m = GatedPixelCNN(cfg).to(dtype).eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.normal_(0.0, 0.6)  # strong, varied conditionals
    return m


@pytest.mark.parametrize("H, W, L", [(5, 7, 2), (1, 1, 0), (3, 1, 4), (6, 2, 3), (4, 9, 0), (2, 30, 5)])
def test_front_visits_every_pixel_once_after_its_context(H, W, L):
    step = np.full((H, W), -1)
    for t in range(n_steps(H, W, L)):
        r0, r1 = front_rows(t, H, W, L)
        for r in range(r0, r1):
            c = t - (L + 1) * r
            assert step[r, c] == -1
            step[r, c] = t
    assert (step >= 0).all()
    # the row above is drawn up to column c + L before (r, c)
    for r in range(1, H):
        for c in range(W):
            assert step[r - 1, min(W - 1, c + L)] < step[r, c]


BOUNDARIES = [
    Boundary(),
    Boundary("noise", density=0.4),
    Boundary("grid", grid=np.random.default_rng(7).integers(0, 2, (3, 4))),
]

CASES = [
    # n_classes, layers, kernel, K, H, W
    (2, 1, 3, 2, 4, 5),
    (2, 3, 3, 2, 7, 9),
    (3, 2, 5, 2, 6, 4),   # width below L_c = 4
    (2, 4, 3, 1, 3, 2),   # width below L_c = 4
    (2, 2, 3, 3, 1, 1),   # 1 x 1
    (2, 2, 3, 2, 1, 8),   # 1 x W
    (3, 2, 3, 2, 6, 1),   # H x 1
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bi", range(len(BOUNDARIES)))
def test_cached_pixelcnn_matches_reference(case, bi):
    nc, layers, kernel, K, H, W = case
    model = _pixelcnn(nc, layers, kernel, seed=layers * 10 + kernel)
    b = BOUNDARIES[bi]
    for beta in (1.0, 0.5, 2.5):
        u = uniforms(11, K, H, W)
        ref = sample_reference(model, K, H, W, seed=11, beta=beta, boundary=b, u=u)
        fast = sample_pixelcnn_cached(model, K, H, W, seed=11, beta=beta, boundary=b, u=u, threads=1)
        assert np.array_equal(ref.grids, fast.grids)
        np.testing.assert_allclose(fast.log_probs, ref.log_probs, atol=1e-5, rtol=0)
        assert np.array_equal(ref.top, fast.top)


def _assert_draws_follow_the_rule(model, res, u, beta, tol=1e-5):
    """Every pixel of ``res`` is the draw rule applied to the model's teacher-forced float64
    conditionals and its uniform, except where u lies within ``tol`` of a cumulative-probability
    boundary (float32 arithmetic in another order may fall either side there); log-probs to ``tol``."""
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        z = m64.logits(torch.as_tensor(res.grids, dtype=torch.long), torch.as_tensor(res.top)).numpy()
    logp = beta * z - np.logaddexp.reduce(beta * z, axis=1, keepdims=True)  # (K, N_c, H, W)
    cum = np.cumsum(np.exp(logp), axis=1)
    rule = np.minimum((cum <= u[:, None]).sum(1), z.shape[1] - 1)
    near = (np.abs(cum - u[:, None]) < tol).any(1)
    assert ((rule == res.grids) | near).all()
    assert near.mean() < 1e-3  # a boundary within tol is rare: the comparison has power
    chosen = np.take_along_axis(logp, res.grids[:, None].astype(np.int64), 1)[:, 0]
    np.testing.assert_allclose(res.log_probs, chosen, atol=tol, rtol=0)


FLOAT32_CASES = [
    # n_classes, layers, kernel, K, H, W
    (2, 3, 3, 3, 10, 12),
    (3, 2, 5, 2, 7, 5),
    (4, 4, 3, 2, 9, 3),
]


@pytest.mark.parametrize("case", FLOAT32_CASES)
@pytest.mark.parametrize("bi", range(len(BOUNDARIES)))
def test_cached_pixelcnn_float32_fast_gates_follow_the_draw_rule(case, bi):
    nc, layers, kernel, K, H, W = case
    model = _pixelcnn(nc, layers, kernel, seed=5 + layers, filters=8, dtype=torch.float32)
    for beta in (1.0, 0.5, 2.5):
        u = uniforms(2, K, H, W)
        res = sample_pixelcnn_cached(model, K, H, W, seed=2, beta=beta, boundary=BOUNDARIES[bi], u=u)
        _assert_draws_follow_the_rule(model, res, u, beta)


@pytest.mark.parametrize("steps_per_call, substeps", [(5, 1), (7, 1), (64, 1), (7, 3), (64, 16), (5, 16)])
def test_cached_sampler_crosses_the_chunk_boundary_exactly(monkeypatch, steps_per_call, substeps):
    """Any number of steps per compiled call and of sub-steps per macro-step (S = 1: one step at a time),
    one or two threads: the reference sampler's grids."""
    import mapsim.sampling.pixelcnn_fast as pf

    monkeypatch.setattr(pf, "STEPS_PER_CALL", steps_per_call)
    monkeypatch.setattr(pf, "SUBSTEPS", substeps)
    model = _pixelcnn(3, 2, 3, seed=12)
    K, H, W = 2, 14, 40  # (L + S)(H - 1) + W + 2L - 2p >= 83 steps > 64
    assert pf.total_steps(H, W, model.context_range, model.p, substeps) > 64
    ref = sample_reference(model, K, H, W, seed=6, boundary=BOUNDARIES[1])
    for threads in (1, 2):
        rows = []
        fast = pf.sample_pixelcnn_cached(model, K, H, W, seed=6, boundary=BOUNDARIES[1], threads=threads,
                                         progress=rows.append)
        assert np.array_equal(ref.grids, fast.grids)
        np.testing.assert_allclose(fast.log_probs, ref.log_probs, atol=1e-5, rtol=0)
        assert rows[-1] == H and rows == sorted(rows)


@pytest.mark.parametrize("S", [1, 4])
def test_rows_finished_counts_the_rows_whose_last_pixel_is_drawn(S):
    from mapsim.sampling.pixelcnn_fast import rows_finished, total_steps

    H, W, L, p = 4, 5, 2, 1
    last = [(L + S) * r + W + 2 * L - 2 * p - 1 for r in range(H)]  # lanes start 2L - 2p columns early
    assert last[-1] == total_steps(H, W, L, p, S) - 1
    for t in range(total_steps(H, W, L, p, S)):
        assert rows_finished(t, H, W, L, p, S) == sum(s <= t for s in last)


def test_substeps_shrink_only_where_many_samples_already_make_large_products():
    from mapsim.sampling.pixelcnn_fast import MACRO_ROWS, SUBSTEPS, lanes_in_flight, substeps_for

    L, p = 20, 1  # the benchmark model
    assert substeps_for(1, 1024, L, p) == SUBSTEPS
    assert substeps_for(64, 256, L, p) == 1  # 64 x 15 lanes at S = 1: large products already
    for K, W in [(1, 1024), (8, 256), (4, 64), (64, 256), (3, 5)]:
        S = substeps_for(K, W, L, p)
        assert 1 <= S <= SUBSTEPS
        assert S == 1 or K * lanes_in_flight(W, L, p, S) * S <= MACRO_ROWS


@pytest.mark.parametrize("substeps", [1, 3, 16])
def test_cached_sampler_macro_steps_match_reference_on_every_shape(monkeypatch, substeps):
    """Macro-steps of S = 1, 3, 16 on the shapes of CASES (widths below L_c, single rows and columns)."""
    import mapsim.sampling.pixelcnn_fast as pf

    monkeypatch.setattr(pf, "SUBSTEPS", substeps)
    for nc, layers, kernel, K, H, W in CASES:
        model = _pixelcnn(nc, layers, kernel, seed=layers * 10 + kernel)
        u = uniforms(11, K, H, W)
        ref = sample_reference(model, K, H, W, seed=11, boundary=BOUNDARIES[1], u=u)
        for threads in (1, 2):
            fast = pf.sample_pixelcnn_cached(model, K, H, W, seed=11, boundary=BOUNDARIES[1], u=u, threads=threads)
            assert np.array_equal(ref.grids, fast.grids)
            np.testing.assert_allclose(fast.log_probs, ref.log_probs, atol=1e-5, rtol=0)


def test_fast_float32_gate_is_accurate_over_the_whole_range():
    from mapsim.sampling.pixelcnn_fast import _gate_approx

    a_vals = np.concatenate([-np.logspace(-30, 38, 200), [0.0], np.logspace(-30, 38, 200)]).astype(np.float32)
    g_vals = np.concatenate([-np.logspace(-30, 38, 120), [0.0], np.logspace(-30, 38, 120)]).astype(np.float32)
    A, G = np.meshgrid(a_vals, g_vals, indexing="ij")
    F = A.size
    pre = np.concatenate([A.ravel(), G.ravel()])[None, :].astype(np.float32)  # one row: F tanh, F gate inputs
    out = np.empty((1, F), np.float32)
    x, e = np.empty((1, 2 * F), np.float32), np.empty((1, 2 * F), np.float32)
    sc = np.empty(2 * F, np.int32)
    _gate_approx(pre, 1, F, out, x, e, sc)
    a64, g64 = A.ravel().astype(np.float64), G.ravel().astype(np.float64)
    with np.errstate(over="ignore"):
        exact = np.tanh(a64) * np.exp(-np.logaddexp(0.0, -g64))
    assert np.isfinite(out).all()
    big = np.abs(exact) > 1e-25
    rel = np.abs(out[0][big] - exact[big]) / np.abs(exact[big])
    assert rel.max() <= 1e-6, (rel.max(), a64[big][rel.argmax()], g64[big][rel.argmax()])
    assert (np.abs(out[0][~big]) <= 1e-25).all()
    assert (np.sign(out[0][big]) == np.sign(exact[big])).all()


def test_models_with_more_classes_than_a_uint8_canvas_holds_are_refused():
    from mapsim.errors import MapsimError

    names = [f"c{i}" for i in range(256)]
    with pytest.raises(MapsimError, match="at most 255"):
        GatedPixelCNN(PixelCNNConfig(n_classes=256, layers=1, kernel=3, filters=2, out_width=2, classes=names))
    assert _ContextSum(n_classes=255, L=1).n_classes == 255


def test_cached_sampler_threads_do_not_change_results():
    model = _pixelcnn(2, 2, 3, seed=3)
    a = sample_pixelcnn_cached(model, 3, 9, 13, seed=4, threads=1)
    b = sample_pixelcnn_cached(model, 3, 9, 13, seed=4, threads=2)
    assert np.array_equal(a.grids, b.grids) and np.array_equal(a.log_probs, b.log_probs)


class _ContextSum(MapModel):
    """A small non-neural model: logits from weighted counts of each class in the context."""

    kind = "test-context-sum"

    def __init__(self, n_classes=3, L=2, seed=0):
        super().__init__(n_classes, L)
        g = torch.Generator().manual_seed(seed)
        n_off = 2 * L * (L + 1)
        self.w = torch.nn.Parameter(torch.randn(n_off, n_classes + 1, n_classes, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(n_classes, generator=g, dtype=torch.float64))

    def forward(self, canvas):
        from mapsim.models.base import causal_offsets

        L = self.context_range
        B, Hc, Wc = canvas.shape
        H, W = Hc - L, Wc - 2 * L
        x = torch.nn.functional.one_hot(canvas, self.n_classes + 1).double()  # (B, Hc, Wc, C)
        out = self.b.view(1, 1, 1, -1).expand(B, H, W, self.n_classes).clone()
        for q, (di, dj) in enumerate(causal_offsets(L)):
            patch = x[:, L + di : L + di + H, L + dj : L + dj + W]
            out = out + patch @ self.w[q]
        return out.permute(0, 3, 1, 2)


@pytest.mark.parametrize("K, H, W", [(2, 5, 6), (1, 1, 1), (3, 4, 1), (2, 2, 3)])
def test_generic_front_matches_reference(K, H, W):
    model = _ContextSum(seed=H * W)
    for b, beta in itertools.product(BOUNDARIES, (1.0, 0.3)):
        ref = sample_reference(model, K, H, W, seed=5, beta=beta, boundary=b)
        fr = sample_front(model, K, H, W, seed=5, beta=beta, boundary=b)
        assert np.array_equal(ref.grids, fr.grids)
        np.testing.assert_allclose(fr.log_probs, ref.log_probs, atol=1e-5, rtol=0)


def test_sample_fast_dispatch_and_teacher_forcing():
    model = _pixelcnn(2, 2, 3, seed=8)
    res = sample_fast(model, 2, 6, 7, seed=3, boundary=Boundary("noise", density=0.5))
    top = torch.as_tensor(res.top)
    tf = model.log_prob_pixels(torch.as_tensor(res.grids, dtype=torch.long), top=top).detach().numpy()
    np.testing.assert_allclose(res.log_probs, tf, atol=1e-5, rtol=0)


def test_fast_sampler_distribution_matches_enumeration():
    """Sample frequencies of all 2^(2x2) grids match the model's exact probabilities (chi-squared)."""
    model = _pixelcnn(2, 1, 3, seed=21)
    model.eval()
    H = W = 2
    grids = np.array(list(itertools.product([0, 1], repeat=H * W))).reshape(-1, H, W)
    with torch.no_grad():
        logp = model.log_likelihood(torch.as_tensor(grids)).numpy()
    probs = np.exp(logp)
    assert abs(probs.sum() - 1) < 1e-9
    n = 20000
    res = sample_pixelcnn_cached(model, n, H, W, seed=123)
    codes = (res.grids.reshape(n, -1) * (2 ** np.arange(H * W)[::-1])).sum(1)
    counts = np.bincount(codes, minlength=len(grids))
    chi2, pval = stats.chisquare(counts, probs * n)
    assert pval > 1e-3, (chi2, pval)


def test_generate_cli_fast_default_equals_reference(tmp_path):
    from mapsim.cli import main
    from mapsim.lattice import load_dataset
    from mapsim.models.io import save_model

    model = _pixelcnn(2, 2, 3, seed=4, dtype=torch.float32)
    path = save_model(tmp_path / "m.pt", model)
    outs = {}
    for sampler in ("fast", "reference"):
        out = tmp_path / f"{sampler}.npz"
        args = ["generate", str(path), "--height", "7", "--width", "10", "--samples", "2", "--seed", "9",
                "--boundary", "noise:0.3", "--beta", "1.5", "--out", str(out)]
        if sampler == "reference":
            args += ["--sampler", "reference"]
        assert main(args) == 0
        outs[sampler] = load_dataset(out)
    assert outs["fast"].metadata["sampler"] == "fast"
    assert np.array_equal(outs["fast"].grids, outs["reference"].grids)
    np.testing.assert_allclose(outs["fast"].extras["log_probs"], outs["reference"].extras["log_probs"], atol=1e-5)
