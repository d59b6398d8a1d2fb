"""The ``mapsim`` command line: the only place that parses arguments or prints.

Each command family lives in its own module with a ``register(subparsers)``
function; heavy imports (torch, numba kernels) happen inside the handlers so
``mapsim --help`` is quick and the torch-free commands work without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from mapsim import __version__
from mapsim.errors import MapsimError

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = (
    "simulate",
    "models",
    "train",
    "generate",
    "analysis",
    "markov",
    "reproduce",
    "exchange",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapsim",
        description="Morphological Autoregression Protocol: simulate, fit, train, generate and analyse 2D amorphous structures.",
    )
    parser.add_argument("--version", action="version", version=f"mapsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mapsim.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mapsim.cli.{name}" or _is_optional(exc):
                continue
            raise
        before = set(sub.choices)
        try:
            module.register(sub)
        except ModuleNotFoundError as exc:
            # a command whose registration needs torch, where torch is not installed: its
            # commands answer with one line instead of breaking the torch-free ones
            if not _is_optional(exc):
                raise
            for added in set(sub.choices) - before:
                sub.choices[added].set_defaults(func=_missing(exc.name))
    return parser


def _is_optional(exc: ModuleNotFoundError) -> bool:
    """Whether an import failed for want of an optional dependency (torch)."""
    return (exc.name or "").split(".")[0] == "torch"


def _missing(module: str | None):
    def run(args: argparse.Namespace) -> int:
        raise MapsimError(f"this command needs {module} (install the models extra: pip install -e .[models])")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except MapsimError as exc:
        print(f"mapsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mapsim: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
