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

Positions
---------
Every kept atom's position inside its pixel is stored as ``offsets`` (pixel units in [0, 1),
component 0 along y; :mod:`mapsim.lattice`), so the grid loses nothing unless two atoms share
a pixel: then the highest class id is kept and the others are *lost* (counted, never reported
as placed).

Pixel size
----------
Given (``pixel_size``), read back from a mapsim extxyz file, else (positions kept) the
**largest collision-free pixel** (:func:`mapsim.lattice.largest_collision_free_pixel`: at most
one atom per pixel in every frame), else (``offsets=False``, the grid alone) the **median
nearest-neighbour distance** in the xy projection among the atoms that map to a non-empty class,
pooled over all frames (minimum image across periodic axes; atoms at the same xy position
excluded): in a dense structure the contact distance, so touching atoms land on neighbouring
pixels; atoms closer than a pixel diagonal can then share a pixel and are lost. Refinement
shrinks the pixel by 10 % per step until none is lost or a floor is reached (below
``d_min / sqrt(2)`` none can be).

Export writes each non-empty pixel as one atom at its stored position, else at the pixel
centre, ``x = x0 + (j + offset_x) a_x``, ``y = y0 + (i + offset_y) a_y``, ``z = 0``, in a
``W a_x x H a_y`` cell, periodic (``pbc``) along the dataset's periodic axes (z non-periodic).
Extended xyz files carry ``mapsim_*`` keys (pixel size, origin, H, W, classes, class <->
species, length unit) that import reads back, so dataset -> extxyz -> dataset is exact for the
grid and the positions (to float32).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mapsim.errors import MapsimError
from mapsim.exchange.common import EMPTY, Sample, check_name, class_order
from mapsim.lattice import Geometry, grid_geometry, largest_collision_free_pixel, rasterize

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


def frame_cell(atoms, where: str, cell_override: tuple[float, float] | None = None) -> tuple[float | None, float | None]:
    """Periodic cell length per axis ``(L_x or None, L_y or None)`` of a frame (None: open axis)."""
    lx, ly, per_x, per_y = _xy_cell(atoms, where, cell_override)
    return (lx if per_x else None, ly if per_y else None)


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
    return grid_geometry(xy, frame_cell(atoms, where, cell_override), pixel_size, where)


def atoms_to_grid(xy: np.ndarray, class_ids: np.ndarray, geom: Geometry) -> tuple[np.ndarray, int, int]:
    """Rasterise atoms onto a grid (grid, atoms lost, conflicts); :func:`mapsim.lattice.rasterize` keeps
    the positions too.

    Returns
    -------
    grid : uint8 array (H, W)
        Where several atoms share a pixel, the highest class id wins.
    lost : int
        Atoms that landed on a pixel already taken (n_atoms - n_occupied_pixels).
    conflicts : int
        Pixels holding atoms of different classes.
    """
    r = rasterize(xy, class_ids, geom)
    return r.grid, r.lost, r.conflicts


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


