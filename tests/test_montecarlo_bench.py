"""``mapsim bench montecarlo`` runs and reports its keys (speed itself is not asserted).

The benchmark's NumPy baseline is checked here against this file's own brute-force energy
(a loop over bonds), not against anything in the benchmark or the engine.
"""

import json

import numpy as np

from mapsim.benchmarks.montecarlo import NumpyLatticeGas
from mapsim.cli import main


def _bond_energy(occ, e_nn):
    """e_nn times the number of occupied nearest-neighbour pairs of a periodic grid, by loops."""
    h, w = occ.shape
    pairs = sum(int(occ[i, j]) * (int(occ[(i + 1) % h, j]) + int(occ[i, (j + 1) % w]))
                for i in range(h) for j in range(w))
    return e_nn * pairs


def test_bench_reports_the_figures(capsys):
    rc = main(["bench", "montecarlo", "--json", "--size", "16", "--attempts", "20000", "--repeats", "1",
               "--drying-size", "12", "--equil-size", "12", "--equil-samples", "3", "--equil-cap", "60",
               "--workers", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("lattice_gas_updates_per_s", "numpy_updates_per_s", "ratio_vs_numpy", "drying_12_seconds",
                "nonlocal_updates_per_s", "nonlocal_ratio_vs_local", "equilibration_sweeps_local"):
        assert out[key] > 0
    assert out["nonlocal_ratio_vs_local"] == out["nonlocal_updates_per_s"] / out["lattice_gas_updates_per_s"]
    assert 0 < out["nonlocal_acceptance"] < 1
    assert out["equilibration_sweeps_default"] is None or 0 <= out["equilibration_sweeps_default"] <= 500
    assert isinstance(out["equilibration_sweeps_local_is_lower_bound"], bool)
    for key in ("default", "grand_T3", "grand_T2"):
        assert np.isfinite(out[f"{key}_u"]) and out[f"{key}_u_se_rel"] > 0
    assert out["grand_T2_abs_m_exact"] == np.float64(0.911319377877496)
    assert set(out["verdict_local_1000"]) >= {"equilibrated", "p_value", "tau_sweeps"}


def test_numpy_baseline_conserves_particles_and_relaxes():
    rng = np.random.default_rng(0)
    occ = rng.random((12, 16)) < 0.3
    ref = NumpyLatticeGas(occ, e_nn=-1.0, T=0.5, seed=1)
    e0 = _bond_energy(occ, -1.0)
    attempts = sum(ref.sweep() for _ in range(200))
    g = ref.occ.reshape(12, 16)
    assert g.sum() == occ.sum()
    # each bond is visited once per sweep; particles that moved earlier in the sweep may be seen 3 or 5 times
    assert abs(attempts / (200 * 4 * occ.sum()) - 1) < 0.05
    assert _bond_energy(g, -1.0) < e0 - 20  # attractive particles cluster below T_c
