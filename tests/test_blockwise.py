"""Statistics read block by block: the same numbers as on the whole array, and never a whole zarr array read.

Every statistic but S(k) is an integer count (pairs, neighbours, bonds, cluster sizes) or a ratio of
such counts formed the same way, so it must be equal to the last bit.  S(k) sums the same squared
FFT values in another order, and for a sample larger than a block computes the 2-D FFT as two passes
of 1-D FFTs: each |ρ(k)|² then carries a relative error of a few eps × log2(H W) (≈ 1e-14 here), so
``rtol=1e-12`` leaves two orders of magnitude of room and still fails for any real difference.
"""

import itertools
import json

import numpy as np
import pytest

from mapsim.analysis.blockwise import BlockStatistics, analyze, plan_blocks
from mapsim.analysis.compare import compare_datasets
from mapsim.analysis.structure import (
    ClusterSizes,
    NeighbourCounts,
    PairCorrelation,
    StructureFactor,
    max_r_allowed,
    nn_pair_density,
)
from mapsim.lattice import MC_CLASSES, Dataset, StoredDataset, open_dataset, save_dataset
from mapsim.montecarlo.hamiltonian import energy_terms

pytest.importorskip("zarr")

S_K_RTOL = 1e-12  # module docstring


def _grids(rng, n, h, w, density):
    g = (rng.random((n, h, w)) < density).astype(np.uint8)
    g[(g == 0) & (rng.random((n, h, w)) < 0.3)] = 2  # some solvent, for the energy terms
    return g


def _to_zarr(ds: Dataset, path):
    from mapsim.zarrstore import ZarrWriter

    w = ZarrWriter(path, ds.grids.shape, ds.classes, ds.metadata, {"test": 1}, log_probs="none", block_rows=3)
    w.write(0, 0, ds.grids, np.zeros(ds.grids.shape, np.float32))
    return w.finish()


class _Recorder:
    """Stands in for a zarr array and records how many elements every read asked for."""

    def __init__(self, array):
        self.array, self.reads = array, []

    def __getattr__(self, name):
        return getattr(self.array, name)

    def __getitem__(self, key):
        out = self.array[key]
        self.reads.append(int(np.asarray(out).size))
        return out


def _open_recorded(path):
    ds = open_dataset(path)
    assert isinstance(ds, StoredDataset)
    ds._grids = _Recorder(ds._grids)
    return ds


@pytest.mark.parametrize("shape,density,periodic,block", list(itertools.product(
    [(9, 11), (8, 8), (2, 7)], [0.2, 0.65], [(False, False), (True, True), (True, False), (False, True)],
    [10, 40, 10_000])))
def test_blocks_give_the_whole_array_estimators(shape, density, periodic, block):
    # block 10 < W: one row at a time (the S(k) spill and every seam); 40: a few rows; 10 000: whole samples.
    # Density 0.65 percolates, so clusters cross seams and wind round the periodic axes
    rng = np.random.default_rng(hash((shape, density, periodic)) % 2**32)
    grids = _grids(rng, 3, *shape, density)
    occ = grids == 1
    r_max = min(3, max_r_allowed(shape, periodic))
    ds = Dataset(grids, MC_CLASSES)
    st = BlockStatistics(1, periodic, r_max, energy_ids=(1, 2), block_pixels=block).compute(ds)
    pc = PairCorrelation(r_max, periodic).compute(occ)
    assert np.array_equal(st.pair_counts, pc.pair_counts)
    assert np.array_equal(st.expected_counts, pc.expected_counts)
    nb = NeighbourCounts(periodic).compute(occ)
    assert np.array_equal(st.neighbour_counts(4), nb.counts4) and np.array_equal(st.neighbour_counts(8), nb.counts8)
    for c in (4, 8):
        cs = ClusterSizes(c, periodic).compute(occ)
        sizes, owner = st.clusters(c)
        assert np.array_equal(sizes, cs.sizes) and np.array_equal(owner, cs.sample_index)
    both = all(periodic)
    assert np.array_equal(st.self_bonds / 2 / occ[0].size, nn_pair_density(occ, both))
    terms = energy_terms(grids, both, 2, 1, 2)
    assert all(np.array_equal(st.energy_terms[k], terms[k]) for k in terms)
    sf = StructureFactor().compute(occ)
    np.testing.assert_allclose(st.sk_power.sum(axis=0) / st.shell_count / occ.sum(), sf.S, rtol=S_K_RTOL)
    np.testing.assert_allclose(st.k, sf.k, rtol=S_K_RTOL)


def test_plan_blocks_takes_whole_samples_or_rows_of_one():
    assert plan_blocks(5, (4, 5), 45) == [(0, 2, 0, 4), (2, 4, 0, 4), (4, 5, 0, 4)]
    assert plan_blocks(2, (7, 5), 15) == [(k, k + 1, r, min(7, r + 3)) for k in range(2) for r in (0, 3, 6)]
    assert plan_blocks(1, (9, 5), 15, row_multiple=2) == [(0, 1, 0, 2), (0, 1, 2, 4), (0, 1, 4, 6), (0, 1, 6, 8),
                                                           (0, 1, 8, 9)]


