"""Atomistic structures <-> grids, through ASE (xyz, extended xyz, LAMMPS dumps, any format ASE reads).

Geometry
--------
Only the xy plane is used: z is ignored (the structure is projected onto xy). Grid row ``i``
runs along y and column ``j`` along x; pixel ``(i, j)`` covers
``[x0 + j*px, x0 + (j+1)*px) x [y0 + i*py, y0 + (i+1)*py)``.

* **Periodic axis** (``pbc`` true and a cell vector along it): positions are wrapped into the
  cell and the grid spans it, ``n = max(1, round(L / pixel_size))`` pixels of ``L / n`` each, so
  the grid is periodic like the cell. The cell's first two vectors must be rectangular in xy
  (a along x, b along y); the z vector is ignored.
* **Open axis**: the grid spans the atoms' range, with the first pixel centred on the lowest
  coordinate and pixels of exactly ``pixel_size``.

Pixel size
----------
Given (``pixel_size``), read back from a mapsim extxyz file, or else the **median nearest-
neighbour distance** in the xy projection among the atoms that map to a non-empty class, pooled
over all frames (minimum image across periodic axes; atoms at the same xy position excluded). In
a dense structure that is the contact (bond) distance, so touching atoms land on neighbouring
pixels, which is what the lattice model means by neighbours; the median is not pulled down by a
few close pairs (thermal noise, atoms stacked in z). Atoms closer than a pixel diagonal can still
share a pixel; such *collisions* are counted, and refinement shrinks the pixel by 10 % per step
until none remain or a floor is reached (below ``d_min / sqrt(2)`` none can remain).

Export writes each non-empty pixel as one atom at the pixel centre, ``x = (j + 0.5) a``,
``y = (i + 0.5) a``, ``z = 0``, in a periodic cell ``W a x H a`` (z non-periodic). Extended xyz
files carry ``mapsim_*`` keys (pixel size, H, W, classes, class <-> species) that import reads
back, so grid -> extxyz -> grid is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mapsim.errors import MapsimError
from mapsim.exchange.common import EMPTY, Sample, check_name, class_order

__all__ = [
    "read_frames", "frame_geometry", "atoms_to_grid", "grid_to_atoms", "nearest_neighbour_median",
    "default_species", "import_atoms", "INFO_KEYS", "REFINE_FACTOR",
]

#: Info keys written into extxyz comment lines by export and read back by import.
INFO_KEYS = ("mapsim_pixel_size", "mapsim_height", "mapsim_width", "mapsim_classes", "mapsim_species")

#: Each refinement step multiplies the pixel size by this factor.
REFINE_FACTOR = 0.9

# Export species for classes whose name is not an element symbol, in this order.
_FALLBACK_SPECIES = {"particle": "Au", "solvent": "O"}
_SPARE_SPECIES = ("C", "N", "S", "Si", "Fe", "Cu", "Ag", "Pt", "Pd", "Ni", "Co", "Zn", "Ti", "Al", "Mg",
                  "Ca", "K", "Na", "Cl", "F", "P", "B", "Li", "Ge", "Sn", "Pb", "Cr", "Mn", "V", "W")


def read_frames(path: str | Path, fmt: str | None = None, index: str = ":") -> list:
    """Read every frame of a structure file with ASE.

    Parameters
    ----------
    path : path-like
    fmt : str, optional
        ASE format name (e.g. ``lammps-dump-text``) when the file name does not tell.
    index : str
        ASE frame selection (``":"`` all, ``"::10"`` every tenth, ``"-1"`` the last).

    Raises
    ------
    MapsimError
        Naming the file, when it is missing, unknown to ASE, corrupt or holds no frame.
    """
    import ase.io

    p = Path(path)
    if not p.exists():
        raise MapsimError(f"{p}: file not found")
    if p.is_dir():
        raise MapsimError(f"{p}: expected a structure file, found a directory")
    try:
        frames = ase.io.read(p, index=index, format=fmt)
    except Exception as exc:  # any parser failure on a user's file is a bad input
        what = f" as ASE format {fmt!r}" if fmt else ""
        raise MapsimError(f"{p}: cannot be read as a structure file{what} "
                          f"(ASE: {type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise MapsimError(f"{p}: no frames selected (frames {index!r})")
    return frames


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or "no message")


@dataclass(frozen=True)
class Geometry:
    """How one frame's xy plane maps onto its grid (per axis: index 0 = y/rows, 1 = x/columns)."""

    shape: tuple[int, int]
    origin: tuple[float, float]
    pixel: tuple[float, float]
    periodic: tuple[bool, bool]

    def as_dict(self) -> dict[str, Any]:
        return {"shape": [int(v) for v in self.shape], "origin": [float(v) for v in self.origin],
                "pixel_size": [float(v) for v in self.pixel], "periodic": [bool(v) for v in self.periodic]}


