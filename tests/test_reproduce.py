"""The main job at a tiny size: every stage runs, the report is written, reruns skip finished work."""

import json
import subprocess
import sys

import pytest

from mapsim.cli import main
from mapsim.errors import MapsimError
from mapsim.reproduce import pipeline
from mapsim.reproduce.config import default_config, from_toml, source_hash, to_toml
from mapsim.reproduce.pipeline import Run

TINY = """
seed = 3
quick = true
[systems.fluid-cold-repulsive]
preset = "fluid-cold-repulsive"
train_samples = 12
train_size = 12
gen_samples = 4
heldout_samples = 4
heldout_train_samples = 6
expansion_range = 1
expansion_order = 2
expansion_epochs = 1
layers = 1
filters = 4
out_width = 4
epochs = 1
batch = 4
[systems.drying]
preset = "drying"
overrides = { sweeps = 20 }
train_samples = 6
train_size = 12
gen_samples = 3
heldout_samples = 3
heldout_train_samples = 3
layers = 1
filters = 4
out_width = 4
epochs = 1
batch = 4
"""


def test_config_round_trip():
    for quick in (True, False):
        cfg = default_config(quick)
        again = from_toml(to_toml(cfg))
        assert again == cfg
    assert set(default_config(True).systems) == {"fluid-cold-repulsive", "fluid-hot-repulsive",
                                                 "fluid-hot-attractive", "drying", "drying-sparse"}
    # the 3D fluid is a full-mode system (its cost does not fit the quick budget; README)
    full = default_config(False).systems
    assert set(full) == set(default_config(True).systems) | {"fluid-hot-repulsive-3d"}
    assert full["fluid-hot-repulsive-3d"].ndim == 3 and full["fluid-hot-repulsive-3d"].preset == "fluid-hot-repulsive"
    assert all(s.ndim == 2 for n, s in full.items() if n != "fluid-hot-repulsive-3d")
    assert from_toml(TINY).systems["drying"].ndim == 2  # configurations without ndim are squares
    # every built-in budget is in epochs: no wall-clock key is left in the saved configuration
    for quick in (True, False):
        assert "minutes" not in to_toml(default_config(quick))
    assert default_config(False).systems["drying-sparse"].extra_scales == [4]


def test_config_of_the_earlier_version_loads_with_a_note():
    old = TINY.replace("epochs = 1\nbatch = 4\n[systems.drying]", "epochs = 1\nbatch = 4\ntrain_minutes = 1.25\n"
                       "[systems.drying]").replace("overrides = { sweeps = 20 }", "overrides = { sweeps = 20 }\n"
                                                   "train_minutes = 3.0")
    cfg = from_toml(old, "old.toml")
    assert cfg == from_toml(TINY) and cfg.threads == 1
    assert len(cfg.notes) == 1 and "train_minutes" in cfg.notes[0] and "ignored" in cfg.notes[0]
    assert "fluid-cold-repulsive, drying" in cfg.notes[0]


@pytest.mark.parametrize("text, fragment", [
    ("[systems.a]\npreset = 'fluid-hot-repulsive'\nndim = 4\n", "ndim must be 2"),
    ("[systems.a]\npreset = 'fluid-hot-repulsive'\nndim = true\n", "ndim must be 2"),
    ("[systems.a]\npreset = 'fluid-hot-repulsive'\nndim = 3.0\n", "ndim must be 2"),
    ("[systems.a]\npreset = 'drying'\nndim = 3\n", "solvent"),
    ("[systems.a]\npreset = 'fluid-hot-repulsive'\nndim = 3\nexpansion_range = 2\nexpansion_order = 3\n",
     "expansion_range must be 0"),
    ("[systems.a]\npreset = 'fluid-hot-repulsive'\nndim = 3\ncrop = 4\n", "crop must be 0"),
    ("seed = 0\nbogus = 1\n[systems.a]\npreset = 'drying'\n", "unknown key 'bogus'"),
    ("[systems.a]\npreset = 'nope'\n", "unknown preset"),
    ("[systems.a]\npreset = 'drying'\ntrain_size = -3\n", "train_size"),
    ("[systems.a]\npreset = 'drying'\nlayerz = 3\n", "layerz"),
    ("seed = 0\n", "at least one"),
    ("seed = [\n", "not valid TOML"),
])
def test_bad_config_is_named(text, fragment):
    with pytest.raises(MapsimError, match=fragment):
        from_toml(text)


