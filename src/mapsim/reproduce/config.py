"""Configuration of a reproduction run, read from and written to TOML.

A run has global settings and one table per system::

    seed = 0
    quick = true

    [systems.fluid-cold-repulsive]
    preset = "fluid-cold-repulsive"
    train_samples = 200
    ...

The resolved configuration is saved beside the results (``config.toml``);
``mapsim reproduce --config saved.toml`` repeats the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mapsim.errors import MapsimError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class SystemConfig:
    """One of the paper's systems and how to model it.

    Attributes
    ----------
    preset : str
        Monte Carlo preset (:data:`mapsim.montecarlo.PRESETS`).
    overrides : dict
        Preset parameters to change (``--set`` names).
    train_samples, train_size : int
        Training data: samples of train_size x train_size.
    gen_scale : int
        Generated samples are gen_scale times the training side (area x gen_scale^2).
    extra_scales : list of int
        Further sides (multiples of the training side) at which PixelCNN samples are
        generated and compared with held-out Monte Carlo samples of that size
        (stationarity at scale; full mode: ``[4]``, 16x the training area).
    gen_samples, heldout_samples : int
        Generated samples, and held-out Monte Carlo samples of the generated size.
    heldout_train_samples : int
        Held-out Monte Carlo samples of the training size (a second reference).
    expansion_range, expansion_order : int
        Cluster expansion (Table 1); range 0 means no expansion for this system.
    expansion_epochs : int
    expansion_lr, expansion_val_fraction : float
        Adam learning rate, and the validation fraction whose best epoch is kept
        (0: keep the last epoch -- for hard exclusions, whose coefficients only
        approach -inf with training while the validation NLL barely moves).
    layers, filters, kernel, out_width, epochs, batch : int
        Gated PixelCNN and its training.
    lr : float
        Training runs exactly ``epochs`` epochs: no wall-clock cap, so the result
        does not depend on the machine's load.
    ema : float
        Weight averaging of the PixelCNN (:class:`mapsim.training.TrainConfig`; 0 = off).
    crop : int
        Random training crops (0 = whole samples).
    heldout_box : int
        Held-out Monte Carlo references (generated size, training size, extra scales) are
        the top-left window of the wanted side cut from periodic boxes ``heldout_box`` times
        that side (1: the box itself).  The drying presets conserve their particles, so a
        box of the generated side holds its density fixed: a 96² box's 76² interior had
        window-density SD 0.0029 against 0.0045 for a 96² window of a 288² box -- a
        finite-size effect of the reference, not a property of the material a model of
        local conditionals should reproduce.
    """

    preset: str
    overrides: dict = field(default_factory=dict)
    train_samples: int = 200
    train_size: int = 32
    gen_scale: int = 2
    extra_scales: list = field(default_factory=list)
    gen_samples: int = 40
    heldout_samples: int = 40
    heldout_train_samples: int = 100
    expansion_range: int = 0
    expansion_order: int = 0
    expansion_epochs: int = 10
    expansion_lr: float = 0.05
    expansion_val_fraction: float = 0.1
    layers: int = 4
    filters: int = 16
    kernel: int = 3
    out_width: int = 32
    epochs: int = 30
    batch: int = 16
    lr: float = 3e-3
    ema: float = 0.0
    crop: int = 0
    heldout_box: int = 1
    ndim: int = 2

    @property
    def gen_size(self) -> int:
        return self.train_size * self.gen_scale

    def shape(self, side: int) -> tuple[int, ...]:
        """Sample shape of side ``side``: (side, side), or (side, side, side) for volumes."""
        return (side,) * self.ndim


@dataclass
class RunConfig:
    """A whole reproduction run.

    Attributes
    ----------
    seed : int
    quick : bool
    threads : int
        CPU threads of torch and numba in every stage.  Training reductions and
        the sampler's blocks depend on it, so the same configuration, seed and
        thread count give byte-identical models, samples and ``report.json``.
        Default 1: the quick models are too small for two threads to pay, and on
        a busy machine two threads waiting for each other were 10x slower (a
        48² drying epoch: 3.4 s on one thread, 56 s on two at load 9).
    permutations : int
        Permutations of every comparison.  The report applies Holm across its
        families (about 18 in quick mode), so a family must reach p <= alpha / 18;
        with 1000 permutations the smallest possible p is 1/1001 and the minP
        step-down gave the density-only controls 0.002-0.004, which Holm could not
        reject: the resolution, not the data, decided.  4000 permutations give
        2.5e-4.
    systems : dict
    notes : list of str
        What loading the file said about keys of earlier versions (not saved).
    """

    seed: int = 0
    quick: bool = True
    threads: int = 1
    permutations: int = 4000
    systems: dict[str, SystemConfig] = field(default_factory=dict)
    notes: list = field(default_factory=list, compare=False)


# Table 1 of the paper: (range L_c, maximum order) of the expansion for the three fluids.
TABLE1 = {"fluid-cold-repulsive": (1, 2), "fluid-hot-repulsive": (2, 3), "fluid-hot-attractive": (3, 3)}
SYSTEMS = ("fluid-cold-repulsive", "fluid-hot-repulsive", "fluid-hot-attractive", "drying", "drying-sparse")
SYSTEMS_3D = {"fluid-hot-repulsive-3d": "fluid-hot-repulsive"}
"""Volume systems of the full run (name -> Monte Carlo preset on the simple cubic lattice); quick mode leaves
them out: the smallest one that still has bulk windows costs more than the quick run's spare minute (README)."""

