"""Resumable stages of a reproduction run.

Every stage writes its outputs atomically and records a fingerprint of its
inputs (configuration and upstream fingerprints) in ``state.json``; a stage
whose outputs exist with a matching fingerprint is skipped, so an interrupted
run continues where it stopped and a changed setting recomputes exactly the
stages it affects.  PixelCNN training itself resumes from its ``last.pt``.

Layout of the output directory::

    config.toml  state.json  report.md  report.json  timings.json  figures/*.png
    systems/<name>/train.npz heldout_gen.npz heldout_train.npz
                  expansion.pt density.pt pixelcnn/ (run dir)
                  gen_<model>.npz compare_<model>.json convergence.json nll.json
                  heldout_x<k>.npz gen_pixelcnn_x<k>.npz compare_pixelcnn_x<k>.json   (extra_scales)

Determinism: torch and numba run on ``RunConfig.threads`` threads, training
runs a fixed number of epochs, the sampler gets the same thread count, and no
wall-clock figure enters a model file, a dataset or ``report.json`` (stage
times go to ``timings.json``), so the same configuration, seed and thread count
give byte-identical models, samples and ``report.json`` on one machine.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from mapsim.errors import MapsimError
from mapsim.fileio import atomic_path, write_text_atomic
from mapsim.lattice import Dataset, load_dataset, save_dataset
from mapsim.reproduce.common import json_default
from mapsim.reproduce.config import RunConfig, SystemConfig, fingerprint, stage_code, to_toml

MODELS = ("expansion", "pixelcnn", "density")
"""Generated-model labels: the cluster expansion, the Gated PixelCNN, the density-only ideal gas."""


class Ledger:
    """``state.json``: stage name -> {fingerprint, seconds, result}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = {}
        if path.exists():
            try:
                self.state = json.loads(path.read_text())
            except ValueError:
                raise MapsimError(f"{path}: corrupt run state (not JSON); remove it to start the run afresh") from None

    def done(self, stage: str, fp: str, outputs: list[Path]) -> bool:
        entry = self.state.get(stage)
        return bool(entry) and entry.get("fingerprint") == fp and all(p.exists() for p in outputs)

    def record(self, stage: str, fp: str, seconds: float, result: Any = None) -> None:
        self.state[stage] = {"fingerprint": fp, "seconds": seconds, "result": result}
        write_text_atomic(self.path, json.dumps(self.state, indent=1, default=json_default))

    def result(self, stage: str) -> Any:
        return self.state.get(stage, {}).get("result")


