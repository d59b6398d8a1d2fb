"""``mapsim bench montecarlo`` runs and reports its keys (speed itself is not asserted)."""

import json

import numpy as np

from mapsim.benchmarks.montecarlo import NumpyLatticeGas
from mapsim.cli import main
from mapsim.montecarlo import total_energy


def test_bench_reports_the_figures(capsys):
    rc = main(["bench", "montecarlo", "--json", "--size", "16", "--attempts", "20000", "--repeats", "1",
               "--drying-size", "12"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("lattice_gas_updates_per_s", "numpy_updates_per_s", "ratio_vs_numpy", "drying_12_seconds"):
        assert out[key] > 0


def test_numpy_reference_conserves_particles_and_relaxes():
    rng = np.random.default_rng(0)
    occ = rng.random((12, 16)) < 0.3
    ref = NumpyLatticeGas(occ, e_nn=-1.0, T=0.5, seed=1)
    e0 = total_energy(occ.astype(np.uint8), e_nn=-1.0)
    attempts = sum(ref.sweep() for _ in range(200))
    g = ref.occ.reshape(12, 16)
    assert g.sum() == occ.sum()
    # each bond is visited once per sweep; particles that moved earlier in the sweep may be seen 3 or 5 times
    assert abs(attempts / (200 * 4 * occ.sum()) - 1) < 0.05
    assert total_energy(g.astype(np.uint8), e_nn=-1.0) < e0 - 20  # attractive particles cluster below T_c