def test_tiny_pipeline_runs_resumes_and_reports(tmp_path, monkeypatch):
    cfg = from_toml(TINY)
    out = tmp_path / "run"
    logs = []
    report = Run(cfg, out, log=logs.append).run()
    assert not any(line.startswith("[skip]") for line in logs)
    for name in ("report.md", "report.json", "config.toml", "state.json", "figures/examples.png",
                 "figures/g_r_fluid-cold-repulsive.png", "figures/neighbours_drying.png",
                 "figures/convergence_drying.png", "figures/drift_drying.png"):
        assert (out / name).exists(), name
    rep = json.loads((out / "report.json").read_text())
    models = {(r["system"], r["model"]) for r in rep["table"]}
    assert models == {("fluid-cold-repulsive", "expansion"), ("fluid-cold-repulsive", "pixelcnn"),
                      ("fluid-cold-repulsive", "density"), ("drying", "pixelcnn"), ("drying", "density")}
    # a target per PixelCNN, per fluid expansion, and per density-only model, judged by Holm across the families
    assert len(rep["targets"]) == 5 and report["targets"] == rep["targets"]
    fams = rep["families"]
    assert len(fams) == 7  # expansion, two densities, and two per PixelCNN (generated and training size)
    holm_p = sorted(f["holm_p"] for f in fams)
    assert all(a <= b for a, b in zip(holm_p, holm_p[1:]))
    for f in fams:
        assert f["family_p"] <= f["holm_p"] <= 1 and f["holm_reject"] == (f["holm_p"] <= 0.05)
    for t in rep["targets"]:
        mine = [f for f in fams if (f["system"], f["model"]) == (t["system"], t["model"])]
        met = (not any(f["holm_reject"] for f in mine)) if t["model"] != "density" else any(f["holm_reject"]
                                                                                            for f in mine)
        assert t["met"] == met
    nll = rep["systems"]["drying"]["models"]["pixelcnn"]["nll"]
    assert nll["training_size"]["shape"] == [12, 12] and nll["generated_size_interior"]["shape"] == [24, 24]
    assert nll["generated_size_interior"]["skip_rows"] == 2 * nll["context_range"]
    assert all(v["nll_nats"] > 0 and v["nll_nats_se"] >= 0 for v in (nll["training_size"],
                                                                     nll["generated_size_interior"]))
    assert "seconds" not in json.dumps(rep) and (out / "timings.json").exists()
    cmp = json.loads((out / "systems/fluid-cold-repulsive/compare_pixelcnn.json").read_text())["heldout_gen"]
    for st in cmp["statistics"]:
        p = cmp[f"{st}_p_adjusted"]
        assert (p is None and st in cmp["rejected"]) or 1 / (cmp["permutations"] + 1) <= p <= 1
        assert cmp[f"{st}_p"] is None or cmp[f"{st}_p"] <= p  # adjusting never lowers a p-value
    assert {"alpha", "permutations", "rejected", "family_reject"} <= set(cmp)
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "| fluid-cold-repulsive | 0 | 1 | 0.05 | 1 | 2 | 5 |" in md
    assert "smallest adjusted p" in md and "| g(r) | nbrs4 | nbrs8 |" in md
    # generated samples are 4x the training area; held-out MC of the generated size exists
    cmp = json.loads((out / "systems/drying/compare_pixelcnn.json").read_text())
    assert cmp["heldout_gen"]["generated_shape"] == [24, 24] and cmp["heldout_gen"]["reference_shape"] == [24, 24]
    assert cmp["heldout_train"]["reference_shape"] == [12, 12]

    # the saved configuration repeats the run; everything is skipped
    logs2 = []
    Run(from_toml((out / "config.toml").read_text()), out, log=logs2.append).run()
    assert logs2 and all(line.startswith("[skip]") for line in logs2), logs2

    # a changed setting recomputes exactly the stages it affects
    cfg.systems["drying"].gen_samples = 2
    logs3 = []
    Run(cfg, out, log=logs3.append).run()
    ran = [line for line in logs3 if line.startswith("[run ]")]
    assert ran and all("drying/" in line and ("generate" in line or "compare" in line or "convergence" in line)
                       for line in ran), ran

    # a fix in the comparison code (another source hash) recomputes the comparisons, and nothing upstream
    real = pipeline.stage_code
    monkeypatch.setattr(pipeline, "stage_code", lambda kind: real(kind) + ("-fixed" if kind == "compare" else ""))
    logs5 = []
    Run(cfg, out, log=logs5.append).run()
    ran = [line for line in logs5 if line.startswith("[run ]")]
    assert len(ran) == 5 and all("/compare " in line for line in ran), ran
    monkeypatch.undo()

    # a changed training setting retrains from scratch (the old run directory cannot be resumed)
    cfg.systems["drying"].epochs = 2
    logs4 = []
    Run(cfg, out, log=logs4.append).run()
    assert any("drying/train PixelCNN" in line and line.startswith("[done]") for line in logs4), logs4
    metrics = (out / "systems/drying/pixelcnn/metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2


def test_cli_bad_config_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[systems.x]\npreset = 'drying'\nepochs = 0\n")
    out = tmp_path / "o"
    assert main(["reproduce", "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs" in err[0] and str(bad) in err[0]
    assert not out.exists()
    assert main(["reproduce", "--config", str(tmp_path / "absent.toml"), "--out", str(out)]) == 2


def test_source_hash_follows_the_code(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "analysis").mkdir(parents=True)
    (pkg / "montecarlo").mkdir()
    (pkg / "reproduce").mkdir()
    for f in ("__init__.py", "errors.py", "analysis/compare.py", "montecarlo/engine.py", "reproduce/pipeline.py"):
        (pkg / f).write_text(f"# {f}\n")
    before = source_hash(("analysis",), str(pkg))
    assert len(before) == 16 and before != source_hash(("montecarlo",), str(pkg))
    (pkg / "montecarlo" / "engine.py").write_text("# changed\n")
    source_hash.cache_clear()
    assert source_hash(("analysis",), str(pkg)) == before  # another part's edit does not matter
    (pkg / "analysis" / "compare.py").write_text("# a fix\n")
    source_hash.cache_clear()
    assert source_hash(("analysis",), str(pkg)) != before
    (pkg / "analysis" / "compare.py").write_text("# analysis/compare.py\n")
    (pkg / "errors.py").write_text("# the ground floor changed\n")
    source_hash.cache_clear()
    assert source_hash(("analysis",), str(pkg)) != before  # every stage depends on the ground floor


def test_report_does_not_import_the_pipeline():
    code = ("import sys, mapsim.reproduce.report; "
            "assert 'mapsim.reproduce.pipeline' not in sys.modules, 'report imports the pipeline'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _contents(path):
    """A file's bytes; for .npz datasets the arrays (the zip container stamps the write time)."""
    import numpy as np

    if path.suffix != ".npz":
        return path.read_bytes()
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].tobytes() + str(z[k].dtype).encode() + str(z[k].shape).encode() for k in z.files}


def test_same_config_seed_and_threads_give_the_same_bytes(tmp_path):
    """Two runs of one configuration: byte-identical models, samples and report.json (timings apart)."""
    text = "seed = 1\nthreads = 1\n" + TINY[TINY.index("[systems.drying]"):].replace(
        "train_samples = 6", "train_samples = 5\nextra_scales = [3]\nheldout_box = 2")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        Run(from_toml(text), out, log=lambda _: None).run()
        runs.append(out)
    a, b = runs
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    timed = {"timings.json", "report.md", "state.json", "metrics.jsonl"}  # wall-clock times are only here
    checked = [f for f in files if f.name not in timed and f.suffix != ".png"]
    assert {"report.json", "best.pt", "last.pt", "gen_pixelcnn.npz", "train.npz", "density.pt"} <= {f.name for f in checked}
    differ = [str(f) for f in checked if _contents(a / f) != _contents(b / f)]
    assert not differ, differ
    assert json.loads((a / "timings.json").read_text())["threads"] == 1
    # the extra scale: PixelCNN samples of 3x the training side against held-out Monte Carlo of that size
    rep = json.loads((a / "report.json").read_text())
    scale = rep["systems"]["drying"]["scales"]["3"]
    assert scale["size"] == 36 and scale["compare"]["heldout_gen"]["reference_shape"] == [36, 36]
    assert scale["nll"]["generated_size_interior"]["shape"] == [36, 36]
    assert {(f["size"], f["reference"]) for f in rep["families"] if f["model"] == "pixelcnn"} == {
        (24, "generated size"), (24, "training size, with drift"), (36, "generated size"),
        (36, "training size, with drift")}
    assert (a / "systems/drying/gen_pixelcnn_x3.npz").exists() and (a / "figures/drift_drying_x3.png").exists()


def test_heldout_box_keeps_the_top_left_window_of_a_larger_periodic_box(tmp_path):
    """heldout_box = 3: the reference is the window of the box simulated with the same seed, recorded as open."""
    import numpy as np

    from mapsim.lattice import load_dataset, periodic_axes
    from mapsim.montecarlo import preset_params, simulate

    cfg = from_toml(TINY.replace("heldout_train_samples = 3", "heldout_train_samples = 3\nheldout_box = 3"))
    s = cfg.systems["drying"]
    assert s.heldout_box == 3 and cfg.systems["fluid-cold-repulsive"].heldout_box == 1
    assert from_toml(to_toml(cfg)).systems["drying"].heldout_box == 3
    run = Run(cfg, tmp_path / "run", log=lambda _: None)
    info = run._simulate(s, 2, 8, 5, tmp_path / "w.npz", box=3)
    assert info["box"] == 24
    win = load_dataset(tmp_path / "w.npz")
    box = simulate(preset_params(s.preset, s.overrides), 2, 24, 24, seed=5)
    assert win.grids.shape == (2, 8, 8) and np.array_equal(win.grids, box.grids[:, :8, :8])
    assert periodic_axes(win.metadata) == (False, False) and periodic_axes(box.metadata) == (True, True)
    assert win.metadata["window_of_box"]["box"] == [24, 24] and win.metadata["height"] == 8


def test_heldout_box_of_cubes_keeps_the_corner_cube(tmp_path):
    """ndim = 3: the reference is the corner cube of a periodic cube box k x the side, recorded as open."""
    import numpy as np

    from mapsim.lattice import load_dataset, periodic_axes
    from mapsim.montecarlo import preset_params, simulate

    s = from_toml(TINY_3D).systems["cubes"]
    run = Run(from_toml(TINY_3D), tmp_path / "run", log=lambda _: None)
    assert run._simulate(s, 2, 4, 5, tmp_path / "w.npz", box=2)["box"] == 8
    win = load_dataset(tmp_path / "w.npz")
    box = simulate(preset_params(s.preset, s.overrides), 2, 8, 8, seed=5, depth=8)
    assert win.grids.shape == (2, 4, 4, 4) and np.array_equal(win.grids, box.grids[:, :4, :4, :4])
    assert periodic_axes(win.metadata, ndim=3) == (False, False, False)
    assert win.metadata["window_of_box"]["box"] == [8, 8, 8] and win.metadata["depth"] == 4


@pytest.mark.parametrize("bad", ["heldout_box = 0", "heldout_box = 1.5"])
def test_bad_heldout_box_is_named(bad):
    with pytest.raises(MapsimError, match="heldout_box"):
        from_toml(TINY.replace("heldout_train_samples = 3", "heldout_train_samples = 3\n" + bad))


def test_drying_sparse_is_drying_at_1_5_percent():
    """The paper's failure case changes the particle density only (couplings, mu, T, age, schedule as drying)."""
    import dataclasses

    from mapsim.montecarlo import preset_params
    from mapsim.montecarlo.params import PROTOCOL_PRESETS

    dense, sparse = dataclasses.asdict(preset_params("drying")), dataclasses.asdict(preset_params("drying-sparse"))
    assert {k for k in dense if dense[k] != sparse[k]} == {"density"} and sparse["density"] == 0.015
    assert "drying-sparse" in PROTOCOL_PRESETS


TINY_3D = """
seed = 2
threads = 1
permutations = 200
[systems.cubes]
preset = "fluid-hot-repulsive"
ndim = 3
train_samples = 6
train_size = 6
gen_samples = 3
heldout_samples = 3
heldout_train_samples = 4
layers = 1
filters = 4
out_width = 4
epochs = 1
batch = 4
"""


def test_tiny_3d_system_runs_reports_and_repeats_byte_for_byte(tmp_path):
    """A system of cubes: MC cubes, 3D PixelCNN, volumes of 2x the side, the 3D verdict, plane convergence."""
    cfg = from_toml(TINY_3D)
    assert from_toml(to_toml(cfg)) == cfg and cfg.systems["cubes"].ndim == 3
    runs = []
    for name in ("a", "b"):
        Run(from_toml(TINY_3D), tmp_path / name, log=lambda _: None).run()
        runs.append(tmp_path / name)
    a, b = runs
    for f in ("figures/slices_cubes.png", "figures/convergence_cubes.png", "figures/neighbours_cubes.png"):
        assert (a / f).exists(), f
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    timed = {"timings.json", "report.md", "state.json", "metrics.jsonl"}
    checked = [f for f in files if f.name not in timed and f.suffix != ".png"]
    assert {"report.json", "best.pt", "gen_pixelcnn.npz", "gen_density.npz", "train.npz"} <= {f.name for f in checked}
    assert not [str(f) for f in checked if _contents(a / f) != _contents(b / f)]

    from mapsim.lattice import load_dataset

    d = a / "systems/cubes"
    assert load_dataset(d / "train.npz").grids.shape == (6, 6, 6, 6)
    assert load_dataset(d / "heldout_gen.npz").grids.shape == (3, 12, 12, 12)
    for label in ("pixelcnn", "density"):
        gen = load_dataset(d / f"gen_{label}.npz")
        assert gen.grids.shape == (3, 12, 12, 12) and gen.extras["log_probs"].shape == (3, 12, 12, 12)
    rep = json.loads((a / "report.json").read_text())
    assert {(r["system"], r["model"]) for r in rep["table"]} == {("cubes", "pixelcnn"), ("cubes", "density")}
    assert {(f["model"], f["size"], f["ndim"], f["reference"]) for f in rep["families"]} == {
        ("pixelcnn", 12, 3, "generated size"), ("pixelcnn", 12, 3, "training size"), ("density", 12, 3, "generated size")}
    assert len(rep["targets"]) == 2
    cmp = json.loads((d / "compare_pixelcnn.json").read_text())
    lc = rep["systems"]["cubes"]["models"]["pixelcnn"]["generate"]["context_range"]
    assert cmp["heldout_gen"]["ndim"] == 3 and cmp["heldout_gen"]["reference_shape"] == [12, 12, 12]
    assert cmp["heldout_gen"]["skip_planes"] == 2 * lc and cmp["heldout_train"]["reference_shape"] == [6, 6, 6]
    assert {"neighbours6", "neighbours26", "clusters6", "clusters26"} <= set(cmp["heldout_gen"]["statistics"])
    assert cmp["heldout_train"]["drift"] is None
    nll = rep["systems"]["cubes"]["models"]["pixelcnn"]["nll"]
    assert nll["training_size"]["shape"] == [6, 6, 6] and nll["generated_size_interior"]["shape"] == [12, 12, 12]
    assert nll["generated_size_interior"]["skip_planes"] == 2 * lc and nll["generated_size_interior"]["skip_rows"] == lc
    conv = rep["systems"]["cubes"]["convergence"]
    assert conv["unit"] == "plane" and conv["volume_shape"] == [12, 12, 12] and len(conv["row_logp_mean"]) == 12
    md = (a / "report.md").read_text()
    assert "| cubes | Gated PixelCNN | 12³ | generated size |" in md and "| nbrs6 | nbrs26 |" in md
    assert "![slices cubes](figures/slices_cubes.png)" in md and "Plane convergence" in md
