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

from mapsim.cli import exchange as _exchange
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
    p.add_argument("data", help="dataset .npz, or a zarr store (NAME.zarr, read block by block)")
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
    _add_block_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_analyze)

    c = sub.add_parser(
        "compare", help="fidelity verdict: permutation tests of GEN against REF on every statistic",
        description="Two-sample permutation tests between a reference and a generated dataset on windows of the "
                    "reference's sample shape: g(r), neighbour histograms, cluster sizes, densities, S(k), the "
                    "energy per site when a Hamiltonian is known, and the drift from the generated samples' top "
                    "boundary; one family verdict (Westfall-Young max-T step-down) at --alpha. Writes compare.json, "
                    "summary.md and PNG plots into --out.",
    )
    c.add_argument("reference", nargs="+",
                   help="reference dataset .npz (e.g. Monte Carlo training data), or structure files (MD dumps)")
    c.add_argument("generated", help="generated dataset .npz or zarr store (may hold larger samples)")
    c.add_argument("--out", required=True, help="report directory to write (created)")
    c.add_argument("--class", dest="class_name", default=None,
                   help="class to compare, by name or id (default: particle, else id 1)")
    c.add_argument("--skip-rows", type=nonneg_int, default=None,
                   help="rows dropped from the top of generated samples (default: 2 x the model's L_c "
                        "from metadata context_range, else 0)")
    c.add_argument("--skip-rows-from", default=None, metavar="CONVERGENCE.json",
                   help="take --skip-rows from the skip_rows of a 'mapsim convergence' report")
    c.add_argument("--skip-cols", type=nonneg_int, default=None,
                   help="columns dropped at each side of generated samples (default: the model's L_c, else 0)")
    c.add_argument("--skip-planes", type=nonneg_int, default=None,
                   help="3-D data: planes dropped at the start of generated volumes (default 2 x the model's L_c, "
                        "else 0); --skip-rows/--skip-cols then drop rows/columns at each side (default L_c)")
    c.add_argument("--r-max", type=positive_int, default=None,
                   help="range of g(r) in lattice spacings (default: min(10, what the windows allow))")
    c.add_argument("--permutations", default=None, metavar="N",
                   help="random relabellings of the samples (default 1000, at least 100)")
    c.add_argument("--bootstrap", default=None, metavar="N", help=argparse.SUPPRESS)  # old name of --permutations
    c.add_argument("--alpha", default=None, metavar="A",
                   help="family-wise error rate of the verdict, in (0, 1) (default 0.05)")
    c.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the window choice, relabellings and sign flips (default 0)")
    c.add_argument("--energy", action="append", metavar="NAME=VALUE",
                   help="Hamiltonian parameter (e_nn, e_ll, e_nl, mu, mu_n) for the energy per site; repeatable "
                        "(default: the reference metadata's params when they name any)")
    c.add_argument("--band-rows", type=positive_int, default=None,
                   help="rows per drift band (default: the model's L_c, else 4)")
    c.add_argument("--ref-periodic", choices=sorted(_PERIODIC_CHOICES), default="auto",
                   help="reference boundary (auto: metadata params.periodic, absent: open)")
    c.add_argument("--gen-periodic", choices=sorted(_PERIODIC_CHOICES), default="auto",
                   help="generated boundary (auto: metadata; open whenever rows or columns are skipped)")
    _exchange.add_compare_atoms_options(c)
    _add_block_flag(c)
    add_json_flag(c)
    c.set_defaults(func=cmd_compare)


