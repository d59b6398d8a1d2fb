"""The dataset type and its ``.npz`` file format, with validation (NumPy only).

File format
-----------
``grids``     uint8 array ``(n_samples, H, W)`` (2-D samples) or ``(n_samples, D, H, W)`` (3-D
              voxel samples: D planes along z, each H rows along y by W columns along x);
              each value is a class id. The rank of ``grids`` is the one record of the
              samples' dimension (:attr:`Dataset.ndim`), so one file cannot mix 2-D and 3-D.
``classes``   1-D string array; index = class id (Monte Carlo data: ``empty`` = 0,
              ``particle`` = 1, ``solvent`` = 2 when solvent is kept).
``metadata``  0-d string array holding a JSON object (generator, parameters, seed,
              package version, ...).
``offsets``   optional float32 array ``(n_samples, H, W, 2)``: the position of the atom in
              each occupied pixel relative to the pixel's corner, in pixel units in [0, 1);
              component 0 along rows (y), component 1 along columns (x); NaN exactly where
              the pixel is empty (class 0). A dataset with offsets must give ``pixel_size``.
Any other key is an *extra* array (e.g. ``log_probs`` from a sampler) and is kept.

Geometry metadata (all optional except as stated; per-axis lists are in the order rows (y),
columns (x), like ``offsets``; for 3-D samples (z, y, x) with three entries, and ``offsets`` has
three components (z, y, x)):

``pixel_size``   pixel side per axis ``[a_y, a_x]`` in ``length_unit`` (one number = both
                 axes, as older files store it). Required when ``offsets`` is present.
``length_unit``  the unit of every length (``"Å"``, ``"sigma"``, ``"nm"``), as the user gave it.
``periodic``     ``[per_y, per_x]`` (one bool = both axes, as older files store it; Monte Carlo
                 lattice data record it in ``params.periodic``). Read it with
                 :func:`periodic_axes`, never directly.
``cell``         ``[L_y, L_x]``: the extent of a sample in ``length_unit`` (= shape x pixel).
``species_map``  chemical species -> class name.
``sources``      per-sample provenance; ``sources[k]["origin"]`` and ``sources[k]["pixel_size"]``
                 (both ``[y, x]``) place sample k when samples were cut from different cells.

Positions are ``origin + (index + offset) * pixel`` per axis (:func:`atom_positions`); without
offsets an atom sits at its pixel centre (offset 0.5).
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

OFFSETS_KEY = "offsets"
"""Name of the optional positions-inside-pixels array."""

# float32 just below 1: offsets computed in float64 are clamped to it so that they stay in [0, 1)
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


class _Classes:
    """What :class:`Dataset` and :class:`StoredDataset` share: class names and the file they came from."""

    classes: tuple[str, ...]

    @property
    def source(self) -> str:
        """The file this dataset was loaded from (for messages), else ``"dataset"``."""
        return getattr(self, "_source", None) or "dataset"

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


@dataclass
class Dataset(_Classes):
    """A set of equally sized 2-D samples on a square lattice, or 3-D samples on a cubic one.

    Parameters
    ----------
    grids : ndarray of uint8, shape (n_samples, H, W) or (n_samples, D, H, W)
        Class id of every grid point (voxel in 3-D; axes z, y, x).
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
        validate_geometry(self.grids, self.classes, self.metadata, self.extras, "dataset")

    @property
    def offsets(self) -> np.ndarray | None:
        """Positions inside the pixels, float32 (n_samples, H, W, 2), or None (see the module docstring)."""
        return self.extras.get("offsets")

    @property
    def n_samples(self) -> int:
        return int(self.grids.shape[0])

    @property
    def ndim(self) -> int:
        """Dimension of the samples: 2 (grids (n, H, W)) or 3 (grids (n, D, H, W))."""
        return int(self.grids.ndim - 1)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """(H, W) or (D, H, W) of every sample."""
        return tuple(int(v) for v in self.grids.shape[1:])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of every 2-D sample; 3-D datasets raise (use :attr:`spatial_shape`).

        Code written for 2-D samples unpacks ``h, w = dataset.shape``; refusing here turns a
        3-D dataset reaching such code into a one-line error instead of a wrong result.
        """
        require_2d(self, self.source)
        return int(self.grids.shape[1]), int(self.grids.shape[2])

    def read(self, k0: int, k1: int, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """Rows ``r0 .. r1 - 1`` of samples ``k0 .. k1 - 1``, shape (k1 - k0, r1 - r0, W) (a view).

        The block interface shared with :class:`StoredDataset` (what the blockwise statistics read).
        """
        return self.grids[k0:k1, r0:r1]

    def subset(self, index: Sequence[int] | np.ndarray | slice) -> "Dataset":
        """A new dataset holding the selected samples (extras with a sample axis follow)."""
        extras = {k: v[index] for k, v in self.extras.items() if v.ndim >= 1 and v.shape[0] == self.n_samples}
        return Dataset(self.grids[index], self.classes, dict(self.metadata), extras)


class StoredDataset(_Classes):
    """A complete zarr store read block by block: the :class:`Dataset` attributes without ``grids``.

    ``read(k0, k1, r0, r1)`` returns the rows asked for (uint8, (k1 - k0, r1 - r0, W)) and checks
    their class ids; nothing reads the whole array.  Open one with :func:`open_dataset`.

    Attributes
    ----------
    classes : tuple of str
    metadata : dict
    extra_names : tuple of str
        The store's other arrays (``log_probs``, ``row_log_probs``, ``offsets``), not read.
    """

    ndim = 2

    def __init__(self, path: str | Path) -> None:
        from mapsim.zarrstore import open_zarr

        root, classes, metadata = open_zarr(path)
        self._root = root
        self._grids = root["grids"]
        self._source = str(path)
        self.classes = tuple(classes)
        self.metadata = metadata
        self.extra_names = tuple(k for k in ("log_probs", "row_log_probs", "offsets") if k in root)
        _check_finite_json(self.metadata, self._source, "metadata")
        shape = tuple(int(v) for v in self._grids.shape)
        if shape[0] == 0 or 0 in shape[1:]:
            raise MapsimError(f"{self._source}: 'grids' holds no samples or empty samples (shape {shape})")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise MapsimError(f"{self._source}: 'classes' must name every class once, found {list(self.classes)}")

    @property
    def n_samples(self) -> int:
        return int(self._grids.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return int(self._grids.shape[1]), int(self._grids.shape[2])

    shape = spatial_shape

    def read(self, k0: int, k1: int, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """Rows ``r0 .. r1 - 1`` of samples ``k0 .. k1 - 1``, uint8 (k1 - k0, r1 - r0, W), class ids checked."""
        block = np.asarray(self._grids[k0:k1, r0:r1])
        if block.size and int(block.max()) >= self.n_classes:
            raise MapsimError(f"{self._source}: 'grids' holds class id {int(block.max())} but 'classes' names only "
                              f"{self.n_classes} classes {list(self.classes)}")
        return block

    @property
    def offsets(self) -> None:
        """None: positions inside the pixels are read whole (:func:`load_dataset`); a store with them refuses."""
        if "offsets" in self.extra_names:
            raise MapsimError(f"{self._source}: holds positions (offsets), which are not read block by block; "
                              "load it with load_dataset")
        return None

    def read_extra(self, name: str, k0: int = 0, k1: int | None = None) -> np.ndarray:
        """Samples ``k0 .. k1 - 1`` of one of :attr:`extra_names` (e.g. ``row_log_probs``, (K, H) float64)."""
        if name not in self.extra_names:
            raise MapsimError(f"{self._source}: no array {name!r} (the store has {list(self.extra_names)})")
        return np.asarray(self._root[name][k0:k1])


def open_dataset(path: str | Path) -> "Dataset | StoredDataset":
    """A dataset to be read block by block: a :class:`StoredDataset` for a zarr store (``NAME.zarr``),
    else :func:`load_dataset` (an ``.npz`` file is read whole; its ``read`` returns views)."""
    if Path(path).suffix == ".zarr":
        return StoredDataset(path)
    return load_dataset(path)


def require_2d(data: "Dataset | np.ndarray", where: str, what: str = "this step") -> None:
    """Raise a one-line MapsimError unless ``data`` (a Dataset or grids (n, ...)) holds 2-D samples.

    Parameters
    ----------
    data : Dataset or ndarray
        A dataset, or its grids of shape (n, H, W) / (n, D, H, W).
    where : str
        The input's name (file) for the message.
    what : str
        The operation that handles 2-D samples only.
    """
    if isinstance(data, StoredDataset):  # zarr stores hold 2-D samples only
        return
    grids = data.grids if isinstance(data, Dataset) else np.asarray(data)
    if grids.ndim == 4:
        raise MapsimError(f"{where}: holds 3-D samples (n, D, H, W) = {tuple(grids.shape)}; {what} handles "
                          "2-D samples (n, H, W) only")


def check_same_dimension(datasets: Sequence["Dataset"], names: Sequence[str]) -> int:
    """The common sample dimension (2 or 3) of several inputs; one line naming the first odd file.

    Raises
    ------
    MapsimError
        ``"{file}: holds 3-D samples ... but {first file} holds 2-D samples ..."`` when ranks differ.
    """
    if not datasets:
        raise MapsimError("no datasets given")
    first = datasets[0].ndim
    for ds, name in zip(datasets, names):
        if ds.ndim != first:
            raise MapsimError(f"{name}: holds {ds.ndim}-D samples {ds.spatial_shape} but {names[0]} holds "
                              f"{first}-D samples {datasets[0].spatial_shape}; 2-D and 3-D data cannot be mixed")
    return first


def _validate_arrays(grids: Any, classes: Sequence[str], where: str) -> None:
    if not isinstance(grids, np.ndarray):
        raise MapsimError(f"{where}: 'grids' must be a NumPy array, found {type(grids).__name__}")
    if grids.dtype != np.uint8:
        raise MapsimError(f"{where}: 'grids' must have dtype uint8, found {grids.dtype}")
    if grids.ndim not in (3, 4):
        raise MapsimError(f"{where}: 'grids' must have shape (n_samples, H, W) or (n_samples, D, H, W), found rank "
                          f"{grids.ndim} shape {grids.shape}")
    if grids.shape[0] == 0:
        raise MapsimError(f"{where}: 'grids' holds no samples (shape {grids.shape})")
    if grids.ndim == 4 and grids.shape[1] == 0:
        raise MapsimError(f"{where}: 'grids' has depth 0 (shape {grids.shape}); 3-D samples need D >= 1 planes")
    if any(v == 0 for v in grids.shape[1:]):
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
        A ``.npz`` file in the format described in this module, or a complete
        zarr store (``NAME.zarr``, :mod:`mapsim.zarrstore`), read whole (:func:`open_dataset` reads
        one block at a time).

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
    if p.suffix == ".zarr":
        from mapsim.zarrstore import load_zarr_arrays

        grids, classes, metadata, extras = load_zarr_arrays(p)
        _validate_arrays(grids, classes, where)
        ds = Dataset(grids, tuple(classes), metadata, extras)
        ds._source = where
        return ds
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
    validate_geometry(grids, classes, metadata, arrays, where)
    for k, v in arrays.items():
        if k == OFFSETS_KEY:
            continue  # NaN marks empty pixels; validate_geometry checked it
        if v.dtype.kind == "f" and not np.all(np.isfinite(v) | np.isneginf(v)):
            raise MapsimError(f"{where}: array {k!r} contains NaN or +inf")
    ds = Dataset(grids, classes, metadata, arrays)
    ds._source = where
    return ds


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


# ---------------------------------------------------------------------------------------------
# Geometry: periodicity, pixel size, offsets, positions, the interior of generated samples
# ---------------------------------------------------------------------------------------------

def _axis_pair(value: Any, what: str, where: str, kind: type, ndim: int = 2) -> tuple[Any, ...]:
    """One value for every axis, or a list of ``ndim`` ([rows, columns]; 3-D: [z, rows, columns])."""
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            axes = "[rows, columns]" if ndim == 2 else "[z, rows, columns]"
            raise MapsimError(f"{where}: metadata {what}: expected one value or {axes}, found {list(value)}")
        vals = tuple(value)
    else:
        vals = (value,) * ndim
    for v in vals:
        if kind is bool:
            if not isinstance(v, (bool, np.bool_)):
                raise MapsimError(f"{where}: metadata {what}: expected true/false per axis, found {value!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise MapsimError(f"{where}: metadata {what}: expected a positive number per axis, found {value!r}")
    return vals


def periodic_axes(metadata: Mapping[str, Any] | None, override: bool | Sequence[bool] | None = None,
                  where: str = "dataset", ndim: int = 2) -> tuple[bool, ...]:
    """Periodicity of the samples per axis ``(rows/y, columns/x)``; the one reader of ``periodic``.

    Parameters
    ----------
    metadata : dict or None
        Looks for ``metadata["params"]["periodic"]`` (Monte Carlo lattice data, one bool) and
        then ``metadata["periodic"]`` (one bool for both axes, as older files store it, or
        ``[per_y, per_x]``).
    override : bool or (bool, bool), optional
        Returned (as a pair) when given.
    ndim : int
        Sample dimension: 2 gives (rows, columns), 3 gives (z, rows, columns).

    Returns
    -------
    tuple of ``ndim`` bool
        Absent any record every axis is open: open estimators stay correct for periodic
        data, the converse is not true.
    """
    if override is not None:
        return tuple(bool(v) for v in _axis_pair(override, "periodic", where, bool, ndim))
    if not metadata:
        return (False,) * ndim
    params = metadata.get("params")
    if isinstance(params, Mapping) and "periodic" in params:
        return tuple(bool(v) for v in _axis_pair(params["periodic"], "params.periodic", where, bool, ndim))
    if "periodic" in metadata and metadata["periodic"] is not None:
        return tuple(bool(v) for v in _axis_pair(metadata["periodic"], "periodic", where, bool, ndim))
    return (False,) * ndim


def pixel_size_of(metadata: Mapping[str, Any] | None, where: str = "dataset",
                  ndim: int = 2) -> tuple[float, ...] | None:
    """Pixel side per axis ``(a_y, a_x)`` (3-D: ``(a_z, a_y, a_x)``) in ``length_unit``, or None when not recorded."""
    if not metadata or metadata.get("pixel_size") is None:
        return None
    return tuple(float(v) for v in _axis_pair(metadata["pixel_size"], "pixel_size", where, float, ndim))


def length_unit_of(metadata: Mapping[str, Any] | None) -> str | None:
    """The dataset's ``length_unit`` (None when not recorded)."""
    unit = (metadata or {}).get("length_unit")
    return str(unit) if unit is not None else None


