"""``mapsim chain`` and ``mapsim convergence``: the Markov-chain view of MAP sequences.

``mapsim chain`` builds the exact chain over context states of a 1D MAP (or,
with ``--width``, of a 2D model's rows, the paper's recast) and reports
irreducibility, period, stationary distribution, mixing and a sampled check.
``mapsim convergence`` measures how generated samples settle row by row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mapsim.cli.common import _jsonable, add_json_flag, emit, finite_float, nonneg_int, positive_int, progress
from mapsim.errors import MapsimError


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "chain", help="exact Markov-chain analysis of a MAP over its context states",
        description="Build the transition matrix over all N_c^L_c context states of a 1D MAP (default: a seeded "
                    "random softmax table; or --table, --data, --model), or with --width W over the "
                    "N_c^(W L_c) row-block states of a 2D model (default: a seeded random pair model). Reports "
                    "irreducibility (closed and transient classes), period, self-connected states, diameter, "
                    "the exact stationary distribution against long sampled sequences (chi-squared), and the "
                    "total-variation distance to stationarity against steps (mixing time: first step where the "
                    "maximum over start states is <= 1/4). With --out, writes chain.json, chain.npz and PNGs.")
    c.add_argument("--classes", type=positive_int, default=None, help="N_c (default 2, or from the model/table/data)")
    c.add_argument("--length", type=nonneg_int, default=None, help="L_c, the context length (default 2, or the model's)")
    c.add_argument("--width", type=positive_int, default=None,
                   help="2D recast: sample width W; states are blocks of L_c rows x W (omit for the 1D MAP)")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="model file: 1D = its first row with the outside boundary above; with --width its rows")
    src.add_argument("--table", default=None, help=".npy table p(next | context), shape (N_c^L_c, N_c), 1D only")
    src.add_argument("--data", default=None, help="dataset .npz: fit a 1D table on its rows by counting (1D only)")
    c.add_argument("--pseudocount", type=finite_float, default=1.0,
                   help="add-alpha smoothing of --data counts (default 1; 0 keeps hard zeros)")
    c.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random model and of the sampling (default 0)")
    c.add_argument("--beta", type=finite_float, default=1.0, help="inverse temperature: softmax(beta * logits) (default 1)")
    c.add_argument("--scale", type=finite_float, default=1.0, help="standard deviation of the random model's logits (default 1)")
    c.add_argument("--samples", type=positive_int, default=256,
                   help="independent sampled sequences, each started in the stationary distribution (default 256)")
    c.add_argument("--steps", type=nonneg_int, default=256,
                   help="steps (pixels, or rows with --width) per sampled sequence; 0 skips sampling (default 256)")
    c.add_argument("--max-steps", type=positive_int, default=1000, help="longest TV curve computed (default 1000)")
    c.add_argument("--max-states", type=positive_int, default=4096, help="refuse chains with more states (default 4096)")
    c.add_argument("--out", default=None, help="directory for chain.json, chain.npz, state_graph.png, tv.png")
    add_json_flag(c)
    c.set_defaults(func=cmd_chain)

    v = sub.add_parser(
        "convergence", help="row-wise convergence of generated samples (Fig. 11d) and rows to skip",
        description="Log of the product of pixel probabilities of every row and of every context block R_i "
                    "(L_c rows x full width), averaged over samples with standard errors, from the top boundary "
                    "down; the plateau row (first row from which every row's mean lies within a "
                    "Bonferroni-corrected t threshold of the mean over the last half of the rows) and the rows "
                    "to skip (JSON key skip_rows; pass it to mapsim compare --skip-rows). Input: a generated "
                    "dataset with log_probs (mapsim generate), or a model file, sampled here.")
    v.add_argument("source", help="generated dataset .npz (with log_probs), or a model file / run directory")
    v.add_argument("--out", required=True, help="report directory: convergence.json, convergence.png, convergence.npz")
    v.add_argument("--samples", type=positive_int, default=32, help="samples to generate from a model (default 32)")
    v.add_argument("--height", type=positive_int, default=None, help="rows to generate (default max(32, 8 L_c))")
    v.add_argument("--width", type=positive_int, default=None, help="width to generate (default max(32, 4 L_c))")
    v.add_argument("--seed", type=nonneg_int, default=0, help="seed of the generation (default 0)")
    v.add_argument("--beta", type=finite_float, default=1.0, help="inverse temperature for generation (default 1)")
    v.add_argument("--boundary", default="outside", help="boundary for generation: outside (default), noise:D, grid:FILE[:I]")
    v.add_argument("--sampler", default=None, help="sampler for generation (default: mapsim generate's default)")
    v.add_argument("--context-range", type=nonneg_int, default=None,
                   help="L_c, when a dataset's metadata lacks context_range")
    v.add_argument("--alpha", type=finite_float, default=0.05, help="family-wise significance of the plateau test (default 0.05)")
    add_json_flag(v)
    v.set_defaults(func=cmd_convergence)


# ---------------------------------------------------------------------------
# mapsim chain
# ---------------------------------------------------------------------------
def _check_dims(args, n_classes: int | None, length: int | None, where: str) -> tuple[int, int]:
    if n_classes is not None and args.classes is not None and args.classes != n_classes:
        raise MapsimError(f"--classes {args.classes} does not match {where}, which has {n_classes} classes")
    if length is not None and args.length is not None and args.length != length:
        raise MapsimError(f"--length {args.length} does not match {where}, whose context range L_c is {length}")
    return (n_classes if n_classes is not None else (args.classes or 2),
            length if length is not None else (2 if args.length is None else args.length))


def build_chain_input(args: argparse.Namespace):
    """(table, n_classes, length, cond, source description) from the chain options."""
    import numpy as np

    from mapsim.analysis import context_states as cs
    from mapsim.sampling.common import check_beta

    beta = check_beta(args.beta)
    W = args.width
    if args.model is not None:
        from mapsim.models.io import load_model

        model = load_model(args.model)
        N, L = _check_dims(args, model.n_classes, model.context_range, f"model {args.model}")
        _check_states(N, L, W, args.max_states)
        cond = cs.model_conditionals(model, beta)
        table = cs.table_1d(cond) if W is None else cs.row_table(cond, W, args.max_states)
        return table, N, L, cond, f"model {args.model} ({model.kind})"
    if W is not None and (args.table is not None or args.data is not None):
        raise MapsimError("--width (2D recast) needs a 2D model: use --model, or neither --table nor --data for a random one")
    if args.table is not None:
        p = Path(args.table)
        if not p.exists():
            raise MapsimError(f"--table {p}: file not found")
        try:
            raw = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise MapsimError(f"--table {p}: not a readable .npy array ({exc})") from None
        table, A, L0 = cs.check_table(raw, args.classes, args.length, where=f"--table {p}")
        N, L = _check_dims(args, A, L0, f"--table {p}")
        _check_states(N, L, None, args.max_states)
        return cs.temper_table(table, beta), N, L, None, f"table {p}"
    if args.data is not None:
        from mapsim.lattice import load_dataset

        ds = load_dataset(args.data)
        N, L = _check_dims(args, ds.n_classes, None, f"--data {args.data}")
        _check_states(N, L, None, args.max_states)
        if args.pseudocount < 0:
            raise MapsimError(f"--pseudocount must be non-negative, found {args.pseudocount}")
        table, counts = cs.fit_table(ds.grids.reshape(-1, ds.shape[1]), N, L, args.pseudocount)
        return cs.temper_table(table, beta), N, L, None, f"1D table fitted on the rows of {args.data} ({int(counts.sum())} transitions, pseudocount {args.pseudocount:g})"
    N, L = _check_dims(args, None, None, "")
    _check_states(N, L, W, args.max_states)
    if W is None:
        return (cs.random_softmax_table(N, L, args.seed, beta, args.scale), N, L, None,
                f"random softmax table (seed {args.seed}, logit scale {args.scale:g})")
    cond = cs.RandomPairModel(N, L, seed=args.seed, beta=beta, scale=args.scale)
    return cs.row_table(cond, W, args.max_states), N, L, cond, f"random pair model (seed {args.seed}, logit scale {args.scale:g})"


def _check_states(N: int, L: int, W: int | None, max_states: int) -> None:
    n = N ** (L * (W or 1))
    if n > max_states:
        what = f"{N}^{L}" if W is None else f"{N}^({W}*{L})"
        raise MapsimError(f"the chain would have {what} = {n} states, more than --max-states {max_states}")


def cmd_chain(args: argparse.Namespace) -> int:
    import numpy as np

    from mapsim.analysis import chain as ch

    out = _prepare_out(args.out) if args.out else None
    table, N, L, cond, source = build_chain_input(args)
    res = ch.analyze_context_chain(table, N, L, args.width, cond=cond, seed=args.seed, n_sequences=args.samples,
                                   n_steps=args.steps, max_steps=args.max_steps)
    s = {"mode": "1d" if args.width is None else "2d-rows", "source": source, "n_classes": N, "context_range": L,
         "width": args.width, "beta": args.beta, "seed": args.seed, **res.summary}
    if out is not None:
        s["files"] = _write_chain_files(out, res, s)
        from mapsim.fileio import write_text_atomic

        write_text_atomic(out / "chain.json", json.dumps(_jsonable(s), indent=2, allow_nan=False) + "\n")
    if args.json:
        emit(s, True)
    else:
        print(_chain_text(s))
    return 0


def _write_chain_files(out: Path, res, s: dict[str, Any]) -> dict[str, str]:
    import numpy as np

    from mapsim.analysis import chain_plots as cp
    from mapsim.fileio import atomic_path, save_figure_atomic

    files = {"report": str(out / "chain.json"), "arrays": str(out / "chain.npz")}
    arrays = {"table": res.table, "labels": np.array(res.chain.labels, dtype=str)}
    if res.chain.stationary_ is not None:
        arrays["stationary"] = res.chain.stationary_
    if res.chain.tv_ is not None:
        arrays["tv"] = res.chain.tv_
    if res.boundary_curve is not None:
        arrays["boundary_tv"] = res.boundary_curve
    if res.counts is not None:
        arrays["sampled_counts"] = res.counts
    with atomic_path(out / "chain.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if res.chain.n_states <= 32:
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        what = "1D context states" if res.width is None else f"row blocks, W = {res.width}"
        A = res.n_classes ** (res.width or 1)
        cp.plot_state_graph(res.chain, ax, order=cp.de_bruijn_order(A, res.length),
                            title=f"N_c = {res.n_classes}, L_c = {res.length}: {what}\n{_short_verdict(s)}")
        save_figure_atomic(fig, out / "state_graph.png", dpi=130, bbox_inches="tight")
        plt.close(fig)
        files["state_graph"] = str(out / "state_graph.png")
    if res.chain.tv_ is not None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        cp.plot_tv(res.chain, ax, res.boundary_curve, res.length, unit=s["step_unit"])
        ax.set_title(f"Convergence of the context chain ({res.chain.n_states} states)", fontsize=10)
        save_figure_atomic(fig, out / "tv.png", dpi=130, bbox_inches="tight")
        plt.close(fig)
        files["tv"] = str(out / "tv.png")
    return files


def _short_verdict(s: dict[str, Any]) -> str:
    parts = ["irreducible" if s["irreducible"] else f"reducible: {s['n_transient_states']} transient (grey)"]
    if s["n_closed_classes"] > 1:
        parts.append(f"{s['n_closed_classes']} closed classes")
    parts.append("aperiodic" if s["aperiodic"] else f"period {s['period']}")
    return ", ".join(parts)


def _chain_text(s: dict[str, Any]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list) and len(v) > 12:
            return f"{v[:12]} ... ({len(v)} in all)"
        return str(v)

    keys = ["mode", "source", "n_states", "n_edges", "irreducible", "aperiodic", "period", "n_closed_classes",
            "n_transient_states", "transient_states", "unique_stationary", "self_connected_states",
            "out_degree_min", "out_degree_max", "diameter", "closed_class_diameter", "diameter_bound",
            "mixing_steps", "boundary_mixing_steps", "step_unit", "sampled_visits", "stationary_tv_vs_sampled",
            "chi2", "chi2_dof", "chi2_p_value", "verdict", "files"]
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {fmt(s.get(k))}" for k in keys if k in s)


# ---------------------------------------------------------------------------
# mapsim convergence
# ---------------------------------------------------------------------------
def _prepare_out(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MapsimError(f"--out {out}: exists and is not a directory")
    return out


def _is_dataset(path: Path) -> bool:
    import zipfile

    if path.is_dir() or not path.exists():
        return False
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return "grids.npy" in z.namelist()


def _dataset_context_range(metadata: dict, given: int | None, src: Path) -> int:
    """L_c from the generated dataset's metadata, else ``--context-range``; they must agree."""
    from mapsim.analysis.compare import model_context_range

    L = model_context_range(metadata)
    if L is None:
        L = given
    elif given is not None and given != L:
        raise MapsimError(f"--context-range {given} contradicts {src}'s metadata context_range {L}")
    if L is None:
        raise MapsimError(f"{src}: metadata has no context_range; pass --context-range L_c")
    return L


