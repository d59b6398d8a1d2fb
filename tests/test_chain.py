"""The Markov-chain view of MAP sequences (mapsim.analysis.context_states, chain, chain_sampling, chain_plots; paper Section III).

Exact answers come from chains whose stationary distribution is known in
closed form; sampled checks use fixed seeds and a stated significance.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from stat_checks import SEEDS, assert_rarely_rejected

from mapsim.analysis import chain as C
from mapsim.analysis import chain_plots as CP
from mapsim.analysis import chain_sampling as CS
from mapsim.analysis import context_states as S
from mapsim.cli import main
from mapsim.models.base import MapModel


# ---------------------------------------------------------------------------
# small models defined here
# ---------------------------------------------------------------------------
class LookupModel(MapModel):
    """L_c = 1 model whose logits are a seeded random function of (left, up-left, up, up-right), outside included."""

    kind = "test-lookup"

    def __init__(self, n_classes: int = 2, seed: int = 0, scale: float = 1.5):
        super().__init__(n_classes, 1)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("tab", scale * torch.randn((n_classes + 1) ** 4, n_classes, generator=g, dtype=torch.float64))

    def forward(self, canvas):
        B, Hc, Wc = canvas.shape
        H, W = Hc - 1, Wc - 2
        q = self.n_classes + 1
        left, ul, up, ur = canvas[:, 1:, 0:W], canvas[:, :H, 0:W], canvas[:, :H, 1 : 1 + W], canvas[:, :H, 2 : 2 + W]
        idx = ((left * q + ul) * q + up) * q + ur
        return self.tab[idx].permute(0, 3, 1, 2)


def two_state_table(a: float, b: float) -> np.ndarray:
    """L_c = 1: p(1 | 0) = a, p(0 | 1) = b; pi = (b, a) / (a + b)."""
    return np.array([[1 - a, a], [b, 1 - b]])


def analyse(table, labels=None, **kw) -> C.MarkovChain:
    return C.MarkovChain(C.context_transition_matrix(table), labels, **kw).compute()


# ---------------------------------------------------------------------------
# exact results
# ---------------------------------------------------------------------------
def test_two_state_chain_stationary_and_tv_exact():
    a, b = 0.3, 0.1
    ch = analyse(two_state_table(a, b))
    np.testing.assert_allclose(ch.stationary_, [0.25, 0.75], rtol=0, atol=1e-14)
    # TV(P^t(s, .), pi) = pi(other) * |1 - a - b|^t from either start
    t = np.arange(ch.tv_.shape[0])
    lam = (1 - a - b) ** t
    np.testing.assert_allclose(ch.tv_[:, 0], 0.75 * lam, atol=1e-13)
    np.testing.assert_allclose(ch.tv_[:, 1], 0.25 * lam, atol=1e-13)
    assert ch.mixing_steps_ == math.ceil(math.log(1 / 3) / math.log(0.6))  # 0.75 * 0.6^t <= 1/4
    assert ch.irreducible_ and ch.aperiodic_ and ch.period_ == 1 and ch.diameter_ == 1


def test_second_neighbour_chain_has_product_stationary_distribution():
    # x_i depends on x_{i-2} only: even and odd sites are two independent two-state chains,
    # so pi(x, y) = pi1(x) pi1(y) exactly.
    a, b = 0.2, 0.45
    table = np.empty((4, 2))
    for s, (x_old, _x_new) in enumerate(S.decode_states(2, 2)):
        table[s] = two_state_table(a, b)[x_old]
    ch = analyse(table, S.state_labels(2, 2))
    pi1 = np.array([b, a]) / (a + b)
    np.testing.assert_allclose(ch.stationary_, np.outer(pi1, pi1).ravel(), atol=1e-14)
    assert ch.irreducible_ and ch.aperiodic_ and ch.diameter_ == 2


def test_context_free_table_gives_product_measure_for_three_classes():
    rho = np.array([0.5, 0.3, 0.2])
    ch = analyse(np.tile(rho, (9, 1)))
    expected = np.array([rho[x] * rho[y] for x, y in S.decode_states(3, 2)])
    np.testing.assert_allclose(ch.stationary_, expected, atol=1e-14)


@pytest.mark.parametrize("n_classes,length", [(2, 1), (2, 2), (2, 3), (3, 2), (4, 1)])
def test_softmax_chain_has_the_papers_structure(n_classes, length):
    # Figs. 4-5: N_c edges out of every state, exactly the N_c constant states self-connected,
    # every state reachable within L_c steps, irreducible and aperiodic.
    ch = analyse(S.random_softmax_table(n_classes, length, seed=1), S.state_labels(n_classes, length))
    assert ch.n_states == n_classes**length
    assert np.all(ch.out_degree_ == n_classes)
    const = [S.encode_states(np.full(length, k), n_classes) for k in range(n_classes)]
    assert sorted(ch.self_connected_.tolist()) == sorted(int(c) for c in const)
    assert ch.diameter_ == length
    assert ch.irreducible_ and ch.aperiodic_ and ch.period_ == 1
    assert ch.mixing_steps_ is not None
    np.testing.assert_allclose(ch.stationary_ @ ch.P.toarray(), ch.stationary_, atol=1e-13)


# ---------------------------------------------------------------------------
# reducible and periodic chains
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("table,period", [
    (np.array([[0.0, 1.0], [1.0, 0.0]]), 2),                                  # alternate
    (np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]), 3),                        # cycle 0 -> 1 -> 2
    (np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), 4),            # x_i = 1 - x_{i-2}
])
def test_periodic_chains_are_detected(table, period):
    ch = analyse(table, max_steps=50)
    assert ch.irreducible_
    assert ch.period_ == period and not ch.aperiodic_
    assert ch.mixing_steps_ is None  # the distribution oscillates
    assert "periodic" in C.verdict(ch)


def test_cycles_of_coprime_lengths_are_aperiodic_without_self_loops():
    # 0 -> 1 -> 0 (length 2) and 0 -> 1 -> 2 -> 0 (length 3): gcd 1
    P = np.array([[0, 1.0, 0], [0.5, 0, 0.5], [1.0, 0, 0]])
    ch = C.MarkovChain(P).compute()
    assert ch.period_ == 1 and ch.aperiodic_ and len(ch.self_connected_) == 0


def test_copying_chain_is_reducible_with_two_closed_classes():
    # p(x_i = x_{i-1}) = 1: the constant states absorb, no unique equilibrium
    table = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    ch = analyse(table, S.state_labels(2, 2))
    assert not ch.irreducible_
    assert sorted(map(list, ch.closed_classes_)) == [[0], [3]]
    assert ch.transient_states_.tolist() == [1, 2]
    assert ch.stationary_ is None and ch.mixing_steps_ is None and ch.diameter_ is None
    assert len(ch.class_stationary_) == 2
    s = ch.summary()
    assert s["irreducible"] is False and s["unique_stationary"] is False
    assert s["closed_classes"] == [["00"], ["11"]] and s["transient_states"] == ["01", "10"]
    assert "closed classes" in C.verdict(ch)


def test_hard_zero_makes_transient_states_but_a_unique_equilibrium():
    # 1D hard core with L_c = 2: no particle right after a particle; "11" can be left, never entered
    table = np.array([[0.7, 0.3], [1.0, 0.0], [0.7, 0.3], [1.0, 0.0]])
    ch = analyse(table, S.state_labels(2, 2))
    assert not ch.irreducible_ and ch.aperiodic_
    assert ch.transient_states_.tolist() == [3]
    assert ch.stationary_ is not None and ch.stationary_[3] == 0.0
    assert ch.mixing_steps_ is not None
    # the same table at a finite temperature (every logit finite) is irreducible again
    soft = S.softmax_table(np.log(np.clip(table, 1e-3, None)))
    assert analyse(soft).irreducible_


def test_hard_core_model_rows_are_reducible():
    from mapsim.models.analytic import HardCore, HardCoreConfig

    m = HardCore(HardCoreConfig(rho_eff=0.3, range=1.0))  # L_c = 1
    cond = S.model_conditionals(m)
    one_d = C.analyze_context_chain(S.table_1d(cond), 2, 1, cond=cond, n_steps=0)
    assert one_d.summary["irreducible"]  # "1" -> "0" -> "1": still strongly connected in 1D
    res = C.analyze_context_chain(S.row_table(cond, 2), 2, 1, 2, cond=cond, n_steps=0)
    s = res.summary
    assert s["irreducible"] is False and s["transient_states"] == ["11"]  # two particles side by side
    assert s["unique_stationary"] and s["aperiodic"] and s["diameter"] is None
    assert s["boundary_mixing_steps"] is not None
    assert s["verdict"].startswith("reducible: 1 transient")


# ---------------------------------------------------------------------------
# models -> tables
# ---------------------------------------------------------------------------
def test_table_1d_matches_the_models_first_row():
    m = LookupModel(2, seed=3)
    cond = S.model_conditionals(m)
    table = S.table_1d(cond)
    rng = np.random.default_rng(0)
    grids = torch.as_tensor(rng.integers(0, 2, (5, 1, 9)))
    lp = m.log_prob_pixels(grids).numpy()  # first row, outside above
    g = grids.numpy()[:, 0]
    for j in range(1, 9):  # column 0 sees the outside edge on its left
        np.testing.assert_allclose(lp[:, 0, j], np.log(table[g[:, j - 1], g[:, j]]), atol=1e-12)


def test_row_table_is_the_product_of_pixel_conditionals():
    m = LookupModel(2, seed=4)
    cond = S.model_conditionals(m)
    W = 3
    T = S.row_table(cond, W)
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)
    rows = S.decode_states(2, W)
    for s in (0, 3, 5):
        for y in (1, 6):
            grid = torch.as_tensor(np.stack([rows[s], rows[y]])[None])
            lp = m.log_prob_pixels(grid).numpy()[0, 1].sum()  # row 1 given row 0 (outside above row 0 is irrelevant, L = 1)
            assert T[s, y] == pytest.approx(math.exp(lp), rel=1e-12)


def test_numpy_raster_sampler_equals_the_reference_sampler():
    from mapsim.sampling.reference import sample_reference

    m = LookupModel(3, seed=5)
    ref = sample_reference(m, 4, 5, 6, seed=11)
    ours = CS.sample_rows(S.model_conditionals(m), 4, 5, 6, seed=11)
    np.testing.assert_array_equal(ours, ref.grids)


def test_boundary_start_is_the_exact_first_rows_distribution():
    m = LookupModel(2, seed=6)
    cond = S.model_conditionals(m)
    p0 = S.boundary_start(cond, 1, 2)
    assert p0.sum() == pytest.approx(1.0)
    grids = torch.as_tensor(S.decode_states(2, 2).reshape(4, 1, 2))
    np.testing.assert_allclose(p0, np.exp(m.log_likelihood(grids).numpy()), atol=1e-12)


@pytest.mark.parametrize("width,length", [(1, 1), (2, 1), (3, 1), (2, 2)])
def test_row_recast_of_a_softmax_model_has_the_papers_structure(width, length):
    # Figs. 7-8: N_c^W successors per state, N_c^W self-connected states (L_c identical rows), diameter L_c
    cond = S.RandomPairModel(2, length, seed=2)
    ch = analyse(S.row_table(cond, width))
    A = 2**width
    assert ch.n_states == A**length
    assert np.all(ch.out_degree_ == A)
    assert len(ch.self_connected_) == A
    assert ch.diameter_ == length
    assert ch.irreducible_ and ch.aperiodic_


# ---------------------------------------------------------------------------
# sampled sequences against the exact stationary distribution
# ---------------------------------------------------------------------------
SIGNIFICANCE = 0.01
"""Level of each seed's chi-squared or KS test; a check fails when more than one of its
seeds rejects (:mod:`stat_checks`: false-alarm budget 3.0e-4 per check)."""


def test_long_sequences_match_the_stationary_distribution_1d():
    table = S.random_softmax_table(2, 3, seed=7)
    other = analyse(S.random_softmax_table(2, 3, seed=7, beta=1.3))
    p_values = []
    for seed in SEEDS:
        res = C.analyze_context_chain(table, 2, 3, seed=seed, n_sequences=64, n_steps=2000)
        s = res.summary
        assert s["sampled_visits"] == 64 * 2001
        p_values.append(s["chi2_p_value"])
        # sampling noise of the TV distance: 0.0026 median, 0.0054 largest over 40 seeds
        assert s["stationary_tv_vs_sampled"] < 0.01
        # negative control: the same counts against another model's stationary distribution
        assert C.markov_chi2(res.counts, other.stationary_, other.P)["p_value"] < 1e-6
    assert_rarely_rejected([p <= SIGNIFICANCE for p in p_values], SIGNIFICANCE, p_values)


def test_long_row_sequences_match_the_stationary_distribution_2d():
    cond = S.RandomPairModel(2, 1, seed=9)
    table = S.row_table(cond, 2)
    p_values = []
    for seed in SEEDS:
        s = C.analyze_context_chain(table, 2, 1, 2, cond=cond, seed=seed, n_sequences=128, n_steps=300).summary
        assert s["chi2_dof"] == 3 and s["boundary_mixing_steps"] is not None
        p_values.append(s["chi2_p_value"])
    assert_rarely_rejected([p <= SIGNIFICANCE for p in p_values], SIGNIFICANCE, p_values)


def test_markov_chi2_is_calibrated_for_a_sticky_chain():
    # Visits of a sticky chain are strongly correlated: the plain Pearson statistic would be
    # inflated about (1 + lambda) / (1 - lambda) = 19-fold; the CLT covariance keeps p uniform.
    from scipy.stats import kstest

    a = b = 0.05
    P = C.context_transition_matrix(two_state_table(a, b))
    pi = np.array([0.5, 0.5])
    reps, M, T = 200, 10, 400
    ks = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        start = rng.integers(0, 2, reps * M)
        seq = CS.sample_table_sequences(two_state_table(a, b), T, reps * M, rng, start)
        pvals = [C.markov_chi2(S.context_counts(seq[r * M : (r + 1) * M], 2, 1), pi, P)["p_value"]
                 for r in range(reps)]
        ks.append(kstest(pvals, "uniform").pvalue)
    assert_rarely_rejected([p <= SIGNIFICANCE for p in ks], SIGNIFICANCE, ks)


def test_fit_table_recovers_a_known_table():
    table = S.random_softmax_table(2, 2, seed=13)
    seq = CS.sample_table_sequences(table, 20000, 8, seed=14)
    fitted, counts = S.fit_table(seq, 2, 2, pseudocount=0.0)
    assert counts.sum() == 8 * (20002 - 2)
    np.testing.assert_allclose(fitted, table, atol=0.02)


def test_de_bruijn_order_visits_every_state_along_edges():
    for A, L in [(2, 2), (2, 3), (3, 2), (4, 1)]:
        order = CP.de_bruijn_order(A, L)
        assert sorted(order.tolist()) == list(range(A**L))
        nxt = np.roll(order, -1)
        assert np.all((order * A) % A**L == nxt - nxt % A)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def test_cli_chain_json_and_figures(tmp_path, capsys):
    assert main(["chain", "--classes", "2", "--length", "3", "--json", "--out", str(tmp_path / "c"), "--steps", "64"]) == 0
    s = json.loads(capsys.readouterr().out)
    for key in ("irreducible", "aperiodic", "period", "n_states", "mixing_steps", "diameter",
                "self_connected_states", "stationary_tv_vs_sampled", "chi2_p_value", "transient_states"):
        assert key in s
    assert s["n_states"] == 8 and s["irreducible"] and s["aperiodic"] and s["period"] == 1
    assert s["diameter"] == 3 and s["self_connected_states"] == ["000", "111"]
    for name in ("chain.json", "chain.npz", "state_graph.png", "tv.png"):
        assert (tmp_path / "c" / name).stat().st_size > 0
    assert json.loads((tmp_path / "c" / "chain.json").read_text())["n_states"] == 8


def test_cli_chain_table_model_and_errors(tmp_path, capsys):
    from mapsim.models.analytic import HardCore, HardCoreConfig
    from mapsim.models.io import save_model

    np.save(tmp_path / "copy.npy", np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert main(["chain", "--table", str(tmp_path / "copy.npy"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["irreducible"] is False and s["unique_stationary"] is False and s["chi2"] is None

    save_model(tmp_path / "hc.pt", HardCore(HardCoreConfig(rho_eff=0.3, range=1.0)))
    assert main(["chain", "--model", str(tmp_path / "hc.pt"), "--width", "2", "--json", "--steps", "16",
                 "--samples", "16"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["mode"] == "2d-rows" and s["transient_states"] == ["11"] and s["unique_stationary"]

    np.save(tmp_path / "bad.npy", np.ones((3, 2)) / 2)
    assert main(["chain", "--table", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "power of 2" in err
    assert main(["chain", "--classes", "2", "--length", "3", "--width", "5", "--max-states", "1000"]) == 2
    assert "states" in capsys.readouterr().err
    assert main(["chain", "--model", str(tmp_path / "hc.pt"), "--length", "3"]) == 2
    assert "context range" in capsys.readouterr().err


def test_pixelcnn_chains_are_irreducible_and_match_teacher_forcing():
    # an untrained Gated PixelCNN is a softmax model: finite logits, so both chains are irreducible
    from mapsim.models.io import build_model

    torch.manual_seed(0)
    m = build_model("pixelcnn", {"n_classes": 2, "layers": 2, "filters": 4, "kernel": 3, "out_width": 8}).double().eval()
    cond = S.model_conditionals(m)
    L = m.context_range
    assert L == 2
    res = C.analyze_context_chain(S.table_1d(cond), 2, L, cond=cond, n_steps=0)
    assert res.summary["irreducible"] and res.summary["aperiodic"] and res.summary["diameter"] == L
    T = S.row_table(cond, 2)
    ch = analyse(T)
    assert ch.irreducible_ and ch.aperiodic_ and ch.diameter_ == L and np.all(ch.out_degree_ == 4)
    # one entry of Eq. 20 against the model's teacher-forced log-likelihood of rows L .. L (given rows 0 .. L-1)
    s, y = 9, 2
    block = S.decode_states(2, 2 * L, np.array([s]))[0].reshape(L, 2)
    grid = torch.as_tensor(np.concatenate([block, S.decode_states(2, 2, np.array([y]))], axis=0)[None])
    lp = m.log_prob_pixels(grid).detach().numpy()[0, L].sum()
    assert T[s, y] == pytest.approx(math.exp(lp), rel=1e-9)
