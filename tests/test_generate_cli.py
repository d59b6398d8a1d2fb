"""CLI: mapsim model / expansion count / fit-expansion / generate / score, and their errors."""

import json

import numpy as np
import pytest
import torch

from mapsim.cli import main
from mapsim.lattice import Dataset, load_dataset, save_dataset
from mapsim.models.io import load_model


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv):
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


@pytest.mark.parametrize("L, order, expected", [(1, 2, 5), (2, 3, 79), (3, 3, 301), (5, 6, 5_985_198),
                                                (6, 7, 439_381_916)])
def test_expansion_count(capsys, L, order, expected):
    assert run_json(capsys, "expansion", "count", "--range", L, "--order", order)["count"] == expected


def test_count_with_classes(capsys):
    # (N_c - 1) * sum_k C(4, k) (N_c - 1)^k for N_c = 3, order 2: 2 * (1 + 4 * 2)
    assert run_json(capsys, "expansion", "count", "--range", 1, "--order", 2, "--classes", 3)["count"] == 18


def test_model_generate_score_round(tmp_path, capsys):
    torch.set_num_threads(1)
    m = tmp_path / "hc.pt"
    info = run_json(capsys, "model", "hard-core", "--density", 0.05, "--range", 1.5, "--out", m)
    assert info["context_range"] == 2 and info["rho_eff"] > 0.05
    gen = tmp_path / "gen.npz"
    g = run_json(capsys, "generate", m, "--height", 9, "--width", 11, "--samples", 3, "--seed", 4, "--out", gen)
    assert g["out"] == str(gen)
    ds = load_dataset(gen)
    assert ds.grids.shape == (3, 9, 11) and ds.classes == ("empty", "particle")
    lp = ds.extras["log_probs"]
    assert lp.shape == (3, 9, 11) and lp.dtype == np.float32
    meta = ds.metadata
    assert (meta["context_range"], meta["beta"], meta["boundary"], meta["seed"], meta["sampler"]) == \
        (2, 1.0, "outside", 4, "fast")
    assert meta["model"]["kind"] == "hard-core" and meta["model"]["config"]["range"] == 1.5
    # teacher-forced score of the generated data equals the sampler's own log-probs
    s = run_json(capsys, "score", m, gen)
    assert s["nll_nats"] == pytest.approx(-lp.reshape(3, -1).mean(1).mean(), rel=1e-5)
    assert s["nll_bits"] == pytest.approx(s["nll_nats"] / np.log(2)) and s["nll_nats_se"] > 0
    inner = run_json(capsys, "score", m, gen, "--skip-rows", 2, "--skip-cols", 2)
    assert inner["pixels_per_sample"] == 7 * 7
    # the same seed reproduces the file's samples
    gen2 = tmp_path / "gen2.npz"
    run_json(capsys, "generate", m, "--height", 9, "--width", 11, "--samples", 3, "--seed", 4, "--out", gen2)
    assert np.array_equal(load_dataset(gen2).grids, ds.grids)


def test_generate_with_grid_boundary_and_beta(tmp_path, capsys):
    m = tmp_path / "ig.pt"
    run_json(capsys, "model", "ideal-gas", "--density", "0.1,0.2", "--classes", "empty,a,b", "--out", m)
    src = tmp_path / "src.npz"
    save_dataset(src, Dataset(np.ones((2, 4, 4), np.uint8), ("empty", "a", "b")))
    out = tmp_path / "g.npz"
    run_json(capsys, "generate", m, "--height", 3, "--width", 4, "--samples", 2, "--seed", 0, "--out", out,
             "--boundary", f"grid:{src}:1", "--beta", 0.5)
    ds = load_dataset(out)
    assert ds.classes == ("empty", "a", "b") and ds.metadata["boundary"] == f"grid:{src}:1"
    assert ds.metadata["beta"] == 0.5 and ds.metadata["context_range"] == 0