def _add_block_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-pixels", type=positive_int, default=None, metavar="N",
                   help="pixels read and analysed at a time (default 1048576, about 100 MB of work arrays): whole "
                        "samples, or row blocks of a larger one; a zarr store is never read whole")


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
    import numpy as np

    from mapsim.analysis import plots
    from mapsim.analysis.blockwise import preview
    from mapsim.analysis.blockwise import analyze
    from mapsim.analysis.structure import Hamiltonian
    from mapsim.lattice import open_dataset
    from mapsim.montecarlo.hamiltonian import COUPLINGS

    out = _prepare_out(args.out)
    ds = open_dataset(args.data)
    ham = None
    if args.energy:
        params = parse_assignments(args.energy, "--energy")
        unknown = set(params) - set(COUPLINGS)
        if unknown:
            raise MapsimError(f"--energy: unknown parameter(s) {sorted(unknown)}; expected {', '.join(COUPLINGS)}")
        ham = Hamiltonian.from_mapping(params)
    periodic = _PERIODIC_CHOICES[args.periodic]
    if ds.ndim == 3:
        return _analyze_3d(args, ds, out, periodic, ham)
    stats = analyze(ds, args.class_name, periodic=periodic, r_max=args.r_max, hamiltonian=ham,
                    block_pixels=args.block_pixels)  # validates
    extras = getattr(ds, "extras", {})  # a zarr store's other arrays are not read
    name = stats["class"]
    files = {
        "statistics": out / "statistics.json",
        "g_r": out / "g_r.png",
        "neighbours": out / "neighbours.png",
        "distributions": out / "distributions.png",
        "structure_factor": out / "structure_factor.png",
        "examples": out / "examples.png",
    }
    if "energy_trace" in extras and "trace_sweeps" in ds.metadata:  # Monte Carlo data: the run's energies
        files["energy_trace"] = out / "energy_trace.png"
    report = {"data": str(args.data), **stats, "files": {k: str(v) for k, v in files.items()}}
    _write_json(files["statistics"], report)
    label = Path(args.data).name
    _save(plots.plot_g_r(stats["r"], {label: stats["g_r"]}, f"pair correlation of {name}"), files["g_r"])
    _save(plots.plot_neighbours({label: (stats["neighbours4"], stats["neighbours8"])}, f"{name} neighbours"),
          files["neighbours"])
    _save(plots.plot_distributions({c: {label: stats[f"cluster_sizes{c}"]} for c in (4, 8)},
                                   {label: stats["densities"]}, size_counts=True), files["distributions"])
    _save(plots.plot_structure_factor(stats["k"], stats["S_k"]), files["structure_factor"])
    k = min(3, ds.n_samples)
    _save(plots.plot_examples([_panel(f"{label} #{i}", preview(ds, i)) for i in range(k)], ds.classes),
          files["examples"])
    if "energy_trace" in files:
        _save(plots.plot_energy_traces(ds.metadata["trace_sweeps"], extras["energy_trace"],
                                       f"energy traces of {label}"), files["energy_trace"])

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


def _panel(title: str, image_step: tuple) -> tuple[str, Any]:
    """A picture panel from :func:`mapsim.analysis.blockwise.preview` (the title names a thinned sample)."""
    image, step = image_step
    return (title if step == 1 else f"{title} (every {step}th pixel)", image)


