"""Model files: a checkpoint holds the model kind, its config and its weights.

Format (a ``torch.save`` dict, loaded with ``weights_only=True``)::

    {"format": "mapsim-model", "format_version": 1, "mapsim_version": str,
     "kind": str, "config": dict, "state_dict": dict,
     ...  # training checkpoints add optimizer, epoch, rng state, metrics}

A run directory (from ``mapsim train``) stands for its ``best.pt``.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import torch

from mapsim import __version__
from mapsim.errors import MapsimError
from mapsim.fileio import atomic_path
from mapsim.models.base import MODEL_KINDS, MapModel

FORMAT = "mapsim-model"

# model kind -> module that defines it (imported on demand)
KIND_MODULES = {
    "ideal-gas": "mapsim.models.analytic",
    "hard-core": "mapsim.models.analytic",
    "expansion": "mapsim.models.expansion",
    "pixelcnn": "mapsim.models.pixelcnn",
    "pixelcnn3d": "mapsim.models.pixelcnn3d",
}


def model_class(kind: str) -> type[MapModel]:
    if kind not in MODEL_KINDS and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])
    if kind not in MODEL_KINDS:
        raise MapsimError(f"unknown model kind {kind!r}; known kinds: {sorted(KIND_MODULES)}")
    return MODEL_KINDS[kind]


def build_model(kind: str, config: dict[str, Any]) -> MapModel:
    """Rebuild a model of ``kind`` from its config dict (weights left at init)."""
    cls = model_class(kind)
    cfg_cls = cls.config_class
    try:
        cfg = cfg_cls(**config) if dataclasses.is_dataclass(cfg_cls) else config
    except TypeError as exc:
        raise MapsimError(f"model config does not match kind {kind!r}: {exc}") from None
    return cls(cfg)


def model_payload(model: MapModel) -> dict[str, Any]:
    """The checkpoint dict of a model (no training state)."""
    return {
        "format": FORMAT,
        "format_version": 1,
        "mapsim_version": __version__,
        "kind": model.kind,
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(path: str | Path, model: MapModel, **extra: Any) -> Path:
    """Write a model file atomically; ``extra`` entries are stored beside it."""
    payload = model_payload(model)
    payload.update(extra)
    payload = _canonical(payload)
    p = Path(path)
    # through a buffer: torch.save names the archive inside the file after the file it writes to,
    # and the temporary file's name is random, so the same model would give other bytes
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(p) as tmp:
        tmp.write_bytes(buf.getvalue())
    return p


def _canonical(obj: Any) -> Any:
    """A copy whose pickle depends on the values only: fresh containers, interned strings.

    Pickle writes a back-reference when it meets the same object twice, so two
    equal payloads whose strings happen to be shared differently (e.g. one
    whose optimiser state was loaded from a file) would give different bytes.
    """
    import sys

    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_canonical(v) for v in obj)
    if type(obj) is str:
        return sys.intern(obj)
    return obj


def model_to_bytes(model: MapModel) -> bytes:
    """The bytes of ``model``'s model file (to send it to other processes)."""
    import io

    buf = io.BytesIO()
    torch.save(model_payload(model), buf)
    return buf.getvalue()


def model_from_bytes(data: bytes, device: str | torch.device = "cpu") -> MapModel:
    """Rebuild a model from the bytes of a model file (no pickles are executed)."""
    import io

    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = build_model(payload["kind"], payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval().to(device)


def resolve_model_path(path: str | Path) -> Path:
    """A model file, or a run directory meaning its ``best.pt``."""
    p = Path(path)
    if p.is_dir():
        best = p / "best.pt"
        if not best.exists():
            raise MapsimError(f"{p}: run directory has no best.pt (has training started?)")
        return best
    if not p.exists():
        raise MapsimError(f"{p}: model file not found")
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint dict (any mapsim model or training file)."""
    p = resolve_model_path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise MapsimError(f"{p}: not a readable mapsim model file (truncated, corrupt or another format): {type(exc).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MapsimError(f"{p}: not a mapsim model file (expected format {FORMAT!r})")
    for key in ("kind", "config", "state_dict"):
        if key not in payload:
            raise MapsimError(f"{p}: model file lacks {key!r}")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu") -> MapModel:
    """Rebuild a model from a file (or run directory) alone."""
    p = resolve_model_path(path)
    payload = read_checkpoint(p)
    try:
        model = build_model(payload["kind"], payload["config"])
    except MapsimError as exc:
        raise MapsimError(f"{p}: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise MapsimError(f"{p}: weights do not fit the {payload['kind']} config: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model.to(device)