def _xy_cell(atoms, where: str, cell_override: tuple[float, float] | None):
    """(Lx, Ly, periodic_x, periodic_y) of a frame, checking the cell is rectangular in xy."""
    if cell_override is not None:
        return float(cell_override[0]), float(cell_override[1]), True, True
    cell = np.asarray(atoms.cell[:], float)
    pbc = np.asarray(atoms.pbc, bool)
    lx, ly = cell[0, 0], cell[1, 1]
    per_x = bool(pbc[0] and np.linalg.norm(cell[0]) > 0)
    per_y = bool(pbc[1] and np.linalg.norm(cell[1]) > 0)
    if per_x or per_y:
        scale = max(abs(lx), abs(ly), 1e-300)
        if abs(cell[0, 1]) > 1e-8 * scale or abs(cell[1, 0]) > 1e-8 * scale or lx <= 0 or ly <= 0:
            raise MapsimError(
                f"{where}: periodic cell is not rectangular in xy (a = {cell[0, :2].tolist()}, "
                f"b = {cell[1, :2].tolist()}); expected a along +x and b along +y (or give --cell LX,LY)")
    return float(lx), float(ly), per_x, per_y


def frame_geometry(atoms, xy: np.ndarray, pixel_size: float, where: str,
                   cell_override: tuple[float, float] | None = None) -> Geometry:
    """The grid of one frame for a pixel size (see the module docstring).

    Parameters
    ----------
    atoms : ase.Atoms
    xy : float array (n, 2)
        Positions of the atoms that map to non-empty classes, columns (x, y).
    pixel_size : float, > 0
        In the structure's length unit (Å for most formats).
    """
    lx, ly, per_x, per_y = _xy_cell(atoms, where, cell_override)
    shape, origin, pixel = [0, 0], [0.0, 0.0], [0.0, 0.0]
    for axis, (L, per, col) in enumerate(((ly, per_y, 1), (lx, per_x, 0))):
        if per:
            n = max(1, int(round(L / pixel_size)))
            shape[axis], origin[axis], pixel[axis] = n, 0.0, L / n
        else:
            if xy.shape[0] == 0:
                raise MapsimError(f"{where}: no atoms to place and no periodic cell along "
                                  f"{'xy'[col]}; cannot define a grid (give --cell LX,LY)")
            lo, hi = float(xy[:, col].min()), float(xy[:, col].max())
            n = int(math.floor((hi - lo) / pixel_size + 0.5)) + 1
            shape[axis], origin[axis], pixel[axis] = n, lo - 0.5 * pixel_size, float(pixel_size)
    if shape[0] * shape[1] > 2**31:
        raise MapsimError(f"{where}: pixel size {pixel_size:g} gives a {shape[0]}x{shape[1]} grid; too large "
                          "(give a larger --pixel-size)")
    return Geometry((shape[0], shape[1]), (origin[0], origin[1]), (pixel[0], pixel[1]), (per_y, per_x))


def atoms_to_grid(xy: np.ndarray, class_ids: np.ndarray, geom: Geometry) -> tuple[np.ndarray, int, int]:
    """Rasterise atoms onto a grid.

    Parameters
    ----------
    xy : float array (n, 2)
        Positions (x, y) of atoms of non-empty classes.
    class_ids : int array (n,)
        Class id (>= 1) of each atom.
    geom : Geometry

    Returns
    -------
    grid : uint8 array (H, W)
        Where several atoms share a pixel, the highest class id wins.
    collisions : int
        Atoms that landed on a pixel already taken (n_atoms - n_occupied_pixels).
    conflicts : int
        Pixels holding atoms of different classes.
    """
    h, w = geom.shape
    grid = np.zeros((h, w), np.uint8)
    if xy.shape[0] == 0:
        return grid, 0, 0
    idx = []
    for axis, col in ((0, 1), (1, 0)):
        k = np.floor((xy[:, col] - geom.origin[axis]) / geom.pixel[axis]).astype(np.int64)
        n = geom.shape[axis]
        k = np.mod(k, n) if geom.periodic[axis] else np.clip(k, 0, n - 1)  # clip: rounding at the far edge
        idx.append(k)
    flat = idx[0] * w + idx[1]
    np.maximum.at(grid.reshape(-1), flat, class_ids.astype(np.uint8))
    occupied = np.unique(flat)
    collisions = int(flat.size - occupied.size)
    conflicts = 0
    if collisions:
        lo = np.full(h * w, 255, np.int64)
        np.minimum.at(lo, flat, class_ids.astype(np.int64))
        conflicts = int(np.count_nonzero(lo[occupied] != grid.reshape(-1)[occupied]))
    return grid, collisions, conflicts


