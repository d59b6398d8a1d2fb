"""Correlation cluster expansion (Eq. 17 / Eq. 21): counts, evaluation, gradients, fitting."""

import itertools

import numpy as np
import pytest
import torch
from model_checks import check_autoregressive, check_crop_invariance, check_sampler_log_probs

import mapsim.models.expansion as expansion_module
from mapsim.errors import MapsimError
from mapsim.models.base import causal_offsets
from mapsim.models.expansion import (Expansion, ExpansionConfig, ExpansionFitter, cluster_tables, expansion_count,
                                     n_sites)
from mapsim.models.io import load_model, save_model
from mapsim.sampling.common import Boundary
from mapsim.sampling.reference import sample_reference


@pytest.mark.parametrize("L, order, expected", [(1, 2, 5), (2, 3, 79), (3, 3, 301), (5, 6, 5_985_198),
                                                (6, 7, 439_381_916)])
def test_counts_reproduce_the_paper(L, order, expected):
    assert expansion_count(L, order) == expected


@pytest.mark.parametrize("L, order, n_classes", [(1, 2, 2), (1, 3, 3), (2, 3, 2), (2, 2, 4), (1, 5, 2)])
def test_count_matches_the_built_model_and_brute_force(L, order, n_classes):
    m = Expansion(ExpansionConfig(range=L, order=order, classes=tuple(f"c{k}" for k in range(n_classes))))
    assert m.n_coefficients == expansion_count(L, order, n_classes)
    n, c = n_sites(L), n_classes - 1
    brute = [(s, lab) for k in range(1, order) for s in itertools.combinations(range(n), k)
             for lab in itertools.product(range(1, n_classes), repeat=k)]
    tables = [(tuple(s), tuple(lab)) for sites, labels in cluster_tables(L, order, n_classes)
              for s, lab in zip(sites.tolist(), labels.tolist())]
    assert tables == brute and c * (1 + len(brute)) == m.n_coefficients


def _random_expansion(L, order, n_classes, seed=0, scale=1.0):
    m = Expansion(ExpansionConfig(range=L, order=order, classes=tuple(f"c{k}" for k in range(n_classes)))).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) - 1.0)
        m.coef.copy_(scale * torch.randn(m.coef.shape, generator=g, dtype=torch.float64))
    return m


def _brute_force_logits(m, grids, top):
    """Eq. 17 evaluated literally, pixel by pixel and cluster by cluster."""
    canvas = m.make_canvas(grids, top).numpy()
    L = m.context_range
    B, H, W = grids.shape
    clusters = list(m.clusters())
    coef = m.coef.detach().numpy()
    out = np.zeros((B, m.n_classes, H, W))
    for b in range(B):
        for i in range(H):
            for j in range(W):
                x = out[b, 1:, i, j]
                x += m.bias.detach().numpy()
                for row, (offs, labels) in enumerate(clusters):
                    if all(canvas[b, L + i + di, L + j + dj] == lab for (di, dj), lab in zip(offs, labels)):
                        x += coef[row]
    return out


@pytest.mark.parametrize("L, order, n_classes", [(1, 3, 3), (2, 3, 2), (1, 2, 4)])
def test_forward_equals_eq17_brute_force(L, order, n_classes):
    m = _random_expansion(L, order, n_classes)
    rng = np.random.default_rng(2)
    grids = torch.as_tensor(np.where(rng.random((2, 4, 5)) < 0.5, rng.integers(1, n_classes, (2, 4, 5)), 0))
    top = torch.as_tensor(rng.integers(0, n_classes + 1, (2, L, 5 + 2 * L)))
    np.testing.assert_allclose(m.logits(grids, top).detach().numpy(), _brute_force_logits(m, grids, top), atol=1e-12)


def test_outside_and_empty_are_the_reference():
    m = _random_expansion(1, 3, 3)
    g = torch.zeros(1, 1, 1, dtype=torch.long)
    for top_class in (0, 3):  # empty or outside above: only the bias remains
        top = torch.full((1, 1, 3), top_class, dtype=torch.long)
        logits = m.logits(g, top)[0, :, 0, 0].detach()
        assert float(logits[0]) == 0.0
        torch.testing.assert_close(logits[1:], m.bias.detach())


def _dense_reference_logits(m, canvas):
    """Same logits through plain autograd on an explicit (pixels x clusters) matrix."""
    feat = m.features(canvas)
    cols = []
    for sites, labels in cluster_tables(m.config.range, m.config.order, m.n_classes):
        idx = torch.as_tensor(sites * (m.n_classes - 1) + labels - 1)
        cols.append(feat[:, idx].prod(dim=2))
    X = torch.cat(cols, dim=1)
    return m.bias + X @ m.coef


