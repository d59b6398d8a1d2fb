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

3-D (--3d): structures are voxelised in x, y and z (grids (n, D, H, W), axes z, y, x; the cell must be
  orthorhombic; --cell LX,LY,LZ; pixel default the largest collision-free voxel, scanned down from the cube
  root of the volume per atom), positions kept as 3-component offsets; every multi-page TIFF is one
  volume (page k = plane k). Without --3d, z is dropped and every TIFF page is its own 2-D sample.

examples:
  mapsim import snap.extxyz --length-unit Å --out data.npz
  mapsim import water.extxyz --3d --pixel-size 3.1 --species-map O=particle,H=empty --out voxels.npz
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
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="volumes: voxelise structures in x, y, z; one (D, H, W) sample per multi-page TIFF")
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
    register_compare_atoms(sub)


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
    cell = _floats(args.cell, "--cell", 3 if args.three_d else 2)
    crop = parse_shape(args.crop, "--crop") if args.crop else None
    names = [s.strip() for s in args.classes.split(",") if s.strip()] if args.classes else None
    with progress(total=len(args.files), desc="import", unit="file") as bar:
        dataset, report = import_files(
            args.files, fmt=args.fmt, frames=args.frames, pixel_size=args.pixel_size,
            cell=tuple(cell) if cell else None, species_map=parse_pairs(args.species_map, "--species-map"),
            refine=args.refine, min_pixel_size=args.min_pixel_size, offsets=not args.no_offsets,
            length_unit=args.length_unit, thresholds=_floats(args.threshold, "--threshold"),
            invert=args.invert, class_map=parse_pairs(args.class_map, "--class-map"), class_names=names, crop=crop,
            progress=bar.update, three_d=args.three_d)
    save_dataset(out, dataset)
    report = {"out": str(out), **report}
    if args.three_d:
        text = (f"wrote {out}: {report['samples']} volume(s) {'x'.join(map(str, report['shape']))} (D x H x W), "
                f"classes {report['classes']}")
        if report["kind"] == "atoms-3d":
            unit = report["length_unit"] or "length units (give --length-unit)"
            text += (f"; voxel {' x '.join(f'{v:.6g}' for v in report['pixel_size'])} (z y x) {unit} "
                     f"({report['pixel_size_rule']}); {report['atoms_placed']} atoms placed"
                     + (f", {report['atoms_lost']} atom(s) LOST (shared a voxel)" if report["atoms_lost"] else "")
                     + ("; positions kept" if report["offsets"] else ""))
        emit(report, args.json, text=None if args.json else text)
        return 0
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
    if dataset.ndim == 3:
        unit = report["length_unit"] or "length units"
        text += (f" ({report['atoms']} atoms at {report['positions']}, voxel "
                 f"{' x '.join(f'{v:.6g}' for v in report['pixel_size'])} (z y x) {unit}, species "
                 + ", ".join(f"{c}={s}" for c, s in report["species"].items()) + ")")
        emit(report, args.json, text=None if args.json else text)
        return 0
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


_COMPARE_ATOMS_EPILOG = """\
inputs: every argument but the last is the reference, the last is the generated set. Each is a
dataset (.npz; atoms at their stored positions when it has offsets, else at pixel centres; generated
samples restricted to their interior) or structure files read through ASE (every frame one sample).
statistics (settings from the reference): g(r) in the data's length unit, the distribution of neighbour
counts within the reference's first minimum of g(r), mean |psi6| and |psi4| over atoms (same neighbours),
the fraction of neighbour pairs closer than the reference's 1st-percentile neighbour distance, the number
density, and partial g(r) per species pair. Open edges: only atoms at least r_max from every open edge
are query points. Verdict: each statistic's distance between the pooled sides against its permutation
null (samples relabelled --permutations times), family verdict by the Westfall-Young max-T step-down at --alpha.

example:
  mapsim compare-atoms md/*.lammpstrj gen.npz --format lammps-dump-text --species-map H=particle --out report/
"""