class Run:
    """One reproduction run in an output directory.

    Parameters
    ----------
    cfg : RunConfig
    out : path-like
    log : callable
        Receives one-line progress messages (stage started / skipped / done).
    bar : callable, optional
        ``bar(total=, desc=)`` returning a tqdm-like progress bar.
    """

    def __init__(self, cfg: RunConfig, out: str | Path, log: Callable[[str], None] = print, bar=None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.log = log
        self.bar = bar
        self.ledger: Ledger | None = None
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}

    # -- stage machinery -------------------------------------------------------------
    def stage(self, name: str, fp: str, outputs: list[Path], fn: Callable[[], Any]) -> Any:
        assert self.ledger is not None
        if self.ledger.done(name, fp, outputs):
            self.log(f"[skip] {name} (done)")
            return self.ledger.result(name)
        self.log(f"[run ] {name}")
        t, c = time.perf_counter(), _cpu_seconds()
        result = fn()
        dt = time.perf_counter() - t
        self.ledger.record(name, fp, dt, result)
        self.timings[name] = dt
        self.cpu_timings[name] = _cpu_seconds() - c
        self.log(f"[done] {name} in {dt:.1f} s")
        return result

    def run(self) -> dict[str, Any]:
        """Run every stage (skipping finished ones) and write the report; returns the report dict."""
        import torch

        from mapsim.reproduce.report import write_report

        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "config.toml", to_toml(self.cfg))
        self.ledger = Ledger(self.out / "state.json")
        set_threads(self.cfg.threads)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        results = {}
        for name, s in self.cfg.systems.items():
            results[name] = self.run_system(name, s)
        timings = {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_seconds() - c0,
                   "threads": self.cfg.threads, "stage_seconds": dict(self.timings),
                   "stage_cpu_seconds": dict(self.cpu_timings),
                   "note": "this invocation only (finished stages are skipped); cpu_seconds include worker processes"}
        write_text_atomic(self.out / "timings.json", json.dumps(timings, indent=1, default=json_default))
        return write_report(self.out, results, seed=self.cfg.seed, quick=self.cfg.quick, threads=self.cfg.threads,
                            timings=timings)

    # -- one system --------------------------------------------------------------------
    def run_system(self, name: str, s: SystemConfig) -> dict[str, Any]:
        d = self.out / "systems" / name
        d.mkdir(parents=True, exist_ok=True)
        scfg = dataclasses.asdict(s)
        seed = self.cfg.seed
        res: dict[str, Any] = {"config": scfg}

        mc_fields = ("preset", "overrides")
        # every fingerprint carries a hash of the code the stage runs (stage_code): the version string
        # never changes, and a fix must recompute what it fixes
        mc_code = stage_code("simulate")
        fp_train = fingerprint("train", seed, {k: scfg[k] for k in mc_fields}, s.train_samples, s.train_size, s.ndim,
                               mc_code)
        fp_hgen = fingerprint("heldout_gen", seed, {k: scfg[k] for k in mc_fields}, s.heldout_samples, s.gen_size,
                              s.heldout_box, s.ndim, mc_code)
        fp_htr = fingerprint("heldout_train", seed, {k: scfg[k] for k in mc_fields}, s.heldout_train_samples,
                             s.train_size, s.heldout_box, s.ndim, mc_code)
        # three disjoint seed streams: 3 seed + 0/1/2
        self.stage(f"{name}/simulate train", fp_train, [d / "train.npz"],
                   lambda: self._simulate(s, s.train_samples, s.train_size, 3 * seed, d / "train.npz"))
        self.stage(f"{name}/simulate held-out (generated size)", fp_hgen, [d / "heldout_gen.npz"],
                   lambda: self._simulate(s, s.heldout_samples, s.gen_size, 3 * seed + 1, d / "heldout_gen.npz",
                                          s.heldout_box))
        self.stage(f"{name}/simulate held-out (training size)", fp_htr, [d / "heldout_train.npz"],
                   lambda: self._simulate(s, s.heldout_train_samples, s.train_size, 3 * seed + 2,
                                          d / "heldout_train.npz", s.heldout_box))
        train = load_dataset(d / "train.npz")
        res["train_density"] = float(np.mean(train.grids == train.class_id("particle")))

        models: dict[str, tuple[Path, str]] = {}
        if s.expansion_range > 0:
            fp = fingerprint("expansion", fp_train, s.expansion_range, s.expansion_order, s.expansion_epochs,
                             s.expansion_lr, s.expansion_val_fraction, seed, stage_code("expansion"))
            res["expansion_fit"] = self.stage(f"{name}/fit expansion (range {s.expansion_range}, order "
                                              f"{s.expansion_order})", fp, [d / "expansion.pt"],
                                              lambda: self._fit_expansion(s, train, d / "expansion.pt"))
            models["expansion"] = (d / "expansion.pt", fp)
        fp = fingerprint("density", fp_train, stage_code("density"))
        self.stage(f"{name}/density-only model", fp, [d / "density.pt"],
                   lambda: self._density_model(train, d / "density.pt"))
        models["density"] = (d / "density.pt", fp)
        fp = fingerprint("pixelcnn", fp_train, s.layers, s.filters, s.kernel, s.out_width, s.epochs, s.batch, s.lr,
                         s.crop, seed, self.cfg.threads, s.ema, stage_code("pixelcnn"))
        res["pixelcnn_training"] = self.stage(f"{name}/train PixelCNN ({s.layers} layers, {s.filters} filters)", fp,
                                              [d / "pixelcnn" / "best.pt"],
                                              lambda: self._train_pixelcnn(s, train, d / "pixelcnn", fp))
        models["pixelcnn"] = (d / "pixelcnn", fp)

        res["models"] = {}
        for label in MODELS:
            if label not in models:
                continue
            path, fp_model = models[label]
            gen = d / f"gen_{label}.npz"
            fp_gen = fingerprint("generate", fp_model, s.gen_samples, s.gen_size, seed, self.cfg.threads,
                                 stage_code("generate"))
            info = self.stage(f"{name}/generate {label} ({s.gen_samples} x {_side(s.gen_size, s.ndim)})", fp_gen, [gen],
                              lambda: self._generate(path, s.gen_samples, s.gen_size, gen, seed))
            cmp_path = d / f"compare_{label}.json"
            fp_cmp = fingerprint("compare", fp_gen, fp_hgen, fp_htr, seed, 3, self.cfg.permutations,
                                 stage_code("compare"))
            comparison = self.stage(f"{name}/compare {label} with held-out Monte Carlo", fp_cmp, [cmp_path],
                                    lambda: self._compare(d, gen, cmp_path, seed))
            res["models"][label] = {"generate": info, "compare": comparison}
            fp_nll = fingerprint("nll", fp_model, fp_hgen, fp_htr, stage_code("nll"))
            res["models"][label]["nll"] = self.stage(f"{name}/held-out NLL of the {label} model", fp_nll,
                                                     [d / f"nll_{label}.json"],
                                                     lambda: self._nll(path, d, d / f"nll_{label}.json"))
            if label == "pixelcnn":
                fp_conv = fingerprint("convergence", fp_gen, stage_code("convergence"))
                res["convergence"] = self.stage(f"{name}/{'plane' if s.ndim == 3 else 'row'} convergence of the "
                                                f"PixelCNN samples", fp_conv,
                                                [d / "convergence.json"],
                                                lambda: self._convergence(gen, d / "convergence.json"))
        res["scales"] = {}
        for k in s.extra_scales:
            res["scales"][str(k)] = self._extra_scale(name, s, d, k, models["pixelcnn"], fp_htr)
        return res

    def _extra_scale(self, name: str, s: SystemConfig, d: Path, k: int, model: tuple[Path, str],
                     fp_htr: str) -> dict[str, Any]:
        """PixelCNN samples of side k x the training side against held-out Monte Carlo of that size."""
        seed = self.cfg.seed
        size = k * s.train_size
        scfg = dataclasses.asdict(s)
        ref = d / f"heldout_x{k}.npz"
        mc_seed = 3 * (seed + 1_000_003 * k) + 1  # a stream of its own (disjoint from 3 seed + 0/1/2 below 10^6)
        fp_ref = fingerprint("heldout_scale", seed, k, {f: scfg[f] for f in ("preset", "overrides")},
                             s.heldout_samples, size, s.heldout_box, s.ndim, stage_code("simulate"))
        self.stage(f"{name}/simulate held-out ({_side(size, s.ndim)})", fp_ref, [ref],
                   lambda: self._simulate(s, s.heldout_samples, size, mc_seed, ref, s.heldout_box))
        path, fp_model = model
        gen = d / f"gen_pixelcnn_x{k}.npz"
        fp_gen = fingerprint("generate", fp_model, s.gen_samples, size, seed, self.cfg.threads, stage_code("generate"))
        info = self.stage(f"{name}/generate pixelcnn ({s.gen_samples} x {_side(size, s.ndim)})", fp_gen, [gen],
                          lambda: self._generate(path, s.gen_samples, size, gen, seed))
        out = d / f"compare_pixelcnn_x{k}.json"
        fp_cmp = fingerprint("compare", fp_gen, fp_ref, fp_htr, seed, 3, self.cfg.permutations, stage_code("compare"))
        comparison = self.stage(f"{name}/compare pixelcnn at {_side(size, s.ndim)} with held-out Monte Carlo", fp_cmp,
                                [out],
                                lambda: self._compare(d, gen, out, seed, refs={"heldout_gen": ref.name}))
        fp_nll = fingerprint("nll", fp_model, fp_ref, fp_htr, stage_code("nll"))
        nll = self.stage(f"{name}/held-out NLL of the pixelcnn model at {_side(size, s.ndim)}", fp_nll,
                         [d / f"nll_pixelcnn_x{k}.json"],
                         lambda: self._nll(path, d, d / f"nll_pixelcnn_x{k}.json", big=ref.name))
        return {"size": size, "generate": info, "compare": comparison, "nll": nll}

    # -- stage bodies ------------------------------------------------------------------------
    def _simulate(self, s: SystemConfig, n: int, size: int, seed: int, path: Path, box: int = 1) -> dict[str, Any]:
        """``n`` Monte Carlo samples of side ``size`` (squares, or cubes for ``s.ndim`` 3): whole periodic
        boxes, or (``box`` > 1) the top-left window of that side of boxes ``box`` times larger, recorded as
        open windows of those boxes."""
        from mapsim.montecarlo import corner_window, preset_params, simulate

        params = preset_params(s.preset, s.overrides)
        side = size * box
        bar = self.bar(total=n, desc=f"MC {s.preset} {_side(side, s.ndim)}") if self.bar else None
        try:
            ds = simulate(params, n, side, side, seed=seed, progress=(bar.update if bar else None),
                          depth=side if s.ndim == 3 else None)
        finally:
            if bar:
                bar.close()
        if box > 1:
            ds = corner_window(ds, size)
        save_dataset(path, ds)
        return {"samples": n, "size": size, "box": side, "seed": seed}

    def _fit_expansion(self, s: SystemConfig, train: Dataset, path: Path) -> dict[str, Any]:
        from mapsim.models.expansion import Expansion, ExpansionConfig, ExpansionFitter
        from mapsim.models.io import save_model

        model = Expansion(ExpansionConfig(range=s.expansion_range, order=s.expansion_order, classes=train.classes))
        fitter = ExpansionFitter(epochs=s.expansion_epochs, lr=s.expansion_lr, val_fraction=s.expansion_val_fraction,
                                 seed=self.cfg.seed).fit(model, train.grids)
        save_model(path, model)
        best = fitter.history_[fitter.best_epoch_ - 1] if fitter.history_ else {}
        return {"coefficients": int(model.n_coefficients), "best_epoch": fitter.best_epoch_,
                "val_nll": best.get("val_nll"), "train_nll": best.get("train_nll")}

    def _density_model(self, train: Dataset, path: Path) -> dict[str, Any]:
        from mapsim.models.analytic import IdealGas, IdealGasConfig
        from mapsim.models.io import save_model

        freq = np.bincount(train.grids.ravel(), minlength=train.n_classes) / train.grids.size
        dens = tuple(float(max(f, 1e-9)) for f in freq[1:])
        save_model(path, IdealGas(IdealGasConfig(densities=dens, classes=train.classes, ndim=train.ndim)))
        return {"densities": dens}

    def _train_pixelcnn(self, s: SystemConfig, train: Dataset, run_dir: Path, fp: str) -> dict[str, Any]:
        import shutil

        from mapsim.training import TrainConfig, train as train_model

        tc = TrainConfig(layers=s.layers, filters=s.filters, kernel=s.kernel, out_width=s.out_width, epochs=s.epochs,
                         batch=s.batch, lr=s.lr, seed=self.cfg.seed, crop=[s.crop, s.crop] if s.crop else None,
                         ema=s.ema)
        # an interrupted run with the same settings continues; one made with other settings is replaced
        stamp = run_dir.with_name(run_dir.name + ".fingerprint")
        same = stamp.exists() and stamp.read_text().strip() == fp
        if run_dir.exists() and not (same and (run_dir / "last.pt").exists()):
            shutil.rmtree(run_dir)
        resume = run_dir.exists()
        write_text_atomic(stamp, fp + "\n")
        # CPU: the GPU's kernels would give other bytes; the quick models are small
        with _global_rng_fixed(self.cfg.seed):
            result = train_model(train, tc, run_dir, resume=resume, device="cpu", progress=self.bar)
        summary = result.summary()
        summary["run_dir"] = run_dir.relative_to(self.out).as_posix()  # the same report wherever --out is
        return summary

    def _generate(self, model_path: Path, n: int, size: int, out: Path, seed: int) -> dict[str, Any]:
        from mapsim.models.io import load_model
        from mapsim.sampling.generate import generate

        model = load_model(model_path)
        if model.ndim == 3:  # cubes; the cached 3D kernel for the Gated PixelCNN, the 3D front for the ideal gas
            from mapsim.sampling.volume import generate_volume

            ds = generate_volume(model, n, size, size, size, seed=seed, sampler="fast", threads=self.cfg.threads)
        else:
            ds = generate(model, n, size, size, seed=seed, sampler="fast", threads=self.cfg.threads)
        save_dataset(out, ds)
        return {"context_range": model.context_range, "samples": n, "size": size,
                "density": float(np.mean(ds.grids == 1)), "mean_log_prob_per_pixel": float(ds.extras["log_probs"].mean())}

    def _compare(self, d: Path, gen_path: Path, out: Path, seed: int,
                 refs: dict[str, str] | None = None) -> dict[str, Any]:
        from mapsim.analysis.compare import compare_datasets
        from mapsim.analysis.compare3d import compare_volumes

        gen = load_dataset(gen_path)
        result = {}
        curves = {}
        files = {"heldout_gen": "heldout_gen.npz", "heldout_train": "heldout_train.npz", **(refs or {})}
        # volumes: the 3D verdict on the interior (2 L_c planes, L_c rows and columns at each side dropped);
        # it has no drift tests, so its training-size family is the verdict on smaller windows only
        verdict = compare_volumes if gen.ndim == 3 else compare_datasets
        for ref_name in ("heldout_gen", "heldout_train"):
            ref = load_dataset(d / files[ref_name])
            # the family verdict at alpha = 0.05
            c = verdict(ref, gen, "particle", seed=seed, n_permutations=self.cfg.permutations)
            # the drift profile (bands from the top boundary) when generated samples are taller than this reference
            result[ref_name] = {**c.summary, "drift": c.drift or None}
            curves[ref_name] = {"r": c.r, "reference": c.reference, "generated": c.generated}
        with atomic_path(out.with_suffix(".npz")) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **_flatten_curves(curves))
        write_text_atomic(out, json.dumps(result, indent=1, default=json_default))
        return result

    def _nll(self, model_path: Path, d: Path, out: Path, big: str = "heldout_gen.npz") -> dict[str, Any]:
        """Held-out NLL per pixel (nats, with its standard error over samples) of a model.

        On the Monte Carlo samples of the training size (whole, as in training) and on
        the interior windows of the larger held-out samples: rows from 2 L_c and L_c
        columns in from each side, the pixels whose whole context lies inside the
        sample, i.e. the bulk the model's stationary state must reproduce.  Volumes:
        voxels from plane 2 L_c, L_c rows and L_c columns in from each side (a voxel's
        causal box reaches L_c rows below it in earlier planes).
        """
        from mapsim.models.io import load_model
        from mapsim.models.score import score_grids, score_volumes

        model = load_model(model_path)
        lc = int(model.context_range)
        result = {"context_range": lc}
        for key, file, skip in (("training_size", "heldout_train.npz", 0), ("generated_size_interior", big, lc)):
            ds = load_dataset(d / file)
            if model.ndim == 3:
                sc = score_volumes(model, ds.grids, skip_planes=2 * skip, skip_rows=skip, skip_cols=skip)
                where = {"skip_planes": 2 * skip, "skip_rows": skip, "skip_cols": skip}
            else:
                sc = score_grids(model, ds.grids, skip_rows=2 * skip, skip_cols=skip)
                where = {"skip_rows": 2 * skip, "skip_cols": skip}
            result[key] = {"nll_nats": sc.nll_nats, "nll_nats_se": sc.nll_nats_se, "samples": sc.n_samples,
                           "shape": list(ds.spatial_shape), **where}
        write_text_atomic(out, json.dumps(result, indent=1, default=json_default))
        return result

    def _convergence(self, gen_path: Path, out: Path) -> dict[str, Any]:
        from mapsim.analysis.convergence import RowConvergence, plane_log_probs

        gen = load_dataset(gen_path)
        lp = gen.extras["log_probs"]
        volumes = lp.ndim == 4  # convergence by plane: every plane flattened into one row
        rc = RowConvergence(int(gen.metadata["context_range"])).compute(plane_log_probs(lp) if volumes else lp)
        summary = rc.summary()
        if volumes:
            summary.update({"unit": "plane", "skip_planes": summary["skip_rows"], "volume_shape": list(lp.shape[1:])})
        write_text_atomic(out, json.dumps(summary, indent=1, default=json_default))
        return summary


