"""Pieces shared by the atom and image converters: maps, names, sample sources, atomic directories."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import numpy as np

from mapsim.errors import MapsimError
from mapsim.fileio import atomic_dir

EMPTY = "empty"
"""Class 0 of every imported dataset."""

# Class names and species are written into extxyz info lines and PNG text without quoting
# rules of their own, so they are restricted to a safe alphabet.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+\-]+$")


def require(module: str, extra: str, purpose: str) -> None:
    """Raise a one-line MapsimError when an optional dependency is missing."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        raise MapsimError(f"{purpose} needs the {module!r} package (pip install -e .[{extra}])") from None


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a plain token (letters, digits, ``_ . + -``), else raise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise MapsimError(f"{what} {name!r}: expected letters, digits or _.+- only (no spaces, commas or '=')")
    return name


def parse_pairs(text: str | list[str] | None, option: str) -> dict[str, str]:
    """Parse ``A=B,C=D`` (or a list of such strings) into an ordered dict.

    Raises
    ------
    MapsimError
        On an item without ``=``, an empty side, or a repeated key.
    """
    items: list[str] = []
    for chunk in ([text] if isinstance(text, str) else (text or [])):
        items += [s.strip() for s in chunk.split(",") if s.strip()]
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise MapsimError(f"{option} {item!r}: expected KEY=VALUE")
        k, v = (s.strip() for s in item.split("=", 1))
        if not k or not v:
            raise MapsimError(f"{option} {item!r}: empty key or value")
        if k in out:
            raise MapsimError(f"{option}: {k!r} given twice ({out[k]!r} and {v!r})")
        out[k] = v
    return out


def class_order(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``("empty", *others)`` in first-appearance order, without repeats."""
    out = [EMPTY]
    for n in names:
        if n not in out:
            out.append(check_name(n, "class name"))
    if len(out) > 256:
        raise MapsimError(f"{len(out)} classes: at most 256 fit into uint8 class ids")
    return tuple(out)


@dataclass
class Sample:
    """One imported 2-D sample and where it came from.

    Attributes
    ----------
    grid : uint8 array (H, W)
    source : dict
        JSON-ready provenance: ``file``, ``frame`` and converter details
        (collisions, pixel size, cell, ...); stored in the dataset metadata
        under ``sources[k]`` for sample ``k``.
    offsets : float32 array (H, W, 2) or None
        Position of the atom inside each occupied pixel (see :mod:`mapsim.lattice`).
    """

    grid: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)
    offsets: np.ndarray | None = None


def parse_shape(text: str, option: str) -> tuple[int, int]:
    """``"64"`` or ``"48x64"`` -> (H, W)."""
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise MapsimError(f"{option} {text!r}: expected SIZE or HxW with positive integers") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise MapsimError(f"{option} {text!r}: expected SIZE or HxW with positive integers")
    return vals[0], vals[1]


def stack_samples(samples: list[Sample], crop: tuple[int, int] | None = None) -> np.ndarray:
    """Stack sample grids into (n, H, W); all must share H x W unless ``crop`` cuts them.

    ``crop = (H, W)`` keeps the top-left H x W of every sample (each must be at least that large).
    """
    if not samples:
        raise MapsimError("no samples to import")
    if crop is not None:
        h, w = crop
        for s in samples:
            if s.grid.shape[0] < h or s.grid.shape[1] < w:
                raise MapsimError(f"--crop {h}x{w}: {_where(s)} is only {s.grid.shape[0]}x{s.grid.shape[1]}")
            if s.grid.shape != (h, w):
                s.source["cropped_from"] = [int(s.grid.shape[0]), int(s.grid.shape[1])]
        return np.stack([s.grid[:h, :w] for s in samples]).astype(np.uint8)
    first = samples[0]
    for s in samples[1:]:
        if s.grid.shape != first.grid.shape:
            raise MapsimError(
                f"samples differ in size: {_where(first)} is {first.grid.shape[0]}x{first.grid.shape[1]} but "
                f"{_where(s)} is {s.grid.shape[0]}x{s.grid.shape[1]}; a dataset needs one HxW "
                "(give --crop HxW to keep the top-left part of each, or a common --pixel-size/--cell)")
    return np.stack([s.grid for s in samples]).astype(np.uint8)


def stack_offsets(samples: list[Sample], crop: tuple[int, int] | None = None) -> np.ndarray | None:
    """Stack the samples' offsets like :func:`stack_samples` stacks grids; None when any sample has none."""
    if not samples or any(s.offsets is None for s in samples):
        return None
    h, w = crop if crop is not None else samples[0].grid.shape
    return np.stack([s.offsets[:h, :w] for s in samples]).astype(np.float32)


def _where(s: Sample) -> str:
    return f"{s.source.get('file')} frame {s.source.get('frame', 0)}"


def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> ContextManager[Path]:
    """A temporary sibling directory that replaces ``path`` in one rename on success.

    On any exception the temporary directory is removed and ``path`` is left as it was,
    so a failed export never leaves a partial directory behind
    (:func:`mapsim.fileio.atomic_dir`).

    Parameters
    ----------
    path : path-like
        The final directory. If it exists it must be empty, unless ``overwrite``
        (checked here, before the caller does any work).
    overwrite : bool
        Replace an existing directory (its old contents are removed after the rename).
    """
    check_output_dir(Path(path), overwrite)
    return atomic_dir(path, replace=overwrite)


def check_output_dir(path: Path, overwrite: bool, option: str = "--out") -> None:
    """Fail before any work if ``path`` cannot become the output directory."""
    if path.exists():
        if not path.is_dir():
            raise MapsimError(f"{option} {path}: exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise MapsimError(f"{option} {path}: directory exists and is not empty (give --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise MapsimError(f"{option} {path}: parent {parent} is not a directory")