def add_compare_atoms_options(c: argparse.ArgumentParser) -> None:
    """The off-lattice options of ``mapsim compare`` (structure files, or datasets with positions)."""
    g = c.add_argument_group("off-lattice statistics (structure files as input, or datasets with positions)")
    g.add_argument("--statistics", choices=("auto", "lattice", "atoms"), default="auto",
                   help="auto (default): statistics of the atoms when an input is a structure file or the "
                        "reference dataset holds positions (offsets), else lattice statistics")
    g.add_argument("--format", dest="fmt", help="ASE format of structure files (e.g. lammps-dump-text)")
    g.add_argument("--frames", default=":", help="frames of each structure file (ASE index syntax)")
    g.add_argument("--species-map", action="append", metavar="SPECIES=CLASS,...",
                   help="species of structure files -> class (default: the dataset's species map)")
    g.add_argument("--length-unit", help="length unit of structure files without one recorded")


def wants_atoms(args: argparse.Namespace) -> bool:
    """Whether ``mapsim compare`` should compare atoms (see :func:`add_compare_atoms_options`)."""
    import numpy as np

    inputs = [*args.reference, args.generated]
    files = [str(p) for p in inputs if not _is_dataset(p)]
    if args.statistics == "lattice":
        if files:
            raise MapsimError(f"{files[0]}: --statistics lattice needs dataset files (.npz); structure files are "
                              "compared as atoms")
        return False
    if args.statistics == "atoms" or files:
        return True
    if len(args.reference) != 1:
        raise MapsimError(f"give one reference dataset, found {len(args.reference)}: {list(args.reference)}")
    if str(args.reference[0]).endswith(".zarr"):
        from mapsim.lattice import open_dataset

        return "offsets" in open_dataset(args.reference[0]).extra_names
    try:
        with np.load(args.reference[0], allow_pickle=False) as z:
            return "offsets" in z.files
    except Exception:
        return False  # the lattice path reports the unreadable file


def compare_atoms_from_compare(args: argparse.Namespace, n_perm: int, alpha: float) -> int:
    """``mapsim compare`` on atoms: the settings of ``compare`` mapped onto ``compare-atoms``."""
    ns = argparse.Namespace(inputs=[*args.reference, args.generated], out=args.out, fmt=args.fmt, frames=args.frames,
                            species_map=args.species_map, length_unit=args.length_unit, r_max=None, bins=100,
                            skip_rows=args.skip_rows, skip_cols=args.skip_cols, permutations=n_perm, alpha=alpha,
                            seed=args.seed, json=args.json)
    return cmd_compare_atoms(ns)


def register_compare_atoms(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-atoms", help="off-lattice fidelity: statistics of the atoms (freud) and a permutation verdict",
        description="Compare the atoms of a generated set with a reference in physical units (g(r), coordination, "
                    "psi6, psi4, close pairs, density, partial g(r)); writes compare_atoms.json, summary.md and "
                    "g_r.png into --out.", epilog=_COMPARE_ATOMS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="FILE", help="reference file(s), then the generated file")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--format", dest="fmt", help="ASE format of structure files (e.g. lammps-dump-text)")
    p.add_argument("--frames", default=":", help="frames of each structure file (ASE index syntax)")
    p.add_argument("--species-map", action="append", metavar="SPECIES=CLASS,...",
                   help="species of structure files -> class (default: the dataset's species map, else one class "
                        "per species)")
    p.add_argument("--length-unit", help="length unit of structure files without one recorded")
    p.add_argument("--r-max", type=finite_float, help="range of g(r) in length units (default min(4 r_peak, window))")
    p.add_argument("--bins", type=int, default=100, help="g(r) bins (default 100)")
    p.add_argument("--skip-rows", type=int, help="rows dropped at the top of generated samples (default 2 L_c)")
    p.add_argument("--skip-cols", type=int, help="columns dropped at each side of generated samples (default L_c)")
    p.add_argument("--permutations", type=int, default=999, help="random relabellings (default 999)")
    p.add_argument("--alpha", type=finite_float, default=0.05, help="family-wise level (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the relabellings (default 0)")
    add_json_flag(p)
    p.set_defaults(func=cmd_compare_atoms)


