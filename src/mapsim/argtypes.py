"""argparse value types shared by the CLI and the benchmarks (which must not import :mod:`mapsim.cli`).

Each raises :class:`argparse.ArgumentTypeError` with what was expected and what was found;
argparse turns that into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonneg_int", "finite_float"]


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, found {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, found {v}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "positive")


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0, "non-negative")


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r}")
    return v
