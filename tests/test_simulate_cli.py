"""``mapsim simulate``: files, determinism, PNG, bad input (exit 2, one line, no output)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mapsim.cli import main
from mapsim.lattice import load_dataset


def _sim(tmp_path, *extra, name="out.npz"):
    out = tmp_path / name
    rc = main(["simulate", "fluid-hot-repulsive", "--size", "10", "--samples", "3", "--seed", "4",
               "--workers", "1", "--out", str(out), *extra])
    return rc, out


def test_simulate_writes_a_valid_dataset_and_png(tmp_path, capsys):
    rc, out = _sim(tmp_path, "--png", str(tmp_path / "first.png"), "--set", "sweeps=5", "--json")
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["out"] == str(out) and info["classes"] == ["empty", "particle"]
    ds = load_dataset(out)
    assert ds.grids.shape == (3, 10, 10)
    assert ds.metadata["params"]["sweeps"] == 5 and ds.metadata["preset"] == "fluid-hot-repulsive"
    assert (tmp_path / "first.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "out.npz"]  # no temporaries


def test_same_seed_gives_the_same_file(tmp_path):
    _, a = _sim(tmp_path, name="a.npz")
    _, b = _sim(tmp_path, name="b.npz")
    assert a.read_bytes() == b.read_bytes()
    rc, c = _sim(tmp_path, "--height", "6", "--width", "9", name="c.npz")
    assert rc == 0 and load_dataset(c).grids.shape == (3, 6, 9)


def test_keep_solvent_and_rectangular_lattice(tmp_path):
    out = tmp_path / "d.npz"
    rc = main(["simulate", "drying", "--height", "8", "--width", "12", "--samples", "1", "--workers", "1",
               "--set", "sweeps=30", "--keep-solvent", "--out", str(out)])
    assert rc == 0
    ds = load_dataset(out)
    assert ds.classes == ("empty", "particle", "solvent") and ds.grids.shape == (1, 8, 12)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["fluid-hot-repulsive", "--set", "density=2"], "density"),
        (["fluid-hot-repulsive", "--set", "dens=0.1"], "unknown parameter 'dens'"),
        (["fluid-hot-repulsive", "--set", "density"], "expected NAME=VALUE"),
        (["fluid-hot-repulsive", "--set", "mu=1"], "solvent"),
        (["fluid-hot-repulsive", "--keep-solvent"], "keep_solvent"),
        (["fluid-hot-repulsive", "--set", "T=-0.5"], "parameter T"),
        (["fluid-hot-repulsive", "--size", "2"], "at least 3 sites"),
        (["no-such-preset"], "unknown preset"),
        (["fluid-hot-repulsive", "--png", "x.jpg"], "--png"),
        (["lattice-gas", "--set", "moves=teleport"], "parameter moves: expected one of local|nonlocal|mixed"),
        (["lattice-gas", "--set", "nonlocal_frac=1.5"], "parameter nonlocal_frac"),
        (["lattice-gas", "--set", "nonlocal_frac=-0.1"], "parameter nonlocal_frac"),
        (["lattice-gas", "--set", "ensemble=grand", "--set", "density=0.3"], "parameter density=0.3: ensemble=grand"),
        (["lattice-gas", "--set", "ensemble=grand", "--set", "mu_n=inf"], "parameter mu_n: expected a finite"),
        (["lattice-gas", "--set", "ensemble=grand", "--set", "mu_n=nan"], "parameter mu_n: expected a finite"),
        (["lattice-gas", "--set", "mu_n=2"], "parameter mu_n=2 acts on the particle number"),
        (["lattice-gas", "--set", "ensemble=micro"], "parameter ensemble"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, argv, fragment):
    out = tmp_path / "out.npz"
    rc = main(["simulate", *argv, "--samples", "1", "--workers", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("mapsim: error:") and fragment in err
    assert list(tmp_path.iterdir()) == []


def test_missing_out_and_list(capsys):
    assert main(["simulate", "drying"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["simulate", "--list", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out)
    assert {"fluid-cold-repulsive", "fluid-hot-repulsive", "fluid-hot-attractive", "drying", "lattice-gas"} <= set(presets)
    assert presets["drying"]["params"]["e_nl"] == -20.0


def test_help_documents_every_parameter(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("e_nn", "e_ll", "e_nl", "mu", "T", "density", "sweeps", "mobility", "periodic",
                 "T_start", "anneal_frac", "mu_start", "mu_ramp_frac", "T=0", "moves", "nonlocal_frac",
                 "ensemble", "mu_n", "start_density", "trace_points"):
        assert name in text
    flat = " ".join(text.split())
    # what one sweep is, for each move set, and how the verdict is reached
    assert "One sweep = (with solvent) N solvent flip attempts" in flat
    assert "mobility * n particle-move attempts" in flat and "non-local with probability nonlocal_frac" in flat
    assert "paired t-test" in flat and "p < 0.001" in flat


def test_verdict_flags_a_short_local_run_and_passes_the_default(tmp_path, capsys):
    base = ["simulate", "lattice-gas", "--size", "32", "--samples", "8", "--seed", "1", "--workers", "1",
            "--set", "e_nn=-4", "--set", "T=3"]
    assert main([*base, "--set", "moves=local", "--set", "sweeps=300", "--out", str(tmp_path / "a.npz")]) == 0
    cap = capsys.readouterr()
    assert "equilibration: NOT equilibrated" in cap.out
    warning = cap.err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning:") and "moves=mixed" in warning[0]
    assert main([*base, "--set", "sweeps=400", "--out", str(tmp_path / "b.npz"), "--json"]) == 0
    cap = capsys.readouterr()
    info = json.loads(cap.out)
    assert info["equilibrated"] is True and info["equilibration"]["tau_sweeps"] > 0 and cap.err == ""
    ds = load_dataset(tmp_path / "b.npz")
    assert ds.extras["energy_trace"].shape == (8, 257) and ds.metadata["trace_sweeps"][-1] == 400


def test_protocol_presets_and_schedules_get_traces_without_verdict(tmp_path, capsys):
    for preset, extra in (("fluid-hot-attractive", []), ("lattice-gas", ["--set", "T_start=3", "--set", "anneal_frac=0.5"])):
        out = tmp_path / f"{preset}.npz"
        assert main(["simulate", preset, "--size", "10", "--samples", "2", "--workers", "1", "--set", "sweeps=50",
                     *extra, "--out", str(out), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["equilibrated"] is None and "equilibration" not in info
        ds = load_dataset(out)
        assert ds.metadata["equilibration"] is None and ds.extras["energy_trace"].shape == (2, 51)


def test_entry_point_runs_in_a_subprocess(tmp_path):
    out = tmp_path / "lg.npz"
    r = subprocess.run([sys.executable, "-m", "mapsim", "simulate", "lattice-gas", "--size", "8", "--samples", "2",
                        "--workers", "2", "--set", "sweeps=20", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ds = load_dataset(out)
    assert np.all((ds.grids == 1).sum(axis=(1, 2)) == 32)
