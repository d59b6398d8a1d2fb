"""Datasets in zarr (format 3): written row block by row block, resumable.

Layout of ``NAME.zarr`` (a zarr group; the ``zarr`` package >= 3)
------------------------------------------------------------------
``grids``          uint8 ``(K, H, W)``, chunks ``(1, block_rows, W)``.
``log_probs``      optional float32 ``(K, H, W)``: each drawn pixel's log-probability.
``row_log_probs``  optional float64 ``(K, H)``: the sum over each row (enough for
                   ``mapsim convergence``).
``offsets``        optional float32 ``(K, H, W, 2)``: positions inside the pixels.
Attributes: ``classes`` (list of names, index = class id) and ``metadata`` (the
same JSON object as in the ``.npz`` format).

Writing
-------
A store is written under ``NAME.zarr.partial`` and renamed to ``NAME.zarr``
when every row of every sample is in it, so a store under its final name is
always complete.  After each block of rows has been written, the file
``progress.json`` inside the partial store is replaced atomically with the
number of finished samples and rows; a crash (Ctrl-C, ``kill -9``) mid-block
leaves it at the last finished block, and a rerun resumes from there.  The
partial store also records the request (``request.json``); a rerun with other
settings is refused with the differences named.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mapsim.errors import MapsimError
from mapsim.fileio import publish_dir, write_text_atomic

LOG_PROBS_MODES = ("none", "rows", "pixels")


def _zarr():
    try:
        import zarr
    except ModuleNotFoundError:
        raise MapsimError("zarr output needs the zarr package (pip install 'zarr>=3')") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise MapsimError(f"zarr output needs zarr >= 3, found {zarr.__version__}")
    return zarr


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (suffix ``.zarr``)."""
    return Path(path).suffix == ".zarr"


