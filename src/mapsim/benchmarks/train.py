"""``mapsim bench train``: Gated PixelCNN training throughput in loss pixels per second.

One timed step is what ``mapsim train`` does per batch: canvas, forward, NLL,
backward, gradient clipping, AdamW step.  Defaults: 20 layers, kernel 3, 32
channels after gating, out width 64, N_c = 2, 64² grids (density 0.3), batch 16.

Figures
-------
``train_pixels_per_s``       median over the timed steps of batch * H * W / step wall time
``train_pixels_per_s_best``  the same for the fastest step
``train_pixels_per_cpu_s``   loss pixels per second of this process's CPU time (all threads);
                             on a machine shared with other work the wall figures drop
                             while this one stays closer to the machine's capability
``threads``                  torch intra-op threads used (``--threads``, default all cores)
``plain_*``                  with ``--plain``: the same for the naive layer-by-layer
                             formula (:func:`plain_forward`), measured in the same run
``load_average_1min``        so that a busy machine can be recognised
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from mapsim.argtypes import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=positive_int, default=20, help="gated layers (default 20)")
    parser.add_argument("--filters", type=positive_int, default=32, help="channels after gating (default 32)")
    parser.add_argument("--kernel", type=positive_int, default=3, help="kernel size (default 3)")
    parser.add_argument("--out-width", type=positive_int, default=64, help="skip/output channels (default 64)")
    parser.add_argument("--classes", type=positive_int, default=2, help="N_c (default 2)")
    parser.add_argument("--size", type=positive_int, default=64, help="grid side (default 64)")
    parser.add_argument("--batch", type=positive_int, default=16, help="samples per step (default 16)")
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's, = cores)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default auto)")
    parser.add_argument("--plain", action="store_true", help="also time the naive layer-by-layer forward")


def plain_forward(model, canvas):
    """The Gated PixelCNN formula layer by layer, without the speed-ups of ``GatedPixelCNN.forward``.

    Timed by ``--plain`` as the naive baseline; the tests check ``GatedPixelCNN.forward``
    against a formula of their own, not against this one.
    """
    import torch

    from mapsim.models.pixelcnn import gate

    p, Wc = model.p, canvas.shape[-1]
    x = model.one_hot(canvas)
    v_pre = model.v_convs[0](x[:, :, :-1, :])
    h_pre = model.h_convs[0](x[:, :, p:, :-1])[:, :, :, : Wc - 2 * p] + model.v2h[0](v_pre)
    v, g = gate(v_pre), gate(h_pre)
    h, skip = model.h_res[0](g), model.skips[0](g)
    for layer in range(1, model.config.layers):
        v_pre = model.v_convs[layer](v)
        h_pre = model.h_convs[layer](h[:, :, p:, :])[:, :, :, :-p] + model.v2h[layer](v_pre)
        v, g = gate(v_pre), gate(h_pre)
        h = model.h_res[layer](g) + h[:, :, p:, p:-p]
        skip = skip[:, :, p:, p:-p] + model.skips[layer](g)
    return model.out2(torch.relu(model.out1(torch.relu(skip))))


def _time_steps(model, forward, grids, steps: int, warmup: int, device) -> tuple[list[float], float]:
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    walls = []
    cpu0 = None
    for i in range(warmup + steps):
        if i == warmup:
            cpu0 = time.process_time()
        sync()
        t0 = time.perf_counter()
        canvas = model.make_canvas(grids)
        loss = F.cross_entropy(forward(canvas), grids, reduction="sum") / grids.numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        if i >= warmup:
            walls.append(time.perf_counter() - t0)
    return walls, time.process_time() - cpu0


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from mapsim.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from mapsim.training import resolve_device

    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = PixelCNNConfig(n_classes=args.classes, layers=args.layers, filters=args.filters, kernel=args.kernel,
                         out_width=args.out_width, classes=[f"c{k}" for k in range(args.classes)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GatedPixelCNN(cfg).to(device).train()
    rng = np.random.default_rng(0)
    occupied = rng.random((args.batch, args.size, args.size)) < 0.3
    grids = np.where(occupied, rng.integers(1, args.classes, occupied.shape), 0)
    grids = torch.as_tensor(grids, device=device)
    pixels = grids.numel()

    walls, cpu = _time_steps(model, model, grids, args.steps, max(0, args.warmup), device)
    out = {
        "train_pixels_per_s": pixels / statistics.median(walls),
        "train_pixels_per_s_best": pixels / min(walls),
        "train_pixels_per_cpu_s": pixels * len(walls) / cpu if device.type == "cpu" else None,
        "step_seconds": [round(w, 4) for w in walls],
        "threads": torch.get_num_threads(),
        "device": str(device),
        "model": f"{args.layers} layers, kernel {args.kernel}, {args.filters} filters, out width {args.out_width}, "
                 f"N_c={args.classes}, L_c={model.context_range}",
        "batch": f"{args.batch} x {args.size}x{args.size}",
        "torch": torch.__version__,
    }
    if args.plain:
        walls_p, cpu_p = _time_steps(model, lambda c: plain_forward(model, c), grids, args.steps,
                                     max(0, args.warmup), device)
        out["plain_train_pixels_per_s"] = pixels / statistics.median(walls_p)
        out["plain_train_pixels_per_s_best"] = pixels / min(walls_p)
        out["plain_train_pixels_per_cpu_s"] = pixels * len(walls_p) / cpu_p if device.type == "cpu" else None
        out["speedup_vs_plain"] = statistics.median(walls_p) / statistics.median(walls)
    out["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return out