LEGACY_KEYS = {"train_minutes": "ignored: PixelCNN training now runs exactly `epochs` epochs (a wall-clock cap made "
                                "the result depend on the machine's load)"}
"""Per-system keys written by earlier versions, and how they are treated now."""


def default_config(quick: bool) -> RunConfig:
    """The built-in run: scaled down for ``quick`` (<= 10 min on 2 idle cores), else close to the paper.

    Every training budget is in epochs (never minutes), so the result depends on the configuration,
    the seed and the thread count only.
    """
    systems = {}
    for name in SYSTEMS:
        rng_, order = TABLE1.get(name, (0, 0))
        drying = name.startswith("drying")
        if quick:
            s = SystemConfig(preset=name, train_samples=300, train_size=32, gen_scale=2, gen_samples=60,
                             heldout_samples=60, heldout_train_samples=120, expansion_range=rng_,
                             expansion_order=order, expansion_epochs=8, layers=4, filters=16, out_width=32,
                             epochs=QUICK_EPOCHS[name], batch=4, lr=1e-2)
            if name == "fluid-cold-repulsive":
                s.expansion_lr, s.expansion_val_fraction = 0.3, 0.0
            if drying:
                # 500 sweeps instead of 2000: the film has dried by then (mu reaches 11 at sweep 250)
                # and a quarter of the Monte Carlo cost fits the quick budget
                s.train_size, s.train_samples, s.heldout_train_samples = 48, 150, 60
                s.gen_samples = s.heldout_samples = 24
                s.layers, s.filters, s.out_width = 6, 24, 48
                s.overrides = {"sweeps": 500}
                # weight averaging: without it, model selection on the 15 validation samples picked a
                # mid-schedule snapshot (drying-sparse: epoch 24 of 40, rejected on g(r), neighbours8 and
                # clusters8); with it the validation curve is smooth and that model passed (README)
                s.ema = 0.999
                # the drying process conserves particles: references are windows of boxes twice the side
                s.heldout_box = 2
                if name == "drying":
                    # 40 epochs at lr 0.01 left clusters too small (too many of 1-3 particles, too few of 20+:
                    # clusters8 rejected against windows of 192^2 boxes for two sampling seeds, p 0.005, 0.029);
                    # 80 epochs at lr 0.005 passed for both (README)
                    s.lr = 5e-3
        else:
            # Appendix A: 64 x 64 fluids with L_c layers of 48 filters; drying 256 x 256, 60 layers of 20
            # filters (we use fewer samples than the paper's 10,000 / 18,000 to stay within hours on a CPU).
            s = SystemConfig(preset=name, train_samples=2000, train_size=64, gen_scale=2, extra_scales=[4],
                             gen_samples=100, heldout_samples=100, heldout_train_samples=400, expansion_range=rng_,
                             expansion_order=order, expansion_epochs=20, layers=max(rng_, 4), filters=48,
                             out_width=64, epochs=50, batch=32, lr=2e-3)
            if drying:
                # 2000 sweeps (the preset's), 500 samples of 64², generated at 128² and 256² against windows
                # of boxes twice the side.  Kernel 5 passed the quick drying system with the most margin
                # (README); 8 layers give L_c = 16.  A 128² version with 30 layers (L_c = 30) was estimated at
                # 14 CPU-hours per system, beyond a 2-core sitting; this one costs about one (README).
                s.train_size, s.train_samples, s.gen_scale = 64, 500, 2
                s.heldout_train_samples, s.gen_samples, s.heldout_samples = 100, 20, 20
                s.layers, s.filters, s.kernel, s.out_width = 8, 24, 5, 48
                s.epochs, s.batch, s.lr, s.ema = 40, 8, 5e-3, 0.999
                s.heldout_box = 2
        systems[name] = s
    if not quick:
        for name, preset in SYSTEMS_3D.items():
            systems[name] = volume_system(preset)
    return RunConfig(seed=0, quick=quick, systems=systems)


