"""Training a Gated PixelCNN MAP model: loop, checkpoints, resume, early stopping, DDP.

A run directory holds

``last.pt``        the state after the latest finished epoch (model file + training state)
``best.pt``        the same for the epoch with the lowest validation NLL so far
``metrics.jsonl``  one JSON object per finished epoch: epoch, train_nll, val_nll (nats
                   per pixel), lr, best, and the timings seconds, train_pixels_per_s

Both ``.pt`` files are model files (:mod:`mapsim.models.io`) with these extra
entries: ``train_config`` (:class:`TrainConfig` as a dict), ``epoch`` (finished
epochs), ``optimizer``, ``scheduler``, ``rng_state`` (global torch / numpy /
python generators, for code around the loop; the loop itself does not use
them), ``best_val_nll``, ``best_epoch``, ``epochs_since_best``, ``stopped``,
``history`` (the metrics lines without their timings), ``horizon_epochs`` (the
epoch at which the learning rate reaches zero), ``data`` (path, SHA-256 and split
sizes) and ``density_only_nll``.  Wall-clock times are kept out of the ``.pt``
files (they are only in ``metrics.jsonl``), so the same configuration, data and
thread count give byte-identical model files.  Files are replaced atomically,
``best.pt`` before ``last.pt`` before ``metrics.jsonl``, once per epoch, so an
interrupted run always leaves a consistent directory.

A wall-clock cap (``max_minutes``)
---------------------------------
A run cut by a clock would otherwise end at the high learning rate of the
middle of its cosine schedule.  With ``max_minutes`` the first epoch of a fresh
run is timed, and the schedule's horizon becomes the number of epochs that fit
in the cap (at most ``epochs``): the learning rate then decays to zero at the
last epoch that fits.  The horizon is stored in the checkpoints; a resumed run
continues that schedule up to it.  Which horizon is chosen depends on the
machine's speed, so a capped run is not reproducible across machines or loads;
runs that must be (``mapsim reproduce``) give epochs only.

Determinism and resume
----------------------
The model is initialised from ``seed`` alone (and its output bias from the
class frequencies of the training samples); the split and everything random
in epoch e come from generators derived from (seed, e) (:mod:`mapsim.data`);
the learning rate is a function of the optimiser step.  Resuming from
``last.pt`` after epoch e therefore replays epochs e+1 .. exactly as an
uninterrupted run would (equal weights up to floating-point reassociation when
thread counts differ).  The resumed run must have the same :class:`TrainConfig`
and the same data (checked by SHA-256).

Loss
----
Negative log-likelihood of every sample pixel, in nats per pixel, with the
sample placed on an outside-padded canvas (:mod:`mapsim.models.base`).  Batches
hold whole (cropped, transformed) samples; a global batch is the mean over all
its pixels, also under DistributedDataParallel, where each process holds a
contiguous part of every global batch and scales its summed loss by
world_size / (pixels in the global batch), so gradients equal those of
single-process training with the same global batch.

With positions (``TrainConfig.positions``; :mod:`mapsim.models.pixelcnn`) every
occupied pixel adds the negative log-density of its atom's position per unit
pixel area, so the NLL is that of the exact structure; the density-only
baseline (class frequencies, uniform positions: log-density 0) is unchanged.
Symmetry augmentation moves the positions with their pixels
(:func:`mapsim.data.apply_element_offsets`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mapsim import data as D
from mapsim.errors import MapsimError
from mapsim.fileio import write_text_atomic
from mapsim.lattice import Dataset, StoredDataset
from mapsim.models.io import read_checkpoint, save_model
from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig, offset_canvas

BEST, LAST, METRICS = "best.pt", "last.pt", "metrics.jsonl"


@dataclass
class TrainConfig:
    """Everything that decides the result of a training run (saved in every checkpoint).

    Attributes
    ----------
    layers, filters, kernel, out_width : int
        Gated PixelCNN size (:class:`mapsim.models.pixelcnn.PixelCNNConfig`).
    epochs : int
        Total epochs; a resumed run continues up to this number.
    batch : int
        Global batch size in samples (capped at the number of training samples).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW decoupled weight decay.
    warmup : float
        Fraction of all optimiser steps with linearly rising learning rate; then
        cosine decay to zero at the last step of epoch ``epochs``.
    grad_clip : float
        Clip the global gradient norm to this value (0 = off).
    seed : int
        Seeds the weights, the split, the sample order, crops and symmetries.
    val_fraction : float
        Fraction of samples held out for validation (split before augmentation).
    crop : list of int or None
        ``[h, w]`` random crops of the training samples; ``None`` = whole samples.
    symmetries : str or None
        Augmentation group: ``"flips,rot90"``, ``"flips"``, ``"rot90"`` or ``"none"``;
        ``None`` = the default for isotropic systems (flips and 90-degree rotations
        when the training samples are square, else flips).  Checkpoints store the
        resolved value.
    patience : int
        Stop after this many epochs without a lower validation NLL (0 = never).
    positions : bool or None
        Off-lattice MAP (:mod:`mapsim.models.pixelcnn`): learn the positions inside the pixels
        too; ``None`` = when the data have offsets.  Checkpoints store the resolved value.
        The NLL then adds, per atom, the position's negative log-density per unit pixel area.
    position_bins : int
        Bins per axis of the position density.
    position_pairs : int
        Reach in pixels of the pair term of the position density (0 = none;
        :mod:`mapsim.models.pixelcnn`).
    joint_pairs : bool
        Normalise class and position jointly, so the pair term also weighs the class
        probabilities (needs ``position_pairs``; :mod:`mapsim.models.pixelcnn`).
    pair_knots : int
        Knots of the pair table per pixel of distance (:mod:`mapsim.models.pixelcnn`).
    pair_core : bool
        Hold the pair term deep inside the closest pair of each pair of classes in the training
        samples (the model's ``pair_core``, measured when the run starts or resumes; needs
        ``position_pairs``; :mod:`mapsim.models.pixelcnn`).
    ema : float
        Exponential moving average of the weights (0 = off): after every optimiser
        step the average moves towards the weights by 1 - d, d = min(ema, (1 + t) /
        (10 + t)) at step t (so the initial weights are soon forgotten).  Validation,
        ``best.pt`` and the model in ``last.pt`` use the averaged weights; ``last.pt``
        also keeps the optimiser's own weights (``raw_state_dict``) to resume from.
        The averaged model is an ordinary PixelCNN: samplers need no change.
    """

    layers: int = 20
    filters: int = 32
    kernel: int = 3
    out_width: int = 64
    epochs: int = 20
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.02
    grad_clip: float = 1.0
    seed: int = 0
    val_fraction: float = 0.1
    crop: list | None = None
    symmetries: str | None = None
    patience: int = 10
    positions: bool | None = None
    position_bins: int = 32
    position_pairs: int = 0
    joint_pairs: bool = False
    pair_knots: int = 16
    pair_core: bool = False
    ema: float = 0.0

    def validate(self) -> None:
        """Raise :class:`MapsimError` naming the first bad value."""
        for name in ("layers", "filters", "out_width", "epochs", "batch"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise MapsimError(f"{name} must be a positive integer, found {v!r}")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise MapsimError(f"kernel must be odd and >= 3, found {self.kernel}")
        for name in ("lr", "weight_decay", "warmup", "grad_clip", "val_fraction"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise MapsimError(f"{name} must be a finite non-negative number, found {v!r}")
        if self.lr <= 0:
            raise MapsimError(f"lr must be positive, found {self.lr}")
        if self.warmup >= 1:
            raise MapsimError(f"warmup is a fraction of the steps and must be < 1, found {self.warmup}")
        if self.val_fraction >= 1:
            raise MapsimError(f"val_fraction must be < 1, found {self.val_fraction}")
        if not 0 <= self.ema < 1:
            raise MapsimError(f"ema must lie in [0, 1) (0 = no weight averaging), found {self.ema!r}")
        if self.patience < 0:
            raise MapsimError(f"patience must be >= 0 (0 = no early stopping), found {self.patience}")
        for name in ("joint_pairs", "pair_core"):
            if getattr(self, name) and not self.position_pairs:
                raise MapsimError(f"{name} needs a pair term (position_pairs > 0)")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise MapsimError(f"crop must be [h, w] with positive sizes, found {self.crop}")

    def model_config(self, classes: tuple[str, ...] | list[str], metadata: dict | None = None,
                     pair_core: list | None = None) -> PixelCNNConfig:
        """The model's config; ``metadata`` (the training data's) gives pixel size, unit and species map,
        ``pair_core`` the closest pairs of the training samples (with ``self.pair_core``)."""
        from mapsim.lattice import length_unit_of, pixel_size_of

        meta = metadata or {}
        px = pixel_size_of(meta)
        return PixelCNNConfig(n_classes=len(classes), layers=self.layers, filters=self.filters, kernel=self.kernel,
                              out_width=self.out_width, classes=list(classes), positions=bool(self.positions),
                              position_bins=self.position_bins, position_pairs=self.position_pairs,
                              joint_pairs=bool(self.joint_pairs),
                              pair_knots=int(self.pair_knots),
                              pair_core=pair_core if self.pair_core else None,
                              pixel_size=list(px) if px else None,
                              length_unit=length_unit_of(meta), species_map=meta.get("species_map"))


@dataclass
class TrainResult:
    """What a call of :func:`train` did.

    Attributes
    ----------
    run_dir : Path
    epochs_done : int
        Finished epochs in the run directory (all sessions).
    stopped : str
        ``"epochs"`` (reached the total), ``"early stopping"``, ``"time limit"`` (the
        cap stopped the run before its horizon; resumable), ``"fitted horizon"``
        (the run reached the horizon fitted to ``max_minutes``) or ``"already
        complete"`` (nothing to do).
    best_epoch : int
    best_val_nll : float
        Nats per pixel (training NLL when there is no validation set).
    density_only_nll : float
        Validation NLL of the density-only model (class frequencies of the training set).
    history : list of dict
        Every metrics line so far (with the timings of the epochs this run directory recorded).
    model : GatedPixelCNN
        The model after the last epoch (on the training device).
    horizon_epochs : int
        Epoch at which the learning rate reaches zero (``epochs``, or fitted to ``max_minutes``).
    """

    run_dir: Path
    epochs_done: int
    stopped: str
    best_epoch: int
    best_val_nll: float
    density_only_nll: float
    n_train: int
    n_val: int
    history: list = field(default_factory=list)
    model: Any = None
    horizon_epochs: int = 0

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"run_dir": str(self.run_dir), "epochs_done": self.epochs_done, "stopped": self.stopped,
                "horizon_epochs": self.horizon_epochs,
                "best_epoch": self.best_epoch, "best_val_nll": self.best_val_nll,
                "last_train_nll": last.get("train_nll"), "last_val_nll": last.get("val_nll"),
                "density_only_nll": self.density_only_nll, "n_train": self.n_train, "n_val": self.n_val}


# ---------------------------------------------------------------------------
# helpers


def data_fingerprint(dataset: Dataset | StoredDataset, positions: bool = False) -> str:
    """SHA-256 of the grids, their shape and the class names (and the offsets, for ``positions``).

    A zarr store (:class:`mapsim.lattice.StoredDataset`) is hashed one sample at a time, to the same digest.
    """
    h = hashlib.sha256()
    h.update(json.dumps([[dataset.n_samples, *dataset.spatial_shape], list(dataset.classes)]).encode())
    if isinstance(dataset, Dataset):
        h.update(np.ascontiguousarray(dataset.grids).tobytes())
    else:
        for k in range(dataset.n_samples):
            h.update(np.ascontiguousarray(dataset.read(k, k + 1)).tobytes())
    if positions:
        h.update(np.ascontiguousarray(dataset.offsets).tobytes())
    return h.hexdigest()


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without CUDA is an error."""
    if spec not in ("auto", "cpu", "cuda"):
        raise MapsimError(f"--device must be auto, cpu or cuda, found {spec!r}")
    if spec == "cuda" and not torch.cuda.is_available():
        raise MapsimError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if spec == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def global_rng_state() -> dict[str, Any]:
    """The global torch, NumPy and Python generator states, as plain types (for ``weights_only`` loading)."""
    np_state = np.random.get_state(legacy=False)
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": np_state["bit_generator"], "key": torch.as_tensor(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": [py[0], list(py[1]), py[2]],
    }


