"""The dataset type and its ``.npz`` file format, with validation (NumPy only).

File format
-----------
``grids``     uint8 array ``(n_samples, H, W)``; each value is a class id.
``classes``   1-D string array; index = class id (Monte Carlo data: ``empty`` = 0,
              ``particle`` = 1, ``solvent`` = 2 when solvent is kept).
``metadata``  0-d string array holding a JSON object (generator, parameters, seed,
              package version, ...).
Any other key is an *extra* array (e.g. ``log_probs`` from a sampler) and is kept.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mapsim.errors import MapsimError
from mapsim.fileio import atomic_path

MC_CLASSES: tuple[str, ...] = ("empty", "particle", "solvent")
"""Class names of Monte Carlo data, index = class id."""

REQUIRED_KEYS = ("grids", "classes", "metadata")


@dataclass
class Dataset:
    """A set of equally sized 2-D samples on a square lattice.

    Parameters
    ----------
    grids : ndarray of uint8, shape (n_samples, H, W)
        Class id of every grid point.
    classes : sequence of str
        Class names; ``classes[k]`` is the name of class id ``k``.
    metadata : dict
        JSON-serialisable description (generator, parameters, seed, version).
    extras : dict of str to ndarray
        Further arrays stored in the file (e.g. ``log_probs`` of shape (n, H, W)).
    """

    grids: np.ndarray
    classes: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        _validate_arrays(self.grids, self.classes, "dataset")
        _check_finite_json(self.metadata, "dataset", "metadata")

    @property
    def n_samples(self) -> int:
        return int(self.grids.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of every sample."""
        return int(self.grids.shape[1]), int(self.grids.shape[2])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_id(self, name: str | int) -> int:
        """Class id for a class name (or an id given as int or digit string)."""
        if isinstance(name, (int, np.integer)) or (isinstance(name, str) and name.isdigit()):
            k = int(name)
            if not 0 <= k < self.n_classes:
                raise MapsimError(f"class id {k} out of range: the dataset has classes {list(self.classes)}")
            return k
        if name not in self.classes:
            raise MapsimError(f"class {name!r} not found: the dataset has classes {list(self.classes)}")
        return self.classes.index(name)

    def subset(self, index: Sequence[int] | np.ndarray | slice) -> "Dataset":
        """A new dataset holding the selected samples (extras with a sample axis follow)."""
        extras = {k: v[index] for k, v in self.extras.items() if v.ndim >= 1 and v.shape[0] == self.n_samples}
        return Dataset(self.grids[index], self.classes, dict(self.metadata), extras)


def _validate_arrays(grids: Any, classes: Sequence[str], where: str) -> None:
    if not isinstance(grids, np.ndarray):
        raise MapsimError(f"{where}: 'grids' must be a NumPy array, found {type(grids).__name__}")
    if grids.dtype != np.uint8:
        raise MapsimError(f"{where}: 'grids' must have dtype uint8, found {grids.dtype}")
    if grids.ndim != 3:
        raise MapsimError(f"{where}: 'grids' must have shape (n_samples, H, W), found rank {grids.ndim} shape {grids.shape}")
    if grids.shape[0] == 0:
        raise MapsimError(f"{where}: 'grids' holds no samples (shape {grids.shape})")
    if grids.shape[1] == 0 or grids.shape[2] == 0:
        raise MapsimError(f"{where}: 'grids' samples are empty (shape {grids.shape})")
    if len(classes) == 0:
        raise MapsimError(f"{where}: 'classes' is empty; expected one name per class id")
    if len(set(classes)) != len(classes):
        raise MapsimError(f"{where}: 'classes' has repeated names {list(classes)}")
    top = int(grids.max())
    if top >= len(classes):
        raise MapsimError(
            f"{where}: 'grids' holds class id {top} but 'classes' names only {len(classes)} classes {list(classes)}"
        )


