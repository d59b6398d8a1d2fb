"""``mapsim simulate hard-disks|lj-liquid|lj-mixture``: off-lattice Monte Carlo training data.

Hooked into :mod:`mapsim.cli.simulate` (presets listed in
:data:`mapsim.montecarlo.offlattice.OFFLATTICE_PRESETS`); the lattice presets do not use these options.
"""

from __future__ import annotations

import argparse
import math
import sys

from mapsim.cli.common import check_output_path, emit, parse_assignments, progress
from mapsim.errors import MapsimError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The off-lattice options of ``mapsim simulate``."""
    g = p.add_argument_group("off-lattice presets (hard-disks, lj-liquid, lj-mixture)")
    g.add_argument("--atoms", type=int, help="particles per sample (default 256)")
    g.add_argument("--structures", metavar="DIR",
                   help="also (or instead of --out) write every sample as DIR/sample_00000.extxyz ...")
    g.add_argument("--pixel-size", type=float,
                   help="pixel of the dataset in σ (default: the largest collision-free pixel, as import chooses it)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty --structures directory")


def help_text() -> str:
    from mapsim.montecarlo.offlattice import OFFLATTICE_DESCRIPTIONS, OFFLATTICE_HELP, OFFLATTICE_PRESETS

    lines = ["", "off-lattice presets (2-D, periodic square box, σ = ε = k_B = 1; --atoms N, --set NAME=VALUE):"]
    for name, desc in OFFLATTICE_DESCRIPTIONS.items():
        lines.append(f"  {name:<22} {desc}")
    lines.append("  parameters:")
    for name, text in OFFLATTICE_HELP.items():
        vals = ", ".join(f"{n}={getattr(p, name):g}" for n, p in OFFLATTICE_PRESETS.items())
        lines.append(f"    {name:<9} {text} [{vals}]")
    lines.append("  example: mapsim simulate lj-liquid --atoms 256 --samples 16 --set density=0.75 --set T=1.0 "
                 "--out lj.npz --structures lj_xyz/")
    return "\n" + "\n".join(lines)


def preset_rows() -> dict:
    """``mapsim simulate --list`` rows of the off-lattice presets."""
    from dataclasses import asdict

    from mapsim.montecarlo.offlattice import OFFLATTICE_DESCRIPTIONS, OFFLATTICE_PRESETS

    return {name: {"description": d, "params": asdict(OFFLATTICE_PRESETS[name])}
            for name, d in OFFLATTICE_DESCRIPTIONS.items()}


def run(args: argparse.Namespace) -> int:
    """Simulate an off-lattice preset; writes a dataset with offsets and/or extxyz files."""
    from mapsim.montecarlo.offlattice import offlattice_params, simulate_offlattice, to_dataset

    if not args.out and not args.structures:
        raise MapsimError("--out DATA.npz and/or --structures DIR: an output is required")
    for opt in ("height", "width", "png", "dask", "keep_solvent"):
        if getattr(args, opt, None):
            raise MapsimError(f"--{opt.replace('_', '-')} applies to the lattice presets; {args.preset!r} is off-lattice "
                              "(its size is --atoms and --set density=...)")
    if args.pixel_size is not None and not (math.isfinite(args.pixel_size) and args.pixel_size > 0):
        raise MapsimError(f"--pixel-size: expected a positive number, found {args.pixel_size}")
    out = check_output_path(args.out, "--out") if args.out else None
    if args.structures:
        from mapsim.exchange.common import check_output_dir
        from pathlib import Path

        check_output_dir(Path(args.structures), args.overwrite, "--structures")
    overrides = parse_assignments(args.assignments)
    if args.atoms is not None:
        overrides["atoms"] = args.atoms
    params = offlattice_params(args.preset, overrides)
    with progress(total=args.samples, desc=f"simulate {args.preset}", unit="sample") as bar:
        result = simulate_offlattice(params, args.samples, args.seed, progress=bar.update)
    report = {"preset": args.preset, "samples": args.samples, "atoms": params.atoms, "seed": args.seed,
              "box": params.box, "length_unit": "sigma", "seconds": result.seconds,
              "acceptance": float(result.acceptance.mean())}
    verdict = result.equilibration()
    if params.system != "hard-disks":
        report["energy_per_particle"] = float(result.energy.mean())
        report["equilibration"] = verdict.to_dict()
        report["equilibrated"] = verdict.equilibrated
        if verdict.equilibrated is False:
            print(verdict.advice, file=sys.stderr)
    text = (f"{args.samples} sample(s) of {params.atoms} particles in a periodic {params.box:.4g} x {params.box:.4g} "
            f"sigma box (density {params.density:g}, T {params.T:g}), acceptance {report['acceptance']:.2f}")
    if args.out:
        from mapsim.lattice import save_dataset

        ds = to_dataset(result, args.pixel_size)
        save_dataset(out, ds)
        pix = ds.metadata["pixel_size"]
        report.update({"out": str(out), "height": ds.shape[0], "width": ds.shape[1], "pixel_size": pix,
                       "pixel_size_rule": ds.metadata["pixel_size_rule"], "classes": list(ds.classes)})
        text += (f"; wrote {out} ({ds.shape[0]}x{ds.shape[1]} pixels of {pix[0]:.6g} sigma, "
                 f"{ds.metadata['pixel_size_rule'].split(':')[0]}, every particle kept with its offset)")
    if args.structures:
        from mapsim.exchange import write_structures

        species = list(params.species_map)
        rep = write_structures(args.structures, result.positions, result.types, (params.box, params.box), species,
                               length_unit="sigma", info={"mapsim_generator": f"mapsim simulate {args.preset}",
                                                          "mapsim_seed": int(args.seed)},
                               per_sample_info=[{"mapsim_sample": k} for k in range(args.samples)],
                               overwrite=args.overwrite)
        report["structures"] = rep["out"]
        text += f"; wrote {rep['files']} extxyz file(s) to {rep['out']} (species {', '.join(species)})"
    if verdict is not None:
        text += "\n" + verdict.summary().split(". warning:")[0].replace("per site", "per particle")
    emit(report, args.json, text=None if args.json else text)
    return 0
