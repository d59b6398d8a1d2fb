"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from mapsim.argtypes import finite_float, nonneg_int, positive_int  # noqa: F401 (re-exported for the CLI)
from mapsim.errors import MapsimError


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object with named fields instead of text")


def emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """Print a result either as one JSON object or as readable text."""
    if as_json:
        print(json.dumps(_jsonable(result), sort_keys=False))
    else:
        if text is not None:
            print(text)
        else:
            width = max((len(k) for k in result), default=0)
            for k, v in result.items():
                print(f"{k:<{width}}  {_fmt(v)}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())  # NaN inside arrays (a standard error of one sample) -> null too
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_assignments(items: list[str] | None, option: str = "--set") -> dict[str, str]:
    """Parse ``NAME=VALUE`` strings (values stay strings; the receiver converts)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise MapsimError(f"{option} {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise MapsimError(f"{option} {item!r}: empty parameter name")
        out[k] = v.strip()
    return out


def check_output_path(path: str | Path, option: str = "--out") -> Path:
    """Fail early, before any work, if an output file cannot be written there."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise MapsimError(f"{option} {p}: is a directory, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise MapsimError(f"{option} {p}: parent {parent} is not a directory")
    return p


def progress(iterable=None, total=None, desc: str = "", disable: bool | None = None, **kw):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal unless forced)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, file=sys.stderr, dynamic_ncols=True, **kw)