def _check_finite_json(obj: Any, where: str, path: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise MapsimError(f"{where}: {path} holds a non-finite number ({obj})")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_finite_json(v, where, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite_json(v, where, f"{path}[{i}]")


def _reject_constant(token: str) -> float:
    raise ValueError(f"non-finite number {token}")


def load_dataset(path: str | Path) -> Dataset:
    """Load and validate a dataset file.

    Parameters
    ----------
    path : path-like
        A ``.npz`` file in the format described in this module.

    Returns
    -------
    Dataset

    Raises
    ------
    MapsimError
        Naming the file, what was expected and what was found: missing file or
        keys, truncated/corrupt archive, wrong dtype or rank, class ids out of
        range, empty sets, non-JSON or non-finite metadata.
    """
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise MapsimError(f"{where}: file not found")
    if p.is_dir():
        raise MapsimError(f"{where}: expected a .npz dataset file, found a directory")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise MapsimError(f"{where}: missing key(s) {missing}; expected {list(REQUIRED_KEYS)}, found {sorted(keys)}")
            arrays = {k: z[k] for k in z.files}
    except MapsimError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise MapsimError(f"{where}: not a readable .npz dataset (truncated or corrupt): {exc}") from None
    grids = arrays.pop("grids")
    classes_arr = arrays.pop("classes")
    meta_arr = arrays.pop("metadata")
    if classes_arr.ndim != 1 or classes_arr.dtype.kind not in "US":
        raise MapsimError(f"{where}: 'classes' must be a 1-D string array, found dtype {classes_arr.dtype} rank {classes_arr.ndim}")
    classes = tuple(str(c) for c in classes_arr.astype(str))
    if meta_arr.ndim != 0 or meta_arr.dtype.kind not in "US":
        raise MapsimError(f"{where}: 'metadata' must be a 0-d JSON string, found dtype {meta_arr.dtype} shape {meta_arr.shape}")
    try:
        metadata = json.loads(str(meta_arr), parse_constant=_reject_constant)
    except ValueError as exc:
        raise MapsimError(f"{where}: 'metadata' is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise MapsimError(f"{where}: 'metadata' must be a JSON object, found {type(metadata).__name__}")
    _validate_arrays(grids, classes, where)
    _check_finite_json(metadata, where, "metadata")
    for k, v in arrays.items():
        if v.dtype.kind == "f" and not np.all(np.isfinite(v) | np.isneginf(v)):
            raise MapsimError(f"{where}: array {k!r} contains NaN or +inf")
    return Dataset(grids, classes, metadata, arrays)


def save_dataset(path: str | Path, dataset: Dataset) -> Path:
    """Write a dataset atomically (temporary name, then rename).

    Returns
    -------
    Path
        The written path.
    """
    p = Path(path)
    meta = json.dumps(dataset.metadata, allow_nan=False, sort_keys=True)
    payload = {
        "grids": np.ascontiguousarray(dataset.grids, dtype=np.uint8),
        "classes": np.array(dataset.classes, dtype=str),
        "metadata": np.array(meta),
    }
    for k, v in dataset.extras.items():
        if k in payload:
            raise MapsimError(f"extra array name {k!r} clashes with a required key")
        payload[k] = np.asarray(v)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)
    return p


def grids_from_any(grids: np.ndarray, n_classes: int, where: str = "grids") -> np.ndarray:
    """Validate an in-memory grid batch given to the Python API.

    Parameters
    ----------
    grids : array-like of int, shape (n, H, W) or (H, W)
    n_classes : int

    Returns
    -------
    ndarray of uint8, shape (n, H, W)
    """
    a = np.asarray(grids)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise MapsimError(f"{where}: expected shape (n, H, W) or (H, W), found shape {a.shape}")
    if a.dtype.kind not in "ui" and not (a.dtype.kind == "b"):
        raise MapsimError(f"{where}: expected integer class ids, found dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n_classes):
        raise MapsimError(f"{where}: class ids must lie in 0..{n_classes - 1}, found {int(a.min())}..{int(a.max())}")
    return a.astype(np.uint8)
