"""``mapsim train`` under torchrun: 2 CPU processes with gloo equal one process with the same global batch."""

import json
import os
import subprocess
import sys

import numpy as np
import torch

from mapsim.lattice import Dataset, save_dataset
from mapsim.models.io import load_model, read_checkpoint
from mapsim.training import TrainConfig, train


def test_two_gloo_processes_match_single_process_training(tmp_path):
    rng = np.random.default_rng(0)
    ds = Dataset((rng.random((11, 8, 8)) < 0.3).astype(np.uint8), ("empty", "particle"), {"generator": "test"})
    data = save_dataset(tmp_path / "d.npz", ds)
    # batch 5: the two processes hold 3 and 2 samples of every global batch (unequal shards)
    cfg = TrainConfig(layers=2, filters=6, out_width=8, batch=5, epochs=2, lr=5e-3, seed=4, val_fraction=0.2)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mapsim", "train",
           str(data), "--out", str(run), "--layers", "2", "--filters", "6", "--out-width", "8", "--batch", "5",
           "--epochs", "2", "--lr", "5e-3", "--seed", "4", "--val-fraction", "0.2", "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # only rank 0 prints
    assert proc.stdout.count("run_dir") == 1
    assert summary["epochs_done"] == 2 and summary["n_train"] == 9 and summary["n_val"] == 2

    # a valid run directory, written by one process only
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]
    assert [json.loads(s)["epoch"] for s in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert read_checkpoint(run / "last.pt")["train_config"]["batch"] == 5

    # the same global batches in one process give the same weights and losses
    single = train(ds, cfg, tmp_path / "single", device="cpu")
    got = load_model(run / "last.pt").state_dict()
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-6)
    hist = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(hist, single.history):
        assert abs(a["train_nll"] - b["train_nll"]) < 1e-5 and abs(a["val_nll"] - b["val_nll"]) < 1e-5