@pytest.fixture
def stores(tmp_path):
    """A periodic Monte Carlo-like reference and larger generated samples (L_c 2), as .npz and as zarr."""
    rng = np.random.default_rng(7)
    ref = Dataset(_grids(rng, 6, 12, 12, 0.3), MC_CLASSES,
                  {"params": {"e_nn": -1.0, "e_nl": -0.5, "mu": 0.3, "periodic": True}})
    gen = Dataset(_grids(rng, 4, 30, 28, 0.3), MC_CLASSES, {"context_range": 2})
    out = {}
    for name, ds in (("ref", ref), ("gen", gen)):
        out[name] = save_dataset(tmp_path / f"{name}.npz", ds)
        out[name + "_zarr"] = _to_zarr(ds, tmp_path / f"{name}.zarr")
    return out


def _assert_same(a, b, approx=("S_k",)):
    assert a.keys() == b.keys()
    for k in a:
        if k in approx:
            np.testing.assert_allclose(a[k], b[k], rtol=S_K_RTOL)
        elif isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("block", [60, 400])  # rows of one sample (28 columns: 2 rows); several whole samples
@pytest.mark.parametrize("periodic", [None, True])
def test_analyze_zarr_equals_npz(stores, block, periodic):
    for name in ("ref", "gen"):
        whole = analyze(open_dataset(stores[name]), periodic=periodic)
        ds = _open_recorded(stores[name + "_zarr"])
        _assert_same(analyze(ds, periodic=periodic, block_pixels=block), whole)
        H, W = ds.shape
        assert max(ds._grids.reads) <= max(block, W) + (1 + 10) * W * max(1, block // (H * W))  # block + halo rows
        assert max(ds._grids.reads) < ds.n_samples * H * W


@pytest.mark.parametrize("block", [60, 1000])
def test_compare_zarr_equals_npz(stores, block):
    args = dict(n_permutations=200, seed=3, band_rows=3)
    whole = compare_datasets(open_dataset(stores["ref"]), open_dataset(stores["gen"]), **args)
    ref, gen = _open_recorded(stores["ref_zarr"]), _open_recorded(stores["gen_zarr"])
    lazy = compare_datasets(ref, gen, block_pixels=block, **args)
    s, t = whole.summary, lazy.summary
    assert s["statistics"] == t["statistics"] and "energy" in s["statistics"] and "trend_density" in s["statistics"]
    for key in s:
        if key.startswith("S_k_") and isinstance(s[key], float):
            assert t[key] == pytest.approx(s[key], rel=S_K_RTOL), key
        else:
            assert s[key] == t[key], key
    for side in ("reference", "generated"):
        _assert_same(getattr(lazy, side), getattr(whole, side))
    np.testing.assert_array_equal(lazy.null_distances[:, :6], whole.null_distances[:, :6])
    for part in ("generated", "reference"):
        _assert_same(lazy.drift[part], whole.drift[part], approx=())
    # blocks, or one window's rows across the generated samples (12 rows of 28 columns)
    assert max(gen._grids.reads) <= max(block, 12 * 28) < gen.n_samples * 30 * 28
    assert max(ref._grids.reads) <= max(block, 12 * 12)


def test_cli_analyze_and_compare_on_zarr(stores, tmp_path):
    from mapsim.cli import main

    for name in ("npz", "zarr"):
        suffix = "" if name == "npz" else "_zarr"
        assert main(["analyze", str(stores["gen" + suffix]), "--out", str(tmp_path / f"a_{name}"),
                     "--block-pixels", "50", "--json"]) == 0
        assert main(["compare", str(stores["ref" + suffix]), str(stores["gen" + suffix]), "--out",
                     str(tmp_path / f"c_{name}"), "--permutations", "100", "--block-pixels", "50", "--json"]) == 0
    a, b = (json.loads((tmp_path / f"a_{n}" / "statistics.json").read_text()) for n in ("npz", "zarr"))
    assert {k for k in a if a[k] != b[k]} <= {"data", "files", "S_k"}
    np.testing.assert_allclose(a["S_k"], b["S_k"], rtol=S_K_RTOL)
    c, d = (json.loads((tmp_path / f"c_{n}" / "compare.json").read_text()) for n in ("npz", "zarr"))
    differ = {k for k in c if c[k] != d[k]}
    assert differ <= {"reference", "generated", "files", "reference_S_k", "generated_S_k", "S_k_distance",
                      "S_k_noise", "S_k_effect", "S_k_ratio"}
    assert c["rejected"] == d["rejected"] and c["S_k_p_adjusted"] == d["S_k_p_adjusted"]


def test_cli_compare_with_one_large_generated_sample(stores, tmp_path):
    # one generated sample (the huge-sample case): its drift standard errors are undefined, written as null
    from mapsim.cli import main

    one = _to_zarr(open_dataset(stores["gen"]).subset([0]), tmp_path / "one.zarr")
    assert main(["compare", str(stores["ref_zarr"]), str(one), "--out", str(tmp_path / "c"), "--permutations", "100",
                 "--block-pixels", "100", "--json"]) == 0
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert report["generated_samples"] == 1 and report["drift"]["generated_stderr"]["density"][0] is None


def test_training_batches_and_entropy_read_a_zarr_store_crop_by_crop(stores):
    from mapsim import data as D

    whole = open_dataset(stores["gen"])
    lazy = _open_recorded(stores["gen_zarr"])
    group = D.symmetry_group(("flips",))
    plan = D.plan_epoch(np.arange(4), 3, seed=1, epoch=2, sample_shape=(30, 28), crop=(8, 8), group_size=len(group))
    for rank in (0, 1):
        assert np.array_equal(D.batch_grids(lazy, plan, 0, (8, 8), group, rank, 2),
                              D.batch_grids(whole.grids, plan, 0, (8, 8), group, rank, 2))
    assert max(lazy._grids.reads) == 8 * 28  # one crop's rows
    assert D.marginal_entropy(lazy, 3) == D.marginal_entropy(whole.grids, 3)


@pytest.mark.parametrize("mode", ["rows", "pixels"])
def test_convergence_of_a_zarr_store_reads_its_row_sums(tmp_path, mode):
    from mapsim.cli import main
    from mapsim.zarrstore import ZarrWriter

    rng = np.random.default_rng(3)
    grids = _grids(rng, 5, 20, 9, 0.2)
    lp = np.log(rng.uniform(0.2, 1.0, grids.shape)).astype(np.float32)
    meta = {"context_range": 2}
    save_dataset(tmp_path / "g.npz", Dataset(grids, MC_CLASSES, meta, {"log_probs": lp}))
    w = ZarrWriter(tmp_path / "g.zarr", grids.shape, MC_CLASSES, meta, {"test": 1}, log_probs=mode, block_rows=3)
    w.write(0, 0, grids, lp)
    w.finish()
    for name in ("npz", "zarr"):
        assert main(["convergence", str(tmp_path / f"g.{name}"), "--out", str(tmp_path / name), "--json"]) == 0
    a, b = (json.loads((tmp_path / n / "convergence.json").read_text()) for n in ("npz", "zarr"))
    assert {k for k in a if a[k] != b[k]} <= {"dataset", "files"}


def test_training_on_a_zarr_store_equals_training_on_the_npz(tmp_path):
    # the same model, history and data fingerprint, while no read asks for more than one sample
    torch = pytest.importorskip("torch")
    from mapsim.training import TrainConfig, train

    rng = np.random.default_rng(5)
    ds = Dataset(_grids(rng, 10, 12, 10, 0.3), MC_CLASSES, {"generator": "test"})
    lazy_path = _to_zarr(ds, tmp_path / "d.zarr")
    cfg = TrainConfig(layers=2, filters=8, out_width=16, kernel=3, batch=4, lr=5e-3, epochs=2, seed=1, crop=(8, 8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = train(ds, cfg, tmp_path / "a", device="cpu")
        lazy_ds = _open_recorded(lazy_path)
        lazy = train(lazy_ds, cfg, tmp_path / "b", device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert [r["train_nll"] for r in whole.history] == [r["train_nll"] for r in lazy.history]
    assert [r["val_nll"] for r in whole.history] == [r["val_nll"] for r in lazy.history]
    assert whole.density_only_nll == lazy.density_only_nll
    a, b = whole.model.state_dict(), lazy.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert max(lazy_ds._grids.reads) <= 12 * 10  # one sample (crops read 8 of its rows)
    from mapsim.training import data_fingerprint

    assert data_fingerprint(lazy_ds) == data_fingerprint(ds)


def test_a_stored_dataset_checks_what_it_reads(tmp_path):
    from mapsim.errors import MapsimError

    grids = np.zeros((2, 6, 5), np.uint8)
    grids[1, 4, 2] = 7  # no such class
    path = _to_zarr(Dataset(np.zeros((2, 6, 5), np.uint8), MC_CLASSES), tmp_path / "bad.zarr")
    import zarr

    zarr.open_group(str(path), mode="r+")["grids"][...] = grids
    ds = open_dataset(path)
    assert ds.read(0, 2, 0, 4).shape == (2, 4, 5)  # the bad id lies in row 4
    with pytest.raises(MapsimError, match=r"bad\.zarr: 'grids' holds class id 7"):
        analyze(ds)
    assert ds.offsets is None and ds.extra_names == ()
