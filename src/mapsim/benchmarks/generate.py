"""``mapsim bench generate``: fast exact generation against naive generation.

Model: Gated PixelCNN, 20 layers, kernel 3, 32 filters (L_c = 20), N_c = 2,
random weights (speed does not depend on training).  Figures:

* ``seconds_1024``: one 1024 x 1024 sample with the cached sampler;
* ``seconds_batch_256``: a batch of 64 samples of 256 x 256;
* ``gflops``: useful floating-point work of the model per pixel times pixels, per second
  (best of the two runs; ``gflops_1024`` and ``gflops_batch_256`` each), beside
  ``gemm_gflops``, a 2048^3 float32 matrix multiply measured in the same run, and
  ``gemm_shapes_gflops`` (``_batch_256``): BLAS on exactly the GEMM shapes of one
  macro-step of the sampler, same threads (:func:`gemm_shapes_gflops`); ``gemm_fraction`` =
  gflops_1024 / gemm_gflops and ``gemm_shapes_fraction`` = gflops_1024 / gemm_shapes_gflops
  (and the same for the batch) say how close the sampler is to the machine's limit;
* ``ratio_vs_front`` (the headline speed-up): the cached sampler against the
  project's own windowed front sampler (:func:`mapsim.sampling.fast.sample_front`:
  every ready pixel of a front step drawn at once from one batched model call
  on minimal crops, no caches), which is what any model gets and what a user
  would otherwise run; both on one ``--front-size`` square sample (default 64),
  same threads, best of ``--repeats`` (``seconds_front``, ``seconds_cached_front_size``);
* ``ratio_vs_naive_64`` (secondary, a straw man kept for continuity): speed-up at
  64 x 64 over naive generation (one full-canvas network pass per pixel), the
  naive time extrapolated from its first rows (``naive_rows_timed``);
* ``peak_mib``: peak resident memory of the process.

With ``--positions`` (off-lattice MAP, :mod:`mapsim.models.pixelcnn`) the run adds
``positions``: the cached sampler on ``--positions-samples`` samples of
``--positions-size``² for a model with the position head (``--position-bins``) and for
the class-only model of the same size with the same trunk weights, alternating, best of
``--repeats`` each, and ``ratio_positions`` = positions / class-only
(uniform streams included: each run makes its own).

With ``--depth N`` (:func:`run_volume`) the run times the 3D Gated PixelCNN instead
(12 layers x 32 filters unless ``--layers`` is given): ``voxels_per_s`` of the cached
3D kernel on one N^3 volume, ``gflops`` and ``gemm_fraction`` as above,
``ratio_vs_front`` against the batched 3D front on a ``--front-depth`` cube, and the
2D kernel's ``gemm_fraction_2d`` on about N^3 pixels in the same run.
"""

from __future__ import annotations

import argparse
import resource
import time

import numba
import numpy as np
import torch
from numba import njit, prange


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=1024, help="side of the single large sample (default 1024)")
    parser.add_argument("--batch", type=int, default=64, help="samples in the batch run (default 64)")
    parser.add_argument("--batch-size", type=int, default=256, help="side of the batch samples (default 256)")
    parser.add_argument("--naive-rows", type=int, default=2, help="rows of the 64x64 naive run to time (default 2)")
    parser.add_argument("--front-size", type=int, default=64,
                        help="side of the sample for ratio_vs_front, 64-128 (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for the small timings (default 3)")
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--depth", type=int, default=None,
                        help="time a 3D model instead: one DEPTH^3 volume with the cached 3D kernel (12 layers x 32 "
                             "filters unless --layers is given), voxels per second and GFLOP/s beside the same-run "
                             "matrix multiply, the batched 3D front on a --front-depth cube and the 2D kernel on "
                             "about DEPTH^3 pixels")
    parser.add_argument("--front-depth", type=int, default=6,
                        help="with --depth: side of the cube for ratio_vs_front (default 6; the front sampler "
                             "evaluates an (L+1) x (2L+1)^2 crop per voxel)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default: the cached numba sampler) or cuda (the batched front sampler on the GPU, "
                             "against a cuda matrix multiply)")
    parser.add_argument("--positions", action="store_true",
                        help="also time a model with the position head against the class-only model of the same size")
    parser.add_argument("--positions-size", type=int, default=128, help="sample side of the position timing (default 128)")
    parser.add_argument("--positions-samples", type=int, default=8, help="samples of the position timing (default 8)")
    parser.add_argument("--position-bins", type=int, default=32, help="bins per axis of the position head (default 32)")
    parser.add_argument("--only-positions", action="store_true", help="run only the position timing")


