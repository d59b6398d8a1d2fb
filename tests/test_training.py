"""Training: split and augmentation, overfitting, checkpoints, resume == uninterrupted, CLI errors."""

import json
import os

import numpy as np
import pytest
import torch

from mapsim import data as D
from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.lattice import Dataset, save_dataset
from mapsim.models.io import load_model, read_checkpoint
from mapsim.training import TrainConfig, lr_factor, train

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: thread start-up and barriers cost more than they save, badly so on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = dict(layers=2, filters=8, out_width=16, kernel=3, batch=4, lr=5e-3)


def _random_dataset(n=12, h=8, w=8, density=0.3, seed=0, classes=("empty", "particle")):
    rng = np.random.default_rng(seed)
    g = (rng.random((n, h, w)) < density).astype(np.uint8)
    return Dataset(g, classes, {"generator": "test"})


def _patterns(n=8, size=8):
    """Checkerboards and stripes of both phases: each pixel is fixed by its left/upper neighbours."""
    i, j = np.indices((size, size))
    base = [(i + j) % 2, (i + j + 1) % 2, i % 2, (i + 1) % 2, j % 2, (j + 1) % 2]
    grids = np.stack([base[k % len(base)] for k in range(n)]).astype(np.uint8)
    return Dataset(grids, ("empty", "particle"), {"generator": "patterns"})


# -- data: split, symmetries, crops, sharding -------------------------------------------------


def test_split_is_seeded_disjoint_and_complete():
    tr, va = D.split_indices(50, 0.2, seed=3)
    tr2, va2 = D.split_indices(50, 0.2, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert len(va) == 10 and len(tr) == 40 and not set(tr) & set(va) and set(tr) | set(va) == set(range(50))
    assert not np.array_equal(D.split_indices(50, 0.2, seed=4)[1], va)
    assert len(D.split_indices(3, 0.01, 0)[1]) == 1 and len(D.split_indices(3, 0.0, 0)[1]) == 0
    with pytest.raises(MapsimError, match="cannot split"):
        D.split_indices(1, 0.5, 0)


@pytest.mark.parametrize("spec, size", [("flips,rot90", 8), ("flips", 4), ("rot90", 4), ("none", 1)])
def test_symmetry_groups_are_distinct_transformations(spec, size):
    group = D.symmetry_group(D.parse_symmetries(spec, square=True))
    assert len(group) == size
    g = np.arange(9).reshape(3, 3)
    images = {D.apply_element(g, e).tobytes() for e in group}
    assert len(images) == size  # all different
    # closed under composition: the image of any element under any other is in the set
    for e in group:
        for f in group:
            assert D.apply_element(D.apply_element(g, e), f).tobytes() in images


def test_rotations_need_square_samples():
    assert D.parse_symmetries(None, square=False) == ("flips",)
    assert D.parse_symmetries(None, square=True) == ("flips", "rot90")
    with pytest.raises(MapsimError, match="square"):
        D.parse_symmetries("flips,rot90", square=False)
    with pytest.raises(MapsimError, match="subset"):
        D.parse_symmetries("mirror", square=True)


def test_epoch_plan_crops_and_shards():
    ds = _random_dataset(n=10, h=9, w=7)
    train_idx, val_idx = D.split_indices(ds.n_samples, 0.2, seed=1)
    group = D.symmetry_group(D.parse_symmetries(None, True))
    plan = D.plan_epoch(train_idx, 3, seed=1, epoch=2, sample_shape=(9, 7), crop=(5, 5), group_size=len(group))
    again = D.plan_epoch(train_idx, 3, seed=1, epoch=2, sample_shape=(9, 7), crop=(5, 5), group_size=len(group))
    assert np.array_equal(plan.order, again.order) and np.array_equal(plan.offsets, again.offsets)
    assert plan.n_batches == 8 // 3 and len(plan.order) == 6
    assert set(plan.order) <= set(train_idx)  # validation samples never enter training
    assert np.all(plan.offsets[:, 0] <= 4) and np.all(plan.offsets[:, 1] <= 2)
    full = D.batch_grids(ds.grids, plan, 1, (5, 5), group)
    parts = [D.batch_grids(ds.grids, plan, 1, (5, 5), group, rank=r, world=2) for r in range(2)]
    assert full.shape == (3, 5, 5) and [len(p) for p in parts] == [2, 1]
    assert np.array_equal(np.concatenate(parts), full)
    q = 3  # first sample of batch 1 is the crop of its source sample, transformed
    i0, j0 = plan.offsets[q]
    src = ds.grids[plan.order[q], i0 : i0 + 5, j0 : j0 + 5]
    assert np.array_equal(full[0], D.apply_element(src, group[plan.elements[q]]))


def test_lr_schedule_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 1e-3


def interrupted_and_resumed(ds, cfg, run_dir, at=2, **kwargs):
    """Train into ``run_dir``, interrupt after epoch ``at`` (``kwargs`` go to that call), resume to the end."""
    def interrupt(record):
        if record["epoch"] == at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ds, cfg, run_dir, device="cpu", on_epoch=interrupt, **kwargs)
    assert read_checkpoint(run_dir / "last.pt")["epoch"] == at
    return train(ds, cfg, run_dir, device="cpu", resume=True)


