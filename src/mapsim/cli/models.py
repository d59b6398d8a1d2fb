"""Model commands: ``mapsim model``, ``mapsim expansion count``, ``mapsim fit-expansion``, ``mapsim score``."""

from __future__ import annotations

import argparse
import math

from mapsim.cli.common import add_json_flag, check_output_path, emit, progress
from mapsim.errors import MapsimError


def register(sub: argparse._SubParsersAction) -> None:
    # mapsim model
    p = sub.add_parser("model", help="write an analytic model file (ideal gas, hard-core fluid)",
                       description="Write an analytic MAP model: the ideal gas (paper Eqs. 6-7) or the cold "
                                   "hard-core fluid (Eqs. 10-16) with rho_eff solved for the requested density.")
    p.add_argument("kind", choices=["ideal-gas", "hard-core"])
    p.add_argument("--density", required=True,
                   help="particle density; for an ideal gas of several occupied classes, one density per "
                        "non-empty class, comma-separated")
    p.add_argument("--range", type=float, default=None, help="hard-core exclusion range R_c (default 1; L_c = ceil(R_c))")
    p.add_argument("--classes", default=None, help="class names, comma-separated (default empty,particle)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hard-core rho_eff solver's lattices (default 0)")
    p.add_argument("--out", required=True, help="model file to write")
    add_json_flag(p)
    p.set_defaults(func=cmd_model)

    # mapsim expansion count
    p = sub.add_parser("expansion", help="correlation cluster expansion utilities (coefficient count)",
                       description="Correlation cluster expansion utilities.")
    esub = p.add_subparsers(dest="action", metavar="ACTION")
    esub.required = True
    c = esub.add_parser("count", help="number of coefficients of an expansion",
                        description="Number of coefficients, bias included: (N_c-1) * sum_{k=0}^{O-1} C(n,k) (N_c-1)^k "
                                    "with n = 2L(L+1) and O the cluster size including the predicted site.")
    c.add_argument("--range", type=int, required=True, help="L_c")
    c.add_argument("--order", type=int, required=True, help="Omega: largest cluster size including the predicted site")
    c.add_argument("--classes", type=int, default=2, help="N_c, number of classes (default 2)")
    add_json_flag(c)
    c.set_defaults(func=cmd_count)

    # mapsim fit-expansion
    p = sub.add_parser("fit-expansion", help="fit a correlation cluster expansion to a dataset",
                       description="Fit the truncated correlation cluster expansion (Eq. 17; Eq. 21 for two classes) "
                                   "by Adam on the mean negative log-likelihood per pixel, with outside-class padding.")
    p.add_argument("data", help="dataset .npz")
    p.add_argument("--range", type=int, required=True, help="L_c")
    p.add_argument("--order", type=int, required=True, help="Omega: largest cluster size including the predicted site")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (cosine decay to lr/20)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty on the cluster coefficients")
    p.add_argument("--batch", type=int, default=4, help="samples per minibatch (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of samples held out (default 0.1)")
    p.add_argument("--skip-rows", type=int, default=0, help="leave the first N rows out of the loss")
    p.add_argument("--skip-cols", type=int, default=0, help="leave N columns at each side out of the loss")
    add_json_flag(p)
    p.set_defaults(func=cmd_fit)

    # mapsim score
    p = sub.add_parser("score", help="mean negative log-likelihood per pixel of a dataset under a model",
                       description="Teacher-forced mean NLL per pixel (nats and bits) with its standard error over "
                                   "samples. For a model with positions (off-lattice data): also the class part and "
                                   "the position part, per unit pixel area and per unit physical area (+ 2 ln a per "
                                   "atom for pixel side a), per pixel and per atom.")
    p.add_argument("model", help="model file or run directory")
    p.add_argument("data", help="dataset .npz")
    p.add_argument("--skip-rows", type=int, default=0, help="score only rows >= N")
    p.add_argument("--skip-cols", type=int, default=0, help="leave N columns at each side unscored")
    p.add_argument("--batch", type=int, default=16, help="samples per evaluation batch")
    add_json_flag(p)
    p.set_defaults(func=cmd_score)