def _periodic_xy(atoms, xy: np.ndarray, where: str, cell_override) -> tuple[np.ndarray, np.ndarray]:
    """Points and a cKDTree box for minimum-image distances (open axes get a box too wide to wrap)."""
    lx, ly, per_x, per_y = _xy_cell(atoms, where, cell_override)
    pts = xy.copy()
    box = np.empty(2)
    for col, (L, per) in enumerate(((lx, per_x), (ly, per_y))):
        if per:
            pts[:, col] = np.mod(pts[:, col], L)
            pts[:, col][pts[:, col] >= L] = 0.0
            box[col] = L
        else:
            lo = pts[:, col].min()
            pts[:, col] -= lo
            box[col] = 3.0 * pts[:, col].max() + 1.0
    return pts, box


def nearest_neighbour_median(frames_xy: Sequence[tuple[Any, np.ndarray, str]],
                             cell_override: tuple[float, float] | None = None) -> float:
    """Median nearest-neighbour distance in the xy projection, pooled over all frames.

    Parameters
    ----------
    frames_xy : sequence of (atoms, xy, where)
        ``xy`` float (n, 2): positions of the atoms of non-empty classes.

    Returns
    -------
    float
        In the structures' length unit. Atoms whose nearest neighbour sits at the same xy
        position (distance below 1e-9 of the box) do not contribute.

    Raises
    ------
    MapsimError
        When no frame has two distinct atom positions (the rule is undefined).
    """
    from scipy.spatial import cKDTree

    dists = []
    for atoms, xy, where in frames_xy:
        if xy.shape[0] < 2:
            continue
        pts, box = _periodic_xy(atoms, xy, where, cell_override)
        d, _ = cKDTree(pts, boxsize=box).query(pts, k=2)
        d = d[:, 1]
        dists.append(d[d > 1e-9 * float(box.max())])
    pooled = np.concatenate(dists) if dists else np.empty(0)
    if pooled.size == 0:
        names = ", ".join(sorted({w.split(" frame ")[0] for _, _, w in frames_xy})) or "input"
        raise MapsimError(f"{names}: fewer than two distinct atom positions, so the pixel size cannot be "
                          "chosen from nearest-neighbour distances; give --pixel-size")
    return float(np.median(pooled))


def default_species(classes: Sequence[str], known: dict[str, str] | None = None) -> dict[str, str]:
    """Export species for each non-empty class: ``known``, else the class name if it is an element
    symbol, else ``particle -> Au``, ``solvent -> O``, else unused symbols from a fixed list."""
    from ase.data import chemical_symbols

    elements = set(chemical_symbols[1:])
    out: dict[str, str] = {}
    for name in classes[1:]:
        if known and name in known:
            out[name] = known[name]
        elif name in elements:
            out[name] = name
        elif name in _FALLBACK_SPECIES and _FALLBACK_SPECIES[name] not in out.values():
            out[name] = _FALLBACK_SPECIES[name]
    spare = (s for s in _SPARE_SPECIES if s not in out.values() and s not in classes)
    for name in classes[1:]:
        if name not in out:
            try:
                out[name] = next(spare)
            except StopIteration:
                raise MapsimError(f"{len(classes) - 1} classes: too many for the default species list; "
                                  "give --species-map CLASS=SPECIES,...") from None
    return out


def grid_to_atoms(grid: np.ndarray, classes: Sequence[str], species: dict[str, str], pixel_size: float,
                  info: dict[str, Any] | None = None):
    """One atom per non-empty pixel, at the pixel centre, in a periodic ``W a x H a`` cell.

    Parameters
    ----------
    grid : uint8 array (H, W)
    classes : sequence of str
        Class names, index = class id (class 0 is empty and gets no atoms).
    species : dict
        Class name -> chemical symbol for every non-empty class.
    pixel_size : float
        Length of a pixel side (Å).
    info : dict, optional
        Extra ``atoms.info`` entries.

    Returns
    -------
    ase.Atoms
        With ``info`` holding :data:`INFO_KEYS` so that import rebuilds the grid exactly.
    """
    from ase import Atoms

    h, w = grid.shape
    rows, cols = np.nonzero(grid)  # raster order
    cls = grid[rows, cols]
    symbols = [species[classes[c]] for c in cls]
    pos = np.zeros((rows.size, 3))
    pos[:, 0] = (cols + 0.5) * pixel_size
    pos[:, 1] = (rows + 0.5) * pixel_size
    atoms = Atoms(symbols=symbols, positions=pos, cell=[w * pixel_size, h * pixel_size, pixel_size],
                  pbc=[True, True, False])
    atoms.info.update(info or {})
    atoms.info.update({
        "mapsim_pixel_size": float(pixel_size),
        "mapsim_height": int(h),
        "mapsim_width": int(w),
        "mapsim_classes": ",".join(check_name(c, "class name") for c in classes),
        "mapsim_species": ",".join(f"{c}={check_name(species[c], 'species')}" for c in classes[1:]),
    })
    return atoms


