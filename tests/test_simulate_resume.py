"""Incremental Monte Carlo output: an interrupted run resumes to the same dataset; other settings are refused."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.lattice import load_dataset
from mapsim.montecarlo import preset_params, simulate
from mapsim.montecarlo.partial import PartialRun, run_key

PRESET = "fluid-hot-attractive"
PARAMS = preset_params(PRESET, {"sweeps": 20})


def _stop_after(n):
    calls = []

    def progress(k):
        calls.append(k)
        if len(calls) == n:
            raise KeyboardInterrupt

    return progress


@pytest.fixture(scope="module")
def reference():
    return simulate(PARAMS, 5, 10, seed=3, workers=1, preset=PRESET)


def test_interrupted_then_resumed_gives_the_same_dataset(tmp_path, reference):
    ck = tmp_path / "run.partial"
    with pytest.raises(KeyboardInterrupt):
        simulate(PARAMS, 5, 10, seed=3, workers=1, preset=PRESET, checkpoint=ck, progress=_stop_after(2))
    assert sorted(p.name for p in ck.iterdir()) == ["run.json", "sample_000000.npz", "sample_000001.npz"]
    seen = []
    resumed = simulate(PARAMS, 5, 10, seed=3, workers=1, preset=PRESET, checkpoint=ck, progress=seen.append)
    assert seen == [2, 1, 1, 1]  # the two stored samples are reported at once, then three are run
    np.testing.assert_array_equal(resumed.grids, reference.grids)
    assert resumed.metadata == reference.metadata


def test_resume_with_a_process_pool_and_a_different_sample_count(tmp_path, reference):
    ck = tmp_path / "run.partial"
    simulate(PARAMS, 3, 10, seed=3, workers=1, preset=PRESET, checkpoint=ck)  # a shorter run left its samples
    resumed = simulate(PARAMS, 5, 10, seed=3, workers=2, preset=PRESET, checkpoint=ck)
    np.testing.assert_array_equal(resumed.grids, reference.grids)
    assert resumed.metadata == reference.metadata
    assert len(list(ck.glob("sample_*.npz"))) == 5


def test_a_damaged_sample_file_is_run_again(tmp_path, reference):
    ck = tmp_path / "run.partial"
    simulate(PARAMS, 2, 10, seed=3, workers=1, preset=PRESET, checkpoint=ck)
    (ck / "sample_000001.npz").write_bytes(b"PK\x03\x04 damaged")
    store = PartialRun(ck, run_key(PARAMS.to_dict(), 3, 10, 10))
    assert sorted(store.load(5)) == [0]
    resumed = simulate(PARAMS, 5, 10, seed=3, workers=1, preset=PRESET, checkpoint=store)
    np.testing.assert_array_equal(resumed.grids, reference.grids)


def test_other_settings_are_refused(tmp_path):
    ck = tmp_path / "run.partial"
    simulate(PARAMS, 1, 10, seed=3, workers=1, checkpoint=ck)
    with pytest.raises(MapsimError, match=r"run.partial holds an unfinished run with other settings \(seed 3 there, 4 now"):
        simulate(PARAMS, 2, 10, seed=4, workers=1, checkpoint=ck)
    with pytest.raises(MapsimError, match=r"params.sweeps 20 there, 21 now"):
        simulate(preset_params(PRESET, {"sweeps": 21}), 2, 10, seed=3, workers=1, checkpoint=ck)
    with pytest.raises(MapsimError, match=r"width 10 there, 11 now"):
        simulate(PARAMS, 2, 10, 11, seed=3, workers=1, checkpoint=ck)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MapsimError, match="not a partial run"):
        simulate(PARAMS, 1, 10, seed=3, workers=1, checkpoint=tmp_path / "other")


def _cli(out, *extra):
    return main(["simulate", PRESET, "--size", "10", "--samples", "5", "--seed", "3", "--set", "sweeps=20",
                 "--workers", "1", "--out", str(out), *extra])


def test_cli_resumes_automatically_and_removes_the_partial_directory(tmp_path, capsys, reference):
    out = tmp_path / "out.npz"
    with pytest.raises(KeyboardInterrupt):
        simulate(PARAMS, 5, 10, seed=3, workers=1, checkpoint=tmp_path / "out.npz.partial", progress=_stop_after(3))
    assert _cli(out, "--json") == 0
    captured = capsys.readouterr()
    assert "resuming: 3 of 5 samples" in captured.err and json.loads(captured.out)["resumed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.grids, reference.grids)
    assert ds.metadata == reference.metadata


def test_cli_refuses_a_partial_directory_of_other_settings(tmp_path, capsys):
    out = tmp_path / "out.npz"
    simulate(PARAMS, 1, 10, seed=9, workers=1, checkpoint=tmp_path / "out.npz.partial")
    assert _cli(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out.npz.partial holds an unfinished run" in err and "seed 9 there, 3 now" in err
    assert not out.exists() and (tmp_path / "out.npz.partial" / "sample_000000.npz").exists()  # left alone


def test_cli_interrupted_by_sigint_then_resumed(tmp_path):
    """A real Ctrl-C: the process stops with the finished samples on disk, and the rerun completes them."""
    out = tmp_path / "d.npz"
    argv = ["simulate", "drying", "--size", "48", "--samples", "4", "--seed", "5", "--set", "sweeps=2500",
            "--workers", "1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "mapsim", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = tmp_path / "d.npz.partial" / "sample_000000.npz"
    try:
        while not first.exists() and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and not out.exists()
    kept = len(list((tmp_path / "d.npz.partial").glob("sample_*.npz")))
    assert 1 <= kept < 4
    assert main(argv) == 0
    assert not (tmp_path / "d.npz.partial").exists()
    fresh = simulate(preset_params("drying", {"sweeps": 2500}), 4, 48, seed=5, workers=1, preset="drying")
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.grids, fresh.grids)
    assert ds.metadata == fresh.metadata