def volume_system(preset: str) -> SystemConfig:
    """The 3D fluid of the full run: cubes of 16³ for training, generated at 32³ (8x the volume).

    Learning rate 2e-3 with weight averaging (EMA 0.99): at 12³ -> 24³ (300 samples, 4 x 16, 30 epochs)
    these passed the verdict, while lr 5e-3 without averaging (200 samples, 20 epochs) left too many
    face contacts (neighbours6, clusters6 and energy rejected; README).  Measured alone (seed 0, one thread):
    passes at 32³ (family p 0.81; 0.56 against 16³), density-only rejected, 847 CPU-s (training 806).
    """
    return SystemConfig(preset=preset, ndim=3, train_samples=400, train_size=16, gen_scale=2, gen_samples=40,
                        heldout_samples=40, heldout_train_samples=100, layers=4, filters=32, out_width=32,
                        epochs=30, batch=8, lr=2e-3, ema=0.99)


QUICK_EPOCHS = {"fluid-cold-repulsive": 30, "fluid-hot-repulsive": 30, "fluid-hot-attractive": 30, "drying": 80,
                "drying-sparse": 40}
"""PixelCNN epochs of the quick run: one thread took 1.1 s per epoch of a 32² fluid and 3.4 s per epoch
of a 48² drying system (README), so training stays under about 7 minutes."""


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(cfg: RunConfig) -> str:
    """TOML text of a run configuration (round-trips through :func:`from_toml`)."""
    lines = ["# mapsim reproduce: resolved configuration (repeat with: mapsim reproduce --config THIS_FILE)",
             f"seed = {cfg.seed}", f"quick = {_toml_value(cfg.quick)}", f"threads = {cfg.threads}",
             f"permutations = {cfg.permutations}", ""]
    for name, s in cfg.systems.items():
        lines.append(f"[systems.{json.dumps(name)}]")
        for f in dataclasses.fields(s):
            lines.append(f"{f.name} = {_toml_value(getattr(s, f.name))}")
        lines.append("")
    return "\n".join(lines)


def from_toml(text: str, where: str = "config") -> RunConfig:
    """Parse and check a run configuration; unknown or ill-typed keys are errors naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MapsimError(f"{where}: not valid TOML ({exc})") from None
    known = {"seed", "quick", "threads", "permutations", "systems"}
    for k in raw:
        if k not in known:
            raise MapsimError(f"{where}: unknown key {k!r}; expected {sorted(known)}")
    cfg = RunConfig(seed=_typed(raw.get("seed", 0), int, f"{where}: seed"),
                    quick=_typed(raw.get("quick", True), bool, f"{where}: quick"),
                    threads=_typed(raw.get("threads", RunConfig.threads), int, f"{where}: threads"),
                    # files of earlier versions compared with compare's default of 1000
                    permutations=_typed(raw.get("permutations", 1000), int, f"{where}: permutations"))
    if cfg.permutations < 100:
        raise MapsimError(f"{where}: permutations must be >= 100, found {cfg.permutations}")
    if cfg.threads < 1:
        raise MapsimError(f"{where}: threads must be a positive integer, found {cfg.threads}")
    systems = raw.get("systems", {})
    if not isinstance(systems, dict) or not systems:
        raise MapsimError(f"{where}: expected at least one [systems.NAME] table")
    fields = {f.name: f for f in dataclasses.fields(SystemConfig)}
    legacy: dict[str, list[str]] = {}
    for name, table in systems.items():
        if not isinstance(table, dict):
            raise MapsimError(f"{where}: systems.{name} must be a table")
        values = {}
        for k, v in table.items():
            if k in LEGACY_KEYS:
                legacy.setdefault(k, []).append(name)
                continue
            if k not in fields:
                raise MapsimError(f"{where}: systems.{name}.{k} is not a known setting; expected one of {sorted(fields)}")
            values[k] = v
        if "preset" not in values:
            raise MapsimError(f"{where}: systems.{name} needs a preset")
        s = SystemConfig(**values)
        check_system(s, f"{where}: systems.{name}")
        cfg.systems[name] = s
    for k, names in legacy.items():
        cfg.notes.append(f"{where}: {k} (from an earlier version, in {', '.join(names)}) is {LEGACY_KEYS[k]}")
    return cfg


def _typed(v: Any, t: type, where: str):
    if t is int and isinstance(v, bool) or not isinstance(v, t):
        raise MapsimError(f"{where} must be {t.__name__}, found {v!r}")
    return v


def check_system(s: SystemConfig, where: str) -> None:
    """Raise MapsimError naming the first impossible setting."""
    from mapsim.montecarlo import PRESETS

    if s.preset not in PRESETS:
        raise MapsimError(f"{where}.preset: unknown preset {s.preset!r}; expected one of {list(PRESETS)}")
    ints = ("train_samples", "train_size", "gen_scale", "gen_samples", "heldout_samples", "heldout_train_samples",
            "layers", "filters", "kernel", "out_width", "epochs", "batch", "expansion_epochs", "heldout_box")
    for name in ints:
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MapsimError(f"{where}.{name} must be a positive integer, found {v!r}")
    for name in ("expansion_range", "expansion_order", "crop"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise MapsimError(f"{where}.{name} must be a non-negative integer, found {v!r}")
    if s.expansion_range > 0 and s.expansion_order < 1:
        raise MapsimError(f"{where}.expansion_order must be >= 1 when expansion_range > 0")
    if s.train_samples < 4 or s.heldout_samples < 2 or s.heldout_train_samples < 2:
        raise MapsimError(f"{where}: need >= 4 training and >= 2 held-out samples for a noise floor")
    if not isinstance(s.overrides, dict):
        raise MapsimError(f"{where}.overrides must be a table of preset parameters")
    if not 0 <= s.expansion_val_fraction < 1:
        raise MapsimError(f"{where}.expansion_val_fraction must lie in [0, 1), found {s.expansion_val_fraction!r}")
    if not isinstance(s.extra_scales, list) or any(isinstance(k, bool) or not isinstance(k, int) or k < 2
                                                    or k == s.gen_scale for k in s.extra_scales):
        raise MapsimError(f"{where}.extra_scales must be a list of integers >= 2 other than gen_scale, "
                          f"found {s.extra_scales!r}")
    if isinstance(s.ndim, bool) or not isinstance(s.ndim, int) or s.ndim not in (2, 3):
        raise MapsimError(f"{where}.ndim must be 2 (squares) or 3 (cubes), found {s.ndim!r}")
    if s.ndim == 3:
        from mapsim.montecarlo import preset_params

        if s.expansion_range:
            raise MapsimError(f"{where}.expansion_range must be 0 for ndim = 3 (the cluster expansion is 2D), "
                              f"found {s.expansion_range}")
        if s.crop:
            raise MapsimError(f"{where}.crop must be 0 for ndim = 3 (volumes are trained whole), found {s.crop}")
        if preset_params(s.preset, s.overrides).solvent:
            raise MapsimError(f"{where}.preset: {s.preset!r} has solvent, which the cubic lattice (ndim = 3) does "
                              "not simulate; use a particle-only preset (lattice-gas or a fluid)")
    if not 0 <= s.ema < 1:
        raise MapsimError(f"{where}.ema must lie in [0, 1) (0 = no weight averaging), found {s.ema!r}")
    for name in ("lr", "expansion_lr"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v:
            raise MapsimError(f"{where}.{name} must be a non-negative number, found {v!r}")


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise MapsimError(f"{p}: config file not found")
    return from_toml(p.read_text(encoding="utf-8"), str(p))


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (stage identity for resuming)."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The installed ``mapsim`` package directory, whose sources stage fingerprints hash."""