def restore_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` saved (the CLI does this on ``--resume``)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def _distributed_from_env(device_spec: str) -> tuple[_Dist, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), resolve_device(device_spec)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    import torch.distributed as dist

    initialised_here = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        initialised_here = True
    return _Dist(rank, world, local_rank, initialised_here), device


def build_model(config: TrainConfig, classes: tuple[str, ...] | list[str], metadata: dict | None = None,
                ndim: int = 2, pair_core: list | None = None) -> GatedPixelCNN:
    """The initial model of a run: weights drawn from ``config.seed`` only (global RNG untouched).

    ``ndim`` = 3 (volumes) builds the 3D Gated PixelCNN of :mod:`mapsim.models.pixelcnn3d`;
    ``pair_core`` is the training samples' closest pairs (:func:`training_pair_core`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if ndim == 3:
            from mapsim.models.pixelcnn3d import GatedPixelCNN3D, PixelCNN3DConfig

            return GatedPixelCNN3D(PixelCNN3DConfig(n_classes=len(classes), layers=config.layers,
                                                    filters=config.filters, kernel=config.kernel,
                                                    out_width=config.out_width, classes=list(classes)))
        return GatedPixelCNN(config.model_config(classes, metadata, pair_core))


def training_pair_core(config: TrainConfig, dataset, train_idx: np.ndarray) -> list | None:
    """With ``config.pair_core``: the closest pair of each pair of classes in the training samples, in
    y-pixel units within the pair term's reach (:func:`mapsim.models.pair_term.closest_pairs`); else None."""
    if not config.pair_core:
        return None
    from mapsim.lattice import pixel_size_of
    from mapsim.models.pair_term import closest_pairs

    a = pixel_size_of(dataset.metadata or {}) or (1.0, 1.0)
    idx = np.sort(np.asarray(train_idx))
    return closest_pairs(dataset.grids[idx], dataset.offsets[idx], len(dataset.classes), config.position_pairs,
                         a[1] / a[0])


@torch.no_grad()
def init_output_bias(model: GatedPixelCNN, train_counts: np.ndarray) -> None:
    """Start the output bias at the log class frequencies of the training samples (``train_counts``:
    sites of each class, (n_classes,)).

    The untrained model then predicts about the density-only distribution
    instead of uniform classes, which spares the first epochs of a short run
    from learning the density (large for dilute systems: ln 2 against 0.056
    nats/pixel at 1 % density).
    """
    counts = np.asarray(train_counts).astype(np.float64) + 0.5
    logp = np.log(counts / counts.sum())
    model.out2.bias.copy_(torch.as_tensor(logp - logp.mean(), dtype=model.out2.bias.dtype))


def batch_loss(module: torch.nn.Module, model: GatedPixelCNN, g: torch.Tensor, off: torch.Tensor | None) -> torch.Tensor:
    """Summed NLL (nats) of a batch: class cross-entropy plus, with positions, the positions' -log-density.

    ``module`` is the model or its DDP wrapper; ``g`` (b, h, w) classes, ``off`` (b, h, w, 2) offsets.
    """
    canvas = model.make_canvas(g)
    if not model.positions:
        return F.cross_entropy(module(canvas), g, reduction="sum")
    logits, logd = module(canvas, offset_canvas(off, model.context_range), (g, off))
    return F.cross_entropy(logits, g, reduction="sum") - logd.sum()


@torch.no_grad()
def nll_sums(model: GatedPixelCNN, grids: np.ndarray, device: torch.device, batch: int,
             offsets: np.ndarray | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and pixel count of whole samples on outside-padded canvases."""
    total, pixels = 0.0, 0
    for s in range(0, len(grids), batch):
        g = torch.as_tensor(grids[s : s + batch].astype(np.int64), device=device)
        off = torch.as_tensor(offsets[s : s + batch], device=device) if model.positions else None
        total += float(batch_loss(model, model, g, off))
        pixels += g.numel()
    return total, pixels


def density_only_nll(train_counts: np.ndarray, val_counts: np.ndarray) -> float:
    """NLL (nats/pixel) of validation samples under the class frequencies of the training samples, from
    the sites of each class of each side, (n_classes,)."""
    counts = np.asarray(train_counts).astype(np.float64) + 0.5  # no log(0)
    logp = np.log(counts / counts.sum())
    vc = np.asarray(val_counts).astype(np.float64)
    return float(-(vc * logp).sum() / vc.sum())


# what runs saved before a field existed trained with
_BEFORE_FIELD = {"positions": False, "position_bins": 32, "position_pairs": 0, "joint_pairs": False,
                 "pair_knots": 16, "pair_core": False, "ema": 0.0}


def _compare_configs(saved: dict[str, Any], given: TrainConfig, where: Path) -> None:
    now = dataclasses.asdict(given)
    saved = {**_BEFORE_FIELD, **saved}
    diffs = [f"{k}: run has {saved.get(k)!r}, given {now[k]!r}" for k in now if saved.get(k) != now[k]]
    if diffs:
        raise MapsimError(f"{where}: --resume with a different training configuration ({'; '.join(diffs)}); "
                          "resume with the run's settings or start a new run with another --out")


def check_run_dir(out: Path, resume: bool) -> dict[str, Any] | None:
    """Check ``out`` before any work; return the ``last.pt`` payload when resuming."""
    if out.exists() and not out.is_dir():
        raise MapsimError(f"--out {out}: exists and is not a directory")
    if not resume:
        if out.exists() and any(out.iterdir()):
            raise MapsimError(f"--out {out}: run directory exists and is not empty; pass --resume to continue it "
                              "or choose another --out")
        return None
    last = out / LAST
    if not last.exists():
        raise MapsimError(f"--resume: {out} has no {LAST} (no finished epoch to continue from)")
    payload = read_checkpoint(last)
    missing = [k for k in ("train_config", "epoch", "optimizer", "scheduler", "history") if k not in payload]
    if missing:
        raise MapsimError(f"{last}: not a training checkpoint (lacks {missing})")
    return payload


# ---------------------------------------------------------------------------
# the loop: setup, one epoch, validation, checkpoint


@dataclass
class _Run:
    """One call of :func:`train`: its fixed settings, then (after :func:`_setup`) model, optimiser and state.

    ``state`` holds what the checkpoints store besides weights and optimiser:
    ``epoch`` (finished epochs), ``best_val_nll``, ``best_epoch``,
    ``epochs_since_best``, ``stopped`` and ``history``.
    """

    out: Path
    config: TrainConfig
    dataset: Dataset
    crop: tuple[int, int] | None
    sample_shape: tuple[int, int]
    group: list
    train_idx: np.ndarray
    val_idx: np.ndarray
    batch: int
    data_info: dict[str, Any]
    dens_nll: float
    payload: dict[str, Any] | None  # last.pt when resuming
    ema: dict[str, torch.Tensor] | None = None  # averaged weights (TrainConfig.ema)
    dist: _Dist = field(default_factory=_Dist)
    device: torch.device = torch.device("cpu")
    model: GatedPixelCNN | None = None
    ddp: torch.nn.Module | None = None  # what the epochs call: the model or its DDP wrapper
    opt: torch.optim.Optimizer | None = None
    sched: torch.optim.lr_scheduler.LambdaLR | None = None
    state: dict[str, Any] = field(default_factory=dict)
    timings: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> seconds, pixels/s

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_idx) // self.batch

    def lr_factor_at(self, step: int) -> float:
        """The schedule's multiplier at optimiser ``step``, for the current horizon (``state["horizon_epochs"]``)."""
        total = self.steps_per_epoch * self.state["horizon_epochs"]
        return lr_factor(step, total, int(round(self.config.warmup * total)))

    def set_horizon(self, epochs: int) -> None:
        """Move the schedule's end to ``epochs`` and give the next optimiser step its learning rate."""
        self.state["horizon_epochs"] = int(epochs)
        for g, base in zip(self.opt.param_groups, self.sched.base_lrs):
            g["lr"] = base * self.lr_factor_at(self.sched.last_epoch)

    def history_with_timings(self) -> list[dict[str, Any]]:
        """The metrics lines: the checkpointed history plus each epoch's recorded timings."""
        return [{**r, **self.timings.get(r["epoch"], {})} for r in self.state["history"]]

    @property
    def grids(self):
        """The grids (n, ...), or the zarr store itself, read a crop or sample at a time (:func:`data.stored`)."""
        return self.dataset.grids if isinstance(self.dataset, Dataset) else self.dataset

    @property
    def pixels_per_batch(self) -> int:
        """Loss pixels of one global batch."""
        return self.batch * int(np.prod(self.sample_shape))

    def result(self, stopped: str) -> TrainResult:
        return TrainResult(self.out, self.state["epoch"], stopped, self.state["best_epoch"], self.state["best_val_nll"],
                           self.dens_nll, len(self.train_idx), len(self.val_idx), self.history_with_timings(),
                           self.model, self.state["horizon_epochs"])


def _plan(dataset: Dataset, config: TrainConfig, out: Path, resume: bool, max_minutes: float | None,
          data_path: str | None) -> _Run:
    """Setup, part 1, before any process group is joined: every check on the inputs, the split and batch."""
    config.validate()
    spatial = dataset.spatial_shape
    H, W = spatial[-2:]
    crop = tuple(config.crop) if config.crop is not None else None
    if dataset.ndim == 3:  # volumes: a 3D Gated PixelCNN, in-plane symmetries, whole samples
        if crop is not None:
            raise MapsimError(f"{data_path or 'dataset'}: --crop is for 2D samples; this dataset holds volumes "
                              f"{spatial}")
        if config.positions:
            raise MapsimError(f"{data_path or 'dataset'}: positions inside voxels are not modelled in 3D yet; "
                              "train without --positions")
        config = dataclasses.replace(config, positions=False)
    if crop is not None and (crop[0] > H or crop[1] > W):
        raise MapsimError(f"crop {crop[0]}x{crop[1]} is larger than the samples ({H}x{W})")
    sample_shape = crop or spatial
    # rotations and flips act in the (H, W) plane, for volumes too (the depth axis is the raster's slowest)
    symmetries = D.parse_symmetries(None if config.symmetries is None else config.symmetries,
                                    sample_shape[-2] == sample_shape[-1])
    canonical = ",".join(symmetries) or "none"
    if canonical != config.symmetries:
        config = dataclasses.replace(config, symmetries=canonical)
    group = D.symmetry_group(symmetries)
    if max_minutes is not None and not (max_minutes > 0):
        raise MapsimError(f"max_minutes must be positive, found {max_minutes}")

    if config.positions is None or (config.positions and dataset.offsets is None):
        if config.positions and dataset.offsets is None:
            raise MapsimError(f"{data_path or 'dataset'}: has no offsets (positions inside the pixels); a model "
                              "with positions needs them (train without --positions, or import with offsets)")
        config = dataclasses.replace(config, positions=dataset.offsets is not None)
    fingerprint = data_fingerprint(dataset, bool(config.positions))
    payload = check_run_dir(out, resume)
    if payload is not None:
        _compare_configs(payload["train_config"], config, out / LAST)
        saved_sha = payload.get("data", {}).get("sha256")
        if saved_sha != fingerprint:
            raise MapsimError(f"--resume: the data differ from those the run in {out} was trained on "
                              f"(SHA-256 {fingerprint[:12]}..., run has {str(saved_sha)[:12]}...)")

    train_idx, val_idx = D.split_indices(dataset.n_samples, config.val_fraction, config.seed)
    batch = D.effective_batch(config.batch, len(train_idx))
    counts = D.class_counts(dataset.grids if isinstance(dataset, Dataset) else dataset, dataset.n_classes)
    dens_nll = density_only_nll(counts[train_idx].sum(axis=0),
                                counts[val_idx if len(val_idx) else train_idx].sum(axis=0))
    data_info = {"path": data_path, "sha256": fingerprint, "n_samples": dataset.n_samples, "shape": list(spatial),
                 "n_train": len(train_idx), "n_val": len(val_idx)}
    return _Run(out, config, dataset, crop, sample_shape, group, train_idx, val_idx, batch, data_info, dens_nll,
                payload)


def _setup(run: _Run, dist: _Dist, dev: torch.device) -> None:
    """Setup, part 2, in the process group: model (fresh from the seed or from ``last.pt``), optimiser, state."""
    config, payload = run.config, run.payload
    if run.batch < dist.world:
        raise MapsimError(f"global batch {run.batch} is smaller than the {dist.world} processes")
    run.dist, run.device = dist, dev
    model = build_model(config, run.dataset.classes, run.dataset.metadata, run.dataset.ndim,
                        training_pair_core(config, run.dataset, run.train_idx))
    if payload is None:
        init_output_bias(model, D.class_counts(run.grids, model.n_classes)[run.train_idx].sum(axis=0))
    run.model = model = model.to(dev)
    run.opt = opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    run.state = {"epoch": 0, "best_val_nll": math.inf, "best_epoch": 0, "epochs_since_best": 0, "stopped": None,
                 "history": [], "horizon_epochs": config.epochs}
    run.sched = sched = torch.optim.lr_scheduler.LambdaLR(opt, run.lr_factor_at)
    if config.ema > 0:
        source = payload["state_dict"] if payload is not None else model.state_dict()
        run.ema = {k: v.detach().clone().to(dev) for k, v in source.items()}
    if payload is not None:
        model.load_state_dict(payload.get("raw_state_dict", payload["state_dict"]))
        opt.load_state_dict(payload["optimizer"])
        sched.load_state_dict(payload["scheduler"])
        for k in run.state:
            # runs saved before horizons were stored decay over all their epochs
            run.state[k] = payload.get(k, config.epochs) if k == "horizon_epochs" else payload[k]
        run.timings = _read_timings(run.out / METRICS)


def _wrap_distributed(run: _Run) -> None:
    """The module the epochs call: the model itself, or its DistributedDataParallel wrapper."""
    run.ddp = run.model
    if run.dist.world > 1:
        # static_graph: the last layer's h_res feeds nothing (its output would only go to a
        # further layer), so that parameter never gets a gradient; DDP must know.
        run.ddp = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None, static_graph=True)


def _train_epoch(run: _Run, epoch: int, progress: Callable[..., Any] | None) -> tuple[float, float, int]:
    """One epoch of optimiser steps.

    Returns
    -------
    train_nll : float
        Mean NLL (nats per pixel) over the epoch's loss pixels, all processes.
    lr : float
        Learning rate of the epoch's last step.
    n_batches : int
        Global batches of the epoch.
    """
    config, model, opt, dist, dev = run.config, run.model, run.opt, run.dist, run.device
    plan = D.plan_epoch(run.train_idx, run.batch, config.seed, epoch, run.dataset.spatial_shape[-2:], run.crop,
                        len(run.group))
    bar = progress(total=plan.n_batches, desc=f"epoch {epoch}/{config.epochs}") if (progress and dist.main) else None
    model.train()
    params = list(model.parameters())
    nll_sum = torch.zeros((), dtype=torch.float64, device=dev)
    pixels_global = run.pixels_per_batch
    lr_used = opt.param_groups[0]["lr"]
    for step, g_np in enumerate(D.iterate_batches(run.grids, plan, run.crop, run.group, dist.rank, dist.world)):
        g = torch.from_numpy(g_np).to(dev, non_blocking=True).long()
        off = None
        if model.positions:
            off = torch.from_numpy(D.batch_offsets(run.dataset.offsets, plan, step, run.crop, run.group, dist.rank,
                                                   dist.world)).to(dev)
        loss_sum = batch_loss(run.ddp, model, g, off)
        opt.zero_grad(set_to_none=True)
        # this process's share of the global mean: gradients equal single-process ones (module docstring)
        (loss_sum * (dist.world / pixels_global)).backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        if run.ema is not None:
            _ema_update(run, run.sched.last_epoch)
        lr_used = opt.param_groups[0]["lr"]
        run.sched.step()
        nll_sum += loss_sum.detach().double()
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or step == plan.n_batches - 1:
                bar.set_postfix_str(f"nll {float(loss_sum.detach()) / g.numel():.4f}")
    if bar is not None:
        bar.close()
    train_sum, = dist.all_sum([float(nll_sum)], dev)
    return train_sum / max(1, plan.n_batches * pixels_global), lr_used, plan.n_batches


@torch.no_grad()
def _ema_update(run: _Run, step: int) -> None:
    """Move the averaged weights towards the model's after optimiser step ``step`` (0-based)."""
    d = min(run.config.ema, (1.0 + step) / (10.0 + step))
    for k, v in run.model.state_dict().items():
        e = run.ema[k]
        if e.is_floating_point():
            e.mul_(d).add_(v, alpha=1.0 - d)
        else:
            e.copy_(v)


@contextmanager
def _averaged(run: _Run) -> Iterator[dict[str, torch.Tensor] | None]:
    """Inside, the model holds the averaged weights (when ``ema`` is on); yields the optimiser's weights."""
    if run.ema is None:
        yield None
        return
    raw = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    run.model.load_state_dict(run.ema)
    try:
        yield raw
    finally:
        run.model.load_state_dict(raw)


def _validate(run: _Run) -> float | None:
    """Validation NLL (nats per pixel) of the whole validation samples, all processes; None without them."""
    run.model.eval()
    if not len(run.val_idx):
        return None
    mine = run.val_idx[run.dist.rank :: run.dist.world]
    offs = run.dataset.offsets[mine] if run.model.positions else None
    with _averaged(run):
        s, n = nll_sums(run.model, D.take(run.grids, mine), run.device, max(run.batch, 1), offs) if len(mine) \
            else (0.0, 0)
    s, n = run.dist.all_sum([s, n], run.device)
    return s / n


def _checkpoint(run: _Run, improved: bool) -> None:
    """Write ``best.pt`` (when improved), ``last.pt`` and ``metrics.jsonl`` in that order (rank 0 only)."""
    if not run.dist.main:
        return
    extra = dict(train_config=dataclasses.asdict(run.config), data=run.data_info, density_only_nll=run.dens_nll,
                 optimizer=run.opt.state_dict(), scheduler=run.sched.state_dict(), rng_state=global_rng_state(),
                 **run.state)
    with _averaged(run) as raw:  # model files hold the averaged weights; resume needs the optimiser's
        if raw is not None:
            extra["raw_state_dict"] = {k: v.cpu() for k, v in raw.items()}
        if improved:
            save_model(run.out / BEST, run.model, **extra)
        save_model(run.out / LAST, run.model, **extra)
    write_text_atomic(run.out / METRICS, "".join(json.dumps(r) + "\n" for r in run.history_with_timings()))


_TIMING_KEYS = ("seconds", "train_pixels_per_s")


def _read_timings(path: Path) -> dict[int, dict[str, float]]:
    """Timings of the epochs already in ``metrics.jsonl`` (resume keeps them; an unreadable line is skipped)."""
    timings: dict[int, dict[str, float]] = {}
    if not path.exists():
        return timings
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
            timings[int(r["epoch"])] = {k: r[k] for k in _TIMING_KEYS if k in r}
        except (ValueError, KeyError, TypeError):
            continue
    return timings


clock = time.perf_counter
"""The clock of ``max_minutes`` and the epoch timings (a module attribute, so tests can give a fixed one)."""


def fit_horizon(epoch_seconds: float, max_minutes: float, epochs: int, done: int = 1) -> int:
    """Epochs that fit in ``max_minutes`` at ``epoch_seconds`` each: between ``done`` and ``epochs``.

    The learning-rate schedule of a capped run ends at this epoch (module docstring).
    """
    fit = int(60.0 * max_minutes // max(epoch_seconds, 1e-9))
    return max(done, min(epochs, fit))


def train(dataset: Dataset, config: TrainConfig, out: str | Path, *, resume: bool = False, device: str = "auto",
          max_minutes: float | None = None, data_path: str | None = None,
          progress: Callable[..., Any] | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or continue training) a Gated PixelCNN on a dataset.

    Parameters
    ----------
    dataset : Dataset
        Grids (n, H, W); class names become the model's ``classes``.
    config : TrainConfig
    out : path-like
        Run directory (created; must be empty or absent unless ``resume``).
    resume : bool
        Continue the run in ``out`` from its ``last.pt`` up to ``config.epochs``.
    device : {"auto", "cpu", "cuda"}
    max_minutes : float, optional
        Wall-time cap.  A fresh run times its first epoch and ends its
        learning-rate schedule at the last epoch that fits (at most
        ``config.epochs``; stored as ``horizon_epochs``, see the module
        docstring).  Any call also stops after the epoch at which another
        epoch would pass this wall time (this call only); ``--resume``
        continues the same schedule later.
    data_path : str, optional
        Recorded in the checkpoints (the data are identified by their SHA-256).
    progress : callable, optional
        ``progress(total=, desc=)`` returning a tqdm-like bar (called on rank 0 only).
    on_epoch : callable, optional
        Called with each epoch's metrics after its files are written.

    Returns
    -------
    TrainResult

    Notes
    -----
    Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes join a process group
    (NCCL on GPUs, gloo on CPU), train one DistributedDataParallel model on
    disjoint parts of every global batch and agree on every decision; only
    rank 0 writes files.
    """
    run = _plan(dataset, config, Path(out), resume, max_minutes, data_path)
    config = run.config
    dist, dev = _distributed_from_env(device)
    try:
        _setup(run, dist, dev)
        state = run.state
        if state["stopped"] is not None or state["epoch"] >= config.epochs:
            return run.result("already complete")
        if state["epoch"] >= state["horizon_epochs"]:
            return run.result("already complete")
        _wrap_distributed(run)
        t_start = clock()
        stopped = "epochs"
        fitted = state["horizon_epochs"] < config.epochs  # a resumed capped run keeps its schedule
        for epoch in range(state["epoch"] + 1, state["horizon_epochs"] + 1):
            t0 = clock()
            train_nll, lr_used, n_batches = _train_epoch(run, epoch, progress)
            t_train = clock() - t0
            val_nll = _validate(run)
            seconds = clock() - t0
            score = train_nll if val_nll is None else val_nll  # without validation samples, the training NLL
            improved = score < state["best_val_nll"]
            if improved:
                state.update(best_val_nll=score, best_epoch=epoch, epochs_since_best=0)
            else:
                state["epochs_since_best"] += 1
            record = {"epoch": epoch, "train_nll": train_nll, "val_nll": val_nll, "lr": lr_used,
                      "best": bool(improved)}
            run.timings[epoch] = {"seconds": round(seconds, 3),
                                  "train_pixels_per_s": round(n_batches * run.pixels_per_batch / max(t_train, 1e-9), 1)}
            state["history"].append(record)
            state["epoch"] = epoch
            if max_minutes is not None and epoch == 1 and not fitted:
                # fit the schedule to the epochs that fit in the cap (module docstring); every process
                # must take the same horizon, so they use the mean of their first epochs' times
                mean_s = seconds if dist.world == 1 else dist.all_sum([seconds], dev)[0] / dist.world
                run.set_horizon(fit_horizon(mean_s, max_minutes, config.epochs))
                fitted = state["horizon_epochs"] < config.epochs
            if config.patience and state["epochs_since_best"] >= config.patience:
                state["stopped"] = stopped = "early stopping"
            elif fitted and epoch >= state["horizon_epochs"]:
                state["stopped"] = stopped = "fitted horizon"
            if max_minutes is not None and state["stopped"] is None and epoch < state["horizon_epochs"]:
                over = float(clock() - t_start + seconds > 60.0 * max_minutes)
                if dist.world > 1:  # every process must take the same decision
                    over = dist.all_sum([over], dev)[0]
                if over > 0:
                    stopped = "time limit"  # not saved as stopped: --resume continues the run
            _checkpoint(run, improved)
            if dist.world > 1:
                torch.distributed.barrier()
            if on_epoch is not None:
                on_epoch({**record, **run.timings[epoch]})
            if stopped != "epochs":
                break
        if run.ema is not None:
            run.model.load_state_dict(run.ema)  # the returned model is the one in last.pt
        return run.result(stopped)
    finally:
        if dist.initialised_here:
            torch.distributed.destroy_process_group()
