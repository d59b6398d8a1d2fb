"""Monte Carlo on a Dask cluster (a local one on loopback): same dataset as the process pool for the same seed."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from mapsim.cli import main  # noqa: E402
from mapsim.errors import MapsimError  # noqa: E402
from mapsim.lattice import load_dataset  # noqa: E402
from mapsim.montecarlo import engine, preset_params, simulate  # noqa: E402

# the drying preset exercises the solvent kernel, kept as class 2
PARAMS = preset_params("drying", {"sweeps": 40, "keep_solvent": True})


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def pool_dataset():
    return simulate(PARAMS, 5, 12, 9, seed=11, workers=2, preset="drying")


def test_dask_cluster_gives_the_process_pool_dataset(cluster, pool_dataset):
    by_address = simulate(PARAMS, 5, 12, 9, seed=11, dask=cluster.scheduler_address, preset="drying")
    np.testing.assert_array_equal(by_address.grids, pool_dataset.grids)
    assert by_address.metadata == pool_dataset.metadata and by_address.classes == pool_dataset.classes
    with distributed.Client(cluster, set_as_default=False) as client:  # a client the caller owns stays open
        by_client = simulate(PARAMS, 5, 12, 9, seed=11, dask=client, preset="drying")
        assert client.status == "running"
    np.testing.assert_array_equal(by_client.grids, pool_dataset.grids)


def test_interrupted_locally_finished_on_the_cluster(cluster, pool_dataset, tmp_path):
    ck = tmp_path / "run.partial"
    simulate(PARAMS, 2, 12, 9, seed=11, workers=1, checkpoint=ck)
    done = simulate(PARAMS, 5, 12, 9, seed=11, dask=cluster.scheduler_address, checkpoint=ck, preset="drying")
    np.testing.assert_array_equal(done.grids, pool_dataset.grids)
    assert done.metadata == pool_dataset.metadata
    assert len(list(ck.glob("sample_*.npz"))) == 5  # the cluster's results were stored as they came


def test_cli_dask(cluster, pool_dataset, tmp_path, capsys):
    out = tmp_path / "d.npz"
    rc = main(["simulate", "drying", "--height", "12", "--width", "9", "--samples", "5", "--seed", "11",
               "--set", "sweeps=40", "--keep-solvent", "--dask", cluster.scheduler_address, "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.grids, pool_dataset.grids)
    assert ds.metadata == pool_dataset.metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_unreachable_scheduler_is_one_line_and_no_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine, "DASK_CONNECT_TIMEOUT", 1)
    with pytest.raises(MapsimError, match="cannot connect to a Dask scheduler"):
        simulate(PARAMS, 1, 12, seed=0, dask="tcp://127.0.0.1:9")
    rc = main(["simulate", "drying", "--size", "8", "--samples", "1", "--dask", "tcp://127.0.0.1:9",
               "--out", str(tmp_path / "d.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--dask tcp://127.0.0.1:9: cannot connect" in err
    assert list(tmp_path.iterdir()) == []