GROUND = ("__init__.py", "errors.py", "fileio.py", "lattice.py", "reproduce/pipeline.py")
"""Sources every stage depends on (the version string, file formats, the stage bodies)."""

STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "simulate": ("montecarlo",),
    "expansion": ("models",),
    "density": ("models",),
    "pixelcnn": ("models", "training.py"),
    "generate": ("models", "sampling"),
    "compare": ("analysis", "montecarlo/hamiltonian.py"),
    "convergence": ("analysis",),
    "nll": ("models",),
}
"""Package parts (directories or files, relative to :data:`PACKAGE_ROOT`) behind each kind of stage."""


@lru_cache(maxsize=None)
def source_hash(parts: tuple[str, ...], root: str | None = None) -> str:
    """Hash of the Python sources under ``parts`` (and :data:`GROUND`) of the package.

    The package version string does not change with a fix, so a stage's
    fingerprint includes this hash of the code it runs: editing a file under
    ``analysis/`` recomputes the comparisons (and, through the chained
    fingerprints, nothing upstream), editing ``montecarlo/`` everything.
    Computed once per process (``lru_cache``).

    Parameters
    ----------
    parts : tuple of str
        Directories or files relative to ``root``.
    root : str, optional
        Package directory (default :data:`PACKAGE_ROOT`).

    Returns
    -------
    str
        16 hex digits over the sorted relative paths and contents of every
        ``*.py`` file found.
    """
    base = Path(root) if root is not None else PACKAGE_ROOT
    files: set[Path] = set()
    for part in tuple(GROUND) + tuple(parts):
        p = base / part
        if p.is_dir():
            files.update(f for f in p.rglob("*.py") if "__pycache__" not in f.parts)
        elif p.is_file():
            files.add(p)
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(base).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stage_code(kind: str) -> str:
    """:func:`source_hash` of the package parts behind a kind of stage (:data:`STAGE_SOURCES`)."""
    return source_hash(STAGE_SOURCES[kind])
