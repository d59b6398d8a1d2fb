"""The verdict on Monte Carlo data of the paper's dilute-fluid presets (40 samples of 32x32).

Same-preset pairs are independent draws of one distribution, so each is
rejected with probability ≤ alpha = 0.05; the test allows one rejection among
three pairs per preset (P(≥ 2 of 3) ≤ 0.7 %), so it does not pass only for
its seeds.  Different presets differ grossly and must always be rejected.
"""

import numpy as np
import pytest

from mapsim import montecarlo as mc
from mapsim.analysis.compare import compare_datasets

N, L = 40, 32


@pytest.fixture(scope="module")
def data():
    return {(p, s): mc.simulate(p, N, L, L, seed=s, workers=1)
            for p in ("fluid-hot-attractive", "fluid-cold-repulsive") for s in (1, 2, 3, 4)}


@pytest.mark.parametrize("preset", ["fluid-hot-attractive", "fluid-cold-repulsive"])
def test_independent_datasets_of_one_preset_are_rarely_rejected(data, preset):
    assert data[(preset, 1)].metadata["params"]["periodic"] is True
    verdicts = [compare_datasets(data[(preset, 1)], data[(preset, s)], seed=s).summary for s in (2, 3, 4)]
    assert sum(v["family_reject"] for v in verdicts) <= 1, [v["rejected"] for v in verdicts]
    # canonical simulations: the density has no spread in the reference and is tested one-sample;
    # two canonical sets of one preset hold the same N, so the distance is exactly 0
    assert all(v["reference_fixed_count"] and v["density_distance"] == 0 for v in verdicts)
    assert all("energy" in v["statistics"] for v in verdicts)


@pytest.mark.parametrize("ref, gen", [(("fluid-hot-attractive", 1), ("fluid-cold-repulsive", 2)),
                                      (("fluid-cold-repulsive", 1), ("fluid-hot-attractive", 2))])
def test_another_presets_dataset_is_rejected(data, ref, gen):
    s = compare_datasets(data[ref], data[gen], seed=0).summary
    assert s["family_reject"]
    # 1 % against 5 % particles, and hot attractive particles touch where cold repulsive ones never do
    assert {"density", "neighbours4", "clusters4", "energy"} <= set(s["rejected"]), s["rejected"]
    assert np.isfinite(s["density_effect"]) or s["density_effect"] == np.inf
