"""``mapsim analyze`` and ``mapsim compare``: structure statistics and fidelity reports.

Both commands load and check every input before creating the ``--out``
directory, so a bad input leaves nothing behind; every report file is
written atomically.  Neither imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from mapsim.cli.common import _jsonable, add_json_flag, emit, nonneg_int, parse_assignments, positive_int
from mapsim.errors import MapsimError

_PERIODIC_CHOICES = {"auto": None, "yes": True, "no": False}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="structure statistics of one dataset (JSON and plots)",
        description="Density, g(r) by exact lattice distance, particle-neighbour histograms, cluster sizes, "
                    "nearest-neighbour pairs, energy per site and S(k) of one class; writes statistics.json "
                    "and PNG plots into --out.",
    )
    p.add_argument("data", help="dataset .npz")
    p.add_argument("--out", required=True, help="report directory to write (created)")
    p.add_argument("--class", dest="class_name", default=None,
                   help="class to analyse, by name or id (default: particle, else id 1)")
    p.add_argument("--r-max", type=positive_int, default=None,
                   help="range of g(r) in lattice spacings (default: min(10, what the samples allow))")
    p.add_argument("--periodic", choices=sorted(_PERIODIC_CHOICES), default="auto",
                   help="sample boundary: auto reads metadata params.periodic (absent: open)")
    p.add_argument("--energy", action="append", metavar="NAME=VALUE",
                   help="Hamiltonian parameter (e_nn, e_ll, e_nl, mu, mu_n) for the energy per site; repeatable "
                        "(default: metadata params when they name any)")
    add_json_flag(p)
    p.set_defaults(func=cmd_analyze)

    c = sub.add_parser(
        "compare", help="fidelity report: distances of GEN to REF with noise floors",
        description="Distances between a reference and a generated dataset for g(r), neighbour histograms, "
                    "cluster sizes and per-sample densities, each beside its noise floor (the same distance "
                    "between random halves of the reference, rescaled to the comparison's amounts of data). "
                    "Writes compare.json, summary.md and PNG plots into --out.",
    )
    c.add_argument("reference", help="reference dataset .npz (e.g. Monte Carlo training data)")
    c.add_argument("generated", help="generated dataset .npz (may hold larger samples)")
    c.add_argument("--out", required=True, help="report directory to write (created)")
    c.add_argument("--class", dest="class_name", default=None,
                   help="class to compare, by name or id (default: particle, else id 1)")
    c.add_argument("--skip-rows", type=nonneg_int, default=None,
                   help="rows dropped from the top of generated samples (default: 2 x the model's L_c "
                        "from metadata context_range, else 0)")
    c.add_argument("--skip-rows-from", default=None, metavar="CONVERGENCE.json",
                   help="take --skip-rows from the skip_rows of a 'mapsim convergence' report")
    c.add_argument("--r-max", type=positive_int, default=None,
                   help="range of g(r) in lattice spacings (default: min(10, what both allow))")
    c.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random halves (default 0)")
    c.add_argument("--bootstrap", type=positive_int, default=None,
                   help="number of random halves for the noise floor (default 200)")
    c.add_argument("--ref-periodic", choices=sorted(_PERIODIC_CHOICES), default="auto",
                   help="reference boundary (auto: metadata params.periodic, absent: open)")
    c.add_argument("--gen-periodic", choices=sorted(_PERIODIC_CHOICES), default="auto",
                   help="generated boundary (auto: metadata; open whenever rows are skipped)")
    add_json_flag(c)
    c.set_defaults(func=cmd_compare)


def _prepare_out(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MapsimError(f"--out {out}: exists and is not a directory")
    return out


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    from mapsim.fileio import write_text_atomic

    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _save(fig, path: Path) -> None:
    from mapsim.fileio import save_figure_atomic

    save_figure_atomic(fig, path)


def cmd_analyze(args: argparse.Namespace) -> int:
    from mapsim.analysis import plots
    from mapsim.analysis.structure import ClusterSizes, Hamiltonian, analyze, is_periodic, occupancy, resolve_class
    from mapsim.lattice import load_dataset
    from mapsim.montecarlo.hamiltonian import COUPLINGS

    out = _prepare_out(args.out)
    ds = load_dataset(args.data)
    ham = None
    if args.energy:
        params = parse_assignments(args.energy, "--energy")
        unknown = set(params) - set(COUPLINGS)
        if unknown:
            raise MapsimError(f"--energy: unknown parameter(s) {sorted(unknown)}; expected {', '.join(COUPLINGS)}")
        ham = Hamiltonian.from_mapping(params)
    periodic = _PERIODIC_CHOICES[args.periodic]
    stats = analyze(ds, args.class_name, periodic=periodic, r_max=args.r_max, hamiltonian=ham)  # validates

    cid = resolve_class(ds, args.class_name)
    per = is_periodic(ds.metadata, periodic)
    occ = occupancy(ds.grids, cid)
    cl4, cl8 = ClusterSizes(4, per).compute(occ), ClusterSizes(8, per).compute(occ)
    name = stats["class"]
    files = {
        "statistics": out / "statistics.json",
        "g_r": out / "g_r.png",
        "neighbours": out / "neighbours.png",
        "distributions": out / "distributions.png",
        "structure_factor": out / "structure_factor.png",
        "examples": out / "examples.png",
    }
    report = {"data": str(args.data), **stats, "files": {k: str(v) for k, v in files.items()}}
    _write_json(files["statistics"], report)
    label = Path(args.data).name
    _save(plots.plot_g_r(stats["r"], {label: stats["g_r"]}, f"pair correlation of {name}"), files["g_r"])
    _save(plots.plot_neighbours({label: (stats["neighbours4"], stats["neighbours8"])}, f"{name} neighbours"),
          files["neighbours"])
    _save(plots.plot_distributions({4: {label: cl4.sizes}, 8: {label: cl8.sizes}}, {label: stats["densities"]}),
          files["distributions"])
    _save(plots.plot_structure_factor(stats["k"], stats["S_k"]), files["structure_factor"])
    k = min(3, ds.n_samples)
    _save(plots.plot_examples([(f"{label} #{i}", ds.grids[i]) for i in range(k)], ds.classes), files["examples"])

    summary = {
        "data": str(args.data), "out": str(out), "class": name, "periodic": stats["periodic"],
        "n_samples": stats["n_samples"], "shape": stats["shape"],
        "density_mean": stats["density_mean"], "density_std": stats["density_std"],
        "g_r_at_1": float(stats["g_r"][0]), "cluster_mean4": stats["cluster_mean4"],
        "nn_pairs_per_site": stats["nn_pairs_per_site"], "energy_per_site": stats["energy_per_site"],
        **({"energy_note": stats["energy_note"]} if stats["energy_note"] else {}),
        "files": [str(v) for v in files.values()],
    }
    emit(summary, args.json)
    return 0


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.4g}"


_STAT_LABELS = {
    "g_r": "g(r), RMS over lattice bins",
    "neighbours4": "neighbours among 4, total variation",
    "neighbours8": "neighbours among 8, total variation",
    "clusters4": "cluster sizes (4-conn.), Wasserstein",
    "clusters8": "cluster sizes (8-conn.), Wasserstein",
    "density": "per-sample density, Wasserstein",
}


def summary_markdown(summary: dict[str, Any], ref_path: str, gen_path: str) -> str:
    """The markdown report of a comparison."""
    from mapsim.analysis.compare import RATIO_WITHIN, STATS

    s = summary
    lines = [
        f"# Fidelity report: `{gen_path}` against `{ref_path}`",
        "",
        f"Class **{s['class']}**. Reference: {s['reference_samples']} samples of "
        f"{s['reference_shape'][0]}×{s['reference_shape'][1]} ({'periodic' if s['reference_periodic'] else 'open'}). "
        f"Generated: {s['generated_samples']} samples of {s['generated_shape'][0]}×{s['generated_shape'][1]}, "
        f"first {s['skip_rows']} rows dropped ({'periodic' if s['generated_periodic'] else 'open'}). "
        f"Densities and cluster sizes on {s['crop_shape'][0]}×{s['crop_shape'][1]} crops "
        f"({s['reference_crops']} reference, {s['generated_crops']} generated; clusters "
        f"{'wrap periodic edges' if s['clusters_periodic'] else 'do not wrap'}). g(r) up to r = {s['r_max']}.",
        "",
        f"Mean density: reference {_fmt(s['reference_density'])}, generated {_fmt(s['generated_density'])}.",
        "",
    ]
    if s.get("reference_fixed_count"):
        lines += [
            "Every reference sample (crop) holds the same number of particles (a fixed-N simulation), so the "
            "density noise floor is zero and any spread of the generated densities exceeds it; judge the density "
            "by the two means above.",
            "",
        ]
    lines += [
        "| statistic | distance | noise | ratio | verdict |",
        "|---|---|---|---|---|",
    ]
    for st in STATS:
        lines.append(f"| {_STAT_LABELS[st]} | {_fmt(s[st + '_distance'])} | {_fmt(s[st + '_noise'])} | "
                     f"{_fmt(s[st + '_ratio'])} | {s[st + '_verdict']} |")
    lines += [
        "",
        f"Noise: root mean square of the same distance between two random halves of the reference "
        f"({s['n_bootstrap']} splits, seed {s['seed']}), rescaled by sqrt((1/w_ref + 1/w_gen)/(1/w_half1 + 1/w_half2)) "
        f"to the comparison's amounts of data w. Verdict \"within noise\" when ratio < {RATIO_WITHIN:g}; "
        f"two datasets of one distribution still put one of the six ratios above it in roughly 2-10 % of "
        f"comparisons (measured on Monte Carlo presets), so read a single ratio just above 2 with care.",
        "",
    ]
    return "\n".join(lines)


def _skip_rows_from(path: str) -> int:
    """The ``skip_rows`` recommended by a convergence report (JSON)."""
    import json
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "convergence.json"
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MapsimError(f"--skip-rows-from {p}: file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MapsimError(f"--skip-rows-from {p}: not a JSON report ({exc})") from None
    value = report.get("skip_rows") if isinstance(report, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MapsimError(f"--skip-rows-from {p}: expected a non-negative integer skip_rows, found {value!r}")
    return value


def cmd_compare(args: argparse.Namespace) -> int:
    from mapsim.analysis import plots
    from mapsim.analysis.compare import DEFAULT_BOOTSTRAP, STATS, check_compatible, compare_datasets, \
        resolve_skip_rows
    from mapsim.analysis.structure import resolve_class
    from mapsim.lattice import load_dataset

    if args.skip_rows_from is not None:
        if args.skip_rows is not None:
            raise MapsimError("--skip-rows and --skip-rows-from exclude each other")
        args.skip_rows = _skip_rows_from(args.skip_rows_from)
    out = _prepare_out(args.out)
    ref = load_dataset(args.reference)
    gen = load_dataset(args.generated)
    check_compatible(ref, gen, args.reference, args.generated)
    resolve_class(ref, args.class_name)
    resolve_skip_rows(gen, args.skip_rows, args.generated)
    comp = compare_datasets(
        ref, gen, args.class_name, skip_rows=args.skip_rows, r_max=args.r_max, seed=args.seed,
        n_bootstrap=args.bootstrap or DEFAULT_BOOTSTRAP,
        ref_periodic=_PERIODIC_CHOICES[args.ref_periodic], gen_periodic=_PERIODIC_CHOICES[args.gen_periodic],
    )  # raises MapsimError on anything else before a file is written
    s = comp.summary
    files = {
        "json": out / "compare.json",
        "summary": out / "summary.md",
        "g_r": out / "g_r.png",
        "neighbours": out / "neighbours.png",
        "distributions": out / "distributions.png",
        "examples": out / "examples.png",
    }
    R, G = comp.reference, comp.generated
    report = {
        "reference": str(args.reference), "generated": str(args.generated), **s,
        "r": comp.r, "reference_g_r": R["g_r"], "generated_g_r": G["g_r"],
        "reference_neighbours4": R["neighbours4"], "generated_neighbours4": G["neighbours4"],
        "reference_neighbours8": R["neighbours8"], "generated_neighbours8": G["neighbours8"],
        "files": {k: str(v) for k, v in files.items()},
    }
    _write_json(files["json"], report)
    from mapsim.fileio import write_text_atomic

    write_text_atomic(files["summary"], summary_markdown(s, args.reference, args.generated))
    lr, lg = f"reference ({Path(args.reference).name})", f"generated ({Path(args.generated).name})"
    name = s["class"]
    _save(plots.plot_g_r(comp.r, {lr: R["g_r"], lg: G["g_r"]},
                         f"pair correlation of {name} (ratio {_fmt(s['g_r_ratio'])})"), files["g_r"])
    _save(plots.plot_neighbours({lr: (R["neighbours4"], R["neighbours8"]), lg: (G["neighbours4"], G["neighbours8"])},
                                f"{name} neighbours (ratios {_fmt(s['neighbours4_ratio'])}, "
                                f"{_fmt(s['neighbours8_ratio'])})"), files["neighbours"])
    _save(plots.plot_distributions({4: {lr: R["clusters4"], lg: G["clusters4"]}, 8: {lr: R["clusters8"], lg: G["clusters8"]}},
                                   {lr: R["density"], lg: G["density"]}), files["distributions"])
    k = min(2, ref.n_samples, gen.n_samples)
    panels = [(f"reference #{i}", ref.grids[i]) for i in range(k)] + [(f"generated #{i}", gen.grids[i]) for i in range(k)]
    skip = {k + i: s["skip_rows"] for i in range(k)}
    _save(plots.plot_examples(panels, ref.classes, skip), files["examples"])

    result = {"reference": str(args.reference), "generated": str(args.generated), "out": str(out),
              "class": name, "skip_rows": s["skip_rows"], "r_max": s["r_max"]}
    for st in STATS:
        for key in ("distance", "noise", "ratio", "verdict"):
            result[f"{st}_{key}"] = s[f"{st}_{key}"]
    result["files"] = [str(v) for v in files.values()]
    if args.json:
        emit(result, True)
    else:
        print(summary_markdown(s, args.reference, args.generated))
        print("wrote " + ", ".join(str(v) for v in files.values()))
    return 0
