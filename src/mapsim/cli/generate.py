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
    p.add_argument("--seed", type=int, required=True, help="seed of the uniforms driving every draw")
    p.add_argument("--out", required=True, help="dataset .npz to write")
    p.add_argument("--boundary", default="outside",
                   help="rows above the sample: outside (default), noise:DENSITY, or grid:FILE[:INDEX] (tiled along the width)")
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature of the softmax (default 1)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=DEFAULT_SAMPLER,
                   help="fast (default: exact, every ready pixel at once, cached activations for the PixelCNN) "
                        "or reference (pixel by pixel; same samples for the same seed)")
    add_json_flag(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
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
    out = check_output_path(args.out)
    boundary = parse_boundary(args.boundary)
    model = load_model(args.model)
    with progress(total=args.height, desc="rows") as bar:
        def advance(rows_done: int) -> None:
            bar.update(rows_done - bar.n)

        ds = generate(model, args.samples, args.height, args.width, seed=args.seed, beta=beta, boundary=boundary,
                      sampler=args.sampler, progress=advance, boundary_spec=args.boundary)
    ds.metadata["model_path"] = str(args.model)
    save_dataset(out, ds)
    lp = ds.extras["log_probs"]
    emit({"out": str(out), "n_samples": ds.n_samples, "height": args.height, "width": args.width,
          "kind": model.kind, "context_range": model.context_range, "beta": beta, "boundary": args.boundary,
          "sampler": args.sampler,
          "density": float(np.mean(ds.grids != 0)),
          "mean_log_prob_per_pixel": float(np.mean(lp))}, args.json)
    return 0
