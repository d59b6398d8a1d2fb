"""``mapsim analyze`` and ``mapsim compare``: report files, --json, bad input, no torch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mapsim.analysis.compare import RESULT_KEYS
from mapsim.cli import main
from mapsim.lattice import Dataset, save_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    ref = Dataset((rng.random((12, 16, 16)) < 0.2).astype(np.uint8), ("empty", "particle"),
                  {"params": {"periodic": True, "e_nn": -1.0}})
    gen = Dataset((rng.random((3, 40, 24)) < 0.2).astype(np.uint8), ("empty", "particle"), {"context_range": 2})
    other = Dataset(rng.integers(0, 3, (4, 16, 16)).astype(np.uint8), ("empty", "particle", "solvent"), {})
    paths = {"ref": d / "ref.npz", "gen": d / "gen.npz", "other": d / "other.npz", "corrupt": d / "corrupt.npz",
             "empty": d / "empty.npz"}
    save_dataset(paths["empty"], Dataset(np.zeros((4, 16, 16), np.uint8), ("empty", "particle"), {}))
    save_dataset(paths["ref"], ref)
    save_dataset(paths["gen"], gen)
    save_dataset(paths["other"], other)
    paths["corrupt"].write_bytes(paths["ref"].read_bytes()[:100])
    return {k: str(v) for k, v in paths.items()}


def test_compare_writes_report_and_prints_one_json_object(files, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["compare", files["ref"], files["gen"], "--out", str(out), "--permutations", "200", "--json"])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    result = json.loads(printed[0])
    assert result["skip_rows"] == 4 and result["skip_cols"] == 2  # 2 x and 1 x context_range
    report = json.loads((out / "compare.json").read_text())
    # the reference's metadata name a Hamiltonian (e_nn) and the generated samples are taller: all tests run
    assert result["statistics"] == ["g_r", "neighbours4", "neighbours8", "clusters4", "clusters8", "density", "S_k",
                                    "energy", "trend_density", "trend_contacts", "trend_energy"]
    for s in result["statistics"]:
        for key in RESULT_KEYS + ("verdict",):
            assert f"{s}_{key}" in result and f"{s}_{key}" in report
    for key in ("alpha", "permutations", "rejected", "family_reject"):
        assert result[key] == report[key]
    assert result["alpha"] == 0.05 and result["permutations"] == 200
    assert len(report["reference_g_r"]) == len(report["r"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["compare.json", "summary.md", "g_r.png", "neighbours.png", "distributions.png", "examples.png", "drift.png"])
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    md = (out / "summary.md").read_text()
    assert "| statistic | distance | noise | effect | p | p adjusted | verdict |" in md and md.count("\n| ") >= 12
    assert "Family verdict at alpha = 0.05" in md


def test_compare_text_output_and_options(files, tmp_path, capsys):
    out = tmp_path / "r2"
    assert main(["compare", files["ref"], files["ref"], "--out", str(out), "--skip-rows", "0", "--r-max", "5",
                 "--seed", "3", "--bootstrap", "100", "--alpha", "0.1", "--class", "particle"]) == 0
    text = capsys.readouterr().out
    assert "**not rejected**" in text
    report = json.loads((out / "compare.json").read_text())
    assert report["r_max"] == 5 and report["seed"] == 3 and report["g_r_ratio"] == 0.0
    assert report["permutations"] == 100 and report["alpha"] == 0.1 and report["family_reject"] is False


def test_analyze_writes_statistics_and_plots(files, tmp_path, capsys):
    out = tmp_path / "stats"
    assert main(["analyze", files["ref"], "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["periodic"] is True and result["energy_per_site"] is not None
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["class"] == "particle" and len(stats["g_r"]) == len(stats["r"]) and len(stats["neighbours8"]) == 9
    assert {p.name for p in out.glob("*.png")} == {
        "g_r.png", "neighbours.png", "distributions.png", "structure_factor.png", "examples.png"}
    assert main(["analyze", files["other"], "--out", str(tmp_path / "s2"), "--class", "solvent",
                 "--periodic", "no", "--energy", "e_nl=-2", "--energy", "mu=1"]) == 0


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["compare", "{corrupt}", "{gen}"], "corrupt"),
        (["compare", "{ref}", "{other}"], "do not match"),
        (["compare", "{ref}", "{gen}", "--skip-rows", "40"], "leaves nothing"),
        (["compare", "{ref}", "{gen}", "--class", "solvent"], "not found"),
        (["compare", "{ref}", "{gen}", "--r-max", "16"], "too large"),
        (["compare", "{ref}", "{gen}", "--alpha", "0"], "alpha"),
        (["compare", "{ref}", "{gen}", "--alpha", "1.2"], "alpha"),
        (["compare", "{ref}", "{gen}", "--alpha", "x"], "alpha"),
        (["compare", "{ref}", "{gen}", "--permutations", "99"], "at least 100"),
        (["compare", "{ref}", "{gen}", "--permutations", "many"], "permutations"),
        (["compare", "{empty}", "{gen}"], "no site holds"),
        (["compare", "{ref}", "{gen}", "--energy", "e_xx=1"], "unknown parameter"),
        (["analyze", "{corrupt}"], "corrupt"),
        (["analyze", "{ref}", "--energy", "e_xx=1"], "unknown parameter"),
        (["compare", "{ref}", "{ref}", "--out", "{ref}"], "not a directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_report(files, tmp_path, capsys, argv, fragment):
    out = tmp_path / "never"
    argv = [a.format(**files) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mapsim: error:") and fragment in err, err
    assert not out.exists()


def test_exit_status_of_the_installed_command(files, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mapsim", "compare", files["corrupt"], files["gen"],
                           "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_analysis_runs_without_torch(files, tmp_path):
    """Block torch (and check mapsim.models stays unimported) and run both commands."""
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:  # as if torch were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, BlockTorch())
        import mapsim.analysis.structure, mapsim.analysis.compare, mapsim.analysis.plots, mapsim.cli.analysis
        assert not any(m == "mapsim.models" or m.startswith("mapsim.models.") for m in sys.modules), "models imported"
        from mapsim.cli import main
        rc1 = main(["analyze", {files["ref"]!r}, "--out", {str(tmp_path / "a")!r}, "--json"])
        rc2 = main(["compare", {files["ref"]!r}, {files["gen"]!r}, "--out", {str(tmp_path / "c")!r},
                    "--permutations", "100", "--json"])
        assert rc1 == rc2 == 0
        assert not any(m == "mapsim.models" or m.startswith("mapsim.models.") for m in sys.modules), "models imported"
        assert "torch" not in sys.modules
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert (tmp_path / "c" / "compare.json").exists()


def test_skip_rows_from_a_convergence_report(files, tmp_path, capsys):
    conv = tmp_path / "conv"
    conv.mkdir()
    (conv / "convergence.json").write_text(json.dumps({"skip_rows": 7}))
    out = tmp_path / "report"
    assert main(["compare", files["ref"], files["gen"], "--out", str(out), "--permutations", "100", "--json",
                 "--skip-rows-from", str(conv)]) == 0
    assert json.loads(capsys.readouterr().out)["skip_rows"] == 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"skip_rows": -1}))
    out2 = tmp_path / "report2"
    assert main(["compare", files["ref"], files["gen"], "--out", str(out2), "--skip-rows-from", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and not out2.exists()
