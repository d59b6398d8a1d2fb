"""Incremental results of a Monte Carlo run, so an interrupted run resumes where it stopped.

A partial directory holds ``run.json`` (what identifies the run: parameters, seed, lattice size,
package version) and one file per finished sample, ``sample_000123.npz`` (the grid and its
acceptance statistics and energy trace), each written atomically. Because sample ``k`` depends only on
``(seed, k)``, a resumed run gives the same dataset as an uninterrupted one, whatever ran the
samples (one process, a process pool or a Dask cluster) and whatever the number of samples asked
for (samples beyond it are ignored).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mapsim.errors import MapsimError
from mapsim.fileio import atomic_path, write_text_atomic

__all__ = ["PartialRun", "run_key"]

_FORMAT = "mapsim-simulate-partial-1"


def run_key(params_dict: dict[str, Any], seed: int, height: int, width: int,
            depth: int | None = None) -> dict[str, Any]:
    """What must match for a partial directory to be resumed (``depth``: a 3-D run)."""
    from mapsim import __version__

    key = {"format": _FORMAT, "params": params_dict, "seed": int(seed), "height": int(height),
           "width": int(width), "mapsim_version": __version__}
    if depth is not None:
        key["depth"] = int(depth)
    return key


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path} {b!r} there, {a!r} now"]


class PartialRun:
    """The per-sample files of one run in a directory.

    Parameters
    ----------
    path : path-like
        The directory; created (with ``run.json``) if missing, resumed if it holds the same run.
    key : dict
        :func:`run_key` of the run.

    Raises
    ------
    MapsimError
        When the directory belongs to a run with other parameters, or is not a partial directory.
    """

    def __init__(self, path: str | Path, key: dict[str, Any]) -> None:
        self.path = Path(path)
        self.key = json.loads(json.dumps(key))  # the form it takes in run.json (lists, not tuples)
        meta = self.path / "run.json"
        if self.path.exists() and not self.path.is_dir():
            raise MapsimError(f"{self.path}: expected a partial-run directory, found a file")
        if meta.exists():
            try:
                found = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise MapsimError(f"{meta}: unreadable ({exc}); delete {self.path} to start afresh") from None
            diff = _differences(self.key, found)
            if diff:
                raise MapsimError(
                    f"{self.path} holds an unfinished run with other settings ({'; '.join(diff[:4])}"
                    f"{'; ...' if len(diff) > 4 else ''}); rerun with its settings to resume it, or delete it")
        else:
            if self.path.exists() and any(p.name != "run.json" and not p.name.startswith(".")
                                          for p in self.path.iterdir()):
                raise MapsimError(f"{self.path}: directory without run.json is not a partial run; "
                                  "delete it or choose another --out")
            self.path.mkdir(parents=True, exist_ok=True)
            write_text_atomic(meta, json.dumps(self.key, indent=1, sort_keys=True))

    def matches(self, key: dict[str, Any]) -> bool:
        """Whether this directory belongs to the run with ``key``."""
        return not _differences(json.loads(json.dumps(key)), self.key)

    def _file(self, k: int) -> Path:
        return self.path / f"sample_{k:06d}.npz"

    def load(self, n_samples: int) -> dict[int, tuple[np.ndarray, dict[str, float], np.ndarray]]:
        """Finished samples ``k < n_samples``: ``{k: (grid (H, W) uint8, stats, energy trace (n_points,))}``.

        A file that cannot be read (damaged outside mapsim) is skipped, so its sample runs again.
        """
        shape = (self.key["height"], self.key["width"])
        if self.key.get("depth") is not None:
            shape = (self.key["depth"],) + shape
        out = {}
        for f in sorted(self.path.glob("sample_*.npz")):
            try:
                k = int(f.stem.split("_", 1)[1])
            except ValueError:
                continue
            if k >= n_samples:
                continue
            try:
                with np.load(f, allow_pickle=False) as z:
                    grid = z["grid"]
                    stats = json.loads(str(z["stats"]))
                    trace = np.asarray(z["trace"], np.float64)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue
            if grid.shape != shape or grid.dtype != np.uint8 or not isinstance(stats, dict):
                continue
            out[k] = (grid, {str(a): float(b) for a, b in stats.items()}, trace)
        return out

    def put(self, k: int, grid: np.ndarray, stats: dict[str, float], trace: np.ndarray) -> None:
        """Store finished sample ``k`` with its energy trace (atomically)."""
        with atomic_path(self._file(k)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, grid=np.ascontiguousarray(grid, np.uint8),
                         stats=np.array(json.dumps({a: float(b) for a, b in stats.items()})),
                         trace=np.asarray(trace, np.float64))

    def remove(self) -> None:
        """Delete the directory (after the final dataset has been written)."""
        shutil.rmtree(self.path, ignore_errors=True)