def test_fit_expansion_copies_classes_and_rebuilds(tmp_path, capsys):
    rng = np.random.default_rng(0)
    grids = np.where(rng.random((6, 8, 8)) < 0.2, rng.integers(1, 3, (6, 8, 8)), 0).astype(np.uint8)
    data = tmp_path / "d.npz"
    save_dataset(data, Dataset(grids, ("empty", "particle", "solvent")))
    out = tmp_path / "e.pt"
    r = run_json(capsys, "fit-expansion", data, "--range", 1, "--order", 2, "--out", out, "--epochs", 2,
                 "--val-fraction", 0.2, "--l2", 1e-4)
    assert r["n_coefficients"] == 18 and r["n_val"] == 1
    model = load_model(out)
    assert model.config.classes == ("empty", "particle", "solvent")
    payload = torch.load(out, weights_only=True)
    assert len(payload["fit"]["history"]) == 2 and payload["fit"]["l2"] == 1e-4


def _bad_cases(tmp_path):
    bad_model = tmp_path / "bad.pt"
    bad_model.write_bytes(b"not a model")
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something-else"}, wrong)
    three = tmp_path / "three.npz"
    save_dataset(three, Dataset(np.full((2, 4, 4), 2, np.uint8), ("empty", "particle", "solvent")))
    two = tmp_path / "two.npz"
    save_dataset(two, Dataset(np.zeros((2, 4, 4), np.uint8), ("empty", "particle")))
    gen = ["--height", 4, "--width", 4, "--samples", 2, "--seed", 0]
    return {
        "corrupt model": ["generate", bad_model, *gen],
        "foreign model": ["score", wrong, two],
        "missing model": ["generate", tmp_path / "nope.pt", *gen],
        "height 0": ["generate", "{ig}", "--height", 0, "--width", 4, "--samples", 2, "--seed", 0],
        "negative width": ["generate", "{ig}", "--height", 3, "--width", -4, "--samples", 2, "--seed", 0],
        "beta 0": ["generate", "{ig}", *gen, "--beta", 0],
        "bad boundary": ["generate", "{ig}", *gen, "--boundary", "noise:x"],
        "boundary with foreign classes": ["generate", "{hc}", *gen, "--boundary", f"grid:{three}"],
        "more classes than the model": ["score", "{ig}", three],
        "skip everything": ["score", "{ig}", two, "--skip-rows", 4],
        "range for ideal gas": ["model", "ideal-gas", "--density", 0.1, "--range", 2],
        "density 1": ["model", "ideal-gas", "--density", 1.0],
        "unreachable hard-core density": ["model", "hard-core", "--density", 0.7],
        "hard-core range below 1": ["model", "hard-core", "--density", 0.05, "--range", 0.5],
        "order too large": ["fit-expansion", two, "--range", 1, "--order", 6],
        "missing data": ["fit-expansion", tmp_path / "missing.npz", "--range", 1, "--order", 2],
        "count order 0": ["expansion", "count", "--range", 1, "--order", 0],
    }


def test_bad_inputs_give_one_line_and_no_output(tmp_path, capsys):
    ig, hc = tmp_path / "ig.pt", tmp_path / "hc.pt"
    run_json(capsys, "model", "ideal-gas", "--density", 0.1, "--out", ig)
    run_json(capsys, "model", "hard-core", "--density", 0.05, "--out", hc)
    for name, argv in _bad_cases(tmp_path).items():
        argv = [str(a).format(ig=ig, hc=hc) for a in argv]
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        if argv[0] in ("generate", "model", "fit-expansion"):
            argv += ["--out", out]
        rc, stdout, err = run(capsys, *argv)
        assert rc == 2, (name, err)
        assert stdout == "" and len(err.strip().splitlines()) == 1 and err.startswith("mapsim: error:"), (name, err)
        assert not out.exists(), name


def test_bench_generate_on_cuda_is_a_clear_error_without_a_gpu(capsys):
    import torch

    from mapsim.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA benchmark runs for real (mapsim bench generate --device cuda)")
    assert main(["bench", "generate", "--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]
