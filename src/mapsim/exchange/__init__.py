"""Real data in and out: atomistic structures (via ASE) and images (PNG/TIFF) <-> datasets.

Public API
----------
import_files(paths, ...) -> (Dataset, report)
    Structure files or images into one dataset; each sample's origin is in
    ``metadata["sources"][k]``.
export_dataset(dataset, out_dir, fmt, ...) -> report
    One file per sample (``sample_00000.extxyz`` ...) into a directory that appears whole or not at all.

The geometry and pixel-size rules are in :mod:`mapsim.exchange.atoms`, the image rules in
:mod:`mapsim.exchange.images`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from typing import Any, Callable, Sequence

from mapsim.errors import MapsimError
from mapsim.exchange.common import (
    EMPTY,
    atomic_directory,
    check_output_dir,
    parse_pairs,
    parse_shape,
    require,
    stack_offsets,
    stack_samples,
)
from mapsim.exchange.images import IMAGE_SUFFIXES
from mapsim.lattice import OFFSETS_KEY, Dataset, interior, length_unit_of, periodic_axes, sample_geometry

__all__ = ["import_files", "export_dataset", "write_structures", "EXPORT_FORMATS", "IMAGE_SUFFIXES", "is_image", "parse_pairs",
           "parse_shape", "check_output_dir"]

EXPORT_FORMATS = ("extxyz", "xyz", "png")


def is_image(path: str | Path) -> bool:
    """Whether a file is read as an image (by its suffix)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def import_files(
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
    thresholds: Sequence[float] | None = None,
    invert: bool = False,
    class_map: dict[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    crop: tuple[int, int] | None = None,
    progress: Callable[[int], object] | None = None,
    three_d: bool = False,
) -> tuple[Dataset, dict[str, Any]]:
    """Import structure files or images into one dataset.

    Files ending in ``.png``, ``.tif`` or ``.tiff`` are images (unless ``fmt`` names an ASE
    format); anything else is read with ASE. One import takes one kind. Every frame (or
    TIFF page) becomes one sample; all samples must share H x W unless ``crop`` is given.

    Parameters
    ----------
    paths : sequence of path-like
    fmt, frames, pixel_size, cell, species_map, refine, min_pixel_size, offsets, length_unit
        Structure options, see :func:`mapsim.exchange.atoms.import_atoms`.
    thresholds, invert, class_map, class_names
        Image options, see :func:`mapsim.exchange.images.import_images`.
    crop : (H, W), optional
        Keep the top-left H x W of every sample.
    progress : callable, optional
        Called with 1 after each file is read.
    three_d : bool
        Volumes (:mod:`mapsim.exchange.volumes`): structures voxelised in x, y and z (``cell``
        then has three lengths), every multi-page TIFF one (D, H, W) sample.

    Returns
    -------
    dataset : Dataset
        ``metadata`` holds ``generator`` (``mapsim.import``), ``kind``, ``sources`` (one dict
        per sample: ``file``, ``frame`` and converter details) and the converter's settings
        (atoms: ``pixel_size`` [a_y, a_x], ``pixel_size_rule``, ``species_map``, ``collisions``,
        ``atoms_lost``, ``periodic``, ``cell``, ``length_unit`` ...); structure files keep the
        extra array ``offsets`` (see :mod:`mapsim.lattice`) unless ``offsets=False``.
    report : dict
        Summary for the command line (samples, shape, classes, collisions ...).
    """
    from mapsim import __version__

    if not paths:
        raise MapsimError("no input files given")
    images = [is_image(p) and fmt is None for p in paths]
    if any(images) and not all(images):
        first_img = next(p for p, im in zip(paths, images) if im)
        first_atoms = next(p for p, im in zip(paths, images) if not im)
        raise MapsimError(f"cannot mix images ({first_img}) and structure files ({first_atoms}) in one import")
    kind = "image" if all(images) else "atoms"
    if three_d:
        return _import_3d(paths, kind, fmt=fmt, frames=frames, pixel_size=pixel_size, cell=cell,
                          species_map=species_map, refine=refine, min_pixel_size=min_pixel_size, offsets=offsets,
                          length_unit=length_unit, thresholds=thresholds, invert=invert, class_map=class_map,
                          class_names=class_names, crop=crop, progress=progress)
    if kind == "atoms":
        from mapsim.exchange.atoms import import_atoms

        require("ase", "io", "reading structure files")
        if thresholds or class_map or class_names or invert:
            raise MapsimError("--threshold/--class-map/--classes/--invert apply to images; the inputs are structure files")
        samples, classes, info = import_atoms(paths, fmt=fmt, frames=frames, pixel_size=pixel_size, cell=cell,
                                              species_map=species_map, refine=refine, min_pixel_size=min_pixel_size,
                                              offsets=offsets, length_unit=length_unit, progress=progress)
    else:
        from mapsim.exchange.images import import_images

        require("PIL", "io", "reading images")
        if any(Path(p).suffix.lower() in (".tif", ".tiff") for p in paths):
            require("tifffile", "io", "reading TIFF images")
        if pixel_size is not None or cell is not None or species_map or refine or min_pixel_size is not None:
            raise MapsimError("--pixel-size/--cell/--species-map/--refine apply to structure files; the inputs are images")
        if length_unit is not None:
            raise MapsimError("--length-unit applies to structure files; image pixels have no length")
        if frames != ":":
            raise MapsimError("--frames applies to structure files; every page of an image is imported")
        samples, classes, info = import_images(paths, thresholds=thresholds, invert=invert, class_map=class_map,
                                               class_names=class_names, progress=progress)
    grids = stack_samples(samples, crop)
    metadata = {
        "generator": "mapsim.import",
        "mapsim_version": __version__,
        "kind": kind,
        "n_samples": int(grids.shape[0]),
        "height": int(grids.shape[1]),
        "width": int(grids.shape[2]),
        "crop": list(crop) if crop else None,
        **info,
        "sources": [s.source for s in samples],
    }
    extras = {}
    off = stack_offsets(samples, crop) if kind == "atoms" else None
    if off is not None:
        extras[OFFSETS_KEY] = off
    dataset = Dataset(grids, classes, metadata, extras)
    report: dict[str, Any] = {"samples": dataset.n_samples, "height": dataset.shape[0], "width": dataset.shape[1],
                              "classes": list(classes), "kind": kind}
    if kind == "atoms":
        with_coll = [s.source for s in samples if s.source["collisions"]]
        report.update({
            "pixel_size": info["pixel_size"], "pixel_size_rule": info["pixel_size_rule"],
            "pixel_size_rule_detail": info.get("pixel_size_rule_detail"),
            "refine_steps": info["refine_steps"], "collisions": info["collisions"],
            "atoms_lost": info["atoms_lost"], "samples_with_collisions": len(with_coll),
            "conflicts": int(sum(s.source["conflicts"] for s in samples)),
            "atoms_placed": int(sum(s.source["n_placed"] for s in samples)),
            "atoms_read": int(sum(s.source["n_atoms"] - s.source["n_dropped"] for s in samples)),
            "species_map": info["species_map"], "offsets": off is not None,
            "length_unit": info["length_unit"], "periodic": info["periodic"],
        })
    else:
        report["class_rule"] = info["class_rule"]
    return dataset, report


def _import_3d(paths, kind, *, fmt, frames, pixel_size, cell, species_map, refine, min_pixel_size, offsets,
               length_unit, thresholds, invert, class_map, class_names, crop, progress):
    """``import_files(..., three_d=True)``: the options that apply to volumes, checked."""
    from mapsim.exchange import volumes

    if crop is not None or refine or min_pixel_size is not None:
        raise MapsimError("--crop/--refine/--min-pixel-size apply to 2-D imports; not with --3d")
    if kind == "atoms":
        require("ase", "io", "reading structure files")
        if thresholds or class_map or class_names or invert:
            raise MapsimError("--threshold/--class-map/--classes/--invert apply to images; the inputs are structure files")
        return volumes.import_structures_3d(paths, fmt=fmt, frames=frames, pixel_size=pixel_size, cell=cell,
                                            species_map=species_map, offsets=offsets, length_unit=length_unit,
                                            progress=progress)
    require("PIL", "io", "reading images")
    require("tifffile", "io", "reading TIFF images")
    if pixel_size is not None or cell is not None or species_map or length_unit is not None or frames != ":":
        raise MapsimError("--pixel-size/--cell/--species-map/--length-unit/--frames apply to structure files; "
                          "the inputs are images")
    return volumes.import_tiff_volumes(paths, thresholds=thresholds, invert=invert, class_map=class_map,
                                       class_names=class_names, progress=progress)


def export_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    fmt: str,
    *,
    pixel_size: float | None = None,
    species_map: dict[str, str] | None = None,
    interior_only: bool = False,
    skip_rows: int | None = None,
    skip_cols: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Write one file per sample into ``out_dir`` (``sample_00000.<fmt>`` ...), atomically.

    Parameters
    ----------
    dataset : Dataset
    out_dir : path-like
        Created (or, with ``overwrite``, replaced) only once every file is written.
    fmt : {"extxyz", "xyz", "png"}
        ``extxyz``: cell, pbc and the ``mapsim_*`` keys (pixel size, origin, H, W, classes, class
        <-> species, length unit) in the comment line, so import rebuilds the grid and positions
        exactly. ``xyz``: plain XYZ, positions only. ``png``: palette image, one pixel per grid
        point, fixed colour per class.
    pixel_size : float, optional
        Pixel side for atom coordinates (both axes, origin 0); default each sample's own
        geometry from the metadata (:func:`mapsim.lattice.sample_geometry`), else 1.
    species_map : dict, optional
        Class name -> chemical symbol; classes left out get the defaults of
        :func:`mapsim.exchange.atoms.default_species`.
    interior_only : bool
        Export only the interior (:func:`mapsim.lattice.interior`: the chain's start-up rows and
        the side columns of generated samples dropped); ``skip_rows``/``skip_cols`` override
        its defaults.
    progress : callable, optional
        Called with 1 after each file is written.

    Returns
    -------
    dict
        ``out``, ``format``, ``files``, ``interior`` (rows, columns kept), and for atoms
        ``pixel_size`` ([a_y, a_x]), ``length_unit``, ``positions`` (``offsets`` or ``pixel
        centres``), ``species`` and ``atoms``.
    """
    if fmt not in EXPORT_FORMATS:
        raise MapsimError(f"--format {fmt!r}: expected one of {list(EXPORT_FORMATS)}")
    if dataset.ndim == 3:
        if interior_only or skip_rows is not None or skip_cols is not None:
            raise MapsimError(f"{dataset.source}: --interior/--skip-rows/--skip-cols cut 2-D samples; this dataset "
                              "holds 3-D samples")
        from mapsim.exchange.volumes import export_volumes

        require("ase", "io", f"{fmt} export")
        return export_volumes(dataset, out_dir, fmt, pixel_size=pixel_size, species_map=species_map,
                              overwrite=overwrite, progress=progress)
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    n = dataset.n_samples
    names = [f"sample_{k:05d}.{fmt}" for k in range(n)]
    if interior_only or skip_rows is not None or skip_cols is not None:
        inner = interior(dataset.metadata, dataset.shape, skip_rows, skip_cols)
    else:
        per = periodic_axes(dataset.metadata)
        inner = interior({"periodic": list(per)}, dataset.shape, 0, 0)
    grids = dataset.grids[:, inner.rows, inner.cols]
    offsets = dataset.offsets[:, inner.rows, inner.cols] if dataset.offsets is not None else None
    report: dict[str, Any] = {"out": str(out), "format": fmt, "files": n,
                              "interior": {"skip_rows": inner.skip_rows, "skip_cols": inner.skip_cols,
                                           "shape": [int(grids.shape[1]), int(grids.shape[2])]}}
    require("PIL" if fmt == "png" else "ase", "io", f"{fmt} export")
    if fmt == "png":
        from mapsim.exchange.images import grid_to_png

        with atomic_directory(out, overwrite) as tmp:
            for k in range(n):
                grid_to_png(grids[k], dataset.classes, tmp / names[k], {"sample": k})
                if progress is not None:
                    progress(1)
        return report

    import ase.io
    from ase.data import chemical_symbols

    from mapsim.exchange.atoms import default_species, grid_to_atoms

    if pixel_size is not None and (isinstance(pixel_size, bool) or not (pixel_size > 0 and math.isfinite(pixel_size))):
        raise MapsimError(f"--pixel-size: expected a positive number, found {pixel_size!r}")
    unit = length_unit_of(dataset.metadata) if pixel_size is None else None
    given = dict(species_map or {})
    for c, s in given.items():
        if c == EMPTY or c not in dataset.classes:
            raise MapsimError(f"--species-map {c}={s}: {c!r} is not a non-empty class of the dataset "
                              f"{list(dataset.classes)}")
        if s not in chemical_symbols:
            raise MapsimError(f"--species-map {c}={s}: {s!r} is not a chemical symbol")
    known = {}
    for sp, c in (dataset.metadata.get("species_map") or {}).items():
        if c in dataset.classes and c != EMPTY and isinstance(sp, str) and sp in chemical_symbols:
            known.setdefault(c, sp)
    species = default_species(dataset.classes, {**known, **given})
    if len(set(species.values())) != len(species):
        raise MapsimError(f"species map {species}: two classes share a species, so import could not tell them apart")
    n_atoms, pixels = 0, set()
    with atomic_directory(out, overwrite) as tmp:
        for k in range(n):
            if pixel_size is not None:
                origin, pixel = np.zeros(2), np.array([float(pixel_size)] * 2)
            else:
                origin, pixel = sample_geometry(dataset, k)
            origin = origin + np.asarray(inner.origin, float) * pixel
            pixels.add(tuple(float(v) for v in pixel))
            atoms = grid_to_atoms(grids[k], dataset.classes, species, tuple(pixel), {"mapsim_sample": k},
                                  offsets=None if offsets is None else offsets[k], origin=tuple(origin),
                                  periodic=inner.periodic, length_unit=unit)
            n_atoms += len(atoms)
            if fmt == "extxyz":
                ase.io.write(tmp / names[k], atoms, format="extxyz")
            else:
                h, w = grids[k].shape
                spec = " ".join(f"{c}:{s}" for c, s in species.items())
                bc = {(True, True): "periodic", (False, False): "open"}.get(tuple(inner.periodic), "mixed")
                comment = (f"mapsim sample {k}: {h}x{w} pixels of {pixel[0]!r} x {pixel[1]!r} {unit or 'length units'} "
                           f"(y x) from origin {origin[1]!r},{origin[0]!r} in a {bc} {w * pixel[1]!r} x {h * pixel[0]!r} "
                           f"cell; classes {spec}")
                ase.io.write(tmp / names[k], atoms, format="xyz", comment=comment)
            if progress is not None:
                progress(1)
    first = sorted(pixels)[0]
    report.update({"pixel_size": list(first), "pixel_size_varies": len(pixels) > 1, "length_unit": unit,
                   "positions": "offsets" if offsets is not None else "pixel centres",
                   "species": species, "atoms": n_atoms})
    return report


def write_structures(
    out_dir: str | Path,
    positions: np.ndarray,
    types: np.ndarray,
    cell: tuple[float, float],
    species: Sequence[str],
    *,
    length_unit: str | None = None,
    info: dict[str, Any] | None = None,
    per_sample_info: Sequence[dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write particle configurations as extxyz files (``sample_00000.extxyz`` ...), atomically.

    Parameters
    ----------
    positions : ndarray of float, shape (n_samples, N, 2)
        (x, y) in ``length_unit``; z is written as 0.
    types : ndarray of int, shape (n_samples, N)
        Index into ``species`` of every particle.
    cell : (L_x, L_y)
        Periodic rectangular cell (pbc true in x and y, false in z).
    species : sequence of str
        Chemical symbol per type.
    info : dict, optional
        ``atoms.info`` entries for every file; ``per_sample_info[k]`` adds to sample k's.

    Returns
    -------
    dict
        ``out``, ``files``, ``atoms``.
    """
    require("ase", "io", "extxyz output")
    import ase.io
    from ase import Atoms

    out = Path(out_dir)
    check_output_dir(out, overwrite)
    n = positions.shape[0]
    sym = np.asarray(list(species), dtype=object)
    total = 0
    with atomic_directory(out, overwrite) as tmp:
        for k in range(n):
            pos = np.zeros((positions.shape[1], 3))
            pos[:, :2] = positions[k]
            atoms = Atoms(symbols=list(sym[np.asarray(types[k], np.int64)]), positions=pos,
                          cell=[float(cell[0]), float(cell[1]), 1.0], pbc=[True, True, False])
            atoms.info.update(info or {})
            if per_sample_info is not None:
                atoms.info.update(per_sample_info[k])
            if length_unit is not None:
                atoms.info["mapsim_length_unit"] = str(length_unit)
            ase.io.write(tmp / f"sample_{k:05d}.extxyz", atoms, format="extxyz")
            total += len(atoms)
    return {"out": str(out), "files": n, "atoms": total}
