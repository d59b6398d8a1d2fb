"""3-D data in and out: structures voxelised in x, y and z, TIFF stacks as volumes, 3-D export.

Axes
----
A volume is ``(D, H, W)``: plane ``k`` along z, row ``i`` along y, column ``j`` along x; voxel
``(k, i, j)`` covers ``[x0 + j a_x, ...) x [y0 + i a_y, ...) x [z0 + k a_z, ...)``. Per-axis
metadata lists (``pixel_size``, ``periodic``, ``cell``, ``offsets`` components) are in the
order (z, y, x), as :mod:`mapsim.lattice` describes.

Structures (``mapsim import --3d``)
-----------------------------------
The 2-D rules of :mod:`mapsim.exchange.atoms`, with z kept: a periodic axis (ASE ``pbc`` and a
cell vector; the cell must be orthorhombic) is tiled by ``n = round(L / a)`` voxels of ``L / n``;
an open axis spans the atoms with the first voxel centred on the lowest coordinate. Pixel size:
``--pixel-size``, else the one stored by a 3-D ``mapsim export``, else the largest collision-free
voxel (:func:`mapsim.lattice.largest_collision_free_pixel`, scanning down from the cube root of
the volume per atom). Positions inside the voxels are kept (``offsets`` (n, D, H, W, 3)) unless
``offsets=False``; atoms that share a voxel are lost and counted. A file exported by
``mapsim export`` of a 3-D dataset carries its grid (``mapsim_depth``, origin, pixel), so
dataset -> extxyz -> dataset gives the same grids and positions.

TIFF stacks
-----------
Each multi-page TIFF is one sample: page k is plane k. The page-to-class rules are those of
:func:`mapsim.exchange.images.import_images` (thresholds, class map, binary).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mapsim.errors import MapsimError
from mapsim.exchange.common import EMPTY, check_name, class_order
from mapsim.lattice import Dataset, Geometry, grid_geometry, largest_collision_free_pixel, rasterize

__all__ = ["import_structures_3d", "import_tiff_volumes", "volume_to_atoms", "frame_cell_3d"]


def frame_cell_3d(atoms, where: str, cell_override: Sequence[float] | None = None) -> tuple[float | None, ...]:
    """Periodic cell length per axis ``(L_x, L_y, L_z)`` of a frame, None for an open axis.

    Raises
    ------
    MapsimError
        When a periodic cell is not orthorhombic (a along x, b along y, c along z).
    """
    if cell_override is not None:
        return tuple(float(v) for v in cell_override)
    cell = np.asarray(atoms.cell[:], float)
    pbc = np.asarray(atoms.pbc, bool)
    per = [bool(pbc[a] and np.linalg.norm(cell[a]) > 0) for a in range(3)]
    if any(per):
        scale = max(float(np.abs(cell).max()), 1e-300)
        off = cell - np.diag(np.diag(cell))
        if np.abs(off).max() > 1e-8 * scale or any(per[a] and cell[a, a] <= 0 for a in range(3)):
            raise MapsimError(f"{where}: periodic cell is not orthorhombic ({cell.tolist()}); expected a, b, c "
                              "along +x, +y, +z (or give --cell LX,LY,LZ)")
    return tuple(float(cell[a, a]) if per[a] else None for a in range(3))


def _file_grid(atoms) -> dict[str, Any] | None:
    """The grid a 3-D ``mapsim export`` recorded in the frame's info, or None."""
    info = atoms.info
    if "mapsim_depth" not in info:
        return None
    pix = np.atleast_1d(np.asarray(info["mapsim_pixel_size"], float))
    pixel = tuple(float(v) for v in (pix if pix.size == 3 else np.repeat(pix[:1], 3)))
    origin = tuple(float(v) for v in np.atleast_1d(np.asarray(info.get("mapsim_origin", [0.0, 0.0, 0.0]), float)))
    shape = (int(info["mapsim_depth"]), int(info["mapsim_height"]), int(info["mapsim_width"]))
    classes = tuple(str(info["mapsim_classes"]).split(","))
    species = dict(item.split("=") for item in str(info["mapsim_species"]).split(",") if item)
    return {"pixel": pixel, "origin": origin, "shape": shape, "classes": classes, "species": species}


