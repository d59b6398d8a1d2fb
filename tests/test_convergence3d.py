"""Convergence by plane of generated volumes (the 3-D Fig. 11d) through ``mapsim convergence``."""

import json

import numpy as np

from mapsim.cli import main
from mapsim.lattice import Dataset, save_dataset


def _volumes(tmp_path, shift_planes):
    rng = np.random.default_rng(0)
    K, D, H, W = 40, 16, 6, 6
    lp = np.log(rng.uniform(0.5, 1.0, (K, D, H, W))).astype(np.float32)
    lp[:, :shift_planes] -= 0.3  # the first planes see the boundary: less likely draws
    grids = (rng.random((K, D, H, W)) < 0.3).astype(np.uint8)
    path = tmp_path / f"v{shift_planes}.npz"
    save_dataset(path, Dataset(grids, ("empty", "particle"), {"context_range": 1}, {"log_probs": lp}))
    return path


def test_plane_convergence_finds_the_boundary_planes(tmp_path, capsys):
    for shift, expected in ((0, 0), (3, 3)):
        out = tmp_path / f"c{shift}"
        assert main(["convergence", str(_volumes(tmp_path, shift)), "--out", str(out), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["unit"] == "plane" and info["volume_shape"] == [16, 6, 6]
        assert info["skip_planes"] == info["plateau_row"] == expected, info["plateau_row"]
        assert (out / "convergence.png").exists()