# -- training --------------------------------------------------------------------------------


def test_tiny_model_overfits_tiny_dataset(tmp_path):
    ds = _patterns()
    entropy = D.marginal_entropy(ds.grids, 2)
    cfg = TrainConfig(**{**TINY, "lr": 3e-2}, epochs=15, val_fraction=0.0, patience=0, seed=0)
    res = train(ds, cfg, tmp_path / "run", device="cpu")
    assert res.stopped == "epochs" and res.epochs_done == 15
    final = res.history[-1]["train_nll"]
    assert final < 0.5 * entropy, f"train NLL {final:.4f} not below half the marginal entropy {entropy:.4f}"


def test_run_directory_files(tmp_path):
    ds = _random_dataset(classes=("void", "grain"))
    cfg = TrainConfig(**TINY, epochs=3, seed=2)
    res = train(ds, cfg, tmp_path / "run", device="cpu", data_path="d.npz")
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for r in lines:
        assert {"epoch", "train_nll", "val_nll", "lr", "seconds"} <= set(r) and r["val_nll"] > 0
    best_epoch = int(np.argmin([r["val_nll"] for r in lines])) + 1
    best, last = read_checkpoint(run), read_checkpoint(run / "last.pt")
    assert best["epoch"] == best_epoch == res.best_epoch and last["epoch"] == 3
    for payload in (best, last):
        assert {"optimizer", "scheduler", "rng_state", "train_config", "best_val_nll"} <= set(payload)
        assert payload["train_config"]["symmetries"] == "flips,rot90"
    # model files rebuilt from the file alone; classes come from the dataset
    m = load_model(run / "last.pt")
    assert m.config.classes == ["void", "grain"] and m.context_range == 2
    sd = res.model.state_dict()
    assert all(torch.equal(sd[k].cpu(), v) for k, v in m.state_dict().items())
    assert load_model(run).config == m.config  # a run directory means its best.pt


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    ds = _random_dataset(n=14)
    cfg = TrainConfig(**TINY, epochs=4, seed=7, crop=[6, 6])
    straight = train(ds, cfg, tmp_path / "a", device="cpu")

    resumed = interrupted_and_resumed(ds, cfg, tmp_path / "b")
    assert resumed.epochs_done == 4 and resumed.stopped == "epochs"
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    for ra, rb in zip(straight.history, resumed.history):
        assert ra["epoch"] == rb["epoch"] and ra["lr"] == pytest.approx(rb["lr"], rel=1e-12)
        assert ra["train_nll"] == pytest.approx(rb["train_nll"], rel=1e-5)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 4
    # a finished run has nothing left to do
    assert train(ds, cfg, tmp_path / "b", device="cpu", resume=True).stopped == "already complete"


def test_time_limit_fits_the_schedule_and_resume_keeps_it(tmp_path, monkeypatch):
    import mapsim.training as T

    ds = _random_dataset()
    cfg = TrainConfig(**TINY, epochs=3)
    # the horizon arithmetic on given epoch times (no clock involved)
    assert T.fit_horizon(10.0, 1.0, 20) == 6 and T.fit_horizon(100.0, 1.0, 20) == 1 and T.fit_horizon(1, 60, 20) == 20
    # a cap below two epochs: the schedule ends after the first epoch, and that run is complete; the run's
    # clock advances one second per reading, so an epoch takes 2 s and 3 s of cap fit one (no real time)
    ticks = iter(range(10**6))
    monkeypatch.setattr(T, "clock", lambda: float(next(ticks)))
    first = train(ds, cfg, tmp_path / "r", device="cpu", max_minutes=0.05)
    assert first.stopped == "fitted horizon" and first.epochs_done == 1 and first.horizon_epochs == 1
    assert read_checkpoint(tmp_path / "r" / "last.pt")["horizon_epochs"] == 1
    assert train(ds, cfg, tmp_path / "r", device="cpu", resume=True).stopped == "already complete"

    # 3 of 6 epochs fit: the learning rate decays to zero at epoch 3; an interrupted run resumed without
    # the cap continues that schedule and ends where the uninterrupted one does (a stopped clock, so the
    # per-call time limit never fires, and the horizon given as fit_horizon's answer)
    monkeypatch.setattr(T, "clock", lambda: 0.0)
    monkeypatch.setattr(T, "fit_horizon", lambda seconds, minutes, epochs, done=1: 3)
    cfg6 = TrainConfig(**TINY, epochs=6, seed=5)
    straight = train(ds, cfg6, tmp_path / "a", device="cpu", max_minutes=60)
    assert straight.stopped == "fitted horizon" and straight.epochs_done == 3
    # the last step's learning rate: near zero (a 6-epoch schedule would still be at its peak)
    assert straight.history[-1]["lr"] < 0.1 * cfg6.lr < straight.history[0]["lr"]

    resumed = interrupted_and_resumed(ds, cfg6, tmp_path / "b", max_minutes=60)
    assert resumed.stopped == "fitted horizon" and resumed.epochs_done == 3
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [r["lr"] for r in straight.history] == pytest.approx([r["lr"] for r in resumed.history], rel=1e-12)
    # timings stay out of the model files: same settings, same bytes
    assert (tmp_path / "a" / "best.pt").read_bytes() == (tmp_path / "b" / "best.pt").read_bytes()
    assert all("seconds" in json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines())


