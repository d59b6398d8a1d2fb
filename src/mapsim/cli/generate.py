"""``mapsim generate``: sample any MAP model into a dataset file."""

from __future__ import annotations

import argparse

from mapsim.cli.common import add_json_flag, check_output_path, emit, progress
from mapsim.errors import MapsimError


def register(sub: argparse._SubParsersAction) -> None:
    from mapsim.sampling.generate import DEFAULT_SAMPLER, SAMPLERS

    p = sub.add_parser("generate", help="generate samples from a MAP model",
                       description="Generate samples pixel by pixel in raster order; writes a dataset with the "
                                   "log-probability of every drawn pixel (key log_probs).")
    p.add_argument("model", help="model file or run directory")
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--depth", type=int, default=None,
                   help="planes of each volume, for a 3D model (samples (D, H, W); raster order plane, row, column)")
    p.add_argument("--seed", type=int, required=True, help="seed of the uniforms driving every draw")
    p.add_argument("--out", required=True,
                   help="dataset to write: NAME.npz (in memory, then written atomically) or NAME.zarr (streamed "
                        "block by block with bounded memory; an interrupted run resumes when rerun)")
    p.add_argument("--log-probs", choices=("none", "rows", "pixels"), default=None,
                   help="log-probabilities to store: every pixel's (default for .npz), per-row sums (default "
                        "for .zarr; enough for mapsim convergence) or none")
    p.add_argument("--threads", type=int, default=None,
                   help="sampler threads per process or Dask task (default: all cores); the same seed, settings "
                        "and threads give the same bytes")
    p.add_argument("--group-samples", type=int, default=None, metavar="N",
                   help="samples drawn together (default: about 2^23 pixels per block of 256 rows); smaller groups "
                        "spread over more Dask workers; recorded in the metadata, part of what fixes the bytes")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run the sample groups on this Dask scheduler (tcp://host:8786); same bytes as one process")
    p.add_argument("--boundary", default="outside",
                   help="rows above the sample: outside (default), noise:DENSITY, or grid:FILE[:INDEX] (tiled along the width)")
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature of the softmax (default 1)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=DEFAULT_SAMPLER,
                   help="fast (default: exact, every ready pixel at once, cached activations for the PixelCNN, "
                        "2D and 3D) or reference (pixel by pixel; same samples for the same seed)")
    add_json_flag(p)
    p.set_defaults(func=cmd_generate)


