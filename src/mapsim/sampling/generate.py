"""Generate a dataset from any MAP model: the one place where the sampler is chosen.

Every sampler has the signature of :func:`mapsim.sampling.reference.sample_reference`::

    sampler(model, n_samples, height, width, *, seed, beta, boundary, progress) -> SampleResult

and is listed in :data:`SAMPLERS` as ``"module:function"`` (imported on demand).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from mapsim import __version__
from mapsim.errors import MapsimError
from mapsim.lattice import MC_CLASSES, Dataset
from mapsim.sampling import blocks
from mapsim.sampling.common import Boundary, check_beta
from mapsim.sampling.rng import UNIFORMS_VERSION

if TYPE_CHECKING:  # importing torch here would slow down `mapsim --help`
    from mapsim.models.base import MapModel

SAMPLERS: dict[str, str] = {
    "fast": "mapsim.sampling.fast:sample_fast",
    "reference": "mapsim.sampling.reference:sample_reference",
}
"""Sampler name -> "module:function"."""

DEFAULT_SAMPLER = "fast"


def get_sampler(name: str) -> Callable:
    """The sampler function registered under ``name``."""
    if name not in SAMPLERS:
        raise MapsimError(f"unknown sampler {name!r}; known samplers: {sorted(SAMPLERS)}")
    module, func = SAMPLERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def model_classes(model: "MapModel") -> tuple[str, ...]:
    """Class names of a model: from its config, else empty/particle/solvent, else class<k>."""
    names = getattr(model.config, "classes", None)
    if names is not None and len(names) == model.n_classes:
        return tuple(str(c) for c in names)
    if model.n_classes <= len(MC_CLASSES):
        return MC_CLASSES[: model.n_classes]
    return tuple(f"class{k}" for k in range(model.n_classes))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise MapsimError(f"{name} must be a positive integer, found {value!r}")
    return int(value)


def generation_metadata(model: "MapModel", n_samples: int, height: int, width: int, *, seed, beta: float,
                        boundary: Boundary, sampler: str, boundary_spec: str | None = None,
                        group: int | None = None) -> dict:
    """The metadata of a generated dataset (every output format records the same)."""
    return {
        "generator": "mapsim generate",
        "mapsim_version": __version__,
        "context_range": model.context_range,
        "beta": beta,
        "boundary": boundary_spec if boundary_spec is not None else boundary.describe(),
        "seed": seed if isinstance(seed, (int, np.integer)) else None,
        "sampler": sampler,
        "uniforms": UNIFORMS_VERSION,
        "block_rows": blocks.BLOCK_ROWS,
        "samples_per_group": group or samples_per_group(width),
        "n_samples": n_samples,
        "height": height,
        "width": width,
        "model": model.describe(),
        **model_geometry(model),
    }


def model_geometry(model: "MapModel") -> dict:
    """Pixel size, length unit and species map of the model's training data (from its config), for
    generated datasets; generated samples have open edges (``periodic`` false on both axes)."""
    cfg = getattr(model, "config", None)
    out: dict = {}
    for key in ("pixel_size", "length_unit", "species_map"):
        if getattr(cfg, key, None) is not None:
            out[key] = getattr(cfg, key)
    if out:
        out["periodic"] = [False, False]
    return out


def check_request(n_samples: int, height: int, width: int, beta: float) -> tuple[int, int, int, float]:
    """Validate the size and beta of a generation request (one-line errors)."""
    return (_positive("n_samples", n_samples), _positive("height", height), _positive("width", width),
            check_beta(beta))


def generate_blocks(model: "MapModel", n_samples: int, height: int, width: int, *, seed: int = 0,
                    beta: float = 1.0, boundary: Boundary | None = None, sampler: str = DEFAULT_SAMPLER,
                    progress: Callable | None = None, threads: int | None = None, first_sample: int = 0,
                    start_row: int = 0, top: np.ndarray | None = None, top_offsets: np.ndarray | None = None):
    """Blocks of rows of samples ``first_sample ..`` (see :func:`mapsim.sampling.blocks.sample_blocks`)."""
    from mapsim.sampling.blocks import sample_blocks

    return sample_blocks(model, get_sampler(sampler), n_samples, height, width, seed=seed, beta=beta,
                         boundary=boundary, first_sample=first_sample, start_row=start_row, top=top,
                         top_offsets=top_offsets,
                         threads=threads, progress=progress)


def generate(model: "MapModel", n_samples: int, height: int, width: int, *, seed: int = 0, beta: float = 1.0,
             boundary: Boundary | None = None, sampler: str = DEFAULT_SAMPLER, progress: Callable | None = None,
             boundary_spec: str | None = None, threads: int | None = None, first_sample: int = 0,
             group: int | None = None) -> Dataset:
    """Sample ``n_samples`` grids of ``height`` x ``width`` from ``model`` as a dataset.

    Parameters
    ----------
    model : MapModel
    n_samples, height, width : int
        K, H, W (positive).
    seed : int
        Seed of the uniforms U (K, H, W) (and of boundary noise).
    beta : float
        Inverse temperature (> 0).
    boundary : Boundary, optional
        Rows above the sample; default outside.
    sampler : str
        A key of :data:`SAMPLERS`.
    progress : callable, optional
        Called with the number of rows finished.
    boundary_spec : str, optional
        How the boundary was given (CLI syntax), recorded in the metadata
        instead of ``boundary.describe()``.
    threads : int, optional
        Threads of the sampler (default: all cores).
    first_sample : int
        Index of the first sample in a larger run (a worker's share): samples
        ``first_sample ..`` of the run with this seed.
    group : int, optional
        Samples drawn together (default :func:`samples_per_group`); the same
        seed, group and thread count give the same bytes however the samples
        are split among calls or workers.

    Returns
    -------
    Dataset
        ``grids`` (K, H, W) uint8, the model's class names, extra ``log_probs``
        (K, H, W) float32 (natural log of each drawn pixel's probability under
        softmax(beta * logits)), and metadata with ``context_range``, ``beta``,
        ``boundary``, ``seed``, ``sampler``, ``uniforms`` (the version of the
        uniforms contract, :mod:`mapsim.sampling.rng`), ``block_rows``
        (:mod:`mapsim.sampling.blocks`) and ``model`` (``model.describe()``).
    """
    K, H, W, beta = check_request(n_samples, height, width, beta)
    boundary = boundary or Boundary()
    get_sampler(sampler)
    grids = np.empty((K, H, W), dtype=np.uint8)
    log_probs = np.empty((K, H, W), dtype=np.float32)
    offsets = None
    G = check_group(group, W)
    for a, b in sample_groups(first_sample, K, G):
        done = (lambda rows, base=((a - first_sample) // G) * H: progress(base + rows)) if progress else None
        for r0, g, lp, off in generate_blocks(model, b - a, H, W, seed=seed, beta=beta, boundary=boundary,
                                              sampler=sampler, progress=done, threads=threads, first_sample=a):
            ks, rs = slice(a - first_sample, b - first_sample), slice(r0, r0 + g.shape[1])
            grids[ks, rs] = g
            log_probs[ks, rs] = lp
            if off is not None:
                if offsets is None:
                    offsets = np.full((K, H, W, off.shape[-1]), np.nan, dtype=np.float32)
                offsets[ks, rs] = off
    metadata = generation_metadata(model, K, H, W, seed=seed, beta=beta, boundary=boundary, sampler=sampler,
                                   boundary_spec=boundary_spec, group=G)
    if first_sample:
        metadata["first_sample"] = int(first_sample)
    extras = {"log_probs": log_probs}
    if offsets is not None:
        extras["offsets"] = offsets
    return Dataset(grids, model_classes(model), metadata, extras)


def model_fingerprint(model: "MapModel") -> str:
    """SHA-256 of a model's kind, config and every parameter and buffer (its exact function)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(model.describe(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def samples_per_group(width: int) -> int:
    """Samples drawn together: about 2^23 pixels per block of rows (bounded memory).

    Part of the output contract, like the block size: float32 BLAS results
    depend on how many lanes are multiplied together, so every path (in
    memory, zarr, resumed, a worker's share) draws the same groups, at
    multiples of this size.
    """
    return max(1, (1 << 23) // (blocks.BLOCK_ROWS * int(width)))


def check_group(group: int | None, width: int) -> int:
    """The group size to use: ``group`` if given (a positive integer), else :func:`samples_per_group`."""
    if group is None:
        return samples_per_group(width)
    return _positive("group (samples drawn together)", group)


def sample_groups(first_sample: int, n_samples: int, group: int) -> list[tuple[int, int]]:
    """Groups [a, b) of absolute sample indices covering first_sample .. first_sample + n_samples - 1,
    cut at multiples of ``group``."""
    out, a, end = [], int(first_sample), int(first_sample) + int(n_samples)
    while a < end:
        b = min(end, (a // group + 1) * group)
        out.append((a, b))
        a = b
    return out


def generate_to_zarr(model: "MapModel", n_samples: int, height: int, width: int, path, *, seed: int = 0,
                     beta: float = 1.0, boundary: Boundary | None = None, sampler: str = DEFAULT_SAMPLER,
                     progress: Callable | None = None, boundary_spec: str | None = None,
                     threads: int | None = None, log_probs: str = "rows", extra_metadata: dict | None = None,
                     group: int | None = None, run_groups: Callable | None = None):
    """Generate straight into a zarr store, block by block, resuming an interrupted run.

    Memory is bounded by one block of rows of one group of samples
    (:func:`samples_per_group`), whatever H and K.  The bytes equal those of
    :func:`generate` for the same arguments.  See :mod:`mapsim.zarrstore` for
    the layout, the partial store and how a rerun resumes.

    Parameters
    ----------
    path : path-like
        ``NAME.zarr``.
    log_probs : {"none", "rows", "pixels"}
        Which log-probabilities are stored (per row sums by default).
    progress : callable, optional
        Called with the number of rows finished, counted over all sample groups
        (total ``height * ceil(n_samples / samples_per_group(width))``).
    group : int, optional
        Samples drawn together (see :func:`generate`).
    run_groups : callable, optional
        Runs whole sample groups elsewhere and yields ``(first sample, Dataset)``
        in group order, e.g. ``functools.partial(mapsim.sampling.dask_generate.run_groups, address)``.
    Other parameters as :func:`generate`.

    Returns
    -------
    Path
        The complete store.
    """
    from mapsim.sampling.blocks import next_top, next_top_offsets
    from mapsim.sampling.reference import has_positions
    from mapsim.sampling.rng import seed_entropy
    from mapsim.zarrstore import ZarrWriter

    K, H, W, beta = check_request(n_samples, height, width, beta)
    boundary = boundary or Boundary()
    get_sampler(sampler)
    entropy = seed_entropy(seed)
    G = check_group(group, W)
    metadata = generation_metadata(model, K, H, W, seed=seed, beta=beta, boundary=boundary, sampler=sampler,
                                   boundary_spec=boundary_spec, group=G)
    metadata["log_probs"] = log_probs
    request = {"metadata": dict(metadata), "model_sha256": model_fingerprint(model), "entropy": entropy}
    metadata.update(extra_metadata or {})  # e.g. the model's path: not a setting of the bytes
    writer = ZarrWriter(path, (K, H, W), model_classes(model), metadata, request, log_probs=log_probs,
                        block_rows=blocks.BLOCK_ROWS, offsets=has_positions(model))
    L, N = model.context_range, model.n_classes
    if run_groups is not None:  # whole groups elsewhere (a Dask cluster), written in order as they arrive
        todo = sample_groups(writer.samples_done, K - writer.samples_done, G)
        for a, ds in run_groups(model, todo, H, W, seed=entropy, beta=beta, boundary=boundary,
                                sampler=sampler, threads=threads, group=G):
            writer.write(a, 0, ds.grids, ds.extras["log_probs"], ds.extras.get("offsets"))
            if progress is not None:
                progress(-(-(a + ds.n_samples) // G) * H)
        return writer.finish()
    for k0, k1 in sample_groups(writer.samples_done, K - writer.samples_done, G):
        start = writer.rows_done if k0 == writer.samples_done else 0
        top = boundary.top_rows(k1 - k0, L, W, N, entropy, first_sample=k0)
        top_off = None
        if start:
            top = next_top(top, writer.read_grids(k0, k1, max(0, start - L), start), N)
            if has_positions(model):  # the rows above with their atoms' positions (position head)
                empty = np.full((k1 - k0, L, W + 2 * L, 2), np.nan, np.float32)
                top_off = next_top_offsets(empty, np.asarray(writer.root["offsets"][k0:k1, max(0, start - L):start]))
        done = (lambda rows, base=(k0 // G) * H: progress(base + rows)) if progress is not None else None
        for r0, g, lp, off in generate_blocks(model, k1 - k0, H, W, seed=entropy, beta=beta, sampler=sampler,
                                              progress=done, threads=threads, first_sample=k0, start_row=start,
                                              top=top, top_offsets=top_off):
            writer.write(k0, r0, g, lp, off)
    return writer.finish()
