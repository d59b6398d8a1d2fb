"""``mapsim bench TARGET``: benchmark figures (speed is measured here, not in tests)."""

from __future__ import annotations

import argparse
import importlib

from mapsim.cli.common import add_json_flag, emit

# target name -> module under mapsim.benchmarks exposing add_arguments(parser) and run(args) -> dict
TARGETS = {
    "montecarlo": "Monte Carlo kernels: lattice-gas hop rate against a NumPy implementation, one drying sample",
    "train": "PixelCNN training throughput (loss pixels per second)",
    "generate": "fast exact generation against the windowed front sampler (and naive), GFLOP/s beside a matrix multiply",
    "calibrate": "false-alarm rate and power of the compare verdict on Monte Carlo data (about 15 minutes)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print speed figures", description=__doc__)
    bsub = p.add_subparsers(dest="target", metavar="TARGET")
    bsub.required = True
    for name, help_text in TARGETS.items():
        try:
            module = importlib.import_module(f"mapsim.benchmarks.{name}")
        except ModuleNotFoundError as exc:
            # a target not written yet, or one needing torch where it is not installed:
            # skip it so the torch-free commands keep working
            if exc.name == f"mapsim.benchmarks.{name}" or (exc.name or "").split(".")[0] == "torch":
                continue
            raise
        bp = bsub.add_parser(name, help=help_text, description=help_text)
        add_json_flag(bp)
        module.add_arguments(bp)
        bp.set_defaults(func=_runner(module))


def _runner(module):
    def run(args: argparse.Namespace) -> int:
        result = module.run(args)
        emit(result, args.json)
        return 0

    return run