def _generate_volume(args: argparse.Namespace, model, out, beta: float) -> int:
    """``mapsim generate`` for a 3D model (``--depth``): volumes in one .npz."""
    from mapsim.lattice import save_dataset
    from mapsim.sampling.volume import generate_volume, volume_group

    if getattr(model, "ndim", 2) != 3:
        raise MapsimError(f"{args.model}: --depth needs a 3D model; this {model.kind} model makes 2D samples")
    if args.depth is None:
        raise MapsimError(f"{args.model}: a 3D model needs --depth (planes of each volume)")
    if args.depth <= 0:
        raise MapsimError(f"--depth must be a positive integer, found {args.depth}")
    if str(out).endswith(".zarr") or args.dask is not None or args.boundary != "outside":
        raise MapsimError("3D generation writes .npz with the outside boundary (no .zarr, --dask or --boundary yet)")
    groups = -(-args.samples // volume_group(model, args.height, args.width))
    with progress(total=args.depth * groups, desc="planes") as bar:
        ds = generate_volume(model, args.samples, args.depth, args.height, args.width, seed=args.seed, beta=beta,
                             sampler=args.sampler, progress=lambda n: bar.update(n - bar.n), threads=args.threads)
    ds.metadata["model_path"] = str(args.model)
    save_dataset(out, ds)
    emit({"out": str(out), "n_samples": ds.n_samples, "depth": args.depth, "height": args.height,
          "width": args.width, "kind": model.kind, "context_range": model.context_range, "beta": beta,
          "sampler": args.sampler, "density": float((ds.grids != 0).mean()),
          "mean_log_prob_per_voxel": float(ds.extras["log_probs"].mean())}, args.json)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from mapsim.lattice import save_dataset
    from mapsim.models.io import load_model
    from mapsim.sampling.common import check_beta, parse_boundary
    from mapsim.sampling.generate import generate

    for name in ("height", "width", "samples"):
        if getattr(args, name) <= 0:
            raise MapsimError(f"--{name} must be a positive integer, found {getattr(args, name)}")
    if args.seed < 0:
        raise MapsimError(f"--seed must be a non-negative integer, found {args.seed}")
    beta = check_beta(args.beta)
    for name in ("threads", "group_samples"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise MapsimError(f"--{name.replace('_', '-')} must be a positive integer, found {value}")
    zarr_out = Path(args.out).suffix == ".zarr"
    out = Path(args.out) if zarr_out else check_output_path(args.out)
    if zarr_out and out.exists() and not out.is_dir():
        raise MapsimError(f"--out {out}: exists and is not a zarr store (a directory)")
    mode = args.log_probs or ("rows" if zarr_out else "pixels")
    boundary = parse_boundary(args.boundary)
    model = load_model(args.model)
    if getattr(model, "ndim", 2) == 3 or args.depth is not None:
        return _generate_volume(args, model, out, beta)
    if zarr_out:
        from functools import partial

        from mapsim.sampling.dask_generate import run_groups
        from mapsim.sampling.generate import check_group, generate_to_zarr

        runner = partial(run_groups, args.dask) if args.dask is not None else None
        groups = -(-args.samples // check_group(args.group_samples, args.width))
        with progress(total=args.height * groups, desc="rows") as bar:
            def advance(rows_done: int) -> None:
                bar.update(rows_done - bar.n)

            generate_to_zarr(model, args.samples, args.height, args.width, out, seed=args.seed, beta=beta,
                             boundary=boundary, sampler=args.sampler, progress=advance, boundary_spec=args.boundary,
                             threads=args.threads, log_probs=mode, extra_metadata={"model_path": str(args.model)},
                             group=args.group_samples, run_groups=runner)
        emit({"out": str(out), "n_samples": args.samples, "height": args.height, "width": args.width,
              "kind": model.kind, "context_range": model.context_range, "beta": beta, "boundary": args.boundary,
              "sampler": args.sampler, "log_probs": mode}, args.json)
        return 0
    if args.dask is not None:
        from mapsim.sampling.dask_generate import generate_dask

        with progress(total=args.samples, desc="samples") as bar:
            ds = generate_dask(args.dask, model, args.samples, args.height, args.width, seed=args.seed, beta=beta,
                               boundary=boundary, sampler=args.sampler, threads=args.threads,
                               group=args.group_samples, boundary_spec=args.boundary,
                               progress=lambda n: bar.update(n - bar.n))
    else:
        from mapsim.sampling.generate import check_group

        groups = -(-args.samples // check_group(args.group_samples, args.width))
        with progress(total=args.height * groups, desc="rows") as bar:
            def advance(rows_done: int) -> None:
                bar.update(rows_done - bar.n)

            ds = generate(model, args.samples, args.height, args.width, seed=args.seed, beta=beta,
                          boundary=boundary, sampler=args.sampler, progress=advance, boundary_spec=args.boundary,
                          threads=args.threads, group=args.group_samples)
    ds.metadata["model_path"] = str(args.model)
    lp = ds.extras["log_probs"]
    summary = {"out": str(out), "n_samples": ds.n_samples, "height": args.height, "width": args.width,
               "kind": model.kind, "context_range": model.context_range, "beta": beta, "boundary": args.boundary,
               "sampler": args.sampler,
               "density": float(np.mean(ds.grids != 0)),
               "mean_log_prob_per_pixel": float(np.mean(lp))}
    if mode != "pixels":
        del ds.extras["log_probs"]
        if mode == "rows":
            ds.extras["row_log_probs"] = lp.astype(np.float64).sum(axis=2)
    ds.metadata["log_probs"] = mode
    save_dataset(out, ds)
    emit(summary, args.json)
    return 0
