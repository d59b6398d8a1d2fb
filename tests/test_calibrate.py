"""``mapsim bench calibrate``: its plans follow reproduce --quick, its pairs are disjoint, its figures are named."""

import math

import numpy as np
import pytest

from mapsim.benchmarks.calibrate import Calibration, PresetPlan, _pool_pairs, _subsets, clopper_pearson, default_plans
from mapsim.reproduce.config import default_config


def test_plans_use_the_reproduce_quick_sizes():
    quick = default_config(True).systems
    for plan in default_plans():
        s = quick[plan.preset]
        assert plan.size == s.gen_size and plan.samples == s.heldout_samples == s.gen_samples
        assert plan.context_range == s.layers * (s.kernel // 2)  # the quick PixelCNN's L_c
        assert plan.overrides == s.overrides and plan.heldout_box == s.heldout_box
        if plan.pixelcnn:
            p = plan.pixelcnn
            assert (p["train_size"], p["train_samples"], p["layers"], p["filters"], p["kernel"], p["out_width"],
                    p["batch"], p["lr"]) == (s.train_size, s.train_samples, s.layers, s.filters, s.kernel,
                                             s.out_width, s.batch, s.lr)


def test_pool_pairs_never_share_a_sample_within_a_pair():
    rng = np.random.default_rng(0)
    pairs = _pool_pairs(100, 12, 30, rng)
    assert len(pairs) == 30
    for ref, gen in pairs:
        assert ref.size == gen.size == 12 and not set(ref) & set(gen)
    # the first shuffle's four pairs are disjoint from each other too
    first = np.concatenate([np.concatenate(p) for p in pairs[:4]])
    assert np.unique(first).size == first.size
    sets = _subsets(50, 12, 9, rng)
    assert len(sets) == 9 and np.unique(np.concatenate(sets[:4])).size == 48


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / 10), rel=1e-9)
    lo, hi = clopper_pearson(10, 200)
    assert lo < 0.05 < hi


def test_a_tiny_calibration_names_every_figure():
    plan = PresetPlan("fluid-hot-attractive", size=16, samples=6, context_range=1,
                      alternatives={"density_x1.1": {"density": 1.1}}, required=("density_x1.1",))
    r = Calibration([plan], pairs=6, power_pairs=3, permutations=100, seed=1, workers=1).compute().result_
    p = r["presets"]["fluid-hot-attractive"]
    assert p["pairs"] == 6 and p["pairs_independent"] is True
    assert r["false_alarm_rate"]["fluid-hot-attractive"] == p["false_alarm_rate"]
    k = round(p["false_alarm_rate"] * 6)
    assert r["false_alarm_rate_stderr"]["fluid-hot-attractive"] == pytest.approx(math.sqrt(k / 6 * (1 - k / 6) / 6))
    assert 0 <= r["power_density_x1.1_fluid-hot-attractive"] <= 1
    lo, hi = r["power_density_x1.1_fluid-hot-attractive_ci"]
    assert lo <= r["power_density_x1.1_fluid-hot-attractive"] <= hi
    assert set(r["targets_met"]) == {"false_alarm_rate_fluid-hot-attractive", "power_density_x1.1_fluid-hot-attractive"}
    assert r["alpha"] == 0.05 and r["permutations"] == 100