def validate_offsets(offsets: Any, grids: np.ndarray, where: str = "dataset") -> None:
    """Check an ``offsets`` array against its grids (shape, dtype, range, NaN exactly where empty).

    Raises
    ------
    MapsimError
        Naming ``where``, what was expected and the first offending pixel.
    """
    if not isinstance(offsets, np.ndarray):
        raise MapsimError(f"{where}: 'offsets' must be a NumPy array, found {type(offsets).__name__}")
    want = tuple(grids.shape) + (grids.ndim - 1,)
    if offsets.shape != want:
        raise MapsimError(f"{where}: 'offsets' must have shape grids.shape + (2,) = {want}, found {offsets.shape}")
    if offsets.dtype != np.float32:
        raise MapsimError(f"{where}: 'offsets' must have dtype float32, found {offsets.dtype}")
    occupied = grids != 0
    nan = np.isnan(offsets)

    def at(index: np.ndarray) -> str:
        names = ("row", "column") if grids.ndim == 3 else ("plane", "row", "column")
        return ", ".join([f"sample {index[0]}"] + [f"{n} {v}" for n, v in zip(names, index[1:-1])])

    bad = occupied[..., None] & nan
    if bad.any():
        raise MapsimError(f"{where}: 'offsets' is NaN on occupied pixel ({at(np.argwhere(bad)[0])}); "
                          "every atom needs a position")
    bad = ~occupied[..., None] & ~nan
    if bad.any():
        raise MapsimError(f"{where}: 'offsets' holds a number on empty pixel ({at(np.argwhere(bad)[0])}); "
                          "expected NaN where the class is 0")
    with np.errstate(invalid="ignore"):
        out = occupied[..., None] & ~((offsets >= 0.0) & (offsets < 1.0))
    if out.any():
        idx = np.argwhere(out)[0]
        raise MapsimError(f"{where}: 'offsets' outside [0, 1): {float(offsets[tuple(idx)])!r} at {at(idx)}, "
                          f"component {idx[-1]} (pixel units relative to the pixel corner)")


