"""Off-lattice MAP (issue 17): the position head, its draw rule, exact samplers, training, scoring, CLI.

Reference file ``tests/data/class_only_samples_v0.npz`` (with ``class_only_model_v0.pt``):
written by mapsim at commit 6b544ce (before the position head existed) with
``sample_reference`` and ``sample_pixelcnn_cached`` of that model, K=3, H=7, W=9, seed=21,
beta=0.8, boundary noise:0.3 (the recipe: a 3-class PixelCNN, layers 2, kernel 3, filters 6,
out_width 8, torch.manual_seed(17), every parameter ~ N(0, 0.25^2), float64).  Class-only
models must still give exactly these samples.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mapsim.sampling.draw as draw_module
from draw_checks import replace_rule
from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, load_dataset, save_dataset
from mapsim.models.base import causal_offsets
from mapsim.models.io import build_model, load_model, read_checkpoint, save_model
from mapsim.models.pair_term import PairTerm
from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig, offset_canvas
from mapsim.models.score import score_grids
from mapsim.sampling.common import Boundary
from mapsim.sampling.draw import POSITION_EDGE, draw_position, draw_positions
from mapsim.sampling.fast import sample_front
from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached
from mapsim.sampling.reference import sample_reference
from mapsim.sampling.rng import POSITION, uniforms

from test_pixelcnn import _one_thread  # noqa: F401  (autouse: tiny models run on one thread)

DATA = Path(__file__).parent / "data"




def _model(n_classes=3, layers=2, kernel=3, bins=8, seed=0, scale=0.6, dtype=torch.float64, filters=6, out_width=8,
           pairs=0, pixel_size=(0.5, 0.5), joint=False, core=False, knots=None):
    """A random model with positions; ``pairs`` may be "joint" or "core": a pair term of reach 2 with
    joint_pairs, or with a random pair_core and 24 knots per pixel (``core`` does the same at any reach)."""
    if pairs in ("joint", "core"):
        pairs, joint, core = 2, pairs == "joint", pairs == "core"
    if core:
        d = np.random.default_rng(seed).uniform(0.5, pairs, (n_classes - 1, n_classes - 1))
        core = ((d + d.T) / 2).tolist()
    else:
        core, knots = None, knots or 16
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(n_classes=n_classes, layers=layers, kernel=kernel, filters=filters, out_width=out_width,
                         classes=[f"c{i}" for i in range(n_classes)], positions=True, position_bins=bins,
                         position_pairs=pairs, joint_pairs=joint, pair_core=core, pair_knots=knots or 24,
                         pixel_size=list(pixel_size),
                         length_unit="sigma")
    m = GatedPixelCNN(cfg).to(dtype).eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.normal_(0.0, scale)  # strong, varied conditionals
        if pairs:
            m.pos_pair.normal_(0.0, 0.4)  # a pair factor that moves the draws (3 nats: PAIR_SCALE 8)
    return m


def _offsets_for(grids, seed=0):
    rng = np.random.default_rng(seed)
    off = rng.random(grids.shape + (2,)).astype(np.float32)
    return np.where(grids[..., None] > 0, off, np.nan).astype(np.float32)


# -- the draw rule ----------------------------------------------------------------------------

def test_draw_position_is_the_inverse_cdf_of_the_binned_density():
    rng = np.random.default_rng(0)
    z = rng.normal(size=16) * 2
    p = np.exp(z - np.logaddexp.reduce(z))
    cum = np.concatenate([[0.0], np.cumsum(p)])
    for v in rng.random(200):
        b, t, ld = draw_position(z, v)
        assert b == np.searchsorted(cum, v, side="right") - 1
        frac = min(max((v - cum[b]) / p[b], POSITION_EDGE), 1 - POSITION_EDGE)
        assert t == float(np.float32((b + frac) / 16))
        assert math.floor(float(np.float32(t)) * 16) == b and 0 <= t < 1
        assert ld == pytest.approx(math.log(p[b] * 16), abs=1e-12)
    # a bin of probability 0 is never drawn; the edges stay inside the bins at float32 resolution
    z2 = np.array([0.0, -np.inf, 0.0, 0.0])
    assert all(draw_position(z2, v)[0] != 1 for v in np.linspace(0, 0.999999, 101))
    for nb in (2, 3, 7, 1024):
        zz = np.zeros(nb)
        for v in (0.0, 1 - 1e-16, 0.5, np.nextafter(1 / nb, 0)):
            b, t, _ = draw_position(zz, v)
            assert math.floor(float(np.float32(t)) * nb) == b


def test_drawn_positions_follow_the_density():
    """Histogram of 40000 draws on 4 bins x 5 sub-bins against the piecewise-uniform density (chi^2)."""
    from scipy import stats

    z = np.array([0.3, -1.0, 1.2, 0.0])
    p = np.exp(z - np.logaddexp.reduce(z))
    v = np.random.default_rng(1).random(40000)
    _, t, _ = draw_positions(np.tile(z, (v.size, 1)), v)
    counts = np.histogram(t, bins=20, range=(0, 1))[0]
    expected = np.repeat(p / 5, 5) * v.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, 19) > 1e-3


# -- the model: causality of both heads, likelihood, files -------------------------------------

@pytest.mark.parametrize("layers, kernel, n_classes", [(1, 3, 2), (2, 3, 3), (1, 5, 2)])
def test_gradient_support_of_both_heads_is_the_causal_neighbourhood(layers, kernel, n_classes):
    """d (class logits, y logits, x logits of pixel (i, j)) / d inputs (one-hot + offset channels)."""
    model = _model(n_classes, layers, kernel, seed=layers + kernel)
    L = model.context_range
    H, W = 2 * L + 2, 2 * L + 3
    rng = np.random.default_rng(1)
    grids = torch.as_tensor(rng.integers(1, n_classes, (1, H, W)))  # every pixel occupied: offsets everywhere
    top = torch.as_tensor(rng.integers(0, n_classes + 1, (1, L, W + 2 * L)))
    off = torch.as_tensor(rng.random((1, H, W, 2)))
    canvas = model.make_canvas(grids, top)
    offc = offset_canvas(off, L)
    x = model.inputs(canvas, offc).detach().requires_grad_()  # (1, N_c + 3, Hc, Wc)
    model.inputs = lambda c, o=None: x
    hidden = model.features(canvas, offc)
    for i, j in [(0, 0), (H - 1, W - 1), (L, L), (H // 2, W // 2), (1, 2)]:
        h = hidden[0, :, i, j][None]
        c = grids[0, i, j].view(1)
        yb = model.position_bins_of(off[0, i, j, :1])
        outs = {"class": model.out2(hidden)[0, :, i, j], "y": model.position_logits_y(h, c)[0],
                "x": model.position_logits_x(h, c, yb)[0]}
        expected = torch.zeros(canvas.shape[-2:], dtype=torch.bool)
        for di, dj in causal_offsets(L):
            expected[L + i + di, L + j + dj] = True
        for name, out in outs.items():
            w = torch.as_tensor(rng.normal(size=out.shape[0]))
            (grad,) = torch.autograd.grad(out @ w, x, retain_graph=True)
            for chans, what in ((slice(0, n_classes + 1), "classes"), (slice(n_classes + 1, None), "offsets")):
                support = grad[0, chans].abs().sum(0)
                assert torch.all(support[expected] > 0), f"{name} head of {(i, j)} ignores {what} of its context"
                assert torch.all(support[~expected] == 0), f"{name} head of {(i, j)} sees {what} outside its context"


def test_position_density_is_normalised_and_teacher_forcing_matches_its_pieces():
    model = _model(bins=4)
    grids = torch.ones((1, 1, 1), dtype=torch.long)
    # the density over [0,1)^2 integrates to 1: sum over bin pairs of exp(log density) / B^2
    B = 4
    centres = (np.arange(B) + 0.5) / B
    total = 0.0
    with torch.no_grad():
        for y in centres:
            for x in centres:
                pos = torch.tensor([[[[y, x]]]], dtype=torch.float64)
                _, ld = model.log_prob_parts(grids, pos)
                total += math.exp(float(ld)) / B**2
    assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("pairs", [0, "joint", "core"])
def test_teacher_forced_log_likelihood_equals_the_samplers_summed_log_probs(pairs):
    model = _model(seed=5, pairs=pairs)
    for beta, boundary in [(1.0, None), (1.7, Boundary("noise", density=0.3))]:
        res = sample_reference(model, 3, 5, 6, seed=11, beta=beta, boundary=boundary)
        assert res.offsets is not None and np.array_equal(np.isnan(res.offsets[..., 0]), res.grids == 0)
        with torch.no_grad():
            ll = model.log_likelihood(torch.as_tensor(res.grids.astype(np.int64)), beta=beta,
                                      top=torch.as_tensor(res.top), offsets=torch.as_tensor(res.offsets)).numpy()
        np.testing.assert_allclose(ll, res.log_probs.astype(np.float64).sum(axis=(1, 2)), rtol=1e-5, atol=1e-4)


def test_teacher_forcing_in_chunks_of_atoms_equals_one_piece(monkeypatch):
    import mapsim.models.pixelcnn as pixelcnn

    model = _model(seed=4, pairs="core", bins=4)
    grids = torch.as_tensor(np.random.default_rng(3).integers(0, 3, (2, 5, 6)))
    off = torch.as_tensor(_offsets_for(grids.numpy(), seed=2)).double()
    with torch.no_grad():
        whole = model.log_prob_parts(grids, off)[1]
        monkeypatch.setattr(pixelcnn, "CHUNK_CELLS", 3 * 4**2)  # chunks of 3 atoms
        chunked = model.log_prob_parts(grids, off)[1]
    assert int((grids > 0).sum()) > 3 * 4
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


def test_checkpoints_round_trip_and_old_checkpoints_load(tmp_path):
    model = _model(seed=2, dtype=torch.float32)
    back = load_model(save_model(tmp_path / "m.pt", model))
    assert back.config == model.config and back.positions
    grids = torch.as_tensor(np.random.default_rng(0).integers(0, 3, (2, 4, 5)))
    off = torch.as_tensor(_offsets_for(grids.numpy()))
    with torch.no_grad():
        assert torch.equal(model.log_prob_pixels(grids, offsets=off), back.log_prob_pixels(grids, offsets=off))
    # a checkpoint written before the position head: loads as a class-only model
    old = load_model(DATA / "class_only_model_v0.pt")
    assert not old.positions and old.config.pixel_size is None
    with pytest.raises(MapsimError, match="needs the offsets"):
        back(back.make_canvas(grids))
    with pytest.raises(MapsimError, match="class 0"):
        back.position_logits_y(torch.zeros((1, 8)), torch.zeros(1, dtype=torch.long))


# -- samplers: exact, and class-only models unchanged -----------------------------------------

def test_class_only_models_give_the_same_samples_as_before_the_position_head():
    ref = np.load(DATA / "class_only_samples_v0.npz")
    payload = read_checkpoint(DATA / "class_only_model_v0.pt")
    model = build_model(payload["kind"], payload["config"]).double().eval()  # float64 weights, as written
    model.load_state_dict(payload["state_dict"])
    b = Boundary("noise", density=0.3)
    r = sample_reference(model, 3, 7, 9, seed=21, beta=0.8, boundary=b)
    f = sample_pixelcnn_cached(model, 3, 7, 9, seed=21, beta=0.8, boundary=b, threads=1)
    for res, lp in ((r, ref["log_probs"]), (f, ref["fast_log_probs"])):
        assert np.array_equal(res.grids, ref["grids"]) and res.offsets is None
        assert np.array_equal(res.log_probs, lp)


BOUNDARIES = [Boundary(), Boundary("noise", density=0.4),
              Boundary("grid", grid=np.random.default_rng(7).integers(0, 2, (3, 4)))]
CASES = [  # n_classes, layers, kernel, K, H, W
    (3, 2, 3, 2, 5, 7),
    (2, 1, 3, 2, 4, 3),
    (2, 2, 5, 1, 3, 2),  # width below L_c
    (3, 1, 3, 2, 1, 6),  # one row
]


@pytest.mark.parametrize("pairs", [0, 2, "joint", "core"])
@pytest.mark.parametrize("case", CASES)
def test_cached_and_front_samplers_draw_positions_exactly_like_the_reference(case, pairs):
    nc, layers, kernel, K, H, W = case
    kind = pairs
    pairs = 2 if kind in ("joint", "core") else pairs
    model = _model(nc, layers, kernel, seed=layers * 10 + kernel + 2 + pairs, scale=0.5,
                   pairs=min(pairs, layers * (kernel // 2)), pixel_size=(0.5, 0.6) if pairs else (0.5, 0.5),
                   joint=kind == "joint", core=kind == "core")
    atoms = 0
    for bi, beta in [(0, 1.0), (1, 0.5), (2, 2.5)]:
        b = BOUNDARIES[bi]
        ref = sample_reference(model, K, H, W, seed=3, beta=beta, boundary=b)
        for res in (sample_pixelcnn_cached(model, K, H, W, seed=3, beta=beta, boundary=b, threads=1),
                    sample_front(model, K, H, W, seed=3, beta=beta, boundary=b)):
            assert np.array_equal(res.grids, ref.grids)
            assert np.array_equal(res.offsets, ref.offsets, equal_nan=True)
            np.testing.assert_allclose(res.log_probs, ref.log_probs, atol=1e-5, rtol=0)
        atoms += int((ref.grids > 0).sum())
    assert atoms > 0  # the comparison covers drawn positions


@pytest.mark.parametrize("substeps", [1, 3])
@pytest.mark.parametrize("joint", [False, True])
def test_cached_sampler_draws_positions_exactly_with_any_macro_step(monkeypatch, substeps, joint):
    """S = 1 and 3 sub-steps per macro-step (S = 16, the default, above), with a pair term (also
    normalised jointly with the class), one or two threads: the reference sampler's classes,
    positions and log-probabilities."""
    import mapsim.sampling.pixelcnn_fast as pf

    monkeypatch.setattr(pf, "SUBSTEPS", substeps)
    model = _model(3, 2, 3, seed=26, scale=0.5, pairs=2, pixel_size=(0.5, 0.6), joint=joint)
    K, H, W = 2, 5, 7
    ref = sample_reference(model, K, H, W, seed=3, boundary=BOUNDARIES[1])
    assert (ref.grids > 0).any()
    for threads in (1, 2):
        res = pf.sample_pixelcnn_cached(model, K, H, W, seed=3, boundary=BOUNDARIES[1], threads=threads)
        assert np.array_equal(res.grids, ref.grids)
        assert np.array_equal(res.offsets, ref.offsets, equal_nan=True)
        np.testing.assert_allclose(res.log_probs, ref.log_probs, atol=1e-5, rtol=0)


def test_positions_use_their_own_stream_and_leave_class_uniforms_alone():
    model = _model(seed=4)
    K, H, W = 2, 4, 5
    u = uniforms(9, K, H, W)
    a = sample_pixelcnn_cached(model, K, H, W, seed=9, threads=1)
    b = sample_pixelcnn_cached(model, K, H, W, seed=9, u=u, v=uniforms(9, K, H, W, stream=POSITION, ndim=2),
                               threads=1)
    assert np.array_equal(a.grids, b.grids) and np.array_equal(a.offsets, b.offsets, equal_nan=True)
    c = sample_pixelcnn_cached(model, K, H, W, seed=9, u=u, v=uniforms(10, K, H, W, stream=POSITION, ndim=2),
                               threads=1)
    occ = a.grids > 0
    # other position uniforms: other positions (and, through the context, possibly other classes later)
    assert not np.array_equal(a.offsets[occ], c.offsets[c.grids > 0]) or not np.array_equal(a.grids, c.grids)


@pytest.mark.parametrize("pairs", [0, 2, "joint"])
@pytest.mark.parametrize("sampler", ["reference", "cached"])
def test_rows_drawn_in_two_blocks_equal_one_pass(sampler, pairs):
    """A block of rows given the rows above (classes and positions) and its uniforms continues exactly."""
    model = _model(seed=8, scale=0.5, pairs=pairs)
    L = model.context_range
    K, H, W, r0 = 2, 6, 5, 3
    f = (sample_reference if sampler == "reference"
         else lambda *a, **k: sample_pixelcnn_cached(*a, threads=1, **k))
    full = f(model, K, H, W, seed=5)
    first = f(model, K, r0, W, seed=5)
    top = np.full((K, L, W + 2 * L), model.n_classes, np.int64)
    top[:, :, L : L + W] = first.grids[:, r0 - L : r0]
    top_off = np.full((K, L, W + 2 * L, 2), np.nan, np.float32)
    top_off[:, :, L : L + W] = first.offsets[:, r0 - L : r0]
    u = np.ascontiguousarray(uniforms(5, K, H, W)[:, r0:])
    v = uniforms(5, K, H, W, stream=POSITION, ndim=2)[:, r0:]
    second = f(model, K, H - r0, W, seed=5, u=u, v=v, top=top, top_offsets=top_off)
    assert np.array_equal(np.concatenate([first.grids, second.grids], 1), full.grids)
    assert np.array_equal(np.concatenate([first.offsets, second.offsets], 1), full.offsets, equal_nan=True)


@pytest.mark.parametrize("pairs", [0, 2, "joint"])
def test_every_sampler_draws_positions_through_the_one_position_rule(monkeypatch, pairs):
    """Heads only: draw_position; with a pair term: draw_position_joint (which calls draw_position)."""
    from numba import njit

    @njit(cache=False)
    def _quarter(logits, v):
        return 0, 0.25, 0.0

    @njit(cache=False)
    def _quarter_joint(joint, vy, vx, rows):
        return 0, 0.25, 0, 0.25, 0.0

    model = _model(seed=6, pairs=pairs)
    run = {"reference": lambda: sample_reference(model, 2, 3, 4, seed=1),
           "front": lambda: sample_front(model, 2, 3, 4, seed=1),
           "cached": lambda: sample_pixelcnn_cached(model, 2, 3, 4, seed=1, threads=1)}
    if pairs:
        replace_rule(monkeypatch, "draw_position_joint", _quarter_joint)
    else:
        replace_rule(monkeypatch, "draw_position", _quarter)
    for name, f in run.items():
        res = f()
        occ = res.grids > 0
        assert occ.any() and np.all(res.offsets[occ] == 0.25), name


# -- the pair term of the position density ----------------------------------------------------

def test_pair_term_is_the_table_interpolated_at_the_cell_centres_and_its_gradient_is_exact():
    rng = np.random.default_rng(0)
    knots, nb, ratio = 32, 8, 1.2
    table = torch.as_tensor(rng.normal(size=(2, knots + 2)))
    table[:, -2:] = 0.0
    atom, row = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])
    ny, nx = torch.tensor([-1.8, 0.3, -1.6], dtype=torch.float64), torch.tensor([1.5, -0.2, 0.9], dtype=torch.float64)
    out = PairTerm.apply(table, 2, nb, atom, row, ny, nx, ratio, 16.0).numpy()
    centres = (np.arange(nb) + 0.5) / nb
    expected = np.zeros((2, nb, nb))
    for p in range(3):
        d = np.hypot(centres[:, None] - float(ny[p]), (centres[None, :] - float(nx[p])) * ratio)
        expected[int(atom[p])] += np.interp(d * 16, np.arange(knots + 2), table[int(row[p])].numpy())
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert 0 < np.count_nonzero(out[0]) < nb * nb  # atom 0's neighbour reaches part of the pixel
    tab = table.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: PairTerm.apply(t, 2, nb, atom, row, ny, nx, ratio, 16.0), (tab,))


def test_pair_term_runs_whole_atoms_in_parallel_with_the_same_bytes_on_any_thread_count():
    import numba

    from mapsim.models.pair_term import chunk_starts

    rng = np.random.default_rng(1)
    atom = np.sort(rng.integers(0, 40, 300))
    for a in (atom, atom[:5], atom[:0], np.zeros(7, np.int64)):
        s = chunk_starts(a)
        assert s[0] == 0 and s[-1] == len(a) and np.all(np.diff(s) >= 0)
        assert all(b in (0, len(a)) or a[b] != a[b - 1] for b in s[1:-1])  # no atom split between runs
    nb, knots = 8, 32
    table = torch.tensor(rng.normal(size=(4, knots + 2)), requires_grad=True)
    perm = torch.as_tensor(rng.permutation(len(atom)))  # unsorted pairs are sorted first
    args = (40, nb, torch.as_tensor(atom)[perm], torch.as_tensor(rng.integers(0, 4, len(atom))),
            torch.as_tensor(rng.uniform(-2, 1, len(atom))), torch.as_tensor(rng.uniform(-2, 3, len(atom))), 1.0, 16.0)
    weight = torch.as_tensor(rng.normal(size=(40, nb, nb)))
    got = []
    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            out = PairTerm.apply(table, *args)
            (grad,) = torch.autograd.grad((out * weight).sum(), table)
            got.append((out.detach().numpy().tobytes(), grad.numpy().tobytes()))
    finally:
        numba.set_num_threads(old)
    assert got[0] == got[1]
    one = [PairTerm.apply(table, 40, nb, *(x[i : i + 1] for x in args[2:6]), 1.0, 16.0) for i in range(len(atom))]
    np.testing.assert_allclose(out.detach().numpy(), sum(o.detach().numpy() for o in one), rtol=0, atol=1e-12)


def test_with_a_pair_term_the_density_is_normalised_and_later_pixels_change_nothing_earlier():
    model = _model(bins=4, pairs=2, seed=3)
    B, H, W = 4, 3, 4
    rng = np.random.default_rng(2)
    grids = torch.as_tensor(rng.integers(1, 3, (1, H, W)))  # all occupied: every slot holds an atom
    off = torch.as_tensor(_offsets_for(grids.numpy(), seed=1)).double()
    centres = (np.arange(B) + 0.5) / B
    with torch.no_grad():
        total = 0.0
        for y in centres:
            for x in centres:
                o = off.clone()
                o[0, H - 1, W - 1] = torch.tensor([y, x])
                total += math.exp(float(model.log_prob_parts(grids, o)[1][0, H - 1, W - 1])) / B**2
        assert total == pytest.approx(1.0, abs=1e-12)
        _, ld = model.log_prob_parts(grids, off)
        for k in (2, 5, 9):  # raster index: everything after it drawn anew
            g2, o2 = grids.clone().view(-1), off.clone().view(-1, 2)
            g2[k + 1 :] = torch.as_tensor(rng.integers(0, 3, g2.numel() - k - 1))
            o2[k + 1 :] = torch.as_tensor(rng.random((g2.numel() - k - 1, 2)))
            o2[g2 == 0] = float("nan")
            _, ld2 = model.log_prob_parts(g2.view(1, H, W), o2.view(1, H, W, 2))
            torch.testing.assert_close(ld2.view(-1)[: k + 1], ld.view(-1)[: k + 1], rtol=0, atol=1e-12)
        # the pair factor matters: without it the densities differ
        model.pos_pair.zero_()
        assert not torch.allclose(model.log_prob_parts(grids, off)[1], ld)


def test_joint_pairs_weigh_the_class_by_the_pair_factor_over_the_pixel():
    """joint_pairs: p(c, cell) is proportional to exp(l_c) P_c(cell) exp(pair_c(cell)) over classes and cells.
    Brute force at the last pixel of a 2-class model: l and P from the same weights without the pair table
    (then Z_c = 1 and the class head is the plain one), the pair sum by interpolating the table at the
    cell centres; a repulsive table lowers the occupancy of the joint model only."""
    from mapsim.models.pixelcnn import PAIR_SCALE, pair_slots

    B, H, W = 4, 3, 4
    model = _model(n_classes=2, bins=B, pairs="joint", seed=3)
    plain = _model(n_classes=2, bins=B, pairs=2, seed=3)
    plain.load_state_dict(model.state_dict())
    grids = torch.ones((1, H, W), dtype=torch.long)  # every pixel holds an atom
    off = torch.as_tensor(_offsets_for(grids.numpy(), seed=1)).double()
    table = np.pad(PAIR_SCALE * model.pos_pair.detach().numpy()[0, 0], (0, 2))
    centres = (np.arange(B) + 0.5) / B
    pair = np.zeros((B, B))
    for dr, dc in pair_slots(2):
        r, c = H - 1 + dr, W - 1 + dc
        if 0 <= c < W:
            ny, nx = dr + float(off[0, r, c, 0]), dc + float(off[0, r, c, 1])
            d = np.hypot(centres[:, None] - ny, centres[None, :] - nx)
            pair += np.interp(d * 16, np.arange(table.size), table)
    bare = _model(n_classes=2, bins=B, seed=3)
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if k != "pos_pair"})
    with torch.no_grad():
        lp1 = float(bare.log_prob_parts(grids, off)[0][0, H - 1, W - 1])  # log p(occupied), no pair term
        P = np.zeros((B, B))
        for i, y in enumerate(centres):
            for j, x in enumerate(centres):
                o = off.clone()
                o[0, H - 1, W - 1] = torch.tensor([y, x])
                P[i, j] = math.exp(float(bare.log_prob_parts(grids, o)[1][0, H - 1, W - 1])) / B**2
        log_odds = lp1 - math.log1p(-math.exp(lp1)) + math.log((P * np.exp(pair)).sum())
        got = model.log_prob_parts(grids, off)
        assert float(got[0][0, H - 1, W - 1]) == pytest.approx(-math.log1p(math.exp(-log_odds)), abs=1e-10)
        # given the class, the position density is the plain pair model's
        torch.testing.assert_close(got[1], plain.log_prob_parts(grids, off)[1], rtol=0, atol=1e-12)
        # a repulsive table: the joint model occupies the pixel less often, the plain model's class is unchanged
        for m in (model, plain):
            m.pos_pair.fill_(-0.5)
        assert float(model.log_prob_parts(grids, off)[0][0, H - 1, W - 1]) < lp1 - 0.5
        assert float(plain.log_prob_parts(grids, off)[0][0, H - 1, W - 1]) == pytest.approx(lp1, abs=1e-12)


def test_pair_core_holds_the_knots_two_inside_the_closest_pair_at_the_core_depth():
    """pair_core: knots k <= d kpp - 2 of each row are -PAIR_CORE_NATS without gradient, the others the
    table's; the closest pairs are those of all pairs of atoms within the reach, brute force."""
    from mapsim.models.pair_term import closest_pairs
    from mapsim.models.pixelcnn import PAIR_CORE_NATS, PAIR_SCALE

    model = _model(n_classes=3, bins=4, pairs="core", seed=4)
    core = np.asarray(model.config.pair_core).reshape(-1)
    table, base = model.pair_table(), PAIR_SCALE * model.pos_pair.detach().numpy().reshape(len(core), -1)
    base = np.pad(base, ((0, 0), (0, 2)))
    held = np.arange(table.shape[1])[None, :] <= np.floor(core[:, None] * model.config.pair_knots) - 2
    assert held.any() and not held.all()
    np.testing.assert_array_equal(table.detach().numpy(), np.where(held, -PAIR_CORE_NATS, base))
    table.sum().backward()
    grad = model.pos_pair.grad.numpy().reshape(len(core), -1)
    assert np.all(grad[held[:, :-2]] == 0) and np.any(grad != 0)
    # the closest pairs of a dataset: all pairs of atoms of a sample within the reach, classes symmetric
    ds = _offlattice_dataset(n=3, h=5, w=6, seed=2)
    g = np.where(ds.grids > 0, 1 + np.random.default_rng(0).integers(0, 2, ds.grids.shape), 0)
    want = np.full((2, 2), 2.0)
    for k in range(len(g)):
        r, c = np.nonzero(g[k])
        y, x = r + ds.offsets[k, r, c, 0], (c + ds.offsets[k, r, c, 1]) * 1.5
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                d = math.hypot(y[i] - y[j], x[i] - x[j])
                a, b = g[k, r[i], c[i]] - 1, g[k, r[j], c[j]] - 1
                if d < 2.0:
                    want[a, b] = want[b, a] = min(want[a, b], d)
    np.testing.assert_allclose(closest_pairs(g, ds.offsets, 3, 2.0, 1.5), want, rtol=1e-12)


