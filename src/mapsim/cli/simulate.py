"""``mapsim simulate``: Monte Carlo training data from a preset."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from mapsim.cli import offlattice as _offlattice
from mapsim.cli.common import add_json_flag, check_output_path, emit, nonneg_int, parse_assignments, positive_int, progress
from mapsim.errors import MapsimError

# Matplotlib colours per class id: empty, particle, solvent.
CLASS_COLOURS = ("#ffffff", "#1f1f1f", "#6baed6")


def _parameter_help() -> str:
    # Imported here for the texts only; params.py does not load the numba kernels.
    from mapsim.montecarlo.equilibration import ALPHA, MIN_ACF_POINTS, MIN_TAU_MULTIPLE
    from mapsim.montecarlo.params import PARAM_HELP, PRESET_DESCRIPTIONS, PRESETS, PROTOCOL_PRESETS, \
        SWEEP_DEFINITION, SimParams

    lines = ["presets:"]
    for name, desc in PRESET_DESCRIPTIONS.items():
        lines.append(f"  {name:<22} {desc}")
    lines += ["", "parameters (--set NAME=VALUE; defaults per preset):"]
    names = list(PRESETS)
    for field in SimParams.__dataclass_fields__:
        lines.append(f"  {field:<13} {PARAM_HELP[field]}")
        vals = ", ".join(f"{n}={_show(getattr(PRESETS[n], field))}" for n in names)
        lines.append(f"  {'':<13}   [{vals}]")
    lines += [
        "",
        "moves: particles hop to a random neighbour (moves=local); without solvent only onto an empty site,",
        "with solvent only onto a liquid site, exchanging with it (Rabani et al. 2003). moves=nonlocal jumps a",
        "random particle to a uniformly random non-particle site anywhere (with solvent: exchanges it with",
        "that site if it holds solvent); moves=mixed does either, non-local with probability nonlocal_frac.",
        "ensemble=grand adds particle insertion/removal on non-solvent sites (H += mu_n * particles). Solvent",
        "flips liquid <-> vapour on non-particle sites (grand canonical in mu). Metropolis acceptance",
        "min(1, exp(-dE/T)); at T=0 moves with dE <= 0 are accepted (dE=0 too, so diffusion does not",
        "freeze) and moves with dE > 0 rejected. Systems with solvent start as a fully wet film.",
        "Schedules are linear: T goes from T_start to T over the first anneal_frac of the sweeps, mu from",
        "mu_start to mu over the first mu_ramp_frac, then both stay constant.",
        "",
        *textwrap.wrap("sweeps: " + SWEEP_DEFINITION, 100, break_on_hyphens=False),
        "",
        *textwrap.wrap(
            f"equilibration: every sample records its energy per site after sweep 0 and after trace_points "
            f"sweeps spread evenly up to the last ('energy_trace' and 'trace_sweeps' in the file). For each run the "
            f"per-sample means over the third and the last quarter of the sweeps are compared by a paired "
            f"t-test (not equilibrated at p < {ALPHA:g}), and the integrated autocorrelation time of the last "
            f"half is measured (with >= {MIN_ACF_POINTS} trace points; a last half shorter than "
            f"{MIN_TAU_MULTIPLE} of them is not called equilibrated). A one-line warning says what to change. "
            f"Runs with a schedule and the protocol presets ({', '.join(sorted(PROTOCOL_PRESETS))}) get "
            f"traces but no verdict.", 100, break_on_hyphens=False),
        "",
        "example: mapsim simulate lattice-gas --size 128 --set e_nn=-4 --set density=0.5 --set T=3 --set sweeps=1000 --out lg.npz",
    ]
    return "\n".join(lines)


def _show(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="lattice Monte Carlo samples from a preset (training data)",
        description="Simulate independent samples of a preset system by Metropolis Monte Carlo and save them "
                    "as a dataset (.npz). The same seed gives the same file, whatever --workers, with --dask, or "
                    "after an interruption: finished samples are kept in OUT.partial/ as they come, and running "
                    "the same command again resumes from there (other settings: an error naming them). The "
                    "partial directory is removed once OUT is written.",
        epilog=_parameter_help() + _offlattice.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("preset", nargs="?", help="preset name (see below); --list shows them")
    p.add_argument("--list", action="store_true", help="list the presets with their parameters and exit")
    p.add_argument("--size", type=positive_int, default=64, help="lattice side length (default 64)")
    p.add_argument("--height", type=positive_int, help="lattice height (default --size)")
    p.add_argument("--width", type=positive_int, help="lattice width (default --size)")
    p.add_argument("--depth", type=int, metavar="D",
                   help="simulate on a D x H x W simple cubic lattice (6 neighbours; lattice-gas and the fluid "
                        "presets, particles only); grids (n, D, H, W)")
    p.add_argument("--samples", type=positive_int, default=100, help="number of independent samples (default 100)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed; sample k depends only on (seed, k) (default 0)")
    p.add_argument("--out", help="output dataset file (.npz)")
    p.add_argument("--set", dest="assignments", action="append", metavar="NAME=VALUE",
                   help="override a parameter (repeatable); see the list below")
    p.add_argument("--keep-solvent", action="store_true", help="save solvent sites as class 2 'solvent' (same as --set keep_solvent=true)")
    p.add_argument("--workers", type=positive_int, help="worker processes (default: all cores); does not change the output")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the samples on an existing Dask cluster (scheduler address, e.g. tcp://host:8786; "
                        "workers need mapsim installed) instead of local processes; does not change the output")
    p.add_argument("--png", help="also save the first sample as an image (empty white, particle black, solvent blue)")
    _offlattice.add_arguments(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mapsim.montecarlo.params import PRESET_DESCRIPTIONS, PRESETS, preset_params

    if args.list:
        rows = {name: {"description": d, "params": PRESETS[name].to_dict()} for name, d in PRESET_DESCRIPTIONS.items()}
        rows.update(_offlattice.preset_rows())
        emit(rows, args.json, text=None if args.json else "\n".join(f"{n}: {r['description']}" for n, r in rows.items()))
        return 0
    from mapsim.montecarlo.offlattice import OFFLATTICE_PRESETS

    if args.preset in OFFLATTICE_PRESETS:
        return _offlattice.run(args)
    if args.atoms is not None or args.structures or args.pixel_size is not None:
        raise MapsimError(f"--atoms/--structures/--pixel-size apply to the off-lattice presets {list(OFFLATTICE_PRESETS)}")
    if not args.preset:
        raise MapsimError(f"no preset given; expected one of {list(PRESETS) + list(OFFLATTICE_PRESETS)}")
    if not args.out:
        raise MapsimError("--out: an output dataset file is required")
    out = check_output_path(args.out, "--out")
    png = check_output_path(args.png, "--png") if args.png else None
    if png is not None and png.suffix.lower() not in ("", ".png"):
        raise MapsimError(f"--png {png}: expected a .png file name, found suffix {png.suffix!r}")
    overrides: dict = parse_assignments(args.assignments)
    if args.keep_solvent:
        overrides["keep_solvent"] = "true"
    params = preset_params(args.preset, overrides)
    height = args.height or args.size
    width = args.width or args.size
    depth = args.depth

    from mapsim.lattice import save_dataset
    from mapsim.montecarlo.engine import check_size, simulate
    from mapsim.montecarlo.partial import PartialRun, run_key

    if depth is not None:
        from mapsim.montecarlo.cubic import check_params_3d, check_size_3d

        if depth < 1:
            raise MapsimError(f"--depth: expected a positive number of planes, found {depth}")
        check_params_3d(params)
        check_size_3d(depth, height, width, params.periodic)
        if png is not None:
            raise MapsimError("--png draws a 2-D sample; for --depth runs use mapsim analyze (slices)")
    else:
        check_size(height, width, params.periodic)
    if args.dask is not None and not args.dask.strip():
        raise MapsimError("--dask: expected a scheduler address such as tcp://host:8786, found ''")
    partial = PartialRun(out.with_name(out.name + ".partial"), run_key(params.to_dict(), args.seed, height, width, depth))
    resumed = len(partial.load(args.samples))
    if resumed:
        print(f"resuming: {resumed} of {args.samples} samples already in {partial.path}", file=sys.stderr)
    try:
        with progress(total=args.samples, desc=f"simulate {args.preset}", unit="sample") as bar:
            dataset = simulate(params, args.samples, height, width, seed=args.seed, workers=args.workers,
                               progress=bar.update, preset=args.preset, dask=args.dask, checkpoint=partial,
                               depth=depth)
    except (KeyboardInterrupt, MapsimError) as exc:
        kept = len(partial.load(args.samples))
        if kept:
            print(f"{kept} of {args.samples} samples kept in {partial.path}; run the same command again to resume",
                  file=sys.stderr)
        elif isinstance(exc, MapsimError):
            partial.remove()  # nothing done yet (e.g. no Dask scheduler): leave no output behind
        raise
    save_dataset(out, dataset)
    partial.remove()
    if png is not None:
        save_png(dataset.grids[0], dataset.classes, png, title=f"{args.preset} seed {args.seed} sample 0")
    result = {"out": str(out), "preset": args.preset, "samples": args.samples, "height": height, "width": width,
              **({} if depth is None else {"depth": depth}), "seed": args.seed, "classes": list(dataset.classes), "resumed": resumed,
              **dataset.metadata["acceptance"]}
    verdict_line = _report_verdict(dataset.metadata.get("equilibration"), result)
    if png is not None:
        result["png"] = str(png)
    emit(result, args.json, text=None if args.json else
         f"wrote {out} ({args.samples} samples {'' if depth is None else f'{depth}x'}{height}x{width}, classes {list(dataset.classes)})"
         + (f" and {png}" if png is not None else "") + (f"\n{verdict_line}" if verdict_line else ""))
    return 0


def _report_verdict(eq: dict | None, result: dict) -> str | None:
    """Add the run's equilibration verdict to ``result``; warn on stderr when it failed; the summary line."""
    from mapsim.montecarlo.equilibration import Verdict

    result["equilibrated"] = None if eq is None else eq["equilibrated"]
    if eq is None:  # a schedule or a protocol preset: traces only
        return None
    v = Verdict(**eq)
    result["equilibration"] = eq
    if v.equilibrated is False:
        print(v.advice, file=sys.stderr)
    return v.summary(with_advice=False)


def save_png(grid, classes, path: str | Path, title: str | None = None) -> None:
    """Save one (H, W) grid as an image with fixed colours per class id, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from mapsim.fileio import save_figure_atomic

    n = len(classes)
    h, w = grid.shape
    scale = max(3.0, min(8.0, 400.0 / max(h, w)))
    fig, ax = plt.subplots(figsize=(w * scale / 100 + 0.4, h * scale / 100 + 0.6), dpi=100)
    try:
        ax.imshow(grid, cmap=ListedColormap(CLASS_COLOURS[:n]), vmin=-0.5, vmax=n - 0.5, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=8)
        save_figure_atomic(fig, path, bbox_inches="tight")
    finally:
        plt.close(fig)