def partial_path(path: str | os.PathLike) -> Path:
    """Where the store is written until it is complete."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


class ZarrWriter:
    """Write (or resume writing) a dataset block by block.

    Parameters
    ----------
    path : path-like
        Final ``NAME.zarr``.
    shape : (K, H, W)
    classes : sequence of str
    metadata : dict
    request : dict
        The settings that determine the bytes (model fingerprint, seed, sizes,
        sampler ...); a partial store made with other settings is refused.
    log_probs : {"none", "rows", "pixels"}
    block_rows : int
        Rows per chunk (the generator's block size).
    offsets : bool
        Whether an ``offsets`` array is written.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], classes: Sequence[str],
                 metadata: Mapping[str, Any], request: Mapping[str, Any], *, log_probs: str = "rows",
                 block_rows: int = 256, offsets: bool = False) -> None:
        if log_probs not in LOG_PROBS_MODES:
            raise MapsimError(f"--log-probs must be one of {', '.join(LOG_PROBS_MODES)}, found {log_probs!r}")
        zarr = _zarr()
        self.final = Path(path)
        self.path = partial_path(path)
        self.shape = tuple(int(n) for n in shape)
        self.log_probs = log_probs
        request = json.loads(json.dumps(dict(request), sort_keys=True))
        K, H, W = self.shape
        self.samples_done, self.rows_done = 0, 0
        req_file = self.path / "request.json"
        if self.path.exists() and req_file.exists():
            old = json.loads(req_file.read_text())
            if old != request:
                diff = sorted(k for k in set(old) | set(request) if old.get(k) != request.get(k))
                raise MapsimError(f"{self.path}: an interrupted run with other settings is there "
                                  f"(differs in {', '.join(diff)}); delete it to start afresh")
            prog = json.loads((self.path / "progress.json").read_text())
            self.samples_done, self.rows_done = int(prog["samples_done"]), int(prog["rows_done"])
            self.root = zarr.open_group(store=str(self.path), mode="r+")
            return
        if self.path.exists():
            shutil.rmtree(self.path)  # a partial store that never recorded its request holds nothing
        root = zarr.open_group(store=str(self.path), mode="w")
        chunks = (1, min(block_rows, H), W)
        root.create_array("grids", shape=(K, H, W), chunks=chunks, dtype="uint8", fill_value=0)
        if log_probs == "pixels":
            root.create_array("log_probs", shape=(K, H, W), chunks=chunks, dtype="float32", fill_value=0.0)
        if log_probs in ("rows", "pixels"):
            root.create_array("row_log_probs", shape=(K, H), chunks=(1, min(block_rows, H)), dtype="float64",
                              fill_value=0.0)
        if offsets:
            root.create_array("offsets", shape=(K, H, W, 2), chunks=chunks + (2,), dtype="float32",
                              fill_value=float("nan"))
        root.attrs["classes"] = list(classes)
        root.attrs["metadata"] = json.loads(json.dumps(dict(metadata), allow_nan=False))
        self.root = root
        self._record()
        write_text_atomic(req_file, json.dumps(request, sort_keys=True))

    def _record(self) -> None:
        write_text_atomic(self.path / "progress.json",
                          json.dumps({"samples_done": self.samples_done, "rows_done": self.rows_done}))

    def read_grids(self, k0: int, k1: int, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0 .. r1 - 1`` of samples ``k0 .. k1 - 1`` already written, (K', r1 - r0, W) uint8."""
        return np.asarray(self.root["grids"][k0:k1, r0:r1])

    def write(self, k0: int, r0: int, grids: np.ndarray, log_probs: np.ndarray,
              offsets: np.ndarray | None = None) -> None:
        """Write the block of rows ``r0 ..`` of samples ``k0 ..``; then record the progress."""
        k1, r1 = k0 + grids.shape[0], r0 + grids.shape[1]
        self.root["grids"][k0:k1, r0:r1] = grids
        if self.log_probs == "pixels":
            self.root["log_probs"][k0:k1, r0:r1] = log_probs
        if self.log_probs in ("rows", "pixels"):
            self.root["row_log_probs"][k0:k1, r0:r1] = log_probs.astype(np.float64).sum(axis=2)
        if offsets is not None and "offsets" in self.root:
            self.root["offsets"][k0:k1, r0:r1] = offsets
        K, H, W = self.shape
        if r1 >= H:
            self.samples_done, self.rows_done = k1, 0
        else:
            self.samples_done, self.rows_done = k0, r1
        self._record()

    def finish(self) -> Path:
        """Rename the complete store to its final name (replacing an older one)."""
        (self.path / "progress.json").unlink()
        (self.path / "request.json").unlink()
        publish_dir(self.path, self.final, replace=True)
        return self.final


def open_zarr(path: str | os.PathLike):
    """Open a complete store read-only; returns (group, classes, metadata)."""
    zarr = _zarr()
    p = Path(path)
    if not p.exists():
        if partial_path(p).exists():
            raise MapsimError(f"{p}: not complete (an interrupted run is in {partial_path(p)}; rerun it to finish)")
        raise MapsimError(f"{p}: no such zarr store")
    try:
        root = zarr.open_group(store=str(p), mode="r")
        classes = [str(c) for c in root.attrs["classes"]]
        metadata = dict(root.attrs["metadata"])
        g = root["grids"]
    except MapsimError:
        raise
    except Exception as exc:  # zarr raises many kinds for a damaged store
        raise MapsimError(f"{p}: not a mapsim zarr dataset ({type(exc).__name__}: {exc})") from None
    if g.ndim != 3 or g.dtype != np.uint8:
        raise MapsimError(f"{p}: grids must be uint8 (n_samples, H, W), found {g.dtype} {g.shape}")
    return root, classes, metadata


def load_zarr_arrays(path: str | os.PathLike) -> tuple[np.ndarray, list[str], dict, dict[str, np.ndarray]]:
    """Read a whole store: grids, classes, metadata and the other arrays (``log_probs`` ...)."""
    root, classes, metadata = open_zarr(path)
    grids = np.asarray(root["grids"][...])
    extras = {name: np.asarray(root[name][...]) for name in ("log_probs", "row_log_probs", "offsets")
              if name in root}
    return grids, classes, metadata, extras