def test_pair_term_settings_are_checked():
    base = dict(n_classes=2, layers=2, kernel=3, classes=["e", "a"], positions=True, pixel_size=[0.5, 0.5])
    with pytest.raises(MapsimError, match="position_pairs must be an integer in 0..2"):
        PixelCNNConfig(**base, position_pairs=3)
    with pytest.raises(MapsimError, match="needs a model with positions"):
        PixelCNNConfig(**{**base, "positions": False}, position_pairs=1)
    with pytest.raises(MapsimError, match="joint_pairs needs a pair term"):
        PixelCNNConfig(**base, joint_pairs=True)
    with pytest.raises(MapsimError, match="pair_core needs a pair term"):
        PixelCNNConfig(**base, pair_core=[[1.0]])
    with pytest.raises(MapsimError, match="pair_core must be 1 x 1 non-negative distances"):
        PixelCNNConfig(**base, position_pairs=1, pair_core=[[1.0, 2.0]])


# -- training, scoring, generation and the CLI ------------------------------------------------

def _offlattice_dataset(n=10, h=8, w=8, seed=0):
    rng = np.random.default_rng(seed)
    g = (rng.random((n, h, w)) < 0.35).astype(np.uint8)
    # atoms sit near their pixel centre (a density the flips and rotations of the augmentation keep)
    off = np.clip(0.5 + 0.05 * rng.standard_normal((n, h, w, 2)), 0, 0.999).astype(np.float32)
    off = np.where(g[..., None] > 0, off, np.nan).astype(np.float32)
    meta = {"generator": "test", "pixel_size": [0.5, 0.5], "length_unit": "sigma", "periodic": [True, True]}
    return Dataset(g, ("empty", "atom"), meta, {"offsets": off})


