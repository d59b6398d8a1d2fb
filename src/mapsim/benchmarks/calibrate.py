"""``mapsim bench calibrate``: the false-alarm rate and the power of the fidelity verdict, measured.

The verdict of :func:`mapsim.analysis.compare.compare_datasets` (family of
permutation tests, Westfall–Young max-T, ``alpha`` 0.05) is run on pairs of
Monte Carlo sets at the sizes ``mapsim reproduce --quick`` compares (held-out
samples of the generated size against generated samples):

=====================  ===========================  ==========================================
preset                 per side                     "generated" side treated like a model's
=====================  ===========================  ==========================================
fluid-hot-repulsive    60 samples of 64 x 64        L_c = 4: 8 rows, 4 columns each side skipped
drying (500 sweeps)    24 windows of 96 x 96 (*)    L_c = 6: 12 rows, 6 columns each side skipped
=====================  ===========================  ==========================================

so the windows, crops and edge treatment are those of the reproduction run.
(*) corner windows of periodic 192 x 192 boxes, as reproduce's ``heldout_box = 2``
for the drying systems (the figures in the README were measured on whole 96 x 96
boxes, before that setting).

False alarms: ``pairs`` same-distribution pairs.  For the fluid every pair
is two disjoint, independent sets (one long Monte Carlo run cut into slices).
A drying sample costs about 0.3 s, too much for 200 x 48 fresh samples in
the time budget, so its pairs are drawn from a pool: the pool is shuffled and
cut into disjoint pairs, again and again.  The two sets of a pair never share
a sample, so every pair is a valid same-distribution pair, but pairs from
different shuffles overlap, which makes their outcomes slightly dependent:
the binomial error reported treats them as independent and is then somewhat
optimistic (``pool_samples`` says how many distinct samples there are).

Power against (``power_<name>`` with a 95 % Clopper–Pearson interval):
``density_x1.1_<preset>`` (Monte Carlo at 1.1 x the density), the one-epoch
PixelCNN for drying (``pixelcnn_1epoch_drying``: the quick configuration's
model trained for one epoch, samples generated at 96 x 96 with the fast
sampler, a pool cut like the drying pool), and, reported only,
``T_x1.25_fluid-hot-repulsive`` and ``e_nn_x0.5_fluid-hot-repulsive``.

Targets (issue 13): false-alarm rate within [0.02, 0.08]; power ≥ 0.9 for
density x 1.1 on both presets and for the one-epoch model.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mapsim.errors import MapsimError

ALPHA = 0.05


@dataclass
class PresetPlan:
    """How one preset is calibrated.

    Attributes
    ----------
    preset : str
    size, samples : int
        Sample side and samples per side (the reproduce-quick generated size and held-out count).
    context_range : int
        L_c given to the "generated" side (the quick PixelCNN's), which sets skipped rows and columns.
    overrides : dict
        Preset parameters changed for every set (drying: the quick run's 500 sweeps).
    pool_samples : int
        0: fresh disjoint sets for every pair; > 0: pairs drawn from a pool of this many samples.
    alternatives : dict
        Name -> parameter multipliers of a Monte Carlo alternative (power).
    required : tuple of str
        Alternatives whose power has a target (the others are reported only).
    heldout_box : int
        Sets of ``size`` are the corner windows of periodic boxes this many times the side
        (:func:`mapsim.montecarlo.corner_window`), as reproduce's ``heldout_box``.
    pixelcnn : dict, optional
        One-epoch PixelCNN alternative: training ``train_size``, ``train_samples`` and the
        :class:`mapsim.training.TrainConfig` fields; ``pool_samples`` generated.
    """

    preset: str
    size: int
    samples: int
    context_range: int
    overrides: dict = field(default_factory=dict)
    pool_samples: int = 0
    alternatives: dict = field(default_factory=dict)
    required: tuple = ()
    pixelcnn: dict | None = None
    heldout_box: int = 1


def default_plans() -> list[PresetPlan]:
    """The reproduce-quick sizes (``mapsim.reproduce.config.default_config(True)``; a test keeps them in step)."""
    return [
        PresetPlan("fluid-hot-repulsive", size=64, samples=60, context_range=4,
                   alternatives={"density_x1.1": {"density": 1.1}, "T_x1.25": {"T": 1.25}, "e_nn_x0.5": {"e_nn": 0.5}},
                   required=("density_x1.1",)),
        PresetPlan("drying", size=96, samples=24, context_range=6, overrides={"sweeps": 500}, pool_samples=480,
                   heldout_box=2,
                   alternatives={"density_x1.1": {"density": 1.1}}, required=("density_x1.1", "pixelcnn_1epoch"),
                   pixelcnn={"train_size": 48, "train_samples": 150, "layers": 6, "filters": 24, "kernel": 3,
                             "out_width": 48, "batch": 4, "lr": 5e-3, "pool_samples": 120}),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=200, help="same-distribution pairs per preset (default 200)")
    parser.add_argument("--power-pairs", type=int, default=50, help="pairs per alternative (default 50)")
    parser.add_argument("--permutations", type=int, default=1000, help="permutations per comparison (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every Monte Carlo set and test (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="Monte Carlo processes (default: all cores)")
    parser.add_argument("--presets", default=None,
                        help="comma-separated subset of fluid-hot-repulsive,drying (default both)")
    parser.add_argument("--no-pixelcnn", action="store_true", help="skip the one-epoch PixelCNN (needs torch)")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    """Exact binomial confidence interval for k successes in n trials."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return [lo, hi]


def _pool_pairs(n_pool: int, per_side: int, n_pairs: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disjoint (ref, gen) index sets drawn from a pool: shuffle, cut into pairs, repeat."""
    per_shuffle = n_pool // (2 * per_side)
    if per_shuffle < 1:
        raise MapsimError(f"a pool of {n_pool} samples holds no pair of 2 x {per_side}")
    out = []
    while len(out) < n_pairs:
        perm = rng.permutation(n_pool)
        for i in range(min(per_shuffle, n_pairs - len(out))):
            block = perm[2 * i * per_side: (2 * i + 2) * per_side]
            out.append((block[:per_side], block[per_side:]))
    return out


def _subsets(n_pool: int, per_side: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n index sets of one side from a pool: shuffle, cut into disjoint sets, repeat."""
    per_shuffle = n_pool // per_side
    if per_shuffle < 1:
        raise MapsimError(f"a pool of {n_pool} samples holds no set of {per_side}")
    out = []
    while len(out) < n:
        perm = rng.permutation(n_pool)
        out += [perm[i * per_side: (i + 1) * per_side] for i in range(min(per_shuffle, n - len(out)))]
    return out


class Calibration:
    """Run the plans; ``compute()`` returns self, results in ``result_``.

    Parameters
    ----------
    plans : list of PresetPlan
    pairs, power_pairs, permutations, seed : int
    workers : int, optional
        Monte Carlo processes.
    pixelcnn : bool
        Run the one-epoch PixelCNN alternatives.
    log : callable
        Receives progress lines.
    """

    def __init__(self, plans: list[PresetPlan], pairs: int = 200, power_pairs: int = 50, permutations: int = 1000,
                 seed: int = 0, workers: int | None = None, pixelcnn: bool = True,
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.plans = plans
        self.pairs = pairs
        self.power_pairs = power_pairs
        self.permutations = permutations
        self.seed = seed
        self.workers = workers
        self.pixelcnn = pixelcnn
        self.log = log

    # -- data -----------------------------------------------------------------------------
    def _params(self, plan: PresetPlan, factors: dict[str, float] | None = None):
        from mapsim.montecarlo import preset_params

        base = preset_params(plan.preset, plan.overrides)
        changed = {k: getattr(base, k) * f for k, f in (factors or {}).items()}
        return preset_params(plan.preset, {**plan.overrides, **changed})

    def _simulate(self, plan: PresetPlan, n: int, stream: int, factors: dict[str, float] | None = None,
                  size: int | None = None, box: int | None = None):
        from mapsim.montecarlo import corner_window, simulate

        size = size or plan.size
        side = size * (plan.heldout_box if box is None else box)
        # disjoint seed streams per preset and purpose, so no two sets share a Monte Carlo sample
        seed = self.seed * 1000 + stream
        t = time.perf_counter()
        ds = simulate(self._params(plan, factors), n, side, side, seed=seed, workers=self.workers)
        self.log(f"  {plan.preset}: {n} Monte Carlo samples of {size}^2 (boxes of {side}^2) {factors or ''} in "
                 f"{time.perf_counter() - t:.0f} s")
        return corner_window(ds, size) if side > size else ds

    def _as_generated(self, grids: np.ndarray, classes, plan: PresetPlan, note: str):
        from mapsim.lattice import Dataset

        # a model's output: no Monte Carlo parameters, the model's L_c (skipped rows and columns)
        return Dataset(grids, classes, {"context_range": plan.context_range, "source": note})

    def _verdict(self, ref, gen, seed: int) -> dict[str, Any]:
        from mapsim.analysis.compare import compare_datasets

        return compare_datasets(ref, gen, "particle", seed=seed, n_permutations=self.permutations,
                                alpha=ALPHA).summary

    # -- the runs ---------------------------------------------------------------------------
    def _null_and_power(self, plan: PresetPlan, stream0: int) -> dict[str, Any]:
        from mapsim.lattice import Dataset

        res: dict[str, Any] = {"size": plan.size, "samples_per_side": plan.samples,
                               "context_range": plan.context_range, "overrides": plan.overrides}
        s = plan.samples
        t0 = time.perf_counter()
        if plan.pool_samples:
            pool = self._simulate(plan, plan.pool_samples, stream0)
            index = _pool_pairs(pool.n_samples, s, self.pairs, np.random.default_rng(self.seed + stream0))
            res["pool_samples"] = pool.n_samples
        else:
            pool = self._simulate(plan, 2 * s * self.pairs, stream0)
            index = [(np.arange(2 * i * s, (2 * i + 1) * s), np.arange((2 * i + 1) * s, (2 * i + 2) * s))
                     for i in range(self.pairs)]
            res["pool_samples"] = pool.n_samples
        meta = pool.metadata

        def ref_set(idx: np.ndarray) -> Dataset:
            return Dataset(pool.grids[idx], pool.classes, meta)

        rejections, per_stat = [], {}
        for i, (ri, gi) in enumerate(index):
            v = self._verdict(ref_set(ri), self._as_generated(pool.grids[gi], pool.classes, plan, "monte carlo"),
                              seed=self.seed * 100_003 + i)
            rejections.append(v["family_reject"])
            for st in v["statistics"]:
                per_stat.setdefault(st, []).append(st in v["rejected"])
        n = len(rejections)
        k = int(np.sum(rejections))
        res["pairs"] = n
        res["false_alarm_rate"] = k / n
        res["false_alarm_rate_stderr"] = math.sqrt(max(k / n * (1 - k / n), 0) / n)
        res["false_alarm_rate_ci"] = clopper_pearson(k, n)
        res["rejected_per_statistic"] = {st: float(np.mean(r)) for st, r in per_stat.items()}
        res["pairs_independent"] = not plan.pool_samples
        res["null_seconds"] = time.perf_counter() - t0
        self.log(f"{plan.preset}: false-alarm rate {k}/{n} = {k / n:.3f}")

        rng = np.random.default_rng(self.seed + stream0 + 1)
        refs = [ri for ri, _ in index[: self.power_pairs]] if not plan.pool_samples else \
            [rng.choice(pool.n_samples, s, replace=False) for _ in range(self.power_pairs)]
        alts: dict[str, tuple[Any, list[np.ndarray]]] = {}
        for j, (name, factors) in enumerate(plan.alternatives.items()):
            if plan.pool_samples:
                n_alt = max(s, plan.pool_samples // 2)
                alt = self._simulate(plan, n_alt, stream0 + 10 + j, factors)
                gens = _subsets(alt.n_samples, s, self.power_pairs, rng)
            else:
                alt = self._simulate(plan, s * self.power_pairs, stream0 + 10 + j, factors)
                gens = [np.arange(i * s, (i + 1) * s) for i in range(self.power_pairs)]
            alts[name] = (alt, gens)
        if plan.pixelcnn and self.pixelcnn:
            alts["pixelcnn_1epoch"] = self._pixelcnn_pool(plan, stream0 + 50, rng)
        for name, (alt, gens) in alts.items():
            t = time.perf_counter()
            hits = []
            for i, (ri, gi) in enumerate(zip(refs, gens)):
                v = self._verdict(ref_set(ri), self._as_generated(alt.grids[gi], alt.classes, plan, name),
                                  seed=self.seed * 100_003 + 50_000 + i)
                hits.append(v["family_reject"])
            k, n = int(np.sum(hits)), len(hits)
            res[f"power_{name}"] = k / n
            res[f"power_{name}_ci"] = clopper_pearson(k, n)
            res[f"power_{name}_pairs"] = n
            res[f"power_{name}_pool_samples"] = alt.n_samples
            res[f"power_{name}_seconds"] = time.perf_counter() - t
            self.log(f"{plan.preset}: power against {name} {k}/{n} = {k / n:.3f}")
        return res

    def _pixelcnn_pool(self, plan: PresetPlan, stream: int, rng: np.random.Generator):
        import torch

        from mapsim.models.io import load_model
        from mapsim.sampling.generate import generate
        from mapsim.training import TrainConfig, train

        cfg = dict(plan.pixelcnn)
        train_size, train_samples, pool_n = cfg.pop("train_size"), cfg.pop("train_samples"), cfg.pop("pool_samples")
        data = self._simulate(plan, train_samples, stream, size=train_size, box=1)  # reproduce trains on whole boxes
        tc = TrainConfig(epochs=1, seed=self.seed, **cfg)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            train(data, tc, os.path.join(tmp, "run"), device="cpu")
            model = load_model(os.path.join(tmp, "run", "best.pt"))
            self.log(f"  {plan.preset}: one-epoch PixelCNN trained in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        gen = generate(model, pool_n, plan.size, plan.size, seed=self.seed * 1000 + stream + 1, sampler="fast")
        self.log(f"  {plan.preset}: {pool_n} PixelCNN samples of {plan.size}^2 in {time.perf_counter() - t:.0f} s")
        if model.context_range != plan.context_range:
            raise MapsimError(f"one-epoch PixelCNN has L_c {model.context_range}, expected {plan.context_range}")
        return gen, _subsets(gen.n_samples, plan.samples, self.power_pairs, rng)

    def compute(self) -> "Calibration":
        t0 = time.perf_counter()
        out: dict[str, Any] = {"alpha": ALPHA, "permutations": self.permutations, "seed": self.seed,
                               "presets": {}}
        for p, plan in enumerate(self.plans):
            out["presets"][plan.preset] = self._null_and_power(plan, stream0=100 * (p + 1))
        pres = out["presets"]
        out["false_alarm_rate"] = {k: v["false_alarm_rate"] for k, v in pres.items()}
        out["false_alarm_rate_stderr"] = {k: v["false_alarm_rate_stderr"] for k, v in pres.items()}
        targets = {}
        for plan in self.plans:
            v = pres[plan.preset]
            targets[f"false_alarm_rate_{plan.preset}"] = 0.02 <= v["false_alarm_rate"] <= 0.08
            for name in list(plan.alternatives) + (["pixelcnn_1epoch"] if plan.pixelcnn and self.pixelcnn else []):
                key = f"{name}_{plan.preset}"
                out[f"power_{key}"] = v[f"power_{name}"]
                out[f"power_{key}_ci"] = v[f"power_{name}_ci"]
                out[f"power_{key}_pairs"] = v[f"power_{name}_pairs"]
                if name in plan.required:
                    targets[f"power_{key}"] = v[f"power_{name}"] >= 0.9
        out["targets_met"] = targets
        out["seconds"] = time.perf_counter() - t0
        out["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.result_ = out
        return self


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("pairs", "power_pairs"):
        if getattr(args, name) < 1:
            raise MapsimError(f"--{name.replace('_', '-')} must be a positive integer, found {getattr(args, name)}")
    if args.permutations < 100:
        raise MapsimError(f"--permutations must be at least 100, found {args.permutations}")
    if args.seed < 0:
        raise MapsimError(f"--seed must be non-negative, found {args.seed}")
    plans = default_plans()
    if args.presets:
        names = [s.strip() for s in args.presets.split(",") if s.strip()]
        unknown = [n for n in names if n not in {p.preset for p in plans}]
        if unknown:
            raise MapsimError(f"--presets: unknown {unknown}; expected a subset of {[p.preset for p in plans]}")
        plans = [p for p in plans if p.preset in names]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cal = Calibration(plans, pairs=args.pairs, power_pairs=args.power_pairs, permutations=args.permutations,
                      seed=args.seed, workers=args.workers, pixelcnn=not args.no_pixelcnn, log=log)
    return cal.compute().result_