def validate_geometry(grids: np.ndarray, classes: Sequence[str], metadata: Mapping[str, Any],
                      extras: Mapping[str, np.ndarray], where: str = "dataset") -> None:
    """Check the geometry metadata and ``offsets`` (see the module docstring)."""
    ndim = grids.ndim - 1
    px = pixel_size_of(metadata, where, ndim)
    periodic_axes(metadata, where=where, ndim=ndim)
    if metadata.get("cell") is not None:
        _axis_pair(metadata["cell"], "cell", where, float, ndim)
    unit = metadata.get("length_unit")
    if unit is not None and (not isinstance(unit, str) or not unit.strip()):
        raise MapsimError(f"{where}: metadata length_unit: expected a non-empty string, found {unit!r}")
    smap = metadata.get("species_map")
    if smap is not None:
        if not isinstance(smap, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in smap.items()):
            raise MapsimError(f"{where}: metadata species_map: expected species -> class name, found {smap!r}")
        unknown = sorted({v for v in smap.values()} - set(classes))
        if unknown:
            raise MapsimError(f"{where}: metadata species_map names class(es) {unknown} that are not in "
                              f"classes {list(classes)}")
    if OFFSETS_KEY in extras:
        if px is None:
            raise MapsimError(f"{where}: has 'offsets' but no metadata pixel_size; positions need the pixel size")
        validate_offsets(extras[OFFSETS_KEY], grids, where)