def grid_to_atoms(grid: np.ndarray, classes: Sequence[str], species: dict[str, str],
                  pixel_size: float | Sequence[float], info: dict[str, Any] | None = None, *,
                  offsets: np.ndarray | None = None, origin: Sequence[float] = (0.0, 0.0),
                  periodic: Sequence[bool] = (True, True), length_unit: str | None = None):
    """One atom per non-empty pixel in a ``W a_x x H a_y`` cell.

    Parameters
    ----------
    grid : uint8 array (H, W)
    classes : sequence of str
        Class names, index = class id (class 0 is empty and gets no atoms).
    species : dict
        Class name -> chemical symbol for every non-empty class.
    pixel_size : float or (a_y, a_x)
        Pixel side in the dataset's length unit.
    info : dict, optional
        Extra ``atoms.info`` entries.
    offsets : float32 array (H, W, 2), optional
        Position inside each occupied pixel, (y, x) in pixel units; default the pixel centre.
    origin : (y0, x0)
        Corner of pixel (0, 0) in length units.
    periodic : (bool, bool)
        Periodicity of rows (y) and columns (x); becomes ASE ``pbc`` (x, y, False).
    length_unit : str, optional
        Written as ``mapsim_length_unit``.

    Returns
    -------
    ase.Atoms
        Positions ``x = x0 + (j + offset_x) a_x``, ``y = y0 + (i + offset_y) a_y``, ``z = 0``; ``info``
        holds :data:`INFO_KEYS` and ``mapsim_origin`` so that import rebuilds the grid exactly.
    """
    from ase import Atoms

    ay, ax = (float(v) for v in (pixel_size if isinstance(pixel_size, (tuple, list, np.ndarray))
                                 else (pixel_size, pixel_size)))
    h, w = grid.shape
    rows, cols = np.nonzero(grid)  # raster order
    cls = grid[rows, cols]
    symbols = [species[classes[c]] for c in cls]
    oy = np.full(rows.size, 0.5) if offsets is None else offsets[rows, cols, 0].astype(np.float64)
    ox = np.full(rows.size, 0.5) if offsets is None else offsets[rows, cols, 1].astype(np.float64)
    pos = np.zeros((rows.size, 3))
    pos[:, 0] = float(origin[1]) + (cols + ox) * ax
    pos[:, 1] = float(origin[0]) + (rows + oy) * ay
    atoms = Atoms(symbols=symbols, positions=pos, cell=[w * ax, h * ay, max(ax, ay)],
                  pbc=[bool(periodic[1]), bool(periodic[0]), False])
    atoms.info.update(info or {})
    atoms.info.update({
        "mapsim_pixel_size": ax if ax == ay else np.array([ay, ax]),
        "mapsim_height": int(h),
        "mapsim_width": int(w),
        "mapsim_classes": ",".join(check_name(c, "class name") for c in classes),
        "mapsim_species": ",".join(f"{c}={check_name(species[c], 'species')}" for c in classes[1:]),
    })
    if tuple(float(v) for v in origin) != (0.0, 0.0):
        atoms.info["mapsim_origin"] = np.array([float(origin[0]), float(origin[1])])
    if length_unit is not None:
        atoms.info["mapsim_length_unit"] = str(length_unit)
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
        pix = np.atleast_1d(np.asarray(info["mapsim_pixel_size"], float))
        if pix.size not in (1, 2):
            raise ValueError(f"mapsim_pixel_size has {pix.size} values")
        ay, ax = float(pix[0]), float(pix[-1])
        origin = np.atleast_1d(np.asarray(info.get("mapsim_origin", [0.0, 0.0]), float))
        if origin.size != 2:
            raise ValueError(f"mapsim_origin has {origin.size} values")
        h, w = int(info["mapsim_height"]), int(info["mapsim_width"])
        classes = tuple(str(info["mapsim_classes"]).split(","))
        species = {}
        spec_text = str(info["mapsim_species"])
        for item in (spec_text.split(",") if spec_text else []):
            c, s = item.split("=")
            species[c] = s
    except (TypeError, ValueError) as exc:
        raise MapsimError(f"{where}: mapsim info not understood ({exc})") from None
    if not all(v > 0 and math.isfinite(v) for v in (ay, ax)) or not np.all(np.isfinite(origin)) or h < 1 or w < 1 \
            or not classes or classes[0] != EMPTY:
        raise MapsimError(f"{where}: mapsim info invalid (pixel size {pix.tolist()}, {h}x{w}, classes {list(classes)})")
    if set(species) != set(classes[1:]):
        raise MapsimError(f"{where}: mapsim info: species given for {sorted(species)}, classes are {list(classes)}")
    unit = info.get("mapsim_length_unit")
    return {"pixel_size": ax if ay == ax else None, "pixel": (ay, ax), "origin": (float(origin[0]), float(origin[1])),
            "height": h, "width": w, "classes": classes, "species": species,
            "length_unit": str(unit) if unit is not None else None}


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
    offsets: bool = True,
    length_unit: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[Sample], tuple[str, ...], dict[str, Any]]:
    """Read structure files and place every frame on a grid (see the module docstring).

    Parameters
    ----------
    paths : sequence of path-like
    fmt : str, optional
        ASE format for all files (default: from each file name / content).
    frames : str
        ASE frame selection applied to each file.
    pixel_size : float, optional
        Pixel side in the files' length unit; default from the files' mapsim info, else (with
        ``offsets``) the largest collision-free pixel
        (:func:`mapsim.lattice.largest_collision_free_pixel`), else (without) the
        nearest-neighbour median.
    cell : (Lx, Ly), optional
        Treat every frame as periodic in a rectangular ``Lx x Ly`` cell at the origin (for
        formats without a cell, e.g. plain xyz).
    species_map : dict, optional
        Species -> class name; ``empty`` drops a species. Every species present must be mapped.
        Default: from the files' mapsim info, else one class per species (sorted by symbol).
    refine : bool
        Shrink the pixel by :data:`REFINE_FACTOR` per step until no two atoms share a pixel or
        the pixel would fall below ``min_pixel_size`` (default half the starting size).
    offsets : bool
        Keep each atom's position inside its pixel (``Sample.offsets``).
    length_unit : str, optional
        Unit of the files' lengths (``Å``, ``sigma``, ``nm``); default the unit stored by
        ``mapsim export``, else unrecorded (None).
    progress : callable, optional
        Called with 1 after each file is read.

    Returns
    -------
    samples : list of Sample
    classes : tuple of str
    info : dict
        ``pixel_size`` ([a_y, a_x], the pixel every sample uses; periodic cells stretch the
        requested size to tile the cell, and where samples differ the requested size; each
        sample's own is in its source), ``pixel_size_requested``, ``pixel_size_rule``,
        ``pixel_size_rule_detail``, ``pixel_size_start`` (before refinement), ``refine_steps``,
        ``species_map``, ``collisions`` (= atoms lost), ``atoms_lost``, ``atoms_placed``,
        ``periodic`` ([y, x]), ``cell`` ([L_y, L_x] or None), ``length_unit``.
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
    if length_unit is None:
        units = {str(x[0].info["mapsim_length_unit"]) for x in loaded if x[0].info.get("mapsim_length_unit") is not None}
        if len(units) > 1:
            raise MapsimError(f"the input files were exported in different length units {sorted(units)}; "
                              "give --length-unit after converting them to one")
        length_unit = units.pop() if units else None
    elif not str(length_unit).strip():
        raise MapsimError("--length-unit: expected a unit name (Å, sigma, nm, ...), found an empty string")

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

    per_frame = []  # (atoms, where, file, frame, xy, class_ids, n_dropped, cell (Lx|None, Ly|None))
    for atoms, where, path, i, inf in loaded:
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        unknown = sorted(set(symbols) - set(mapping))
        if unknown:
            raise MapsimError(f"{where}: species {unknown} not in the species map {mapping}; add them "
                              "(SPECIES=CLASS, or SPECIES=empty to drop them)")
        ids = np.array([class_index[mapping[s]] for s in symbols], np.int64)
        keep = ids > 0
        xy = np.asarray(atoms.positions, float)[keep][:, :2] - np.asarray(atoms.get_celldisp(), float).reshape(-1)[:2]
        per_frame.append((atoms, where, path, i, xy, ids[keep], int((~keep).sum()), frame_cell(atoms, where, cell)))

    # pixel size
    detail = None
    if pixel_size is not None:
        a0, rule = float(pixel_size), "given"
    elif any(have_info):
        sizes = {inf["pixel"] for inf in infos if inf is not None}
        if not all(have_info) or len(sizes) != 1:
            raise MapsimError("the input files disagree on the pixel size (some carry mapsim info, "
                              f"with sizes {sorted(sizes)}); give --pixel-size")
        a0, rule = sizes.pop()[1], "file"
    elif offsets:
        a0, detail = largest_collision_free_pixel([(f[4], f[7]) for f in per_frame],
                                                  ", ".join(sorted({str(p) for p in paths})))
        rule = "largest collision-free pixel"
    else:
        a0 = nearest_neighbour_median([(f[0], f[4], f[1]) for f in per_frame], cell)
        rule = "nearest-neighbour median"
    if refine and min_pixel_size is not None and not (0 < min_pixel_size <= a0):
        raise MapsimError(f"--min-pixel-size: expected a size in (0, {a0:g}], found {min_pixel_size}")
    floor = min_pixel_size if min_pixel_size is not None else 0.5 * a0

    a, steps = a0, 0
    while True:
        samples, total = [], 0
        for (atoms, where, path, i, xy, ids, dropped, fcell), inf in zip(per_frame, infos):
            if rule == "file" and cell is None:
                geom = _file_geometry(inf, fcell, where)
            else:
                geom = grid_geometry(xy, fcell, a, where)
            r = rasterize(xy, ids, geom)
            total += r.lost
            src = {"file": path, "frame": i, "kind": "atoms", "n_atoms": int(len(atoms)),
                   "n_placed": int(r.kept.size), "n_lost": r.lost, "n_dropped": dropped, "collisions": r.lost,
                   "conflicts": r.conflicts, **geom.as_dict()}
            samples.append(Sample(r.grid, src, r.offsets if offsets else None))
        if not refine or total == 0 or rule == "file" or a * REFINE_FACTOR < floor:
            break
        a *= REFINE_FACTOR
        steps += 1
    # the pixel actually used: periodic cells stretch it to tile the cell; one value when all agree
    used = np.array([s.source["pixel_size"] for s in samples], float).reshape(-1, 2)
    square = np.allclose(used, used[0], rtol=1e-9, atol=0.0)
    pixel = [float(v) for v in used[0]] if square else [a, a]
    periodic = [bool(all(s.source["periodic"][ax] for s in samples)) for ax in (0, 1)]
    shape = samples[0].grid.shape
    info = {"pixel_size": pixel, "pixel_size_requested": a,
            "pixel_size_rule": rule, "pixel_size_start": a0, "refine_steps": steps,
            "species_map": mapping, "species_rule": rule_species, "collisions": total, "atoms_lost": total,
            "atoms_placed": int(sum(s.source["n_placed"] for s in samples)),
            "periodic": periodic, "cell": [shape[0] * pixel[0], shape[1] * pixel[1]] if square else None,
            "length_unit": length_unit, "offsets": bool(offsets), "projection": "xy (z ignored)"}
    if detail is not None:
        info["pixel_size_rule_detail"] = detail
    return samples, classes, info


def _file_geometry(inf: dict[str, Any], fcell: tuple[float | None, float | None], where: str) -> Geometry:
    """The grid recorded by ``mapsim export`` (origin, pixel, shape), checked against the frame's cell."""
    ay, ax = inf["pixel"]
    shape = (inf["height"], inf["width"])
    for axis, (L, a, n) in enumerate(((fcell[1], ay, shape[0]), (fcell[0], ax, shape[1]))):
        if L is not None and not math.isclose(L, n * a, rel_tol=1e-6):
            raise MapsimError(f"{where}: periodic cell length {L:g} along {'yx'[axis]} is not the "
                              f"{n} pixels of {a:g} the mapsim info records")
    return Geometry(shape, inf["origin"], (ay, ax), (fcell[1] is not None, fcell[0] is not None))