def import_structures_3d(
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    frames: str = ":",
    pixel_size: float | None = None,
    cell: Sequence[float] | None = None,
    species_map: dict[str, str] | None = None,
    offsets: bool = True,
    length_unit: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Voxelise every frame of structure files in x, y and z (module docstring).

    Parameters
    ----------
    paths : sequence of path-like
    fmt, frames, length_unit, progress
        As :func:`mapsim.exchange.atoms.import_atoms`.
    pixel_size : float, optional
        Voxel side (all three axes) in the files' length unit.
    cell : (L_x, L_y, L_z), optional
        Treat every frame as periodic in this orthorhombic cell at the origin.
    species_map : dict, optional
        Species -> class name (``empty`` drops a species); default from the files' mapsim info,
        else one class per species.
    offsets : bool
        Keep each atom's position inside its voxel.

    Returns
    -------
    dataset : Dataset
        grids (n, D, H, W); metadata ``kind`` ``atoms-3d``, ``pixel_size`` [a_z, a_y, a_x],
        ``periodic`` [z, y, x], ``cell``, ``species_map``, ``atoms_lost``, ``sources`` (file, frame,
        atoms placed/lost, geometry); ``offsets`` (n, D, H, W, 3) unless ``offsets=False``.
    report : dict
        Summary for the command line.
    """
    from mapsim import __version__
    from mapsim.exchange.atoms import read_frames

    if pixel_size is not None and not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise MapsimError(f"--pixel-size: expected a positive number, found {pixel_size}")
    if cell is not None and (len(cell) != 3 or not all(c > 0 and math.isfinite(c) for c in cell)):
        raise MapsimError(f"--cell: with --3d expected three positive lengths LX,LY,LZ, found {list(cell)}")
    loaded = []
    for path in paths:
        for i, atoms in enumerate(read_frames(path, fmt, frames)):
            loaded.append((atoms, f"{path} frame {i}", str(path), i))
        if progress is not None:
            progress(1)
    grids_info = [_file_grid(a) for a, *_ in loaded]
    if length_unit is None:
        units = {str(a.info["mapsim_length_unit"]) for a, *_ in loaded if a.info.get("mapsim_length_unit") is not None}
        if len(units) > 1:
            raise MapsimError(f"the input files were exported in different length units {sorted(units)}; "
                              "give --length-unit after converting them to one")
        length_unit = units.pop() if units else None
    if species_map:
        mapping = {check_name(s, "species"): check_name(c, "class name") for s, c in species_map.items()}
        classes = class_order([c for c in mapping.values() if c != EMPTY])
    elif all(g is not None for g in grids_info):
        classes = grids_info[0]["classes"]
        mapping = {s: c for c, s in grids_info[0]["species"].items()}
        for g, (_, where, *_r) in zip(grids_info, loaded):
            if g["classes"] != classes:
                raise MapsimError(f"{where}: classes {list(g['classes'])} differ from {loaded[0][1]}'s {list(classes)}")
    else:
        present = sorted({s for a, *_ in loaded for s in a.get_chemical_symbols()})
        mapping, classes = {s: s for s in present}, class_order(present)
    index = {c: k for k, c in enumerate(classes)}

    per_frame = []
    for atoms, where, path, i in loaded:
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(mapping))
        if unknown:
            raise MapsimError(f"{where}: species {unknown} not in the species map {mapping}; add them "
                              "(SPECIES=CLASS, or SPECIES=empty to drop them)")
        ids = np.array([index[mapping[s]] for s in symbols], np.int64)
        keep = ids > 0
        xyz = np.asarray(atoms.positions, float)[keep] - np.asarray(atoms.get_celldisp(), float).reshape(-1)[:3]
        per_frame.append((xyz, ids[keep], frame_cell_3d(atoms, where, cell), int((~keep).sum())))

    detail = None
    from_file = pixel_size is None and cell is None and all(g is not None for g in grids_info)
    if pixel_size is not None:
        a, rule = float(pixel_size), "given"
    elif from_file:
        a, rule = grids_info[0]["pixel"][2], "file"
    else:
        a, detail = largest_collision_free_pixel([(f[0], f[2]) for f in per_frame],
                                                 ", ".join(sorted({str(p) for p in paths})))
        rule = "largest collision-free pixel"
    grids, offs, sources, lost = [], [], [], 0
    for (xyz, ids, fcell, dropped), g, (atoms, where, path, i) in zip(per_frame, grids_info, loaded):
        if from_file:
            geom = Geometry(g["shape"], g["origin"], g["pixel"], tuple(fcell[2 - ax] is not None for ax in range(3)))
        else:
            geom = grid_geometry(xyz, fcell, a, where)
        r = rasterize(xyz, ids, geom)
        if grids and r.grid.shape != grids[0].shape:
            raise MapsimError(f"samples differ in size: {loaded[0][1]} is {'x'.join(map(str, grids[0].shape))} "
                              f"voxels but {where} is {'x'.join(map(str, r.grid.shape))}; a dataset needs one DxHxW "
                              "(give a common --pixel-size and --cell)")
        grids.append(r.grid)
        offs.append(r.offsets)
        lost += r.lost
        sources.append({"file": path, "frame": i, "kind": "atoms-3d", "n_atoms": int(len(atoms)),
                        "n_placed": int(r.kept.size), "n_lost": r.lost, "n_dropped": dropped,
                        "conflicts": r.conflicts, **geom.as_dict()})
    pixel = [float(v) for v in sources[0]["pixel_size"]]
    periodic = [bool(all(s["periodic"][ax] for s in sources)) for ax in range(3)]
    shape = grids[0].shape
    metadata = {
        "generator": "mapsim.import", "mapsim_version": __version__, "kind": "atoms-3d",
        "n_samples": len(grids), "depth": int(shape[0]), "height": int(shape[1]), "width": int(shape[2]),
        "pixel_size": pixel, "pixel_size_rule": rule, "species_map": mapping, "atoms_lost": lost,
        "collisions": lost, "atoms_placed": int(sum(s["n_placed"] for s in sources)), "periodic": periodic,
        "cell": [n * p for n, p in zip(shape, pixel)], "length_unit": length_unit, "offsets": bool(offsets),
        "projection": "none (x, y, z voxelised)", "sources": sources,
    }
    if detail is not None:
        metadata["pixel_size_rule_detail"] = detail
    extras = {"offsets": np.stack(offs).astype(np.float32)} if offsets else {}
    dataset = Dataset(np.stack(grids).astype(np.uint8), classes, metadata, extras)
    report = {"samples": dataset.n_samples, "shape": list(shape), "classes": list(classes), "kind": "atoms-3d",
              "pixel_size": pixel, "pixel_size_rule": rule, "atoms_placed": metadata["atoms_placed"],
              "atoms_lost": lost, "offsets": bool(offsets), "length_unit": length_unit, "periodic": periodic}
    return dataset, report


def import_tiff_volumes(
    paths: Sequence[str | Path],
    *,
    thresholds: Sequence[float] | None = None,
    invert: bool = False,
    class_map: dict[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Every multi-page TIFF as one volume (page k = plane k); class rules as for 2-D images.

    Returns
    -------
    dataset : Dataset
        grids (n_files, D, H, W); metadata ``kind`` ``image-3d``, ``sources`` (file, pages).
    report : dict
    """
    from mapsim import __version__
    from mapsim.exchange.images import import_images

    for p in paths:
        if Path(p).suffix.lower() not in (".tif", ".tiff"):
            raise MapsimError(f"{p}: --3d reads images as multi-page TIFF stacks (.tif, .tiff); found "
                              f"{Path(p).suffix or 'no suffix'}")
    samples, classes, info = import_images(paths, thresholds=thresholds, invert=invert, class_map=class_map,
                                           class_names=class_names, progress=progress)
    volumes, sources = [], []
    for p in paths:
        pages = [s.grid for s in samples if s.source["file"] == str(p)]
        shapes = {g.shape for g in pages}
        if len(shapes) != 1:
            raise MapsimError(f"{p}: pages differ in size {sorted(shapes)}; a volume needs one HxW per page")
        vol = np.stack(pages)
        if volumes and vol.shape != volumes[0].shape:
            raise MapsimError(f"samples differ in size: {paths[0]} is {'x'.join(map(str, volumes[0].shape))} but "
                              f"{p} is {'x'.join(map(str, vol.shape))}; a dataset needs one DxHxW")
        volumes.append(vol)
        sources.append({"file": str(p), "pages": len(pages), "kind": "image-3d"})
    shape = volumes[0].shape
    metadata = {"generator": "mapsim.import", "mapsim_version": __version__, "kind": "image-3d",
                "n_samples": len(volumes), "depth": int(shape[0]), "height": int(shape[1]), "width": int(shape[2]),
                **info, "sources": sources}
    dataset = Dataset(np.stack(volumes).astype(np.uint8), classes, metadata)
    report = {"samples": dataset.n_samples, "shape": list(shape), "classes": list(classes), "kind": "image-3d",
              "class_rule": info["class_rule"]}
    return dataset, report


def volume_to_atoms(grid: np.ndarray, classes: Sequence[str], species: dict[str, str], pixel: Sequence[float],
                    origin: Sequence[float], periodic: Sequence[bool], *, offsets: np.ndarray | None = None,
                    info: dict[str, Any] | None = None, length_unit: str | None = None):
    """One atom per non-empty voxel in a ``W a_x x H a_y x D a_z`` cell.

    Parameters
    ----------
    grid : uint8 array (D, H, W)
    classes, species
        As :func:`mapsim.exchange.atoms.grid_to_atoms`.
    pixel, origin : (z, y, x)
        Voxel side and the corner of voxel (0, 0, 0), in length units.
    periodic : (z, y, x) bools
        Become ASE ``pbc`` (x, y, z).
    offsets : float32 array (D, H, W, 3), optional
        Position inside each occupied voxel, (z, y, x) in voxel units; default the centre.

    Returns
    -------
    ase.Atoms
        Positions ``x = x0 + (j + o_x) a_x``, ``y = y0 + (i + o_y) a_y``, ``z = z0 + (k + o_z) a_z``;
        ``info`` holds ``mapsim_depth``, ``mapsim_height``, ``mapsim_width``, ``mapsim_pixel_size``
        [a_z, a_y, a_x], ``mapsim_origin``, classes and species, so import rebuilds the grid.
    """
    from ase import Atoms

    from mapsim.exchange.atoms import grid_to_atoms

    idx = np.nonzero(grid)
    pos = np.zeros((idx[0].size, 3))
    for axis in range(3):
        o = 0.5 if offsets is None else offsets[idx + (axis,)].astype(np.float64)
        pos[:, 2 - axis] = float(origin[axis]) + (idx[axis] + o) * float(pixel[axis])
    d, h, w = grid.shape
    # the 2-D writer checks names and fills the class/species keys the same way
    keys = grid_to_atoms(np.zeros((1, 1), np.uint8), classes, species, 1.0, length_unit=length_unit).info
    atoms = Atoms(symbols=[species[classes[c]] for c in grid[idx]], positions=pos,
                  cell=[w * pixel[2], h * pixel[1], d * pixel[0]], pbc=[bool(periodic[2]), bool(periodic[1]),
                                                                     bool(periodic[0])])
    atoms.info.update(info or {})
    atoms.info.update({k: v for k, v in keys.items() if k in ("mapsim_classes", "mapsim_species",
                                                              "mapsim_length_unit")})
    atoms.info.update({"mapsim_depth": int(d), "mapsim_height": int(h), "mapsim_width": int(w),
                       "mapsim_pixel_size": np.array([float(v) for v in pixel]),
                       "mapsim_origin": np.array([float(v) for v in origin])})
    return atoms


def export_volumes(dataset: Dataset, out_dir: str | Path, fmt: str, *, pixel_size: float | None = None,
                   species_map: dict[str, str] | None = None, overwrite: bool = False,
                   progress: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Write every 3-D sample as one structure file (``extxyz`` or ``xyz``), atomically.

    Atoms sit at their stored positions (offsets), else at voxel centres, ``z = z0 + (k + ½) a_z``;
    the voxel and origin come from each sample's geometry (:func:`mapsim.lattice.sample_geometry`),
    ``pixel_size`` replaces them (origin 0), else 1. Species as for 2-D export.

    Returns
    -------
    dict
        ``out``, ``format``, ``files``, ``shape``, ``pixel_size`` [a_z, a_y, a_x], ``length_unit``,
        ``positions``, ``species``, ``atoms``.
    """
    import ase.io

    from mapsim.exchange.atoms import default_species
    from mapsim.exchange.common import atomic_directory, check_output_dir
    from mapsim.lattice import length_unit_of, periodic_axes, sample_geometry

    if fmt not in ("extxyz", "xyz"):
        raise MapsimError(f"--format {fmt}: 3-D datasets are exported as structures (extxyz or xyz); a PNG holds "
                          "one plane")
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    unit = length_unit_of(dataset.metadata) if pixel_size is None else None
    known = {c: sp for sp, c in (dataset.metadata.get("species_map") or {}).items()
             if c in dataset.classes and c != EMPTY}
    species = default_species(dataset.classes, {**known, **dict(species_map or {})})
    periodic = periodic_axes(dataset.metadata, where=dataset.source, ndim=3)
    n_atoms, pixels = 0, set()
    with atomic_directory(out, overwrite) as tmp:
        for k in range(dataset.n_samples):
            if pixel_size is not None:
                origin, pixel = np.zeros(3), np.full(3, float(pixel_size))
            else:
                origin, pixel = sample_geometry(dataset, k)
            pixels.add(tuple(float(v) for v in pixel))
            atoms = volume_to_atoms(dataset.grids[k], dataset.classes, species, pixel, origin, periodic,
                                    offsets=None if dataset.offsets is None else dataset.offsets[k],
                                    info={"mapsim_sample": k}, length_unit=unit)
            n_atoms += len(atoms)
            name = tmp / f"sample_{k:05d}.{fmt}"
            if fmt == "extxyz":
                ase.io.write(name, atoms, format="extxyz")
            else:
                d, h, w = dataset.grids[k].shape
                ase.io.write(name, atoms, format="xyz", comment=(
                    f"mapsim sample {k}: {d}x{h}x{w} voxels of {pixel[0]!r} x {pixel[1]!r} x {pixel[2]!r} "
                    f"{unit or 'length units'} (z y x) from origin {origin[2]!r},{origin[1]!r},{origin[0]!r}"))
            if progress is not None:
                progress(1)
    return {"out": str(out), "format": fmt, "files": dataset.n_samples, "shape": list(dataset.spatial_shape),
            "pixel_size": list(sorted(pixels)[0]), "pixel_size_varies": len(pixels) > 1, "length_unit": unit,
            "positions": "offsets" if dataset.offsets is not None else "voxel centres", "species": species,
            "atoms": n_atoms}