def _names(text: str | None, option: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(s.strip() for s in text.split(","))
    if any(not s for s in names):
        raise MapsimError(f"{option} {text!r}: expected comma-separated non-empty names")
    return names


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise MapsimError(f"{option} {text!r}: expected a number or comma-separated numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise MapsimError(f"{option} {text!r}: numbers must be finite")
    return vals


def cmd_model(args: argparse.Namespace) -> int:
    from mapsim.models.analytic import BINARY_CLASSES, HardCore, HardCoreConfig, IdealGas, IdealGasConfig
    from mapsim.sampling.rho_eff import solve_rho_eff
    from mapsim.models.io import save_model

    out = check_output_path(args.out)
    densities = _floats(args.density, "--density")
    classes = _names(args.classes, "--classes")
    result: dict = {"kind": args.kind}
    if args.kind == "ideal-gas":
        if args.range is not None:
            raise MapsimError("--range applies to hard-core models only; the ideal gas has no range")
        if classes is None:
            classes = BINARY_CLASSES if len(densities) == 1 else ("empty",) + tuple(f"class{k}" for k in range(1, len(densities) + 1))
        model = IdealGas(IdealGasConfig(densities=densities, classes=classes))
    else:
        if len(densities) != 1:
            raise MapsimError(f"--density {args.density!r}: the hard-core model takes one density")
        range_ = 1.0 if args.range is None else args.range
        classes = classes or BINARY_CLASSES
        HardCoreConfig(rho_eff=0.5, range=range_, classes=classes)  # validate before solving
        sol = solve_rho_eff(densities[0], range_, seed=args.seed)
        model = HardCore(HardCoreConfig(rho_eff=sol.rho_eff, range=range_, density=densities[0], classes=classes))
        result.update(rho_eff=sol.rho_eff, solved_density=sol.density, solved_density_stderr=sol.stderr,
                      max_density=sol.max_density)
    save_model(out, model)
    result.update(n_classes=model.n_classes, context_range=model.context_range, classes=list(model.config.classes),
                  out=str(out))
    emit(result, args.json)
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    from mapsim.models.expansion import expansion_count, n_sites

    count = expansion_count(args.range, args.order, args.classes)
    emit({"count": count, "range": args.range, "order": args.order, "classes": args.classes,
          "sites": n_sites(args.range)}, args.json)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from mapsim.lattice import load_dataset, require_2d
    from mapsim.models.expansion import Expansion, ExpansionConfig, ExpansionFitter
    from mapsim.models.io import save_model

    out = check_output_path(args.out)
    ds = load_dataset(args.data)
    require_2d(ds, str(args.data), "the correlation cluster expansion (a 2-D model)")
    model = Expansion(ExpansionConfig(range=args.range, order=args.order, classes=ds.classes))
    fitter = ExpansionFitter(
        epochs=args.epochs, lr=args.lr, l2=args.l2, batch=args.batch, seed=args.seed, val_fraction=args.val_fraction,
        skip_rows=args.skip_rows, skip_cols=args.skip_cols,
        progress=lambda it, total, desc: progress(it, total=total, desc=desc, leave=False),
    )
    fitter.fit(model, ds.grids)
    best = fitter.history_[fitter.best_epoch_ - 1]
    fit_info = {
        "data": str(args.data),
        "epochs": args.epochs, "lr": args.lr, "l2": args.l2, "batch": args.batch, "seed": args.seed,
        "val_fraction": args.val_fraction, "skip_rows": args.skip_rows, "skip_cols": args.skip_cols,
        "n_train": fitter.n_train_, "n_val": fitter.n_val_, "best_epoch": fitter.best_epoch_,
        "history": fitter.history_,
    }
    save_model(out, model, fit=fit_info)
    emit({"out": str(out), "n_coefficients": model.n_coefficients, "best_epoch": fitter.best_epoch_,
          "train_nll": best["train_nll"], "val_nll": best["val_nll"], "n_train": fitter.n_train_,
          "n_val": fitter.n_val_}, args.json)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from mapsim.lattice import length_unit_of, load_dataset, pixel_size_of
    from mapsim.models.io import load_model
    from mapsim.models.score import check_positions_match, score_grids

    if args.batch <= 0:
        raise MapsimError(f"--batch must be a positive integer, found {args.batch}")
    model = load_model(args.model)
    ds = load_dataset(args.data)
    if ds.ndim != getattr(model, "ndim", 2):
        raise MapsimError(f"{args.data}: holds {ds.ndim}-D samples {ds.spatial_shape} but {args.model} is a "
                          f"{getattr(model, 'ndim', 2)}-D model; score data of the model's dimension")
    if ds.n_classes > model.n_classes:
        raise MapsimError(f"{args.data}: the dataset has {ds.n_classes} classes {list(ds.classes)}, "
                          f"the model only {model.n_classes}")
    check_positions_match(model, ds.offsets, str(args.data))
    pixel = None
    if ds.offsets is not None:
        # positions are in pixel units: a model trained at another pixel size describes another material
        pixel = pixel_size_of(ds.metadata, str(args.data))
        trained = getattr(model.config, "pixel_size", None)
        if trained is not None and not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(pixel, trained)):
            raise MapsimError(f"{args.data}: pixel size {list(pixel)} differs from the model's training data "
                              f"{list(trained)}; positions in pixel units would mean other lengths")
    s = score_grids(model, ds.grids, skip_rows=args.skip_rows, skip_cols=args.skip_cols, batch=args.batch,
                    offsets=ds.offsets, pixel_size=pixel)
    result = {"model": str(args.model), "data": str(args.data), "kind": model.kind, **s.as_dict()}
    text = (f"NLL per pixel: {s.nll_nats:.6g} ± {s.nll_nats_se:.2g} nats = {s.nll_bits:.6g} ± {s.nll_bits_se:.2g} bits "
            f"({s.n_samples} samples, {s.pixels_per_sample} pixels each)")
    if s.position_nll_nats is not None:
        unit = length_unit_of(ds.metadata) or "length unit"
        text += (f"\n  class part {s.class_nll_nats:.6g} ± {s.class_nll_nats_se:.2g} nats/pixel; position part "
                 f"{s.position_nll_nats:.6g} ± {s.position_nll_nats_se:.2g} nats/pixel per unit pixel area")
        if s.position_nll_nats_physical is not None:
            text += (f" = {s.position_nll_nats_physical:.6g} ± {s.position_nll_nats_physical_se:.2g} nats/pixel "
                     f"per unit {unit}² (pixel {s.pixel_size[0]:.6g} x {s.pixel_size[1]:.6g} {unit})")
        if s.position_nll_per_atom is not None:
            text += (f"\n  per atom ({s.atoms} atoms): {s.position_nll_per_atom:.6g} nats per unit pixel area"
                     + (f", {s.position_nll_per_atom_physical:.6g} nats per unit {unit}²"
                        if s.position_nll_per_atom_physical is not None else ""))
    emit(result, args.json, text)
    return 0