def test_training_learns_positions_resumes_exactly_and_scores_in_parts(tmp_path):
    from mapsim.training import TrainConfig, train

    ds = _offlattice_dataset()
    cfg = TrainConfig(layers=2, filters=8, out_width=16, batch=4, lr=1e-2, epochs=4, seed=3, position_bins=8)
    straight = train(ds, cfg, tmp_path / "a", device="cpu")
    m = straight.model.eval()
    assert m.positions and m.config.pixel_size == [0.5, 0.5] and m.config.length_unit == "sigma"

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ds, cfg, tmp_path / "b", device="cpu", on_epoch=interrupt)
    resumed = train(ds, cfg, tmp_path / "b", device="cpu", resume=True)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    # the model learnt where atoms sit: far below the position NLL of uniform positions (0 per atom;
    # the data's density, N(0.5, 0.05^2) per axis, has -3.1 and 8 bins allow about -2.2)
    s = score_grids(m, ds.grids, offsets=ds.offsets)
    assert s.position_nll_per_atom < -0.5
    assert s.nll_nats == pytest.approx(s.class_nll_nats + s.position_nll_nats, abs=1e-9)
    per_atom_phys = s.position_nll_per_atom + 2 * math.log(0.5)
    assert s.position_nll_per_atom_physical == pytest.approx(per_atom_phys, abs=1e-9)
    # the training NLL is the model's full NLL: equal to the score of the same samples
    from mapsim.training import nll_sums

    tot, pix = nll_sums(m, ds.grids, torch.device("cpu"), 4, ds.offsets)
    assert tot / pix == pytest.approx(s.nll_nats, rel=1e-5)


