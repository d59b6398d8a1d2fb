"""``mapsim import`` and ``mapsim export``: structures and images in, per-sample files out."""

from __future__ import annotations

import argparse

from mapsim.cli.common import add_json_flag, check_output_path, emit, finite_float, progress
from mapsim.errors import MapsimError

_IMPORT_EPILOG = """\
structure files (any format ASE reads: xyz, extxyz, LAMMPS dump with --format lammps-dump-text, ...):
  Only the xy plane is used (z is ignored). Along a periodic cell axis the positions are wrapped
  into the cell and the grid spans it with round(L / pixel) pixels of L / n each; the cell must be
  rectangular in xy. Along an open axis the grid spans the atoms, the first pixel centred on the
  lowest coordinate. Every atom's position inside its pixel is kept (dataset key 'offsets'), so
  export gives back the same positions; --no-offsets keeps the grid only.
  Pixel size: --pixel-size, else the value stored by 'mapsim export' in extxyz files, else the
  largest collision-free pixel (at most one atom per pixel in every frame; scanned down from
  sqrt(area per atom) in 0.5 % steps), or with --no-offsets the median nearest-neighbour distance
  in the xy projection (minimum image, pooled over all frames). An atom that lands on an occupied
  pixel is lost: the summary counts it (the highest class id is kept); --refine shrinks the pixel by
  10 % per step until none is lost or --min-pixel-size (default half the start) is reached.
  --length-unit names the files' unit (Å, sigma, nm); it is stored and printed with every length.
  Species -> class: --species-map, else the map stored in the file, else one class per species
  (sorted). Class 0 is always 'empty'; SPECIES=empty drops a species. LAMMPS atom types read as
  H, He, ... (type 1, 2, ...).

images (.png, .tif, .tiff; one image pixel = one grid pixel; a multi-page TIFF gives one sample per page):
  --class-map VALUE=CLASS,... (grey level or #rrggbb, every value must be mapped), else
  --threshold T1[,T2...] on the grey level (colour: luminance): class = number of thresholds <= value
  (--invert: dark is particle), else the colour table in a PNG written by 'mapsim export', else a
  binary image (two levels): lower = empty, higher = particle.

examples:
  mapsim import snap.extxyz --length-unit Å --out data.npz
  mapsim import dump.lammpstrj --format lammps-dump-text --species-map H=particle --length-unit sigma --out data.npz
  mapsim import a.xyz b.xyz --cell 40,40 --pixel-size 1 --species-map Au=particle,O=empty --out data.npz
  mapsim import micrograph.tif --threshold 128 --invert --out data.npz
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="structure files (ASE formats) or images (PNG/TIFF) -> dataset",
        description="Turn atomistic snapshots (every frame of every file) or images into one dataset (.npz). "
                    "Each sample's origin (file, frame) and the conversion settings are kept in the metadata.",
        epilog=_IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="structure files or images (one kind per import)")
    p.add_argument("--out", required=True, help="dataset file to write (.npz)")
    g = p.add_argument_group("structure files")
    g.add_argument("--format", dest="fmt", help="ASE format name when the file name does not tell (e.g. lammps-dump-text)")
    g.add_argument("--frames", default=":", help="frames of each file, ASE index syntax (default ':' = all; '::10', '-1')")
    g.add_argument("--pixel-size", type=finite_float,
                   help="pixel side in the files' length unit (default: largest collision-free pixel)")
    g.add_argument("--length-unit", help="the files' length unit, stored and printed (e.g. Å, sigma, nm)")
    g.add_argument("--no-offsets", action="store_true",
                   help="keep only the grid, not the positions inside pixels (pixel default: nearest-neighbour median)")
    g.add_argument("--cell", help="LX,LY: treat frames as periodic in this rectangular cell at the origin (for plain xyz)")
    g.add_argument("--species-map", action="append", metavar="SPECIES=CLASS,...",
                   help="species -> class name (CLASS 'empty' drops the species); repeatable")
    g.add_argument("--refine", action="store_true", help="shrink the pixel until no two atoms share one")
    g.add_argument("--min-pixel-size", type=finite_float, help="smallest pixel --refine may reach (default half the start)")
    g = p.add_argument_group("images")
    g.add_argument("--threshold", help="grey-level threshold(s) T1[,T2,...], increasing")
    g.add_argument("--invert", action="store_true", help="dark pixels are particles (higher classes)")
    g.add_argument("--class-map", action="append", metavar="VALUE=CLASS,...",
                   help="grey level or #rrggbb -> class name; repeatable")
    g.add_argument("--classes", help="names of classes 1, 2, ... for --threshold or binary images (default particle,solvent,...)")
    p.add_argument("--crop", metavar="HxW", help="keep the top-left HxW of every sample (when sizes differ)")
    add_json_flag(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export", help="dataset -> one extxyz/xyz/png file per sample",
        description="Write every sample of a dataset as its own file (sample_00000.extxyz, ...). Atoms sit at "
                    "their stored positions (dataset key offsets), else at pixel centres, x = x0 + (j + 0.5) a, "
                    "y = y0 + (i + 0.5) a, z = 0, in a W a x H a cell, periodic along the axes the dataset is "
                    "periodic on; empty pixels get no atom. extxyz keeps the cell, pixel size, origin, H, W, the "
                    "length unit and the class <-> species map, so 'mapsim import' rebuilds the grid and the "
                    "positions exactly; plain xyz keeps positions only (import with --pixel-size A --cell "
                    "W*A,H*A for a periodic grid). --interior drops the chain's start-up rows and side columns of "
                    "generated samples (default 2 L_c rows and L_c columns each side). PNG: one pixel per grid point, fixed colour per class "
                    "(empty white, particle near-black, solvent blue, ...). The directory appears only when "
                    "every file is written.")
    p.add_argument("data", metavar="DATA.npz", help="dataset file")
    p.add_argument("--format", dest="fmt", required=True, choices=("extxyz", "xyz", "png"))
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    p.add_argument("--pixel-size", type=finite_float,
                   help="pixel side in length units (default: the dataset's geometry from import, else 1)")
    p.add_argument("--interior", action="store_true",
                   help="export only the interior of generated samples (start-up rows and side columns dropped)")
    p.add_argument("--skip-rows", type=int, help="rows dropped at the top for --interior (default 2 L_c)")
    p.add_argument("--skip-cols", type=int, help="columns dropped at each side for --interior (default L_c)")
    p.add_argument("--species-map", action="append", metavar="CLASS=SPECIES,...",
                   help="class -> chemical symbol (default: the map from import, else the class name if it is "
                        "an element, particle=Au, solvent=O, then C, N, S, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    add_json_flag(p)
    p.set_defaults(func=cmd_export)


def _floats(text: str | None, option: str, count: int | None = None) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MapsimError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not vals or (count is not None and len(vals) != count):
        raise MapsimError(f"{option} {text!r}: expected {count or 'one or more'} comma-separated numbers")
    return vals


def cmd_import(args: argparse.Namespace) -> int:
    from mapsim.exchange import import_files, parse_pairs, parse_shape
    from mapsim.lattice import save_dataset

    out = check_output_path(args.out, "--out")
    cell = _floats(args.cell, "--cell", 2)
    crop = parse_shape(args.crop, "--crop") if args.crop else None
    names = [s.strip() for s in args.classes.split(",") if s.strip()] if args.classes else None
    with progress(total=len(args.files), desc="import", unit="file") as bar:
        dataset, report = import_files(
            args.files, fmt=args.fmt, frames=args.frames, pixel_size=args.pixel_size,
            cell=tuple(cell) if cell else None, species_map=parse_pairs(args.species_map, "--species-map"),
            refine=args.refine, min_pixel_size=args.min_pixel_size, offsets=not args.no_offsets,
            length_unit=args.length_unit, thresholds=_floats(args.threshold, "--threshold"),
            invert=args.invert, class_map=parse_pairs(args.class_map, "--class-map"), class_names=names, crop=crop,
            progress=bar.update)
    save_dataset(out, dataset)
    report = {"out": str(out), **report}
    text = (f"wrote {out}: {report['samples']} sample(s) {report['height']}x{report['width']}, "
            f"classes {report['classes']}")
    if report["kind"] == "atoms":
        unit = report["length_unit"] or "length units (give --length-unit)"
        pix = report["pixel_size"]
        pix_text = f"{pix[0]:.6g}" if pix[0] == pix[1] else f"{pix[0]:.6g} x {pix[1]:.6g} (y x)"
        text += (f"; pixel {pix_text} {unit} ({report['pixel_size_rule']}"
                 + (f", refined in {report['refine_steps']} step(s)" if report["refine_steps"] else "") + ")"
                 + f"; {report['atoms_placed']} of {report['atoms_read']} atoms placed"
                 + ("; positions kept" if report["offsets"] else "; positions not kept (pixel centres)"))
        if report["atoms_lost"]:
            text += (f"; {report['atoms_lost']} atom(s) LOST: they landed on an occupied pixel in "
                     f"{report['samples_with_collisions']} sample(s)"
                     f" ({report['conflicts']} pixel(s) with mixed classes; highest class id kept)"
                     + ("" if args.refine else "; a smaller --pixel-size (or none, for the collision-free "
                                                "default) or --refine keeps them"))
    else:
        text += f"; classes from {report['class_rule']}"
    emit(report, args.json, text=None if args.json else text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mapsim.exchange import export_dataset, parse_pairs
    from mapsim.lattice import load_dataset

    dataset = load_dataset(args.data)
    with progress(total=dataset.n_samples, desc=f"export {args.fmt}", unit="file") as bar:
        report = export_dataset(dataset, args.out, args.fmt, pixel_size=args.pixel_size,
                                species_map=parse_pairs(args.species_map, "--species-map"),
                                interior_only=args.interior, skip_rows=args.skip_rows, skip_cols=args.skip_cols,
                                overwrite=args.overwrite, progress=bar.update)
    text = f"wrote {report['files']} {args.fmt} file(s) to {report['out']}"
    inner = report["interior"]
    if inner["skip_rows"] or inner["skip_cols"]:
        text += (f" (interior {inner['shape'][0]}x{inner['shape'][1]}: {inner['skip_rows']} start-up row(s) and "
                 f"{inner['skip_cols']} column(s) each side dropped)")
    if args.fmt != "png":
        pix = report["pixel_size"]
        unit = report["length_unit"] or "length units"
        text += (f" ({report['atoms']} atoms at {report['positions']}, pixel "
                 + (f"{pix[0]:.6g}" if pix[0] == pix[1] else f"{pix[0]:.6g} x {pix[1]:.6g} (y x)")
                 + (" (first sample; samples differ)" if report["pixel_size_varies"] else "")
                 + f" {unit}, species " + ", ".join(f"{c}={s}" for c, s in report["species"].items()) + ")")
    emit(report, args.json, text=None if args.json else text)
    return 0