def _zarr_row_log_probs(src: Path):
    """A zarr store (opened lazily) and its row log-probabilities (K, H): ``row_log_probs``, or the
    ``log_probs`` of one sample at a time summed over each row."""
    import numpy as np

    from mapsim.lattice import open_dataset

    ds = open_dataset(src)
    if "row_log_probs" in ds.extra_names:
        return ds, ds.read_extra("row_log_probs")
    if "log_probs" in ds.extra_names:
        return ds, np.concatenate([ds.read_extra("log_probs", k, k + 1).astype(np.float64).sum(axis=2)
                                   for k in range(ds.n_samples)])
    raise MapsimError(f"{src}: store has neither 'row_log_probs' nor 'log_probs'; generate it with "
                      "mapsim generate --log-probs rows (or pixels)")


def cmd_convergence(args: argparse.Namespace) -> int:
    import numpy as np

    from mapsim.analysis.convergence import RowConvergence
    from mapsim.fileio import write_text_atomic
    from mapsim.lattice import load_dataset, save_dataset

    if not (0.0 < args.alpha < 1.0):
        raise MapsimError(f"--alpha must lie in (0, 1), found {args.alpha}")
    src = Path(args.source)
    if not src.exists():
        raise MapsimError(f"{src}: file not found (expected a generated dataset .npz or a model file)")
    out = _prepare_out(args.out)
    files = {"report": out / "convergence.json", "plot": out / "convergence.png", "arrays": out / "convergence.npz"}
    rows = None  # (K, H) row sums, when only those are read
    if src.suffix == ".zarr" and src.is_dir():  # a zarr store: its row sums, never its grids
        ds, rows = _zarr_row_log_probs(src)
        L = _dataset_context_range(ds.metadata, args.context_range, src)
        origin = {"dataset": str(src)}
    elif _is_dataset(src):
        ds = load_dataset(src)
        if "log_probs" not in ds.extras:
            raise MapsimError(f"{src}: dataset has no 'log_probs' array; generate it with mapsim generate "
                              f"(which stores the log-probability of every drawn pixel)")
        lp = ds.extras["log_probs"]
        if lp.shape != ds.grids.shape:
            raise MapsimError(f"{src}: 'log_probs' has shape {lp.shape}, expected the grids' shape {ds.grids.shape}")
        L = _dataset_context_range(ds.metadata, args.context_range, src)
        origin = {"dataset": str(src)}
    else:
        from mapsim.models.io import load_model
        from mapsim.sampling.common import check_beta, parse_boundary
        from mapsim.sampling.generate import DEFAULT_SAMPLER, generate

        model = load_model(src)
        L = model.context_range
        H = args.height or max(32, 8 * L)
        W = args.width or max(32, 4 * L)
        if args.samples < 2:
            raise MapsimError(f"--samples must be at least 2 (standard errors over samples), found {args.samples}")
        if H < 2 * max(L, 1) + 2:
            raise MapsimError(f"--height {H} is too short for L_c = {L}: need at least {2 * max(L, 1) + 2} rows")
        beta = check_beta(args.beta)
        boundary = parse_boundary(args.boundary)
        sampler = args.sampler or DEFAULT_SAMPLER
        with progress(total=H, desc="rows") as bar:
            def advance(rows_done: int) -> None:
                bar.update(rows_done - bar.n)

            ds = generate(model, args.samples, H, W, seed=args.seed, beta=beta, boundary=boundary, sampler=sampler,
                          progress=advance, boundary_spec=args.boundary)
        ds.metadata["model_path"] = str(src)
        files["samples"] = out / "samples.npz"
        save_dataset(files["samples"], ds)
        lp = ds.extras["log_probs"]
        origin = {"model": str(src), "kind": model.kind, "beta": beta, "boundary": args.boundary, "seed": args.seed,
                  "sampler": sampler}
    planes = rows is None and lp.ndim == 4  # generated volumes: convergence by plane
    if planes:
        from mapsim.analysis.convergence import plane_log_probs

        lp = plane_log_probs(lp)
    rc = RowConvergence(L, alpha=args.alpha)
    rc = rc.compute(lp) if rows is None else rc.compute_rows(rows, ds.shape[1])
    summary = {**origin, **rc.summary()}
    if planes:  # every "row" below is a plane (flattened); skip_planes is what compare --skip-planes takes
        summary.update({"unit": "plane", "skip_planes": summary["skip_rows"], "volume_shape": list(ds.spatial_shape)})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mapsim.fileio import atomic_path, save_figure_atomic

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    if planes:
        rc.plot(ax, title=f"Plane-wise convergence of {src.name}: {rc.shape_[0]} samples of "
                          f"{' x '.join(map(str, summary['volume_shape']))}, L_c = {L} (a row here is a plane)")
        ax.set_xlabel("plane (from the first)")
    else:
        rc.plot(ax, title=f"Row-wise convergence of {src.name}: {rc.shape_[0]} samples of {rc.shape_[1]} x {rc.shape_[2]}, L_c = {L}")
    save_figure_atomic(fig, files["plot"], dpi=130, bbox_inches="tight")
    plt.close(fig)
    with atomic_path(files["arrays"]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, row_logp=rc.row_logp_, row_mean=rc.row_mean_, row_sem=rc.row_sem_,
                                block_rows=rc.block_rows_, block_mean=rc.block_mean_, block_sem=rc.block_sem_)
    summary["files"] = {k: str(v) for k, v in files.items()}
    write_text_atomic(files["report"], json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
    short = {k: v for k, v in summary.items() if k not in ("row_logp_mean", "row_logp_sem", "block_logp_mean", "block_logp_sem")}
    emit(short if not args.json else summary, args.json)
    return 0