def _atom_side(paths: list[str], args: argparse.Namespace, name: str, classes=None, species_map=None):
    """(samples, classes, length unit, species map) of one side."""
    from mapsim.analysis.atoms import samples_from_dataset, samples_from_structures
    from mapsim.lattice import length_unit_of, load_dataset

    if all(_is_dataset(p) for p in paths):
        if len(paths) != 1:
            raise MapsimError(f"{name}: give one dataset (.npz or .zarr) per side, found {len(paths)}")
        ds = load_dataset(paths[0])
        skip = (args.skip_rows, args.skip_cols) if name == "generated" else (None, None)
        return (samples_from_dataset(ds, paths[0], skip_rows=skip[0], skip_cols=skip[1]), ds.classes,
                length_unit_of(ds.metadata), ds.metadata.get("species_map"))
    if any(_is_dataset(p) for p in paths):
        raise MapsimError(f"{name}: cannot mix datasets and structure files ({list(paths)})")
    from mapsim.exchange import parse_pairs
    from mapsim.exchange.common import require

    require("ase", "io", "reading structure files")
    smap = parse_pairs(args.species_map, "--species-map") or species_map
    samples, cls = samples_from_structures(paths, args.fmt, args.frames, smap, classes)
    units = {s.length_unit for s in samples if s.length_unit is not None}
    if len(units) > 1:
        raise MapsimError(f"{name}: files in different length units {sorted(units)}")
    unit = units.pop() if units else args.length_unit
    return samples, cls, unit, smap