def sample_geometry(dataset: Dataset, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Origin and pixel size of sample ``k``, each float64 ``(ndim,)`` in the order (y, x) (3-D: (z, y, x)).

    ``metadata["sources"][k]`` (import from cells that differ per frame) wins over the dataset's
    ``pixel_size``; the origin defaults to 0. Without any pixel size the pixel is 1 (pixel units).
    """
    src = None
    sources = dataset.metadata.get("sources")
    if isinstance(sources, list) and len(sources) == dataset.n_samples and isinstance(sources[k], Mapping):
        src = sources[k]
    nd = dataset.ndim
    pixel = pixel_size_of(dataset.metadata, ndim=nd) or (1.0,) * nd
    origin = (0.0,) * nd
    if src is not None and src.get("pixel_size") is not None and src.get("origin") is not None:
        pixel = _axis_pair(src["pixel_size"], f"sources[{k}].pixel_size", "dataset", float, nd)
        origin = tuple(float(v) for v in src["origin"])
    return np.asarray(origin, float), np.asarray(pixel, float)


def atom_positions(dataset: Dataset, k: int, centres: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The atoms of sample ``k``: positions and class ids, raster order.

    Parameters
    ----------
    dataset : Dataset
    k : int
        Sample index.
    centres : bool
        Put every atom at its pixel centre even when the dataset has offsets (what a class-only
        model would give).

    Returns
    -------
    xy : ndarray of float64, shape (n_atoms, 2), or (n_atoms, 3) for 3-D samples
        Columns (x, y) (3-D: (x, y, z)) in the dataset's length unit:
        ``origin + (index + offset) * pixel``; pixel centres (offset 0.5) when the dataset has
        no offsets.
    class_ids : ndarray of int64, shape (n_atoms,)
    """
    if dataset.ndim == 3:
        grid = dataset.grids[k]
        idx = np.nonzero(grid)  # (z, y, x) voxel indices
        origin, pixel = sample_geometry(dataset, k)
        off = None if centres else dataset.offsets
        xyz = np.empty((idx[0].size, 3))
        for axis in range(3):  # axis 0 = z -> column 2, axis 2 = x -> column 0
            o = 0.5 if off is None else off[(k,) + idx + (axis,)].astype(np.float64)
            xyz[:, 2 - axis] = origin[axis] + (idx[axis] + o) * pixel[axis]
        return xyz, grid[idx].astype(np.int64)
    grid = dataset.grids[k]
    rows, cols = np.nonzero(grid)
    origin, pixel = sample_geometry(dataset, k)
    off = None if centres else dataset.offsets
    if off is None:
        oy = ox = np.full(rows.size, 0.5)
    else:
        oy = off[k, rows, cols, 0].astype(np.float64)
        ox = off[k, rows, cols, 1].astype(np.float64)
    xy = np.empty((rows.size, 2))
    xy[:, 0] = origin[1] + (cols + ox) * pixel[1]
    xy[:, 1] = origin[0] + (rows + oy) * pixel[0]
    return xy, grid[rows, cols].astype(np.int64)


@dataclass(frozen=True)
class Geometry:
    """How positions in a plane map onto a grid (per axis: index 0 = y/rows, 1 = x/columns).

    Pixel ``(i, j)`` covers ``[origin_x + j*pixel_x, ...) x [origin_y + i*pixel_y, ...)``. A 3-D
    geometry has three entries per field in the order (z, y, x).
    """

    shape: tuple[int, ...]
    origin: tuple[float, ...]
    pixel: tuple[float, ...]
    periodic: tuple[bool, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"shape": [int(v) for v in self.shape], "origin": [float(v) for v in self.origin],
                "pixel_size": [float(v) for v in self.pixel], "periodic": [bool(v) for v in self.periodic]}


def grid_geometry(xy: np.ndarray, cell: tuple[float | None, float | None], pixel_size: float,
                  where: str = "positions") -> Geometry:
    """The grid that holds a set of positions for a requested pixel size.

    Parameters
    ----------
    xy : ndarray of float, shape (n, 2) or (n, 3)
        Positions (x, y) or (x, y, z) in length units.
    cell : (L_x or None, L_y or None) or (L_x, L_y, L_z)
        Periodic cell length per axis (the cell starts at 0); None for an open axis.
    pixel_size : float
        Requested pixel side (length units, > 0).

    Returns
    -------
    Geometry
        Axes (y, x), or (z, y, x) for 3-D positions. Periodic axis: ``n = max(1, round(L / a))``
        pixels of ``L / n`` from 0. Open axis: pixels of exactly ``a``, the first centred on the
        lowest coordinate.
    """
    nd = xy.shape[1]
    shape, origin, pixel = [0] * nd, [0.0] * nd, [0.0] * nd
    for axis in range(nd):
        col = nd - 1 - axis
        L = cell[col]
        if L is not None:
            n = max(1, int(round(L / pixel_size)))
            shape[axis], origin[axis], pixel[axis] = n, 0.0, L / n
        else:
            if xy.shape[0] == 0:
                raise MapsimError(f"{where}: no atoms to place and no periodic cell along "
                                  f"{'xyz'[col]}; cannot define a grid (give --cell)")
            lo, hi = float(xy[:, col].min()), float(xy[:, col].max())
            n = int(math.floor((hi - lo) / pixel_size + 0.5)) + 1
            shape[axis], origin[axis], pixel[axis] = n, lo - 0.5 * pixel_size, float(pixel_size)
    if math.prod(shape) > 2**31:
        raise MapsimError(f"{where}: pixel size {pixel_size:g} gives a {'x'.join(map(str, shape))} grid; too large "
                          "(give a larger --pixel-size)")
    return Geometry(tuple(shape), tuple(origin), tuple(pixel), tuple(cell[nd - 1 - a] is not None for a in range(nd)))


@dataclass
class Raster:
    """Positions placed on a grid (:func:`rasterize`).

    Attributes
    ----------
    grid : ndarray of uint8, shape (H, W)
    offsets : ndarray of float32, shape (H, W, 2)
        Position of the kept atom inside its pixel, (y, x) in pixel units in [0, 1); NaN where empty.
    lost : int
        Atoms not in the grid because their pixel already held one (n_atoms - occupied pixels).
    conflicts : int
        Pixels that received atoms of different classes.
    kept : ndarray of int64, shape (occupied pixels,)
        Index (into the input) of the atom each occupied pixel keeps.
    """

    grid: np.ndarray
    offsets: np.ndarray
    lost: int
    conflicts: int
    kept: np.ndarray


def pixel_index(xy: np.ndarray, geom: Geometry) -> tuple[np.ndarray, ...]:
    """Row, column (int64, (n,)) and offsets (float64, (n, 2), (y, x) in [0, 1)) of positions on a grid.

    3-D positions (n, 3) give plane, row, column and offsets (n, 3) in the order (z, y, x).
    Periodic axes wrap; open axes clip (rounding at the far edge).
    """
    idx, frac = [], []
    nd = xy.shape[1]
    for axis in range(nd):
        col = nd - 1 - axis
        u = (xy[:, col] - geom.origin[axis]) / geom.pixel[axis]
        n = geom.shape[axis]
        if geom.periodic[axis]:
            u = np.mod(u, n)
            u[u >= n] = 0.0
        k = np.floor(u).astype(np.int64)
        f = u - k
        if not geom.periodic[axis]:
            kc = np.clip(k, 0, n - 1)
            f = np.where(k != kc, np.where(k < kc, 0.0, _BELOW_ONE), f)
            k = kc
        idx.append(k)
        frac.append(np.clip(f, 0.0, _BELOW_ONE))
    return (*idx, np.stack(frac, axis=1))


def rasterize(xy: np.ndarray, class_ids: np.ndarray, geom: Geometry) -> Raster:
    """Place atoms on a grid, keeping each kept atom's position inside its pixel.

    Parameters
    ----------
    xy : ndarray of float, shape (n, 2) or (n, 3)
        Positions (x, y) (or (x, y, z) on a 3-D geometry) in length units of atoms of non-empty classes.
    class_ids : ndarray of int, shape (n,)
        Class id (1..255) of each atom.
    geom : Geometry

    Returns
    -------
    Raster
        Where several atoms share a pixel the highest class id wins (the first such atom in
        input order); the others are *lost* and counted. 3-D: grid (D, H, W), offsets (D, H, W, 3).
    """
    nd = len(geom.shape)
    grid = np.zeros(geom.shape, np.uint8)
    offsets = np.full((*geom.shape, nd), np.nan, np.float32)
    n = xy.shape[0]
    if n == 0:
        return Raster(grid, offsets, 0, 0, np.empty(0, np.int64))
    *index, frac = pixel_index(xy, geom)
    flat = index[0] * geom.shape[1] + index[1] if nd == 2 else np.ravel_multi_index(tuple(index), geom.shape)
    cls = np.asarray(class_ids, np.int64)
    # the atom kept per pixel: highest class, then first in input order
    order = np.lexsort((np.arange(n), -cls, flat))
    first = np.ones(n, bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    kept = np.sort(order[first])
    grid.reshape(-1)[flat[kept]] = cls[kept].astype(np.uint8)
    off32 = np.minimum(frac[kept].astype(np.float32), np.float32(_BELOW_ONE))
    offsets.reshape(-1, nd)[flat[kept]] = off32
    lost = int(n - kept.size)
    conflicts = 0
    if lost:
        lo = np.full(grid.size, 256, np.int64)
        np.minimum.at(lo, flat, cls)
        occ = flat[kept]
        conflicts = int(np.count_nonzero(lo[occ] != grid.reshape(-1)[occ]))
    return Raster(grid, offsets, lost, conflicts, kept)


#: Relative step of the collision-free pixel search.
PIXEL_SEARCH_STEP = 0.005


def largest_collision_free_pixel(frames: Sequence[tuple[np.ndarray, tuple[float | None, float | None]]],
                                 where: str = "positions") -> tuple[float, str]:
    """The largest pixel that puts at most one atom in every pixel of every frame.

    Parameters
    ----------
    frames : sequence of (xy, cell)
        ``xy`` float (n, 2) positions (x, y) (or (n, 3), (x, y, z): voxels); ``cell`` as in
        :func:`grid_geometry`.

    Returns
    -------
    pixel : float
        Requested pixel side (periodic axes stretch it to tile the cell).
    rule : str
        How it was found, for the report.

    Notes
    -----
    Rule: scan down from ``sqrt(area per atom)`` (3-D: the cube root of the volume per atom) of
    the densest frame (no larger pixel can hold every atom) in steps of :data:`PIXEL_SEARCH_STEP`
    (0.5 %) and take the first pixel with no collision in any frame. The scan ends at the latest
    at ``d_min / sqrt(2)`` (3-D: ``d_min / sqrt(3)``; d_min the smallest pair distance), where no
    square pixel (cubic voxel) can hold two atoms. Collisions depend on
    where the grid lines fall, not only on d_min, so the result is usually well above that bound.

    Raises
    ------
    MapsimError
        When two atoms share a position (no pixel separates them) or there are no atoms.
    """
    from scipy.spatial import cKDTree

    d_min, start = math.inf, 0.0
    nd = 2
    for xy, cell in frames:
        nd = xy.shape[1]
        if xy.shape[0] < 2:
            continue
        pts, box = xy.copy(), np.empty(nd)
        for col in range(nd):
            L = cell[col]
            if L is not None:
                pts[:, col] = np.mod(pts[:, col], L)
                pts[:, col][pts[:, col] >= L] = 0.0
                box[col] = L
            else:
                pts[:, col] -= pts[:, col].min()
                box[col] = 3.0 * pts[:, col].max() + 1.0
        d, _ = cKDTree(pts, boxsize=box).query(pts, k=2)
        d_min = min(d_min, float(d[:, 1].min()))
        extent = [cell[c] if cell[c] is not None else float(np.ptp(xy[:, c])) + 1e-12 for c in range(nd)]
        per_atom = math.prod(extent) / xy.shape[0]
        start = max(start, math.sqrt(per_atom) if nd == 2 else float(np.cbrt(per_atom)))
    if not math.isfinite(d_min):
        raise MapsimError(f"{where}: fewer than two atoms in every frame; the collision-free pixel is undefined "
                          "(give --pixel-size)")
    if d_min <= 1e-9 * start:
        raise MapsimError(f"{where}: two atoms share an {'xyz'[:nd]} position (distance {d_min:.3g}); no pixel holds them "
                          "apart (give --pixel-size; the summary counts the atoms lost)")
    floor = d_min / math.sqrt(float(nd)) * (1.0 - 1e-9)
    a = start
    steps = 0
    while a > floor:
        if all(_no_collision(xy, cell, a, where) for xy, cell in frames):
            break
        a *= 1.0 - PIXEL_SEARCH_STEP
        steps += 1
    else:
        a = floor
        while not all(_no_collision(xy, cell, a, where) for xy, cell in frames):
            a *= 1.0 - PIXEL_SEARCH_STEP  # periodic cells stretch the pixel a little above the request
    rule = (f"largest collision-free pixel: scanned down from {'sqrt(area' if nd == 2 else 'cbrt(volume'} per atom) = {start:.6g} in "
            f"{100 * PIXEL_SEARCH_STEP:g} % steps ({steps} step(s)); smallest pair distance {d_min:.6g}")
    return float(a), rule


def _no_collision(xy: np.ndarray, cell, a: float, where: str) -> bool:
    if xy.shape[0] < 2:
        return True
    geom = grid_geometry(xy, cell, a, where)
    *index, _ = pixel_index(xy, geom)
    flat = index[0] * geom.shape[1] + index[1] if len(index) == 2 else np.ravel_multi_index(tuple(index), geom.shape)
    return np.unique(flat).size == flat.size


# ---------------------------------------------------------------------------------------------
# The interior of generated samples
# ---------------------------------------------------------------------------------------------

def context_range_of(metadata: Mapping[str, Any] | None, where: str = "dataset") -> int | None:
    """The generating model's L_c: ``metadata["context_range"]`` or ``metadata["model"]["context_range"]``."""
    metadata = metadata or {}
    model = metadata.get("model")
    for holder in (metadata, model if isinstance(model, Mapping) else None):
        if holder and holder.get("context_range") is not None:
            try:
                return int(holder["context_range"])
            except (TypeError, ValueError):
                raise MapsimError(f"{where}: metadata context_range: expected an integer, "
                                  f"found {holder['context_range']!r}") from None
    return None


def interior_defaults(metadata: Mapping[str, Any] | None, where: str = "dataset") -> tuple[int, int]:
    """Default (rows dropped at the top, columns dropped at each side) of the interior: ``(2 L_c, L_c)`` for
    data generated by a model with context range L_c (from the metadata), ``(0, 0)`` otherwise."""
    lc = context_range_of(metadata, where)
    return (2 * lc, lc) if lc is not None else (0, 0)


@dataclass(frozen=True)
class Interior:
    """The part of a sample that statistics and exports use (:func:`interior`).

    Attributes
    ----------
    rows, cols : slice
        ``grid[rows, cols]`` is the interior.
    skip_rows, skip_cols : int
        Rows dropped at the top (the chain's start-up) and columns dropped at each side.
    periodic : (bool, bool)
        Periodicity of the interior per axis: an axis stays periodic only if nothing was cut from it.
    """

    rows: slice
    cols: slice
    skip_rows: int
    skip_cols: int
    periodic: tuple[bool, bool]

    @property
    def origin(self) -> tuple[int, int]:
        """(row, column) of the interior's first pixel in the full sample."""
        return int(self.rows.start), int(self.cols.start)


def interior(metadata: Mapping[str, Any] | None, shape: tuple[int, int], skip_rows: int | None = None,
             skip_cols: int | None = None, where: str = "dataset") -> Interior:
    """The one definition of the interior of (generated) samples, used by export and compare.

    Parameters
    ----------
    metadata : dict
        The dataset's metadata; ``context_range`` (the generating model's L_c, top level or in
        ``model``) sets the defaults, ``periodic`` the periodicity (:func:`periodic_axes`).
    shape : (H, W)
        Sample shape.
    skip_rows : int, optional
        Rows dropped at the top; default ``2 * L_c`` (the autoregressive chain's start-up), 0
        for data not generated by a model.
    skip_cols : int, optional
        Columns dropped on each side; default ``L_c`` (the columns whose context reaches past
        the side edge), 0 for data not generated by a model.

    Returns
    -------
    Interior

    Raises
    ------
    MapsimError
        Negative skips or skips that leave nothing.
    """
    h, w = int(shape[0]), int(shape[1])
    default_rows, default_cols = interior_defaults(metadata, where)
    r = int(skip_rows) if skip_rows is not None else default_rows
    c = int(skip_cols) if skip_cols is not None else default_cols
    if r < 0 or c < 0:
        raise MapsimError(f"{where}: interior: skipped rows/columns must be non-negative, found {r} rows, {c} columns")
    if r >= h or 2 * c >= w:
        raise MapsimError(f"{where}: interior: dropping {r} row(s) at the top and {c} column(s) at each side "
                          f"leaves nothing of {h}x{w} samples (give smaller skips)")
    per = periodic_axes(metadata, where=where)
    return Interior(slice(r, h), slice(c, w - c), r, c, (per[0] and r == 0, per[1] and c == 0))


#: Metadata keys that describe what the data are (not how they were made); they flow from training
#: data through the model's stored config into every generated dataset (:func:`data_provenance`).
PROVENANCE_KEYS = ("pixel_size", "length_unit", "species_map", "classes")


def data_provenance(metadata: Mapping[str, Any] | None, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """The provenance a model should store and a generated dataset should carry.

    Parameters
    ----------
    metadata : dict
        Training data's metadata.
    classes : sequence of str, optional
        The training data's class names.

    Returns
    -------
    dict
        ``pixel_size`` ([a_y, a_x]), ``length_unit``, ``species_map`` and ``classes`` where known,
        and ``periodic`` [false, false]: generated samples have open edges (their first rows are the
        chain's start-up), whatever the training data had. Merged into a generated dataset's
        metadata, it makes export and the statistics of atoms use the training data's lengths.
    """
    meta = metadata or {}
    out: dict[str, Any] = {}
    px = pixel_size_of(meta)
    if px is not None:
        out["pixel_size"] = [px[0], px[1]]
    if length_unit_of(meta) is not None:
        out["length_unit"] = length_unit_of(meta)
    if isinstance(meta.get("species_map"), Mapping):
        out["species_map"] = dict(meta["species_map"])
    if classes is not None:
        out["classes"] = [str(c) for c in classes]
    out["periodic"] = [False, False]
    return out


def check_length_units(reference_unit: str | None, generated_unit: str | None, reference: str,
                       generated: str) -> str | None:
    """The common length unit of two inputs; a one-line error naming the generated file when they differ.

    An unrecorded unit (None) on one side is accepted (the recorded one is returned).
    """
    if reference_unit is not None and generated_unit is not None and reference_unit != generated_unit:
        raise MapsimError(f"{generated}: length unit {generated_unit!r} differs from the reference's "
                          f"{reference_unit!r} ({reference}); convert one of them")
    return reference_unit or generated_unit