def model_flops_per_pixel(layers: int, filters: int, kernel: int, out_width: int, n_classes: int) -> float:
    """Multiply-adds x 2 of one pixel's pass through the network (useful work)."""
    p, F, S, C0 = kernel // 2, filters, out_width, n_classes + 1
    macs = 0
    for m in range(layers):
        first = m == 0
        macs += (p * kernel * C0 if first else (p + 1) * kernel * F) * 2 * F  # vertical conv
        macs += (p * C0 if first else (p + 1) * F) * 2 * F  # horizontal conv
        macs += 2 * F * 2 * F + F * F + F * S  # v->h, residual 1x1, skip
    macs += S * S + S * n_classes
    return 2.0 * macs


@njit(parallel=True, cache=True)
def _shape_gemms(mats, nt, reps, nthreads):  # pragma: no cover - compiled
    """Each thread multiplies its own (nt x k) inputs by every (k x n) matrix of ``mats``, ``reps`` times."""
    for th in prange(nthreads):
        for _ in range(reps):
            for B in mats:
                A = np.ones((nt, B.shape[0]), np.float32)
                C = np.empty((nt, B.shape[1]), np.float32)
                np.dot(A, B, C)
    return 0


def gemm_shapes_gflops(layers: int, filters: int, kernel: int, out_width: int, n_classes: int, lanes: int,
                       threads: int, seconds: float = 1.0, substeps: int = 1) -> float:
    """GFLOP/s of BLAS on exactly the GEMMs one macro-step of the cached sampler makes.

    Per layer: the vertical stack ((p+1) k F -> 2F) and vertical-to-horizontal (2F -> 2F)
    products over ``lanes`` x ``substeps`` rows (:data:`mapsim.sampling.pixelcnn_fast.SUBSTEPS`),
    then, per sub-step, the horizontal ((p+1) F -> 2F) and residual (F -> F) products, skips
    (n F -> S) and the two output layers (S -> S, S -> N_c) over ``lanes`` rows; rows split over
    ``threads`` threads, each with one BLAS thread, as the sampler runs them.  The rate is the two
    groups' flops over their summed times.
    """
    from threadpoolctl import threadpool_limits

    p, F, S = kernel // 2, filters, out_width
    vertical, rest = [], []
    for _ in range(1, layers):
        vertical += [((p + 1) * kernel * F, 2 * F), (2 * F, 2 * F)]
        rest += [((p + 1) * F, 2 * F), (F, F)]
    rest += [(layers * F, S), (S, S), (S, n_classes)]
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    flops, elapsed_total = 0.0, 0.0
    try:
        with threadpool_limits(1, user_api="blas"):
            for shapes, rows, times in ((vertical, lanes * substeps, 1), (rest, lanes, substeps)):
                mats = tuple(np.ones(sh, np.float32) for sh in shapes)
                nt = max(1, -(-rows // threads))
                flops_per_rep = 2.0 * nt * sum(a * b for a, b in shapes) * threads
                _shape_gemms(mats, nt, 1, threads)
                reps, elapsed = 1, 0.0
                while elapsed < seconds / 2:
                    reps *= 2
                    t = time.perf_counter()
                    _shape_gemms(mats, nt, reps, threads)
                    elapsed = time.perf_counter() - t
                # per macro-step: the vertical group once, the rest once per sub-step
                flops += flops_per_rep * times
                elapsed_total += elapsed / reps * times
    finally:
        numba.set_num_threads(old)
    return flops / elapsed_total / 1e9


def _gemm_gflops(clock=time.perf_counter) -> float:
    n = 2048
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    a @ b
    reps = 5
    t = clock()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (clock() - t) / 1e9


def position_overhead(layers: int, filters: int, kernel: int, out_width: int, bins: int, n_samples: int, size: int,
                      threads: int, repeats: int) -> dict:
    """Cached-sampler seconds of a model with positions against the class-only model of the same size.

    The two models share every trunk weight (the position model's first layer has two more
    input channels, for the offsets, with random weights), so they draw similar numbers of atoms
    and the difference is the position head: offset inputs, two S x B heads per atom, the
    position uniforms.  Returns seconds (best of ``repeats``), their ratio and both occupied
    fractions (the work of the head grows with the atoms).
    """
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached

    torch.manual_seed(0)
    base = dict(n_classes=2, layers=layers, filters=filters, kernel=kernel, out_width=out_width)
    plain = GatedPixelCNN(PixelCNNConfig(**base)).eval()
    pos = GatedPixelCNN(PixelCNNConfig(**base, positions=True, position_bins=bins, pixel_size=[1.0, 1.0])).eval()
    with torch.no_grad():
        own = pos.state_dict()
        for k, v in plain.state_dict().items():
            if own[k].shape == v.shape:
                own[k].copy_(v)
            else:  # first-layer convolutions: the class channels as in the plain model
                own[k][:, : v.shape[1]].copy_(v)
        plain.out2.bias.copy_(torch.tensor([0.0, 0.0]))  # about half the pixels occupied (LJ liquid data: 0.44)
        pos.out2.bias.copy_(plain.out2.bias)
    for m in (plain, pos):
        sample_pixelcnn_cached(m, 1, 4, 4, seed=0, threads=threads)  # compile / load the numba cache

    # the two models alternate, so that a change of load on a shared machine hits both alike
    times: dict = {"plain": [], "pos": []}
    res: dict = {}
    for _ in range(max(1, repeats)):
        for name, m in (("plain", plain), ("pos", pos)):
            t = time.perf_counter()
            res[name] = sample_pixelcnn_cached(m, n_samples, size, size, seed=5, threads=threads)
            times[name].append(time.perf_counter() - t)
    s_plain, r_plain = min(times["plain"]), res["plain"]
    s_pos, r_pos = min(times["pos"]), res["pos"]
    return {"model": f"layers={layers} kernel={kernel} filters={filters} out_width={out_width} bins={bins}",
            "samples": f"{n_samples}x{size}^2", "seconds_class_only": s_plain, "seconds_positions": s_pos,
            "ratio_positions": s_pos / s_plain, "occupied_fraction_class_only": float((r_plain.grids > 0).mean()),
            "occupied_fraction_positions": float((r_pos.grids > 0).mean())}


def run_device(args: argparse.Namespace) -> dict:
    """``--device cuda``: the front sampler (one batched model call per step) on a GPU, same keys where they apply.

    The cached kernel is CPU code; on a GPU every step's crops go through the
    network in one batch, so ``gflops`` counts the useful work of one pass per
    pixel (the crops' redundant work is not counted) against ``gemm_gflops``, a
    float32 8192^3 matrix multiply on the same device.
    """
    from mapsim.errors import MapsimError
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from mapsim.sampling.fast import sample_front

    try:
        dev = torch.device(args.device)
    except RuntimeError:
        raise MapsimError(f"--device {args.device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type != "cuda" or not torch.cuda.is_available():
        raise MapsimError(f"--device {args.device}: no CUDA device here (torch.cuda.is_available() is False)")
    torch.manual_seed(0)
    cfg = PixelCNNConfig(n_classes=2, layers=args.layers, filters=args.filters, kernel=args.kernel, out_width=64)
    model = GatedPixelCNN(cfg).eval().to(dev)
    fpp = model_flops_per_pixel(cfg.layers, cfg.filters, cfg.kernel, cfg.out_width, cfg.n_classes)
    sample_front(model, 1, 8, 8, seed=0)  # warm up the kernels

    def timed(k: int, n: int) -> float:
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        sample_front(model, k, n, n, seed=1)
        torch.cuda.synchronize(dev)
        return time.perf_counter() - t

    s_big = timed(1, args.size)
    s_batch = timed(args.batch, args.batch_size)
    n = 8192
    a, b = torch.rand(n, n, device=dev), torch.rand(n, n, device=dev)
    a @ b
    torch.cuda.synchronize(dev)
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    torch.cuda.synchronize(dev)
    gemm = 2 * n**3 * 5 / (time.perf_counter() - t) / 1e9
    g_big = fpp * args.size**2 / s_big / 1e9
    g_batch = fpp * args.batch * args.batch_size**2 / s_batch / 1e9
    return {"device": torch.cuda.get_device_name(dev), "sampler": "front (batched crops)",
            "model": f"pixelcnn layers={cfg.layers} kernel={cfg.kernel} filters={cfg.filters} L_c={model.context_range}",
            "size": args.size, "seconds_1024": s_big, "batch": f"{args.batch}x{args.batch_size}^2",
            "seconds_batch_256": s_batch, "gflops": max(g_big, g_batch), "gflops_1024": g_big,
            "gflops_batch_256": g_batch, "gemm_gflops": gemm, "gemm_fraction": g_big / gemm,
            "gemm_fraction_batch_256": g_batch / gemm,
            "peak_mib": torch.cuda.max_memory_allocated(dev) / 2**20}


def volume_flops_per_voxel(layers: int, filters: int, kernel: int, out_width: int, n_classes: int) -> float:
    """Multiply-adds x 2 of one voxel's pass through the 3D Gated PixelCNN (useful work)."""
    p, F, S, C0 = kernel // 2, filters, out_width, n_classes + 1
    macs = 0
    for m in range(layers):
        cin = C0 if m == 0 else F
        depth_taps, row_taps, col_taps = (p if m == 0 else p + 1), (p if m == 0 else p + 1), (p if m == 0 else p + 1)
        macs += depth_taps * kernel * kernel * cin * 2 * F  # depth stack
        macs += row_taps * kernel * cin * 2 * F  # vertical stack
        macs += col_taps * cin * 2 * F  # horizontal stack
        macs += 2 * (2 * F) * (2 * F) + F * F + F * S  # z->v, v->h, residual, skip
    macs += S * S + S * n_classes
    return 2.0 * macs


def run_volume(args: argparse.Namespace) -> dict:
    """``--depth N``: one N^3 volume from a 3D Gated PixelCNN with the cached kernel, against the batched 3D
    front on a ``--front-depth`` cube and against the 2D cached kernel on as many pixels, same threads.

    ``gflops`` counts the useful work of one pass per voxel (:func:`volume_flops_per_voxel`; the
    stacks computed on the padding around the volume are not counted) beside ``gemm_gflops``, a
    2048^3 float32 matrix multiply in the same run; ``gemm_fraction_2d`` is the same ratio for one
    square 2D sample of about N^3 pixels from a 2D model of the same layers and filters.
    """
    from mapsim.errors import MapsimError
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from mapsim.models.pixelcnn3d import GatedPixelCNN3D, PixelCNN3DConfig
    from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached
    from mapsim.sampling.volume import sample_volume

    n = int(args.depth)
    if n <= 0:
        raise MapsimError(f"--depth must be a positive integer, found {n}")
    layers = args.layers if args.layers != 20 else 12  # 20 is the 2D default
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = PixelCNN3DConfig(n_classes=2, layers=layers, filters=args.filters, kernel=args.kernel, out_width=64)
    model = GatedPixelCNN3D(cfg).eval()

    def timed(f, clock=time.perf_counter) -> float:
        t = clock()
        f()
        return clock() - t

    def cached(side: int, seed: int):
        return sample_volume(model, 1, side, side, side, seed=seed, evaluation="cached", threads=threads)

    cached(2, 0)  # compile / load the numba cache
    c0 = time.process_time()
    s = timed(lambda: cached(n, 1))
    cpu = time.process_time() - c0
    nf = max(1, int(args.front_depth))
    s_front = timed(lambda: sample_volume(model, 1, nf, nf, nf, seed=2, evaluation="batch"))
    s_cached_front = min(timed(lambda: cached(nf, 2)) for _ in range(max(1, args.repeats)))
    fpv = volume_flops_per_voxel(cfg.layers, cfg.filters, cfg.kernel, cfg.out_width, cfg.n_classes)
    # the 2D kernel on a square of about as many pixels, same layers and filters
    side2d = max(1, round(n ** 1.5))
    cfg2 = PixelCNNConfig(n_classes=2, layers=layers, filters=args.filters, kernel=args.kernel, out_width=64)
    model2 = GatedPixelCNN(cfg2).eval()
    sample_pixelcnn_cached(model2, 1, 4, 4, seed=0, threads=threads)
    c0 = time.process_time()
    s2 = timed(lambda: sample_pixelcnn_cached(model2, 1, side2d, side2d, seed=1, threads=threads))
    cpu2 = time.process_time() - c0
    fpp = model_flops_per_pixel(cfg2.layers, cfg2.filters, cfg2.kernel, cfg2.out_width, cfg2.n_classes)
    gemm = _gemm_gflops()
    gemm_cpu = _gemm_gflops(time.process_time)  # per CPU-second
    gflops, gflops2d = fpv * n**3 / s / 1e9, fpp * side2d**2 / s2 / 1e9
    # on a shared machine: the same fractions per CPU-second (work / process CPU time against the matrix
    # multiply's), which load from other processes changes less than wall time
    cpu_fractions = {"gemm_fraction_cpu": fpv * n**3 / cpu / 1e9 / gemm_cpu,
                     "gemm_fraction_2d_cpu": fpp * side2d**2 / cpu2 / 1e9 / gemm_cpu}
    return {"model": f"pixelcnn3d layers={cfg.layers} kernel={cfg.kernel} filters={cfg.filters} L_c={model.context_range}",
            "sampler": "cached 3D kernel (numba)", "threads": threads, "volume": f"{n}^3",
            "seconds": s, "voxels_per_s": n**3 / s, "flops_per_voxel": fpv, "gflops": gflops,
            "gemm_gflops": gemm, "gemm_fraction": gflops / gemm,
            "front_volume": f"{nf}^3", "seconds_front": s_front, "voxels_per_s_front": nf**3 / s_front,
            "seconds_cached_front_volume": s_cached_front, "ratio_vs_front": s_front / s_cached_front,
            "sample_2d": f"{side2d}^2", "seconds_2d": s2, "pixels_per_s_2d": side2d**2 / s2, "gflops_2d": gflops2d,
            "gemm_fraction_2d": gflops2d / gemm, **cpu_fractions,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run(args: argparse.Namespace) -> dict:
    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from mapsim.sampling.fast import sample_front
    from mapsim.sampling.pixelcnn_fast import sample_pixelcnn_cached, substeps_for
    from mapsim.sampling.reference import sample_reference

    if args.quick:
        args.size, args.batch, args.batch_size, args.naive_rows, args.front_size = 128, 4, 64, 1, 32
    if getattr(args, "device", "cpu") != "cpu":
        return run_device(args)
    if getattr(args, "depth", None) is not None:
        return run_volume(args)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if getattr(args, "only_positions", False):
        return {"threads": threads, "positions": position_overhead(
            args.layers, args.filters, args.kernel, 64, args.position_bins, args.positions_samples,
            args.positions_size, threads, args.repeats)}
    torch.manual_seed(0)
    cfg = PixelCNNConfig(n_classes=2, layers=args.layers, filters=args.filters, kernel=args.kernel, out_width=64)
    model = GatedPixelCNN(cfg).eval()
    fpp = model_flops_per_pixel(cfg.layers, cfg.filters, cfg.kernel, cfg.out_width, cfg.n_classes)
    sample_pixelcnn_cached(model, 1, 4, 4, seed=0, threads=threads)  # compile / load the numba cache

    t = time.perf_counter()
    sample_pixelcnn_cached(model, 1, args.size, args.size, seed=1, threads=threads)
    s_big = time.perf_counter() - t
    t = time.perf_counter()
    sample_pixelcnn_cached(model, args.batch, args.batch_size, args.batch_size, seed=2, threads=threads)
    s_batch = time.perf_counter() - t

    def best(f) -> float:
        times = []
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    s_fast64 = best(lambda: sample_pixelcnn_cached(model, 1, 64, 64, seed=3, threads=threads))
    n = args.front_size
    s_cached_front = best(lambda: sample_pixelcnn_cached(model, 1, n, n, seed=4, threads=threads))
    t = time.perf_counter()
    sample_front(model, 1, n, n, seed=4)
    s_front = time.perf_counter() - t
    rows = max(1, min(64, args.naive_rows))
    # Naive generation (sample_reference with window=False) costs one pass over the whole
    # 64x64 canvas per pixel, whatever the pixel, so timing its first rows and
    # extrapolating to 64 rows is exact up to noise.
    t = time.perf_counter()
    sample_reference(model, 1, 64, 64, seed=3, window=False, stop_after_rows=rows)
    s_naive_part = time.perf_counter() - t
    s_naive = s_naive_part * 64 / rows
    px_big = args.size**2
    px_batch = args.batch * args.batch_size**2
    gflops_big, gflops_batch = fpp * px_big / s_big / 1e9, fpp * px_batch / s_batch / 1e9
    gflops = max(gflops_big, gflops_batch)
    gemm = _gemm_gflops()
    L, p = model.context_range, model.p

    S, S_batch = substeps_for(1, args.size, L, p), substeps_for(args.batch, args.batch_size, L, p)

    def lanes(width: int, k: int, S: int) -> int:  # lanes in flight at a macro-step (row lag L + S)
        return k * -(-(width + 2 * L - 2 * p + S - 1) // (L + S))

    shape_args = (cfg.layers, cfg.filters, cfg.kernel, cfg.out_width, cfg.n_classes)
    shapes_big = gemm_shapes_gflops(*shape_args, lanes(args.size, 1, S), threads, substeps=S)
    shapes_batch = gemm_shapes_gflops(*shape_args, lanes(args.batch_size, args.batch, S_batch), threads,
                                      substeps=S_batch)
    return {
        "model": f"pixelcnn layers={cfg.layers} kernel={cfg.kernel} filters={cfg.filters} out_width={cfg.out_width} L_c={model.context_range}",
        "threads": threads,
        "substeps": S,
        "substeps_batch_256": S_batch,
        "size": args.size,
        "seconds_1024": s_big,
        "batch": f"{args.batch}x{args.batch_size}^2",
        "seconds_batch_256": s_batch,
        "flops_per_pixel": fpp,
        "gflops": gflops,
        "gflops_1024": gflops_big,
        "gflops_batch_256": gflops_batch,
        "gemm_gflops": gemm,
        "gemm_shapes_gflops": shapes_big,
        "gemm_shapes_gflops_batch_256": shapes_batch,
        "gemm_fraction": gflops_big / gemm,
        "gemm_shapes_fraction": gflops_big / shapes_big,
        "gemm_fraction_batch_256": gflops_batch / gemm,
        "gemm_shapes_fraction_batch_256": gflops_batch / shapes_batch,
        "front_size": n,
        "seconds_front": s_front,
        "seconds_cached_front_size": s_cached_front,
        "ratio_vs_front": s_front / s_cached_front,
        "seconds_fast_64": s_fast64,
        "seconds_naive_64_extrapolated": s_naive,
        "naive_rows_timed": rows,
        "ratio_vs_naive_64": s_naive / s_fast64,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        **({"positions": position_overhead(args.layers, args.filters, args.kernel, 64, args.position_bins,
                                           args.positions_samples, args.positions_size, threads, args.repeats)}
           if getattr(args, "positions", False) else {}),
    }