def test_chunked_gradients_equal_dense_autograd(monkeypatch):
    m = _random_expansion(2, 3, 3, scale=0.3)
    rng = np.random.default_rng(4)
    grids = torch.as_tensor(np.where(rng.random((3, 5, 6)) < 0.4, rng.integers(1, 3, (3, 5, 6)), 0))
    canvas = m.make_canvas(grids)
    target = grids.flatten()

    def loss_of(logits_fn):
        m.zero_grad()
        lg = logits_fn()
        loss = torch.nn.functional.cross_entropy(lg, target)
        loss.backward()
        return loss.detach(), m.bias.grad.clone(), m.coef.grad.clone()

    ref = loss_of(lambda: torch.cat([torch.zeros(len(target), 1, dtype=torch.float64),
                                     _dense_reference_logits(m, canvas)], 1))
    monkeypatch.setattr(expansion_module, "CHUNK_ELEMENTS", 37)  # force many small chunks
    got = loss_of(lambda: m(canvas).permute(0, 2, 3, 1).reshape(len(target), -1))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_cluster_index_and_errors():
    m = Expansion(ExpansionConfig(range=1, order=3))
    offs = causal_offsets(1)
    assert [m.cluster_index([o], 1) for o in offs] == [0, 1, 2, 3]
    assert m.cluster_index([offs[2], offs[0]], [1, 1]) == m.cluster_index([offs[0], offs[2]], 1)
    with pytest.raises(MapsimError):
        m.cluster_index([(0, 1)], 1)  # not causal
    with pytest.raises(MapsimError, match="coefficients"):
        Expansion(ExpansionConfig(range=6, order=7))  # 439 million
    for bad in (dict(range=-1), dict(order=0), dict(range=0, order=2), dict(classes=("a",))):
        with pytest.raises(MapsimError):
            ExpansionConfig(**bad)


def test_model_checks_pass_for_random_expansions():
    for L, order, n_classes in [(1, 3, 3), (2, 3, 2), (0, 1, 2)]:
        m = _random_expansion(L, order, n_classes).float()
        check_autoregressive(m)
        check_crop_invariance(m)
        check_sampler_log_probs(m)
        check_sampler_log_probs(m, boundary=Boundary("noise", density=0.3), beta=0.7)


def test_checkpoint_round_trip(tmp_path):
    m = _random_expansion(2, 3, 3).float()
    back = load_model(save_model(tmp_path / "e.pt", m))
    assert back.config == m.config and back.config.classes == ("c0", "c1", "c2")
    torch.testing.assert_close(back.coef, m.coef)
    g = torch.as_tensor(np.random.default_rng(0).integers(0, 3, (2, 4, 5)))
    torch.testing.assert_close(back.logits(g), m.logits(g))


def _standard_errors(m, grids):
    """Standard errors of (bias, coef) from the observed Fisher information (order-2 models: one feature per cluster)."""
    feat = m.features(m.make_canvas(torch.as_tensor(grids.astype(np.int64)))).double()
    target = torch.as_tensor(grids.astype(np.int64)).flatten()
    C = m.n_classes - 1
    w0 = torch.cat([m.bias.detach().double(), m.coef.detach().double().flatten()])

    def nll(w):
        logits = w[:C] + feat @ w[C:].reshape(-1, C)
        logits = torch.cat([torch.zeros(len(target), 1, dtype=w.dtype), logits], 1)
        return torch.nn.functional.cross_entropy(logits, target, reduction="sum")

    hess = torch.autograd.functional.hessian(nll, w0)
    return torch.linalg.inv(hess).diagonal().sqrt()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fit_recovers_known_coefficients(n_classes):
    """Sample from an expansion with known coefficients, fit, and compare.

    Tolerance: 4 standard errors (observed Fisher information of the data) plus
    0.02 for the optimiser not reaching the exact optimum.
    """
    torch.set_num_threads(1)
    true = Expansion(ExpansionConfig(range=1, order=2, classes=tuple(f"c{k}" for k in range(n_classes))))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        true.bias.copy_(torch.full((n_classes - 1,), -2.0))
        true.coef.copy_(torch.empty(true.coef.shape).uniform_(-1.5, 1.0, generator=g))
    data = sample_reference(true, 192, 32, 32, seed=11).grids
    fit = Expansion(true.config.__class__(**vars(true.config)))
    fitter = ExpansionFitter(epochs=25, lr=0.05, batch=32, val_fraction=0.0, seed=0).fit(fit, data)
    assert fitter.history_[-1]["train_nll"] <= fitter.history_[0]["train_nll"]
    se = _standard_errors(fit, data)
    got = torch.cat([fit.bias.detach(), fit.coef.detach().flatten()]).double()
    want = torch.cat([true.bias.detach(), true.coef.detach().flatten()]).double()
    err = (got - want).abs()
    assert torch.all(err <= 4 * se + 0.02), f"errors {err.numpy()} vs 4 SE {4 * se.numpy()}"


