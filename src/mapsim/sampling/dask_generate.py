"""``mapsim generate --dask``: sample groups on a Dask cluster, the bytes of one process.

Each task generates one group of samples (:func:`mapsim.sampling.generate.sample_groups`)
with :func:`mapsim.sampling.generate.generate` and ``first_sample`` = the
group's first index, exactly as a single process would, so the assembled
result is byte-identical to a single process with the same seed, group size
and ``--threads`` (the threads of each worker task).  The model travels as
the bytes of its model file and is loaded on the worker without pickles.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from mapsim.lattice import Dataset
from mapsim.sampling.common import Boundary


def _task(model_bytes: bytes, a: int, b: int, height: int, width: int, seed: int, beta: float,
          boundary: Boundary, sampler: str, threads: int | None, group: int):
    from mapsim.models.io import model_from_bytes
    from mapsim.sampling.generate import generate

    model = model_from_bytes(model_bytes)
    ds = generate(model, b - a, height, width, seed=seed, beta=beta, boundary=boundary, sampler=sampler,
                  threads=threads, first_sample=a, group=group)
    return a, ds.grids, ds.extras


def run_groups(dask: Any, model, groups: list[tuple[int, int]], height: int, width: int, *, seed: int,
               beta: float, boundary: Boundary, sampler: str, threads: int | None, group: int
               ) -> Iterator[tuple[int, Dataset]]:
    """Generate every group [a, b) on the cluster; yield ``(a, dataset of the group)`` in group order."""
    from mapsim.cluster import run_tasks
    from mapsim.models.io import model_to_bytes
    from mapsim.sampling.generate import model_classes

    data = model_to_bytes(model)
    args = [(data, a, b, height, width, seed, beta, boundary, sampler, threads, group) for a, b in groups]
    for a, grids, extras in run_tasks(dask, _task, args, ordered=True):
        yield a, Dataset(np.asarray(grids, np.uint8), model_classes(model), {}, dict(extras))


def generate_dask(dask: Any, model, n_samples: int, height: int, width: int, *, seed: int = 0, beta: float = 1.0,
                  boundary: Boundary | None = None, sampler: str = "fast", threads: int | None = None,
                  group: int | None = None, boundary_spec: str | None = None, progress=None) -> Dataset:
    """As :func:`mapsim.sampling.generate.generate`, with the sample groups run on a Dask cluster.

    Parameters
    ----------
    dask : str or distributed.Client
        Scheduler address (``tcp://host:8786``) or a client.
    progress : callable, optional
        Called with the number of samples finished.
    Other parameters as :func:`mapsim.sampling.generate.generate`.
    """
    from mapsim.sampling.generate import (check_group, check_request, generation_metadata, model_classes,
                                          sample_groups)
    from mapsim.sampling.rng import seed_entropy

    K, H, W, beta = check_request(n_samples, height, width, beta)
    boundary = boundary or Boundary()
    G = check_group(group, W)
    entropy = seed_entropy(seed)
    grids = np.empty((K, H, W), np.uint8)
    extras: dict[str, np.ndarray] = {}
    for a, ds in run_groups(dask, model, sample_groups(0, K, G), H, W, seed=entropy, beta=beta,
                            boundary=boundary, sampler=sampler, threads=threads, group=G):
        b = a + ds.n_samples
        grids[a:b] = ds.grids
        for name, arr in ds.extras.items():
            if name not in extras:
                extras[name] = np.empty((K,) + arr.shape[1:], arr.dtype)
            extras[name][a:b] = arr
        if progress is not None:
            progress(b)
    metadata = generation_metadata(model, K, H, W, seed=seed, beta=beta, boundary=boundary, sampler=sampler,
                                   boundary_spec=boundary_spec, group=G)
    return Dataset(grids, model_classes(model), metadata, extras)
