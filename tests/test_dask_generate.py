"""mapsim generate --dask on a local cluster (loopback): the bytes of one process."""

import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed")

from mapsim.cli import main  # noqa: E402
from mapsim.lattice import load_dataset  # noqa: E402
from mapsim.models.io import model_from_bytes, model_to_bytes, save_model  # noqa: E402
from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(1)
    m = GatedPixelCNN(PixelCNNConfig(n_classes=2, layers=2, kernel=3, filters=6, out_width=6)).eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.normal_(0.0, 0.5)
    return save_model(tmp_path_factory.mktemp("m") / "m.pt", m)


def test_model_bytes_round_trip(model_path):
    from mapsim.models.io import load_model

    m = load_model(model_path)
    m2 = model_from_bytes(model_to_bytes(m))
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("suffix", [".npz", ".zarr"])
def test_dask_generation_gives_the_bytes_of_one_process(cluster, model_path, tmp_path, suffix):
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    base = ["generate", str(model_path), "--height", "11", "--width", "9", "--samples", "5", "--seed", "3",
            "--boundary", "noise:0.3", "--threads", "1", "--group-samples", "2", "--log-probs", "pixels"]
    assert main(base + ["--out", str(tmp_path / f"one{suffix}")]) == 0
    assert main(base + ["--out", str(tmp_path / f"dask{suffix}"), "--dask", cluster.scheduler_address]) == 0
    one, many = load_dataset(tmp_path / f"one{suffix}"), load_dataset(tmp_path / f"dask{suffix}")
    assert np.array_equal(one.grids, many.grids)
    assert np.array_equal(one.extras["log_probs"], many.extras["log_probs"])
    assert one.metadata["samples_per_group"] == many.metadata["samples_per_group"] == 2


def test_unreachable_scheduler_is_a_one_line_error(model_path, tmp_path, capsys, monkeypatch):
    import mapsim.cluster

    monkeypatch.setattr(mapsim.cluster, "CONNECT_TIMEOUT", 1)
    out = tmp_path / "x.npz"
    rc = main(["generate", str(model_path), "--height", "4", "--width", "4", "--samples", "1", "--seed", "0",
               "--dask", "tcp://127.0.0.1:9", "--out", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dask tcp://127.0.0.1:9" in err[0]
