"""``mapsim train``: train a Gated PixelCNN MAP model on a dataset (also under torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from mapsim.cli.common import add_json_flag, emit
from mapsim.errors import MapsimError

# option -> (TrainConfig field, type); defaults come from TrainConfig, or on --resume from the run.
_OPTIONS = {
    "layers": int, "filters": int, "kernel": int, "out_width": int, "epochs": int, "batch": int,
    "lr": float, "weight_decay": float, "warmup": float, "grad_clip": float, "seed": int,
    "val_fraction": float, "crop": str, "symmetries": str, "patience": int, "positions": bool,
    "position_bins": int, "position_pairs": int, "joint_pairs": bool,
    "pair_knots": int, "pair_core": bool, "ema": float,
}


def register(sub: argparse._SubParsersAction) -> None:
    from mapsim.training import TrainConfig  # light: no torch work at import

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a Gated PixelCNN MAP model on a dataset",
        description="Train a Gated PixelCNN on DATA.npz into the run directory --out (best.pt, last.pt, "
                    "metrics.jsonl). NLL is in nats per pixel; samples sit on outside-padded canvases. "
                    "--resume continues an interrupted run up to --epochs with the same result as an "
                    "uninterrupted one; options left out are taken from the run. Under "
                    "'torchrun --nproc_per_node=N -m mapsim train ...' the processes share every batch "
                    "(DistributedDataParallel; NCCL on GPUs, gloo on CPU); only rank 0 writes.",
    )
    p.add_argument("data", metavar="DATA.npz", help="training dataset")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g = p.add_argument_group("model")
    g.add_argument("--layers", type=int, default=None, help=f"gated layers [{d.layers}]; L_c = layers * (kernel // 2)")
    g.add_argument("--filters", type=int, default=None, help=f"channels after gating [{d.filters}]")
    g.add_argument("--kernel", type=int, default=None, help=f"odd kernel size [{d.kernel}]")
    g.add_argument("--out-width", type=int, default=None, help=f"channels of the skip sum and output layer [{d.out_width}]")
    g.add_argument("--positions", action=argparse.BooleanOptionalAction, default=None,
                   help="off-lattice MAP: also learn each atom's position inside its pixel (needs data with "
                        "offsets) [on when the data have offsets]")
    g.add_argument("--position-bins", type=int, default=None,
                   help="bins per axis of the position density; a bin's flat density blurs atoms by up to a bin, "
                        f"so liquids at pixels of 0.5-0.7 sigma want 64 (README) [{d.position_bins}]")
    g.add_argument("--position-pairs", type=int, default=None, metavar="R",
                   help="reach in pixels of a learned pair term of the position density: the atoms already "
                        f"drawn within R pixels cut their cores out of the pixel (0 = none, at most L_c) "
                        f"[{d.position_pairs}]")
    g.add_argument("--joint-pairs", action=argparse.BooleanOptionalAction, default=None,
                   help="with --position-pairs: normalise class and position jointly, so the pair term also "
                        "makes a pixel whose free area the neighbours' cores cut down less likely to hold an "
                        f"atom [{'on' if d.joint_pairs else 'off'}]")
    g.add_argument("--pair-knots", type=int, default=None, metavar="N",
                   help=f"with --position-pairs: knots of the pair table per pixel of distance [{d.pair_knots}]")
    g.add_argument("--pair-core", action=argparse.BooleanOptionalAction, default=None,
                   help="with --position-pairs: no two atoms closer than the closest pair of their classes in "
                        f"the training samples (less a knot of the table) [{'on' if d.pair_core else 'off'}]")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"total epochs [{d.epochs}]")
    g.add_argument("--batch", type=int, default=None, help=f"global batch in samples [{d.batch}]")
    g.add_argument("--lr", type=float, default=None, help=f"peak AdamW learning rate [{d.lr}]")
    g.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay [{d.weight_decay}]")
    g.add_argument("--warmup", type=float, default=None,
                   help=f"fraction of steps of linear warm-up before the cosine decay [{d.warmup}]")
    g.add_argument("--grad-clip", type=float, default=None, help=f"gradient norm clip, 0 = off [{d.grad_clip}]")
    g.add_argument("--seed", type=int, default=None, help=f"seed of weights, split, order, crops, symmetries [{d.seed}]")
    g.add_argument("--ema", type=float, default=None,
                   help=f"exponential moving average of the weights, decay per step (0 = off); validation and the "
                        f"model files use the averaged weights [{d.ema}]")
    g.add_argument("--patience", type=int, default=None,
                   help=f"early stopping: epochs without a lower validation NLL, 0 = off [{d.patience}]")
    g = p.add_argument_group("data")
    g.add_argument("--val-fraction", type=float, default=None, help=f"held-out fraction of samples [{d.val_fraction}]")
    g.add_argument("--crop", default=None, metavar="SIZE|HxW", help="random crops of the training samples [whole samples]")
    g.add_argument("--symmetries", default=None, metavar="LIST",
                   help="augmentation: comma list of flips, rot90, or none [flips,rot90 on square samples, else flips]")
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train [auto: a GPU when present]")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch [torch's default: all cores; 1 is faster for tiny models on a busy machine]")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time cap: the first epoch is timed and the learning-rate schedule ends at the last "
                        "epoch that fits (stored in the run; --resume keeps it); the run also stops after the epoch "
                        "at which another would pass the cap. The result then depends on the machine's speed "
                        "[no limit: exactly --epochs]")
    add_json_flag(p)
    p.set_defaults(func=run)


def _config_from_args(args: argparse.Namespace, saved: dict | None):
    from mapsim.data import parse_crop
    from mapsim.training import TrainConfig

    base = dataclasses.asdict(TrainConfig())
    if saved is not None:
        base.update({k: v for k, v in saved.items() if k in base})
    for name in _OPTIONS:
        v = getattr(args, name)
        if v is None:
            continue
        if name == "crop":
            c = parse_crop(v)
            v = list(c) if c is not None else None
        base[name] = v
    return TrainConfig(**base)


def run(args: argparse.Namespace) -> int:
    from mapsim.lattice import load_dataset, open_dataset
    from mapsim.training import LAST, check_run_dir, restore_global_rng_state, train

    if args.epochs is not None and args.epochs <= 0:
        raise MapsimError(f"--epochs must be a positive integer (the total number of epochs), found {args.epochs}")
    if args.threads is not None:
        if args.threads < 1:
            raise MapsimError(f"--threads must be a positive integer, found {args.threads}")
        from mapsim.reproduce.pipeline import set_threads

        set_threads(args.threads)  # torch, and numba for the pair term's kernels
    ds = open_dataset(args.data)  # a zarr store is read a crop or a sample at a time
    if getattr(ds, "extra_names", None) and "offsets" in ds.extra_names:
        ds = load_dataset(args.data)  # positions are read whole
    out = Path(args.out)
    payload = check_run_dir(out, args.resume)
    config = _config_from_args(args, payload["train_config"] if payload else None)
    rank = int(os.environ.get("RANK", "0"))
    if payload is not None and "rng_state" in payload:
        restore_global_rng_state(payload["rng_state"])
    main_proc = rank == 0
    show = main_proc and not args.json and sys.stderr.isatty()

    def bar(total, desc):
        from mapsim.cli.common import progress

        return progress(total=total, desc=desc, leave=False)

    def report(rec):
        if show:
            val = "-" if rec["val_nll"] is None else f"{rec['val_nll']:.5f}"
            print(f"epoch {rec['epoch']:>4}  train_nll {rec['train_nll']:.5f}  val_nll {val}  lr {rec['lr']:.2e}  "
                  f"{rec['seconds']:.1f} s{'  *' if rec['best'] else ''}", file=sys.stderr)

    res = train(ds, config, out, resume=args.resume, device=args.device, max_minutes=args.max_minutes,
                data_path=str(args.data), progress=bar if main_proc else None, on_epoch=report)
    if main_proc:
        summary = res.summary()
        text = (f"{out}: {res.epochs_done} epoch(s) done ({res.stopped}); best val NLL "
                f"{res.best_val_nll:.5f} nats/pixel at epoch {res.best_epoch} (density-only "
                f"{res.density_only_nll:.5f}); model: {out / 'best.pt'}, resume from {out / LAST}")
        emit(summary, args.json, text)
    return 0