def _info_of(atoms, where: str) -> dict[str, Any] | None:
    """The mapsim keys of a frame written by export, validated; None when absent."""
    info = atoms.info
    if not any(k in info for k in INFO_KEYS):
        return None
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise MapsimError(f"{where}: mapsim info incomplete, missing {missing}")
    try:
        a = float(info["mapsim_pixel_size"])
        h, w = int(info["mapsim_height"]), int(info["mapsim_width"])
        classes = tuple(str(info["mapsim_classes"]).split(","))
        species = {}
        spec_text = str(info["mapsim_species"])
        for item in (spec_text.split(",") if spec_text else []):
            c, s = item.split("=")
            species[c] = s
    except (TypeError, ValueError) as exc:
        raise MapsimError(f"{where}: mapsim info not understood ({exc})") from None
    if not (a > 0 and math.isfinite(a)) or h < 1 or w < 1 or not classes or classes[0] != EMPTY:
        raise MapsimError(f"{where}: mapsim info invalid (pixel size {a}, {h}x{w}, classes {list(classes)})")
    if set(species) != set(classes[1:]):
        raise MapsimError(f"{where}: mapsim info: species given for {sorted(species)}, classes are {list(classes)}")
    return {"pixel_size": a, "height": h, "width": w, "classes": classes, "species": species}


