"""Generation in blocks of rows: the same bytes in memory, streamed to zarr, resumed and split."""

import json

import numpy as np
import pytest
import torch

from mapsim.errors import MapsimError
from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from mapsim.sampling import blocks
from mapsim.sampling.common import Boundary
from mapsim.sampling.generate import generate, generate_to_zarr
from mapsim.sampling.reference import sample_reference
from mapsim.zarrstore import partial_path

pytest.importorskip("zarr")


def _pixelcnn(dtype=torch.float32, seed=0, layers=2, n_classes=3):
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(n_classes=n_classes, layers=layers, kernel=3, filters=6, out_width=6,
                         classes=[f"c{i}" for i in range(n_classes)])
    m = GatedPixelCNN(cfg).to(dtype).eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.normal_(0.0, 0.5)
    return m


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 5)
    import mapsim.sampling.generate as gen

    monkeypatch.setattr(gen, "samples_per_group", lambda width: 2)
    return 5


@pytest.mark.parametrize("sampler", ["fast", "reference"])
def test_blocks_of_rows_give_the_unblocked_samples(small_blocks, sampler):
    m = _pixelcnn(torch.float64)
    b = Boundary("noise", density=0.3)
    ds = generate(m, 2, 13, 7, seed=4, boundary=b, sampler=sampler)
    ref = sample_reference(m, 2, 13, 7, seed=4, boundary=b)
    assert np.array_equal(ds.grids, ref.grids)
    np.testing.assert_allclose(ds.extras["log_probs"], ref.log_probs, atol=1e-6, rtol=0)
    assert ds.metadata["block_rows"] == 5 and ds.metadata["uniforms"] == "lines-v2"


def test_a_share_of_the_samples_is_the_same_share_of_the_whole_run(small_blocks):
    m = _pixelcnn()
    b = Boundary("noise", density=0.3)
    whole = generate(m, 5, 11, 6, seed=8, boundary=b)
    parts = [generate(m, n, 11, 6, seed=8, boundary=b, first_sample=k0) for k0, n in ((0, 2), (2, 3))]
    assert np.array_equal(np.concatenate([p.grids for p in parts]), whole.grids)
    assert np.array_equal(np.concatenate([p.extras["log_probs"] for p in parts]), whole.extras["log_probs"])


def test_zarr_store_holds_the_bytes_of_the_in_memory_dataset(small_blocks, tmp_path):
    from mapsim.lattice import load_dataset

    m = _pixelcnn()
    mem = generate(m, 5, 12, 9, seed=1, boundary=Boundary("noise", density=0.4))
    out = generate_to_zarr(m, 5, 12, 9, tmp_path / "g.zarr", seed=1, boundary=Boundary("noise", density=0.4),
                           log_probs="pixels")
    assert out == tmp_path / "g.zarr" and not partial_path(out).exists()
    ds = load_dataset(out)
    assert np.array_equal(ds.grids, mem.grids)
    assert np.array_equal(ds.extras["log_probs"], mem.extras["log_probs"])
    np.testing.assert_allclose(ds.extras["row_log_probs"], mem.extras["log_probs"].astype(np.float64).sum(2))
    assert ds.classes == mem.classes and ds.metadata["log_probs"] == "pixels"


def _interrupt_after(monkeypatch, n_records):
    """Make the n-th progress record raise: the block's arrays are written, its progress is not
    (as a kill -9 between the two would leave it)."""
    import mapsim.zarrstore as zs

    calls = {"n": 0}
    real = zs.ZarrWriter._record

    def record(self):
        calls["n"] += 1
        if calls["n"] == n_records:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(zs.ZarrWriter, "_record", record)
    return lambda: monkeypatch.setattr(zs.ZarrWriter, "_record", real)


@pytest.mark.parametrize("stop_at", [2, 4, 6])
def test_an_interrupted_stream_resumes_with_identical_bytes(small_blocks, tmp_path, monkeypatch, stop_at):
    from mapsim.lattice import load_dataset

    m = _pixelcnn()
    args = dict(seed=3, boundary=Boundary("noise", density=0.3), log_probs="pixels")
    whole = load_dataset(generate_to_zarr(m, 5, 12, 8, tmp_path / "a.zarr", **args))
    restore = _interrupt_after(monkeypatch, stop_at)  # record 1 is the empty store
    with pytest.raises(KeyboardInterrupt):
        generate_to_zarr(m, 5, 12, 8, tmp_path / "b.zarr", **args)
    assert partial_path(tmp_path / "b.zarr").exists() and not (tmp_path / "b.zarr").exists()
    with pytest.raises(MapsimError, match="not complete"):
        load_dataset(tmp_path / "b.zarr")
    prog = json.loads((partial_path(tmp_path / "b.zarr") / "progress.json").read_text())
    restore()
    rows = []
    generate_to_zarr(m, 5, 12, 8, tmp_path / "b.zarr", progress=rows.append, **args)
    resumed = load_dataset(tmp_path / "b.zarr")
    assert np.array_equal(resumed.grids, whole.grids)
    assert np.array_equal(resumed.extras["log_probs"], whole.extras["log_probs"])
    # the progress record stops at the last block whose record was written (the interrupted
    # block is redone), and the rerun started there, not at the beginning
    blocks_recorded = stop_at - 2
    per_group = -(-12 // 5)
    group, block = divmod(blocks_recorded, per_group)
    assert (prog["samples_done"], prog["rows_done"]) == (2 * group, 5 * block)
    if blocks_recorded:
        assert rows[0] > 5 or prog["samples_done"] > 0


def test_a_partial_store_from_other_settings_is_refused(small_blocks, tmp_path, monkeypatch):
    m = _pixelcnn()
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        generate_to_zarr(m, 3, 12, 8, tmp_path / "c.zarr", seed=3)
    monkeypatch.undo()
    with pytest.raises(MapsimError, match="differs in metadata"):
        generate_to_zarr(m, 3, 12, 8, tmp_path / "c.zarr", seed=3, beta=2.0)


def test_generate_cli_writes_zarr_and_row_log_probs(tmp_path):
    from mapsim.cli import main
    from mapsim.lattice import load_dataset
    from mapsim.models.io import save_model

    path = save_model(tmp_path / "m.pt", _pixelcnn())
    # same seed, settings and thread count: the same bytes in every format
    base = ["generate", str(path), "--height", "9", "--width", "7", "--samples", "3", "--seed", "5", "--threads", "2"]
    assert main(base + ["--out", str(tmp_path / "g.npz")]) == 0
    assert main(base + ["--out", str(tmp_path / "g.zarr")]) == 0
    assert main(base + ["--out", str(tmp_path / "r.npz"), "--log-probs", "rows"]) == 0
    a, z, r = (load_dataset(tmp_path / n) for n in ("g.npz", "g.zarr", "r.npz"))
    assert np.array_equal(a.grids, z.grids) and np.array_equal(a.grids, r.grids)
    assert "log_probs" not in z.extras and "log_probs" not in r.extras
    np.testing.assert_allclose(z.extras["row_log_probs"], a.extras["log_probs"].astype(np.float64).sum(2))
    np.testing.assert_array_equal(r.extras["row_log_probs"], z.extras["row_log_probs"])
    assert main(base[:-2] + ["--out", str(tmp_path / "g.zarr"), "--threads", "0"]) == 2