def _analyze_3d(args: argparse.Namespace, ds, out: Path, periodic: bool | None, ham) -> int:
    """``mapsim analyze`` of 3-D samples: statistics.json, g(r), neighbours (6, 26), clusters, S(k), slices."""
    from mapsim.analysis import plots
    from mapsim.analysis.structure3d import ClusterSizes3D, analyze3d, occupancy3d

    stats = analyze3d(ds, args.class_name, periodic=periodic, r_max=args.r_max, hamiltonian=ham)  # validates
    per = tuple(stats["periodic"]) if isinstance(stats["periodic"], list) else stats["periodic"]
    occ = occupancy3d(ds.grids, stats["class_id"])
    cl6, cl26 = ClusterSizes3D(6, per).compute(occ), ClusterSizes3D(26, per).compute(occ)
    name, label = stats["class"], Path(args.data).name
    files = {k: out / f for k, f in (("statistics", "statistics.json"), ("g_r", "g_r.png"),
                                     ("neighbours", "neighbours.png"), ("distributions", "distributions.png"),
                                     ("structure_factor", "structure_factor.png"), ("slices", "slices.png"))}
    if "energy_trace" in ds.extras and "trace_sweeps" in ds.metadata:
        files["energy_trace"] = out / "energy_trace.png"
    _write_json(files["statistics"], {"data": str(args.data), **stats, "files": {k: str(v) for k, v in files.items()}})
    _save(plots.plot_g_r(stats["r"], {label: stats["g_r"]}, f"pair correlation of {name} (cubic lattice)"),
          files["g_r"])
    _save(plots.plot_neighbours({label: (stats["neighbours6"], stats["neighbours26"])}, f"{name} neighbours",
                                sizes=(6, 26)), files["neighbours"])
    _save(plots.plot_distributions({6: {label: cl6.sizes}, 26: {label: cl26.sizes}}, {label: stats["densities"]}),
          files["distributions"])
    _save(plots.plot_structure_factor(stats["k"], stats["S_k"]), files["structure_factor"])
    depth = ds.spatial_shape[0]
    planes = sorted({0, depth // 2, depth - 1})
    _save(plots.plot_examples([(f"{label} #0, plane z={z}", ds.grids[0, z]) for z in planes], ds.classes),
          files["slices"])
    if "energy_trace" in files:
        _save(plots.plot_energy_traces(ds.metadata["trace_sweeps"], ds.extras["energy_trace"],
                                       f"energy traces of {label}"), files["energy_trace"])
    summary = {
        "data": str(args.data), "out": str(out), "class": name, "ndim": 3, "periodic": stats["periodic"],
        "n_samples": stats["n_samples"], "shape": stats["shape"], "density_mean": stats["density_mean"],
        "density_std": stats["density_std"], "g_r_at_1": float(stats["g_r"][0]),
        "cluster_mean6": stats["cluster_mean6"], "nn_pairs_per_site": stats["nn_pairs_per_site"],
        "energy_per_site": stats["energy_per_site"],
        **({"energy_note": stats["energy_note"]} if stats["energy_note"] else {}),
        "files": [str(v) for v in files.values()],
    }
    emit(summary, args.json)
    return 0


def _compare_volumes(args: argparse.Namespace, ref, gen, out: Path, n_perm: int, alpha: float, ham) -> int:
    """``mapsim compare`` of 3-D datasets (:func:`mapsim.analysis.compare3d.compare_volumes`)."""
    from mapsim.analysis import plots
    from mapsim.analysis.compare import RESULT_KEYS
    from mapsim.analysis.compare3d import compare_volumes
    from mapsim.fileio import write_text_atomic
    from mapsim.lattice import check_length_units, length_unit_of

    if args.band_rows is not None:
        raise MapsimError("--band-rows: the drift tests are 2-D only; these datasets hold 3-D samples")
    check_length_units(length_unit_of(ref.metadata), length_unit_of(gen.metadata), args.reference, args.generated)
    comp = compare_volumes(
        ref, gen, args.class_name, skip_planes=args.skip_planes, skip_rows=args.skip_rows, skip_cols=args.skip_cols,
        r_max=args.r_max, seed=args.seed, n_permutations=n_perm, alpha=alpha, hamiltonian=ham,
        ref_periodic=_PERIODIC_CHOICES[args.ref_periodic], gen_periodic=_PERIODIC_CHOICES[args.gen_periodic],
        ref_name=str(args.reference), gen_name=str(args.generated))  # raises before a file is written
    s, R, G = comp.summary, comp.reference, comp.generated
    files = {"json": out / "compare.json", "summary": out / "summary.md", "g_r": out / "g_r.png",
             "neighbours": out / "neighbours.png", "distributions": out / "distributions.png",
             "slices": out / "slices.png"}
    report = {"reference": str(args.reference), "generated": str(args.generated), **s, "r": comp.r,
              "reference_g_r": R["g_r"], "generated_g_r": G["g_r"],
              **{f"{side}_neighbours{c}": E[f"neighbours{c}"] for side, E in (("reference", R), ("generated", G))
                 for c in (6, 26)},
              "k": comp.k, "reference_S_k": R["S_k"], "generated_S_k": G["S_k"],
              "files": {k: str(v) for k, v in files.items()}}
    _write_json(files["json"], report)
    text = summary_markdown(s, args.reference, args.generated)
    write_text_atomic(files["summary"], text)
    lr, lg = f"reference ({Path(args.reference).name})", f"generated ({Path(args.generated).name})"
    name = s["class"]
    _save(plots.plot_g_r(comp.r, {lr: R["g_r"], lg: G["g_r"]},
                         f"pair correlation of {name} (p_adj {_fmt(s.get('g_r_p_adjusted'))})"), files["g_r"])
    _save(plots.plot_neighbours({lr: (R["neighbours6"], R["neighbours26"]), lg: (G["neighbours6"], G["neighbours26"])},
                                f"{name} neighbours", sizes=(6, 26)), files["neighbours"])
    _save(plots.plot_distributions({6: {lr: R["clusters6"], lg: G["clusters6"]},
                                    26: {lr: R["clusters26"], lg: G["clusters26"]}},
                                   {lr: R["density"], lg: G["density"]}), files["distributions"])
    # the middle plane of reference sample 0 beside the middle interior plane of generated sample 0
    zr, zg = ref.spatial_shape[0] // 2, (s["skip_planes"] + gen.spatial_shape[0]) // 2
    _save(plots.plot_examples([(f"reference #0, plane z={zr}", ref.grids[0, zr]),
                               (f"generated #0, plane z={zg}", gen.grids[0, zg])], ref.classes), files["slices"])
    result = {"reference": str(args.reference), "generated": str(args.generated), "out": str(out), "class": name,
              "ndim": 3, "skip_planes": s["skip_planes"], "skip_rows": s["skip_rows"], "skip_cols": s["skip_cols"],
              "r_max": s["r_max"], "alpha": s["alpha"], "permutations": s["permutations"],
              "statistics": s["statistics"]}
    for st in s["statistics"]:
        for key in RESULT_KEYS + ("verdict",):
            result[f"{st}_{key}"] = s[f"{st}_{key}"]
    result.update({"rejected": s["rejected"], "family_reject": s["family_reject"],
                   "files": [str(v) for v in files.values()]})
    if args.json:
        emit(result, True)
    else:
        print(text)
        print("wrote " + ", ".join(str(v) for v in files.values()))
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
    "neighbours6": "neighbours among 6, total variation",
    "neighbours26": "neighbours among 26, total variation",
    "clusters6": "cluster sizes (6-conn.), Wasserstein",
    "clusters26": "cluster sizes (26-conn.), Wasserstein",
    "clusters4": "cluster sizes (4-conn.), Wasserstein",
    "clusters8": "cluster sizes (8-conn.), Wasserstein",
    "density": "window densities, Wasserstein",
    "S_k": "S(k), RMS over |k| shells",
    "energy": "energy per site, |difference of means|",
    "trend_density": "drift of the density, |mean slope| per row",
    "trend_contacts": "drift of contacts per site, |mean slope| per row",
    "trend_energy": "drift of the energy per site, |mean slope| per row",
}


def _dims(shape) -> str:
    return "×".join(str(v) for v in shape)


def summary_markdown(summary: dict[str, Any], ref_path: str, gen_path: str) -> str:
    """The markdown report of a comparison."""
    s = summary
    verdict = ("**rejected**: the generated set differs from the reference in " + ", ".join(s["rejected"])
               if s["family_reject"] else "**not rejected**: no statistic differs from the reference")
    lines = [
        f"# Fidelity report: `{gen_path}` against `{ref_path}`",
        "",
        f"Family verdict at alpha = {s['alpha']:g}: {verdict} (Westfall-Young max-T step-down over "
        f"{s['permutations']} seeded draws, seed {s['seed']}).",
        "",
        f"Class **{s['class']}**. Reference: {s['reference_samples']} samples of "
        f"{_dims(s['reference_shape'])} ({'periodic' if s['reference_periodic'] else 'open'}). "
        f"Generated: {s['generated_samples']} samples of {_dims(s['generated_shape'])}, "
        + (f"first {s['skip_planes']} planes, " if "skip_planes" in s else "first ")
        + f"{s['skip_rows']} rows and {s['skip_cols']} columns at each side dropped. Units: whole samples, each "
        f"carrying {s['windows_per_sample']} window(s) of {_dims(s['window_shape'])} "
        f"({'periodic' if s['windows_periodic'] else 'open'}); g(r) up to r = {s['r_max']}.",
        "",
        f"Mean density: reference {_fmt(s['reference_density'])}, generated {_fmt(s['generated_density'])}.",
        "",
    ]
    if s.get("reference_fixed_count"):
        lines += [
            "Every reference sample holds the same number of particles (a fixed-N simulation), so the density is "
            "tested one-sample: the generated windows' mean density against the reference windows' mean, with the "
            "generated samples' own spread as the null (a MAP is not canonical; its fluctuations are expected).",
            "",
        ]
    others = [x for x in s.get("fixed_in_reference", []) if x != "density"]
    if others:
        lines += [f"No spread in the reference for {', '.join(others)}: tested one-sample the same way.", ""]
    if s.get("energy_note"):
        lines += [f"Energy per site: {s['energy_note']}.", ""]
    lines += [
        "| statistic | distance | noise | effect | p | p adjusted | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in s["statistics"]:
        lines.append(f"| {_STAT_LABELS.get(st, st)} | {_fmt(s[st + '_distance'])} | {_fmt(s[st + '_noise'])} | "
                     f"{_fmt(s[st + '_effect'])} | {_fmt(s[st + '_p'])} | {_fmt(s[st + '_p_adjusted'])} | "
                     f"{s[st + '_verdict']} |")
    lines += [
        "",
        "Noise: root mean square of the distance over the null draws (relabellings of whole samples between the "
        "two sides; sign flips for one-sample and drift tests); effect = distance / noise. p: raw permutation "
        "p-value; p adjusted: family-wise (max-T step-down), compared with alpha.",
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


def _compare_settings(args: argparse.Namespace) -> tuple[int, float, dict[str, float] | None]:
    """Checked --permutations, --alpha and --energy (one-line errors, before any file is read)."""
    from mapsim.analysis.compare import DEFAULT_ALPHA, DEFAULT_PERMUTATIONS, check_alpha, check_permutations

    if args.permutations is not None and args.bootstrap is not None:
        raise MapsimError("--permutations and --bootstrap (its old name) exclude each other")
    text = args.permutations if args.permutations is not None else args.bootstrap
    try:
        n_perm = DEFAULT_PERMUTATIONS if text is None else int(text)
    except ValueError:
        raise MapsimError(f"--permutations: expected an integer of at least 100, found {text!r}") from None
    try:
        check_permutations(n_perm)
        alpha = DEFAULT_ALPHA if args.alpha is None else float(args.alpha)
        check_alpha(alpha)
    except ValueError:
        raise MapsimError(f"--alpha: expected a number in (0, 1), found {args.alpha!r}") from None
    except MapsimError as exc:
        raise MapsimError(f"--{exc}") from None
    ham = None
    if args.energy:
        from mapsim.analysis.compare import HAMILTONIAN_KEYS

        params = parse_assignments(args.energy, "--energy")
        unknown = set(params) - set(HAMILTONIAN_KEYS)
        if unknown:
            raise MapsimError(f"--energy: unknown parameter(s) {sorted(unknown)}; expected "
                              f"{', '.join(HAMILTONIAN_KEYS)}")
        ham = {}
        for k, v in params.items():
            try:
                ham[k] = float(v)
            except ValueError:
                raise MapsimError(f"--energy {k}: expected a number, found {v!r}") from None
    return n_perm, alpha, ham


def cmd_compare(args: argparse.Namespace) -> int:
    from mapsim.analysis import plots
    from mapsim.analysis.compare import RESULT_KEYS, check_compatible, compare_datasets, resolve_skip_cols, \
        resolve_skip_rows
    from mapsim.analysis.blockwise import preview
    from mapsim.analysis.structure import resolve_class
    from mapsim.lattice import check_length_units, length_unit_of, open_dataset

    if args.skip_rows_from is not None:
        if args.skip_rows is not None:
            raise MapsimError("--skip-rows and --skip-rows-from exclude each other")
        args.skip_rows = _skip_rows_from(args.skip_rows_from)
    n_perm, alpha, ham = _compare_settings(args)
    if _exchange.wants_atoms(args):  # structure files, or a reference with positions: statistics of the atoms
        return _exchange.compare_atoms_from_compare(args, n_perm, alpha)
    args.reference = args.reference[0]
    out = _prepare_out(args.out)
    ref = open_dataset(args.reference)
    gen = open_dataset(args.generated)
    if ref.ndim == 3 or gen.ndim == 3:
        return _compare_volumes(args, ref, gen, out, n_perm, alpha, ham)
    if args.skip_planes is not None:
        raise MapsimError("--skip-planes applies to 3-D datasets; these hold 2-D samples")
    check_compatible(ref, gen, args.reference, args.generated)
    check_length_units(length_unit_of(ref.metadata), length_unit_of(gen.metadata), args.reference, args.generated)
    note = majority_note(ref, resolve_class(ref, args.class_name))
    resolve_skip_rows(gen, args.skip_rows, args.generated)
    resolve_skip_cols(gen, args.skip_cols, args.generated)
    comp = compare_datasets(
        ref, gen, args.class_name, skip_rows=args.skip_rows, skip_cols=args.skip_cols, r_max=args.r_max,
        seed=args.seed, n_permutations=n_perm, alpha=alpha, hamiltonian=ham, band_rows=args.band_rows,
        ref_periodic=_PERIODIC_CHOICES[args.ref_periodic], gen_periodic=_PERIODIC_CHOICES[args.gen_periodic],
        block_pixels=args.block_pixels,
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
    if comp.drift:
        files["drift"] = out / "drift.png"
    R, G = comp.reference, comp.generated
    report = {
        "reference": str(args.reference), "generated": str(args.generated), **s,
        "r": comp.r, "reference_g_r": R["g_r"], "generated_g_r": G["g_r"],
        "reference_neighbours4": R["neighbours4"], "generated_neighbours4": G["neighbours4"],
        "reference_neighbours8": R["neighbours8"], "generated_neighbours8": G["neighbours8"],
        "k": comp.k, "reference_S_k": R["S_k"], "generated_S_k": G["S_k"],
        "drift": comp.drift or None,
        "files": {k: str(v) for k, v in files.items()},
    }
    _write_json(files["json"], report)
    from mapsim.fileio import write_text_atomic

    write_text_atomic(files["summary"], summary_markdown(s, args.reference, args.generated))
    lr, lg = f"reference ({Path(args.reference).name})", f"generated ({Path(args.generated).name})"
    name = s["class"]
    _save(plots.plot_g_r(comp.r, {lr: R["g_r"], lg: G["g_r"]},
                         f"pair correlation of {name} (p_adj {_fmt(s['g_r_p_adjusted'])})"), files["g_r"])
    _save(plots.plot_neighbours({lr: (R["neighbours4"], R["neighbours8"]), lg: (G["neighbours4"], G["neighbours8"])},
                                f"{name} neighbours (p_adj {_fmt(s['neighbours4_p_adjusted'])}, "
                                f"{_fmt(s['neighbours8_p_adjusted'])})"), files["neighbours"])
    _save(plots.plot_distributions({4: {lr: R["clusters4"], lg: G["clusters4"]}, 8: {lr: R["clusters8"], lg: G["clusters8"]}},
                                   {lr: R["density"], lg: G["density"]}), files["distributions"])
    k = min(2, ref.n_samples, gen.n_samples)
    shown = [(f"{side} #{i}", preview(ds, i)) for side, ds in (("reference", ref), ("generated", gen))
             for i in range(k)]
    panels = [_panel(title, image_step) for title, image_step in shown]
    skip = {k + i: s["skip_rows"] / shown[k + i][1][1] for i in range(k)}  # in the thinned picture's rows
    _save(plots.plot_examples(panels, ref.classes, skip), files["examples"])
    if comp.drift:
        from mapsim.analysis.drift import plot_drift

        _save(plot_drift(comp.drift, f"{name}: drift of {Path(args.generated).name} from its top boundary"),
              files["drift"])

    result = {"reference": str(args.reference), "generated": str(args.generated), "out": str(out),
              "class": name, "skip_rows": s["skip_rows"], "skip_cols": s["skip_cols"], "r_max": s["r_max"],
              "alpha": s["alpha"], "permutations": s["permutations"], "statistics": s["statistics"]}
    for st in s["statistics"]:
        for key in RESULT_KEYS + ("verdict",):
            result[f"{st}_{key}"] = s[f"{st}_{key}"]
    result["rejected"] = s["rejected"]
    result["family_reject"] = s["family_reject"]
    result["files"] = [str(v) for v in files.values()]
    result["note"] = note
    if args.json:
        emit(result, True)
    else:
        print(summary_markdown(s, args.reference, args.generated))
        if note:
            print(note)
        print("wrote " + ", ".join(str(v) for v in files.values()))
    return 0


def majority_note(ref, class_id: int) -> str | None:
    """A note when the compared class fills more than half of the reference's pixels (its statistics then
    describe the background; the other class is usually the structure), else None."""
    from mapsim.data import class_counts

    counts = class_counts(ref, ref.n_classes)  # read block by block
    frac = float(counts[:, class_id].sum() / counts.sum())
    if frac <= 0.5:
        return None
    others = [c for k, c in enumerate(ref.classes) if k != class_id]
    return (f"note: class {ref.classes[class_id]!r} fills {100 * frac:.0f} % of the reference's pixels, so its "
            f"statistics mostly describe the majority phase; the structure may be in "
            + " or ".join(f"--class {c}" for c in others) + " (the minority)")
