"""Gated PixelCNN: causality without a blind spot, crops, sampler agreement, file round trip."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_checks import check_autoregressive, check_crop_invariance, check_sampler_log_probs

from mapsim.models.base import causal_offsets
from mapsim.models.io import load_model, save_model
from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from mapsim.sampling.common import Boundary
from mapsim.sampling.reference import sample_reference


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: thread start-up and barriers cost more than they save, badly so on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(layers=2, kernel=3, n_classes=2, filters=8, out_width=16, seed=0, dtype=torch.float32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = PixelCNNConfig(n_classes=n_classes, layers=layers, filters=filters, kernel=kernel, out_width=out_width,
                             classes=[f"c{k}" for k in range(n_classes)])
        return GatedPixelCNN(cfg).to(dtype).eval()


@pytest.mark.parametrize("layers, kernel, n_classes", [(1, 3, 2), (3, 3, 2), (2, 5, 3), (1, 7, 4), (4, 3, 3)])
def test_gradient_support_is_exactly_the_causal_neighbourhood(layers, kernel, n_classes):
    """d logits(i, j) / d one-hot input: non-zero on every neighbourhood site, exactly zero elsewhere."""
    model = _model(layers, kernel, n_classes, filters=6, out_width=32, seed=layers * 10 + kernel, dtype=torch.float64)
    L = model.context_range
    assert L == layers * (kernel // 2)
    H, W = 2 * L + 2, 2 * L + 3
    rng = np.random.default_rng(1)
    grids = torch.as_tensor(rng.integers(0, n_classes, (1, H, W)))
    top = torch.as_tensor(rng.integers(0, n_classes + 1, (1, L, W + 2 * L)))
    canvas = model.make_canvas(grids, top)
    x = model.one_hot(canvas).requires_grad_()  # (1, N_c + 1, Hc, Wc)
    model.one_hot = lambda c, dtype=None: x  # feed the leaf tensor through the unchanged forward
    logits = model(canvas)  # (1, N_c, H, W)
    assert logits.shape == (1, n_classes, H, W)
    weights = torch.as_tensor(rng.normal(size=n_classes))
    pixels = [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1), (L, L), (H // 2, W // 2), (1, 2)]
    for i, j in pixels:
        (grad,) = torch.autograd.grad(logits[0, :, i, j] @ weights, x, retain_graph=True)
        support = grad[0].abs().sum(0)  # (Hc, Wc)
        expected = torch.zeros_like(support, dtype=torch.bool)
        for di, dj in causal_offsets(L):
            expected[L + i + di, L + j + dj] = True
        assert torch.all(support[expected] > 0), f"blind spot: pixel {(i, j)} ignores part of its neighbourhood"
        assert torch.all(support[~expected] == 0), f"pixel {(i, j)} sees input outside its causal neighbourhood"
        # the pixel itself and every later pixel of the canvas (raster order) in particular
        r, c = L + i, L + j
        assert support[r, c:].abs().sum() == 0 and support[r + 1 :].abs().sum() == 0


@pytest.mark.parametrize("layers, kernel, n_classes", [(2, 3, 2), (1, 5, 3)])
def test_shared_model_checks(layers, kernel, n_classes):
    model = _model(layers, kernel, n_classes, seed=3)
    check_autoregressive(model, height=4, width=5, max_positions=8)
    check_crop_invariance(model, height=4, width=5)
    check_sampler_log_probs(model, height=3, width=4, n_samples=2)
    check_sampler_log_probs(model, height=3, width=4, n_samples=2, beta=0.6, boundary=Boundary("noise", density=0.4))


def test_teacher_forced_log_likelihood_is_the_sum_of_sampler_log_probs():
    model = _model(layers=3, kernel=3, n_classes=3, filters=8, seed=5)
    for beta, boundary in [(1.0, None), (1.7, Boundary("noise", density=0.3))]:
        res = sample_reference(model, 3, 5, 6, seed=11, beta=beta, boundary=boundary)
        with torch.no_grad():
            ll = model.log_likelihood(torch.as_tensor(res.grids.astype(np.int64)), beta=beta,
                                      top=torch.as_tensor(res.top)).double().numpy()
        np.testing.assert_allclose(ll, res.log_probs.astype(np.float64).sum(axis=(1, 2)), rtol=1e-5, atol=1e-4)


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    model = _model(layers=3, kernel=5, n_classes=3, filters=5, out_width=7, seed=9)
    path = save_model(tmp_path / "m.pt", model, note="extra entries are kept")
    back = load_model(path)
    assert isinstance(back, GatedPixelCNN)
    assert back.config == model.config and back.context_range == model.context_range == 6
    sd, sd2 = model.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    grids = torch.as_tensor(np.random.default_rng(0).integers(0, 3, (2, 4, 5)))
    with torch.no_grad():
        assert torch.equal(model.logits(grids), back.logits(grids))


def test_parameter_names_are_stable():
    """The cached sampler reads these modules directly; renaming them breaks it."""
    names = {k.split(".")[0] for k in _model().state_dict()}
    assert names == {"v_convs", "h_convs", "v2h", "h_res", "skips", "out1", "out2"}


def _placed(conv, t, mask, dr, dc):
    """Apply ``conv`` so that output pixel (r, c) reads input rows r+dr .., columns c+dc .. .

    ``t`` (B, C, Hc, Wc) and ``mask`` (1, 1, Hc, Wc) live on the whole canvas; the result
    is on the canvas too, zero and masked out wherever the kernel leaves the canvas or
    reads an undefined input.
    """
    kh, kw = conv.kernel_size
    y = conv(t)  # y[i, j] reads rows i .., columns j .. : output pixel (i - dr, j - dc)
    m = F.conv2d(mask, torch.ones(1, 1, kh, kw, dtype=mask.dtype)) == kh * kw
    Hc, Wc = t.shape[-2:]
    out = t.new_zeros(t.shape[0], y.shape[1], Hc, Wc)
    out_mask = torch.zeros_like(mask)
    r0, c0 = max(0, -dr), max(0, -dc)  # first output pixel inside the canvas
    r1, c1 = min(Hc, y.shape[-2] - dr), min(Wc, y.shape[-1] - dc)
    out[:, :, r0:r1, c0:c1] = y[:, :, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
    out_mask[:, :, r0:r1, c0:c1] = m[:, :, r0 + dr : r1 + dr, c0 + dc : c1 + dc].to(mask.dtype)
    return out * out_mask, out_mask


def plain_logits(model, canvas):
    """The Gated PixelCNN of :mod:`mapsim.models.pixelcnn`'s docstring, in canvas coordinates.

    Written independently of ``GatedPixelCNN.forward`` (which trims every tensor to
    where it is needed): every feature map covers the whole canvas with a mask of
    where it is defined, and each convolution is placed by the offsets the docstring
    gives (layer 0: vertical rows r-p .. r-1, horizontal columns c-p .. c-1; later
    layers: rows r-p .. r, columns c-p .. c).  Returns the logits of the sample pixels
    and checks that these are exactly where the last layer is defined.
    """
    p, n, L = model.p, model.config.layers, model.context_range
    x = F.one_hot(canvas.long(), model.n_classes + 1).permute(0, 3, 1, 2).to(model.out2.weight.dtype)
    ones = torch.ones(1, 1, *canvas.shape[-2:], dtype=x.dtype)

    def gate_(a):
        first, second = a.chunk(2, dim=1)
        return torch.tanh(first) * torch.sigmoid(second)

    v = h = x
    mv = mh = ones
    skip = None
    for layer in range(n):
        v_pre, mv = _placed(model.v_convs[layer], v, mv, -p, -p)
        h_conv, mh_conv = _placed(model.h_convs[layer], h, mh, 0, -p)
        h_pre, mh_pre = h_conv + model.v2h[layer](v_pre) * mv, mh_conv * mv
        g = gate_(h_pre) * mh_pre
        h_new = model.h_res[layer](g) * mh_pre
        h, mh = (h_new, mh_pre) if layer == 0 else (h_new + h, mh_pre * mh)
        s = model.skips[layer](g) * mh_pre
        skip, m_skip = (s, mh_pre) if skip is None else (skip + s, m_skip * mh_pre)
        v = gate_(v_pre) * mv
    logits = model.out2(torch.relu(model.out1(torch.relu(skip))))
    sample = torch.zeros_like(m_skip, dtype=torch.bool)
    sample[:, :, L:, L : canvas.shape[-1] - L] = True
    assert torch.equal(m_skip.bool(), sample), "the receptive field of the last layer is not the sample"
    return logits[:, :, L:, L : canvas.shape[-1] - L]


@pytest.mark.parametrize("layers, kernel, n_classes", [(1, 3, 2), (4, 3, 3), (2, 5, 2)])
def test_fast_forward_equals_the_plain_formula(layers, kernel, n_classes):
    model = _model(layers, kernel, n_classes, seed=2)
    grids = torch.as_tensor(np.random.default_rng(3).integers(0, n_classes, (2, 6, 7)))
    canvas = model.make_canvas(grids)
    with torch.no_grad():
        torch.testing.assert_close(model(canvas), plain_logits(model, canvas), rtol=0, atol=1e-6)
    # with gradients: same loss and parameter gradients
    losses, grads = [], []
    for f in (model, lambda c: plain_logits(model, c)):
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(f(canvas), grids)
        loss.backward()
        losses.append(loss.detach())
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
    assert grads[0].keys() <= grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6)
    # only the last layer's residual 1x1 feeds nothing
    assert set(grads[1]) - set(grads[0]) == set() and f"h_res.{layers - 1}.weight" not in grads[0]
