"""``mapsim reproduce``: the MAP paper end to end (simulate, fit, train, generate, compare, converge, report)."""

from __future__ import annotations

import argparse
import sys

from mapsim.cli.common import add_json_flag, emit, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce the MAP paper's systems end to end and write a report",
        description="Run the whole protocol on the paper's four systems (three dilute fluids and the drying "
                    "aggregate) and its named failure case (drying at 1.5% density), plus in full mode a 3D fluid (cubes "
                    "on the simple cubic lattice, generated at 2x the side): Monte Carlo training data, "
                    "the cluster expansion with Table 1 settings, a Gated PixelCNN, generation at 4x the training "
                    "area (full mode also 16x), comparison with held-out Monte Carlo samples of the generated size "
                    "(a family of permutation tests on every statistic, drift from the top boundary, Holm across "
                    "the families), held-out NLL, convergence, and a markdown/JSON report with figures. Budgets "
                    "are in epochs: the same configuration, seed and --threads give the same bytes. Stages are "
                    "resumable: rerunning skips finished work.")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down sizes that finish in about 10 minutes on 2 CPU cores")
    p.add_argument("--out", default=None, help="output directory (default: mapsim-quick or mapsim-full)")
    p.add_argument("--config", default=None,
                   help="TOML run configuration (e.g. the config.toml saved by an earlier run)")
    p.add_argument("--systems", default=None,
                   help="comma-separated subset of the systems to run (default: all in the configuration)")
    p.add_argument("--seed", type=int, default=None, help="override the configuration's seed")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of training and sampling (default: the configuration's, 1); the results' bytes "
                        "depend on it, so it is saved in config.toml")
    add_json_flag(p)
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mapsim.errors import MapsimError
    from mapsim.reproduce.config import default_config, load_config
    from mapsim.reproduce.pipeline import Run

    if args.config and args.quick:
        raise MapsimError("--quick and --config exclude each other (the config file sets quick)")
    cfg = load_config(args.config) if args.config else default_config(args.quick)
    for note in cfg.notes:
        print(f"mapsim reproduce: note: {note}", file=sys.stderr)
    if args.threads is not None:
        if args.threads < 1:
            raise MapsimError(f"--threads must be a positive integer, found {args.threads}")
        cfg.threads = args.threads
    if args.seed is not None:
        if args.seed < 0:
            raise MapsimError(f"--seed must be non-negative, found {args.seed}")
        cfg.seed = args.seed
    if args.systems:
        names = [s.strip() for s in args.systems.split(",") if s.strip()]
        unknown = [n for n in names if n not in cfg.systems]
        if unknown:
            raise MapsimError(f"--systems: unknown system(s) {unknown}; the configuration has {list(cfg.systems)}")
        cfg.systems = {n: cfg.systems[n] for n in names}
    out = args.out or ("mapsim-quick" if cfg.quick else "mapsim-full")
    if not cfg.quick:
        print("mapsim reproduce: full run; expect hours of CPU time (the README gives the measured cost "
              "per system); stages are resumable, rerun to continue.", file=sys.stderr)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    run = Run(cfg, out, log=log, bar=lambda total, desc: progress(total=total, desc=desc))
    report = run.run()
    summary = {"out": out, "report": f"{out}/report.md",
               "targets_met": sum(t["met"] for t in report["targets"]), "targets": len(report["targets"]),
               "all_targets_met": report["all_targets_met"],
               "rejected": {f"{r['system']}/{r['model']}": r["rejected"] for r in report["table"]}}
    emit(summary, args.json)
    return 0