def test_early_stopping(tmp_path):
    ds = _random_dataset()
    # a learning rate far below float32 resolution leaves the weights, hence the validation NLL, unchanged
    cfg = TrainConfig(**{**TINY, "lr": 1e-30}, epochs=10, patience=2)
    res = train(ds, cfg, tmp_path / "r", device="cpu")
    assert res.stopped == "early stopping" and res.epochs_done == 3 and res.best_epoch == 1
    assert read_checkpoint(tmp_path / "r" / "last.pt")["stopped"] == "early stopping"


# -- command line ----------------------------------------------------------------------------


def _files(d):
    return {p.name: p.read_bytes() for p in d.iterdir()} if d.exists() else None


def test_cli_trains_resumes_and_rejects_bad_input(tmp_path, capsys):
    data = save_dataset(tmp_path / "d.npz", _random_dataset())
    run = tmp_path / "run"
    common = [str(data), "--layers", "2", "--filters", "4", "--out-width", "8", "--batch", "4", "--out", str(run)]
    assert main(["train", *common, "--epochs", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs_done"] == 1 and out["stopped"] == "epochs"
    # resume: options left out come from the run; only --epochs may not change
    assert main(["train", str(data), "--out", str(run), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] == "already complete"
    before = _files(run)

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        ["train", str(data), "--out", str(run), "--resume", "--lr", "0.5"],  # different config
        ["train", str(data), "--out", str(run), "--resume", "--epochs", "3"],  # schedule spans the total
        ["train", *common],  # existing run without --resume
        ["train", str(bad), "--out", str(tmp_path / "new1")],  # corrupt data
        ["train", str(data), "--out", str(tmp_path / "new2"), "--epochs", "0"],
        ["train", str(data), "--out", str(tmp_path / "new3"), "--epochs", "-2"],
        ["train", str(data), "--out", str(tmp_path / "new4"), "--resume"],  # nothing to resume
        ["train", str(data), "--out", str(tmp_path / "new5"), "--crop", "9"],  # crop larger than samples
        ["train", str(data), "--out", str(tmp_path / "new6"), "--symmetries", "shear"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mapsim: error:") and err.count("\n") == 1, (argv, err)
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "d.npz", "run"]  # nothing else written


def test_weight_averaging_is_resumable_and_saved_as_the_model(tmp_path):
    ds = _random_dataset(n=14)
    cfg = TrainConfig(**TINY, epochs=4, seed=3, ema=0.9)
    straight = train(ds, cfg, tmp_path / "a", device="cpu")
    last = read_checkpoint(tmp_path / "a" / "last.pt")
    # the model file holds the averaged weights, which differ from the optimiser's (kept to resume from)
    assert set(last["raw_state_dict"]) == set(last["state_dict"])
    assert any(not torch.equal(last["raw_state_dict"][k], v) for k, v in last["state_dict"].items())
    m = load_model(tmp_path / "a" / "last.pt")
    assert all(torch.equal(m.state_dict()[k], v.cpu()) for k, v in straight.model.state_dict().items())

    resumed = interrupted_and_resumed(ds, cfg, tmp_path / "b")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [r["val_nll"] for r in straight.history] == pytest.approx([r["val_nll"] for r in resumed.history], rel=1e-6)
    with pytest.raises(MapsimError, match="ema"):
        TrainConfig(**TINY, ema=1.0).validate()