def test_training_with_a_pair_core_stores_the_training_samples_closest_pairs(tmp_path):
    from mapsim.data import split_indices
    from mapsim.models.pair_term import closest_pairs
    from mapsim.training import TrainConfig, train

    ds = _offlattice_dataset(n=8, seed=4)
    cfg = TrainConfig(layers=1, filters=4, out_width=8, batch=4, epochs=1, seed=3, position_bins=4,
                      position_pairs=1, pair_core=True)
    m = train(ds, cfg, tmp_path / "a", device="cpu").model
    tr, _ = split_indices(ds.n_samples, cfg.val_fraction, cfg.seed)
    want = closest_pairs(ds.grids[np.sort(tr)], ds.offsets[np.sort(tr)], 2, 1, 1.0)
    assert m.config.pair_core == want and 0 < want[0][0] < 1
    assert load_model(tmp_path / "a" / "best.pt").config.pair_core == want
    with pytest.raises(MapsimError, match="pair_core needs a pair term"):
        TrainConfig(pair_core=True).validate()


def test_cli_train_generate_score_export_and_bad_input(tmp_path, capsys):
    ds = _offlattice_dataset(n=6)
    data = save_dataset(tmp_path / "d.npz", ds)
    lattice = save_dataset(tmp_path / "lat.npz", Dataset(ds.grids, ds.classes, {"generator": "test"}))
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--layers", "1", "--filters", "4", "--out-width", "8",
                 "--epochs", "1", "--batch", "3", "--position-bins", "4", "--threads", "1", "--json"]) == 0
    capsys.readouterr()
    gen = tmp_path / "gen.npz"
    assert main(["generate", str(run), "--height", "6", "--width", "7", "--samples", "2", "--seed", "1",
                 "--out", str(gen), "--json"]) == 0
    capsys.readouterr()
    g = load_dataset(gen)
    assert g.offsets is not None and np.array_equal(np.isnan(g.offsets[..., 0]), g.grids == 0)
    assert g.metadata["pixel_size"] == [0.5, 0.5] and g.metadata["length_unit"] == "sigma"
    assert main(["score", str(run), str(gen), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["position_nll_nats"] is not None and out["class_nll_nats"] is not None
    # bad input: one line naming the file, exit 2, nothing written
    assert main(["score", str(run), str(lattice)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(lattice) in err and "no offsets" in err and len(err.splitlines()) == 1
    plain = tmp_path / "plain"
    assert main(["train", str(lattice), "--out", str(plain), "--layers", "1", "--filters", "4", "--out-width", "8",
                 "--epochs", "1", "--batch", "3", "--threads", "1", "--json"]) == 0
    capsys.readouterr()
    assert main(["score", str(plain), str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(data) in err and "no position head" in err and len(err.splitlines()) == 1
    none = tmp_path / "none"
    assert main(["train", str(lattice), "--out", str(none), "--positions", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no offsets" in err and len(err.splitlines()) == 1 and not none.exists()


def test_augmentation_moves_positions_with_their_pixels():
    """Every element of D4 applied to grid + offsets equals the same map applied to the atoms' coordinates."""
    from mapsim.data import apply_element, apply_element_offsets, symmetry_group

    rng = np.random.default_rng(0)
    H = W = 5
    g = (rng.random((H, W)) < 0.5).astype(np.uint8)
    off = _offsets_for(g, 1)

    def atoms(grid, o):
        r, c = np.nonzero(grid)
        p = np.stack([r + o[r, c, 0], c + o[r, c, 1]], 1).astype(np.float64)
        return p[np.lexsort((p[:, 1], p[:, 0]))]

    for k, flip in symmetry_group(("flips", "rot90")):
        o2 = apply_element_offsets(off, (k, flip))
        assert o2.dtype == np.float32 and np.all((o2[~np.isnan(o2)] >= 0) & (o2[~np.isnan(o2)] < 1))
        p = atoms(g, off)
        if flip:
            p[:, 1] = W - p[:, 1]  # left-right mirror of the W-wide box
        for _ in range(k):  # np.rot90: counter-clockwise, row' = W - x, col' = y
            p = np.stack([W - p[:, 1], p[:, 0]], 1)
        p = p[np.lexsort((p[:, 1], p[:, 0]))]
        np.testing.assert_allclose(atoms(apply_element(g, (k, flip)), o2), p, atol=1e-6)


@pytest.mark.slow
def test_ddp_training_with_positions_equals_one_process(tmp_path):
    """torchrun, 2 gloo processes (unequal shards of every batch) == one process, with the position head."""
    import os
    import subprocess
    import sys

    from mapsim.training import TrainConfig, train

    ds = _offlattice_dataset(n=11)
    data = save_dataset(tmp_path / "d.npz", ds)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mapsim",
           "train", str(data), "--out", str(run), "--layers", "2", "--filters", "6", "--out-width", "8", "--batch",
           "5", "--epochs", "2", "--lr", "5e-3", "--seed", "4", "--val-fraction", "0.2", "--position-bins", "8",
           "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = TrainConfig(layers=2, filters=6, out_width=8, batch=5, epochs=2, lr=5e-3, seed=4, val_fraction=0.2,
                      position_bins=8)
    single = train(ds, cfg, tmp_path / "single", device="cpu")
    got = load_model(run / "last.pt").state_dict()
    assert any(k.startswith("pos_") for k in got)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-6)
    hist = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(hist, single.history):
        assert abs(a["train_nll"] - b["train_nll"]) < 1e-5 and abs(a["val_nll"] - b["val_nll"]) < 1e-5


def test_generation_in_blocks_of_rows_equals_one_pass(monkeypatch):
    """sample_blocks hands each block the positions of the rows above and the position uniforms of its rows."""
    import mapsim.sampling.blocks as blocks

    monkeypatch.setattr(blocks, "BLOCK_ROWS", 2)
    model = _model(seed=8, scale=0.5)
    K, H, W = 2, 5, 4
    full = sample_reference(model, K, H, W, seed=5, boundary=Boundary("noise", density=0.3))
    parts = list(blocks.sample_blocks(model, sample_reference, K, H, W, seed=5,
                                      boundary=Boundary("noise", density=0.3)))
    assert [p[0] for p in parts] == [0, 2, 4]
    assert np.array_equal(np.concatenate([p[1] for p in parts], 1), full.grids)
    assert np.array_equal(np.concatenate([p[3] for p in parts], 1), full.offsets, equal_nan=True)
    np.testing.assert_allclose(np.concatenate([p[2] for p in parts], 1), full.log_probs, atol=1e-6)