def test_fitter_validation_split_l2_and_errors():
    rng = np.random.default_rng(0)
    data = (rng.random((10, 8, 8)) < 0.2).astype(np.uint8)
    m = Expansion(ExpansionConfig(range=1, order=3))
    f = ExpansionFitter(epochs=2, batch=4, val_fraction=0.3, seed=1).fit(m, data)
    assert (f.n_train_, f.n_val_) == (7, 3) and len(f.history_) == 2 and f.history_[0]["val_nll"] is not None
    m_l2 = Expansion(ExpansionConfig(range=1, order=3))
    ExpansionFitter(epochs=2, batch=4, val_fraction=0.3, seed=1, l2=1.0).fit(m_l2, data)
    assert m_l2.coef.detach().pow(2).sum() < m.coef.detach().pow(2).sum()
    with pytest.raises(MapsimError, match="class id 2"):
        ExpansionFitter(epochs=1).fit(Expansion(ExpansionConfig()), np.full((2, 3, 3), 2, np.uint8))
    with pytest.raises(MapsimError, match="leave no pixel"):
        ExpansionFitter(epochs=1, skip_rows=3).fit(Expansion(ExpansionConfig()), data[:, :3])
    with pytest.raises(MapsimError):
        ExpansionFitter(epochs=1, lr=-1).fit(Expansion(ExpansionConfig()), data)


def test_sparse_active_clusters_equal_dense_logits():
    m = _random_expansion(2, 4, 3)
    rng = np.random.default_rng(5)
    grids = torch.as_tensor(np.where(rng.random((3, 6, 7)) < 0.4, rng.integers(1, 3, (3, 6, 7)), 0))
    canvas = m.make_canvas(grids)
    pix, rows = m.active_clusters(canvas)
    sparse = m.logits_from_active(torch.as_tensor(pix), torch.as_tensor(rows), grids.numel())
    dense = m(canvas).permute(0, 2, 3, 1).reshape(grids.numel(), -1)
    torch.testing.assert_close(sparse, dense, atol=1e-12, rtol=1e-12)
    assert m.active_clusters(canvas, max_entries=len(pix) - 1) is None


def test_fitter_sparse_and_dense_paths_agree(monkeypatch):
    rng = np.random.default_rng(1)
    data = np.where(rng.random((6, 10, 10)) < 0.2, rng.integers(1, 3, (6, 10, 10)), 0).astype(np.uint8)
    cfg = dict(range=2, order=3, classes=("e", "a", "b"))
    fits = {}
    for method in ("sparse", "dense"):
        m = Expansion(ExpansionConfig(**cfg)).double()
        f = ExpansionFitter(epochs=3, batch=2, val_fraction=0.3, skip_rows=1, skip_cols=1, method=method).fit(m, data)
        assert f.method_ == method
        fits[method] = (m, f)
    (ms, fs), (md, fd) = fits["sparse"], fits["dense"]
    for hs, hd in zip(fs.history_, fd.history_):
        assert hs["train_nll"] == pytest.approx(hd["train_nll"], rel=1e-9)
        assert hs["val_nll"] == pytest.approx(hd["val_nll"], rel=1e-9)
    torch.testing.assert_close(ms.coef, md.coef, atol=1e-8, rtol=1e-6)
    # too many active clusters: auto falls back to dense, sparse refuses
    monkeypatch.setattr(expansion_module, "MAX_ACTIVE_ENTRIES", 0)
    m = Expansion(ExpansionConfig(**cfg))
    assert ExpansionFitter(epochs=1, method="auto").fit(m, data).method_ == "dense"
    with pytest.raises(MapsimError, match="sparse"):
        ExpansionFitter(epochs=1, method="sparse").fit(m, data)


def test_wrong_kind_or_truncated_file_is_a_clear_error(tmp_path):
    m = Expansion(ExpansionConfig(range=1, order=2))
    p = save_model(tmp_path / "e.pt", m)
    payload = torch.load(p, weights_only=True)
    payload["kind"] = "hard-core"
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(MapsimError, match="hard-core"):
        load_model(tmp_path / "wrong.pt")
    (tmp_path / "cut.pt").write_bytes(p.read_bytes()[:100])
    with pytest.raises(MapsimError, match="cut.pt"):
        load_model(tmp_path / "cut.pt")