def cmd_compare_atoms(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from mapsim.analysis.atoms import AtomStatistics, atom_verdict, pooled, split_windows
    from mapsim.fileio import write_text_atomic
    from mapsim.lattice import check_length_units

    if len(args.inputs) < 2:
        raise MapsimError("compare-atoms: give the reference file(s) and then the generated file")
    if args.permutations < 99:
        raise MapsimError(f"--permutations {args.permutations}: expected at least 99")
    if not 0 < args.alpha < 1:
        raise MapsimError(f"--alpha {args.alpha}: expected a number in (0, 1)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise MapsimError(f"--out {out}: exists and is not a directory")
    ref_paths, gen_paths = args.inputs[:-1], args.inputs[-1:]
    # the generated side first when it is a dataset: its classes and species map name the reference's atoms
    gen_first = _is_dataset(gen_paths[0])
    if gen_first:
        gen, gcls, gunit, gmap = _atom_side(gen_paths, args, "generated")
        ref, rcls, runit, _ = _atom_side(ref_paths, args, "reference", gcls, gmap)
    else:
        ref, rcls, runit, rmap = _atom_side(ref_paths, args, "reference")
        gen, gcls, gunit, _ = _atom_side(gen_paths, args, "generated", rcls, rmap)
    if tuple(rcls) != tuple(gcls):
        raise MapsimError(f"{args.inputs[-1]}: classes {list(gcls)} differ from the reference's {list(rcls)}")
    unit = check_length_units(runit, gunit, str(ref_paths[0]), str(gen_paths[0])) or "length units (unrecorded)"
    # larger generated structures: windows of the reference's size are the units that are relabelled
    size = np.min([s.hi - s.lo for s in ref], axis=0)
    n_gen_samples = len(gen)
    gen = split_windows(gen, size)
    st = AtomStatistics(r_max=args.r_max, bins=args.bins).fit(ref)
    rs, gs = st.compute(ref), st.compute(gen)
    v = atom_verdict(rs, gs, n_perm=args.permutations, alpha=args.alpha, seed=args.seed)
    settings = {**st.settings(), **v.settings, "length_unit": unit, "classes": list(rcls),
                "reference": [str(p) for p in ref_paths], "generated": [str(p) for p in gen_paths]}
    result = {"passed": v.passed, "rejected": v.rejected, "settings": settings, "statistics": v.rows}
    lines = [f"# Off-lattice comparison\n",
             f"Reference: {len(ref)} sample(s) from {_files_text(ref_paths)}; generated: {len(gen)} "
             f"window(s) of {n_gen_samples} sample(s) from {gen_paths[0]}. Lengths in {unit}: r_max {st.r_max_:.4g}, neighbour shell "
             f"{st.r_shell_:.4g}, close-pair distance {st.r_close_:.4g}.\n",
             "| statistic | reference | generated | distance | null RMS | ratio | p (max-T adjusted) |", "|---|---|---|---|---|---|---|"]
    for k, r in v.rows.items():
        show = (lambda x: f"{x:.4g}" if isinstance(x, float) else "(curve)")
        lines.append(f"| {k} | {show(r['reference'])} | {show(r['generated'])} | {r['distance']:.4g} | "
                     f"{r['noise']:.4g} | {r['ratio']:.3g} | {r['p_adjusted']:.3g} |")
    verdict = ("PASS: no statistic differs at the family-wise level" if v.passed
               else f"REJECTED on {', '.join(v.rejected)}")
    lines.append(f"\nVerdict at alpha = {args.alpha:g}: {verdict}.\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mapsim.fileio import save_figure_atomic

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    try:
        r = rs["g_r"].support
        axes[0].plot(r, pooled(rs["g_r"].num, rs["g_r"].den), label="reference")
        axes[0].plot(r, pooled(gs["g_r"].num, gs["g_r"].den), "--", label="generated")
        axes[0].set_xlabel(f"r ({unit})")
        axes[0].set_ylabel("g(r)")
        axes[0].legend()
        c = rs["coordination"].support
        axes[1].bar(c - 0.2, pooled(rs["coordination"].num, rs["coordination"].den), 0.4, label="reference")
        axes[1].bar(c + 0.2, pooled(gs["coordination"].num, gs["coordination"].den), 0.4, label="generated")
        used = np.nonzero(rs["coordination"].num.sum(0) + gs["coordination"].num.sum(0))[0]
        if used.size:
            axes[1].set_xlim(used[0] - 1, used[-1] + 1)
        axes[1].set_xlabel(f"neighbours within {st.r_shell_:.3g} {unit}")
        axes[1].legend()
        save_figure_atomic(fig, out / "g_r.png", bbox_inches="tight")
    finally:
        plt.close(fig)
    write_text_atomic(out / "compare_atoms.json", json.dumps(_no_nan(result), indent=2, allow_nan=False) + "\n")
    write_text_atomic(out / "summary.md", "\n".join(lines))
    text = "\n".join(lines[1:2] + [f"{k}: ratio {r['ratio']:.3g}, p_adjusted {r['p_adjusted']:.3g}" for k, r in v.rows.items()]
                     + [f"verdict: {verdict}; wrote {out}/compare_atoms.json, summary.md, g_r.png"])
    emit(result, args.json, text=None if args.json else text)
    return 0


def _no_nan(obj):
    """JSON-ready copy with NaN/inf as null (a statistic undefined on a side)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _files_text(paths) -> str:
    """File list for a summary line: up to three names, then a count."""
    paths = [str(p) for p in paths]
    return ", ".join(paths) if len(paths) <= 3 else f"{', '.join(paths[:2])}, ... ({len(paths)} files)"


def _is_dataset(path) -> bool:
    """A mapsim dataset (``.npz`` file or ``.zarr`` store), as opposed to a structure file."""
    return str(path).rstrip("/").endswith((".npz", ".zarr"))