def _side(size: int, ndim: int) -> str:
    """``24^2`` or ``24^3``: a sample side in the progress lines."""
    return f"{size}^{ndim}"


def set_threads(n: int) -> None:
    """Run torch and numba on ``n`` threads (the results' bytes depend on it; ``RunConfig.threads``)."""
    import torch

    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass


@contextmanager
def _global_rng_fixed(seed: int) -> Iterator[None]:
    """Global torch, NumPy and Python generators seeded from ``seed`` inside, restored after.

    Training does not draw from them, but its checkpoints record their states
    (for code around the loop); whatever an earlier stage of this process drew
    would otherwise change the model files' bytes.
    """
    import random

    import torch

    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the Monte Carlo workers)."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _flatten_curves(curves: dict[str, Any]) -> dict[str, np.ndarray]:
    """Arrays of the comparison curves for the figures, keys ``<ref>/<side>/<stat>``."""
    flat: dict[str, np.ndarray] = {}
    for ref_name, c in curves.items():
        flat[f"{ref_name}/r"] = np.asarray(c["r"])
        for side in ("reference", "generated"):
            for k, v in c[side].items():
                try:
                    flat[f"{ref_name}/{side}/{k}"] = np.asarray(v, dtype=float)
                except (TypeError, ValueError):
                    continue
    return flat