def import_atoms(
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    frames: str = ":",
    pixel_size: float | None = None,
    cell: tuple[float, float] | None = None,
    species_map: dict[str, str] | None = None,
    refine: bool = False,
    min_pixel_size: float | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[Sample], tuple[str, ...], dict[str, Any]]:
    """Read structure files and rasterise every frame (see the module docstring).

    Parameters
    ----------
    paths : sequence of path-like
    fmt : str, optional
        ASE format for all files (default: from each file name / content).
    frames : str
        ASE frame selection applied to each file.
    pixel_size : float, optional
        Pixel side in the files' length unit; default from the files' mapsim info, else the
        nearest-neighbour rule.
    cell : (Lx, Ly), optional
        Treat every frame as periodic in a rectangular ``Lx x Ly`` cell at the origin (for
        formats without a cell, e.g. plain xyz).
    species_map : dict, optional
        Species -> class name; ``empty`` drops a species. Every species present must be mapped.
        Default: from the files' mapsim info, else one class per species (sorted by symbol).
    refine : bool
        Shrink the pixel by :data:`REFINE_FACTOR` per step until no two atoms share a pixel or
        the pixel would fall below ``min_pixel_size`` (default half the starting size).
    progress : callable, optional
        Called with 1 after each file is read.

    Returns
    -------
    samples : list of Sample
    classes : tuple of str
    info : dict
        ``pixel_size`` (the square pixel every sample uses; periodic cells stretch the requested
        size to tile the cell, and where samples differ the requested size),
        ``pixel_size_requested``, ``pixel_size_rule`` (given / file / nearest-neighbour median),
        ``pixel_size_start`` (before refinement), ``refine_steps``, ``species_map``, ``collisions``.
    """
    if pixel_size is not None and not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise MapsimError(f"--pixel-size: expected a positive number, found {pixel_size}")
    if cell is not None and not all(c > 0 and math.isfinite(c) for c in cell):
        raise MapsimError(f"--cell: expected two positive lengths, found {list(cell)}")
    loaded = []  # (atoms, where, file, frame, mapsim info)
    for path in paths:
        for i, atoms in enumerate(read_frames(path, fmt, frames)):
            where = f"{path} frame {i}"
            loaded.append((atoms, where, str(path), i, _info_of(atoms, where)))
        if progress is not None:
            progress(1)

    infos = [x[4] for x in loaded]
    have_info = [inf is not None for inf in infos]
    file_classes = None
    if all(have_info):
        for inf, (_, where, *_r) in zip(infos, loaded):
            if file_classes is None:
                file_classes, first_where = inf["classes"], where
            elif inf["classes"] != file_classes:
                raise MapsimError(f"{where}: classes {list(inf['classes'])} differ from {first_where}'s "
                                  f"{list(file_classes)}; give --species-map to choose common classes")

    # species -> class
    if species_map:
        mapping = {check_name(s, "species"): check_name(c, "class name") for s, c in species_map.items()}
        classes = class_order([c for c in mapping.values() if c != EMPTY])
        rule_species = "given"
    elif file_classes is not None:
        mapping = {}
        for inf, (_, where, *_r) in zip(infos, loaded):
            for c, s in inf["species"].items():
                if mapping.setdefault(s, c) != c:
                    raise MapsimError(f"{where}: species {s} is class {c!r} here but {mapping[s]!r} elsewhere")
        classes = file_classes
        rule_species = "file"
    else:
        present = sorted({s for atoms, *_r in loaded for s in atoms.get_chemical_symbols()})
        mapping = {s: s for s in present}
        classes = class_order(present)
        rule_species = "one class per species"
    class_index = {c: k for k, c in enumerate(classes)}

    per_frame = []  # (atoms, where, file, frame, xy, class_ids, n_dropped)
    for atoms, where, path, i, inf in loaded:
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        unknown = sorted(set(symbols) - set(mapping))
        if unknown:
            raise MapsimError(f"{where}: species {unknown} not in the species map {mapping}; add them "
                              "(SPECIES=CLASS, or SPECIES=empty to drop them)")
        ids = np.array([class_index[mapping[s]] for s in symbols], np.int64)
        keep = ids > 0
        xy = np.asarray(atoms.positions, float)[keep][:, :2] - np.asarray(atoms.get_celldisp(), float).reshape(-1)[:2]
        per_frame.append((atoms, where, path, i, xy, ids[keep], int((~keep).sum())))

    # pixel size
    if pixel_size is not None:
        a0, rule = float(pixel_size), "given"
    elif any(have_info):
        sizes = {inf["pixel_size"] for inf in infos if inf is not None}
        if not all(have_info) or len(sizes) != 1:
            raise MapsimError("the input files disagree on the pixel size (some carry mapsim info, "
                              f"with sizes {sorted(sizes)}); give --pixel-size")
        a0, rule = sizes.pop(), "file"
    else:
        a0 = nearest_neighbour_median([(f[0], f[4], f[1]) for f in per_frame], cell)
        rule = "nearest-neighbour median"
    if refine and min_pixel_size is not None and not (0 < min_pixel_size <= a0):
        raise MapsimError(f"--min-pixel-size: expected a size in (0, {a0:g}], found {min_pixel_size}")
    floor = min_pixel_size if min_pixel_size is not None else 0.5 * a0

    a, steps = a0, 0
    while True:
        samples, total = [], 0
        for (atoms, where, path, i, xy, ids, dropped), inf in zip(per_frame, infos):
            geom = frame_geometry(atoms, xy, a, where, cell)
            if rule == "file" and cell is None:
                if geom.shape != (inf["height"], inf["width"]):
                    raise MapsimError(f"{where}: cell and pixel size give {geom.shape[0]}x{geom.shape[1]}, "
                                      f"mapsim info says {inf['height']}x{inf['width']}")
            grid, coll, conf = atoms_to_grid(xy, ids, geom)
            total += coll
            src = {"file": path, "frame": i, "kind": "atoms", "n_atoms": int(len(atoms)),
                   "n_placed": int(xy.shape[0]), "n_dropped": dropped, "collisions": coll,
                   "conflicts": conf, **geom.as_dict()}
            samples.append(Sample(grid, src))
        if not refine or total == 0 or rule == "file" or a * REFINE_FACTOR < floor:
            break
        a *= REFINE_FACTOR
        steps += 1
    # the pixel actually used: periodic cells stretch it to tile the cell; one value when all agree
    used = np.array([s.source["pixel_size"] for s in samples], float).reshape(-1)
    square = used.size > 0 and np.allclose(used, used[0], rtol=1e-9, atol=0.0)
    info = {"pixel_size": float(used[0]) if square else a, "pixel_size_requested": a,
            "pixel_size_rule": rule, "pixel_size_start": a0, "refine_steps": steps,
            "species_map": mapping, "species_rule": rule_species, "collisions": total,
            "projection": "xy (z ignored)"}
    return samples, classes, info
