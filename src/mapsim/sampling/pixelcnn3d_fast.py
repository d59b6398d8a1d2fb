"""Cached, front-parallel exact sampler for the 3D Gated PixelCNN (CPU, numba).

The 3D counterpart of :mod:`mapsim.sampling.pixelcnn_fast`: every layer's
activation at a canvas position is computed exactly once, voxels are drawn
along a front (every row and plane in flight at once, each voxel once its
causal box is drawn), and each layer is one BLAS product over all lanes of a
macro-step (all samples, all planes and rows in flight, S steps).

Schedule.  A *lane* is one row of one plane of one sample: canvas plane P
(L <= P < L + D), canvas row Y (2p - L <= Y < L + H; rows outside the sample
only compute stacks that later rows read).  At step t lane (P, Y) sits at
canvas column

    C = t - (L+S)(L+1) (P - L) - (L+S) (Y - 2p + L) + 2p - L,

so a row lags the row above by L + S columns and a plane lags the plane before
by (L + S)(L + 1) (with S = 1 the 3D front of :mod:`mapsim.sampling.core`).
For every layer m = 1..n (p = kernel // 2, L = n p) the lane computes, in this
order:

* the depth stack z_m at row Y + (n - m) p, column C + (n - m) p (it runs
  ahead in rows and columns: z_m needs z_{m-1} up to p rows below and p
  columns right, and the plane before up to row Y + L, column C + L, which
  the lane of that plane, L + S columns ahead, has drawn), with its
  depth-to-vertical term;
* the vertical stack v_m at row Y, column C + (n - m) p (it reads the
  depth-to-vertical term written (n - m) p rows earlier, by lane Y - (n - m) p);
* the horizontal stack h_m at column C;
* when (Y, C) is a sample voxel, the output layers and the draw
  (:func:`mapsim.sampling.draw.draw_pixel`) with the voxel's uniform.

*Macro-steps.*  S consecutive steps (:data:`SUBSTEPS`) run together: the depth
and vertical stacks of all lanes and all S steps layer by layer (each layer
one BLAS product over S times as many rows: the weights, 3 MB at 12 layers x 32
filters, are read once per S steps), then the horizontal stacks and the draws
step by step (h_1 reads the voxel drawn the step before).  The lags of L + S
make every value a lane reads from another lane come from an earlier
macro-step, so the lanes of a macro-step (each with all its steps) are
independent and are split across threads.  Caches hold one plane of rows and
columns per layer (the depth stack p + 1 planes): a value is read for the last
time at least S steps before the lane of the next plane (or, for the depth
stack, of the plane p + 1 later) overwrites it (tested against the reference
sampler for n = 1..4, p = 1, 2 at S = 16, and for S = 1 and 3).  Cache memory per sample is
(H + 2L)(W + 2L) F ((p + 3)(n - 1) + 4n) floats, independent of the depth
(87 MiB for 64^3 at 12 layers x 32 filters in float32).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
# numba's np.dot calls scipy's BLAS: load it now so that kernel_threads limits it (as in 2D)
import scipy.linalg.cython_blas  # noqa: F401,E402

from mapsim.errors import MapsimError
from mapsim.models.pixelcnn import gate
from mapsim.models.pixelcnn3d import GatedPixelCNN3D
from mapsim.sampling.draw import draw_pixel
from mapsim.sampling.pixelcnn_fast import (_gate, gemm_bias, head_logits, head_weights, kernel_threads, lane_arrays,
                                          lane_entries, lane_scratch, project_and_gate, row_lag)
from mapsim.sampling.reference import SampleResult


def _weights(model: GatedPixelCNN3D, dt) -> dict:
    """Repack the model's parameters as matrices for the kernel (im2col order (plane, row, column, channel))."""
    cfg = model.config
    n, p, k, F = cfg.layers, model.p, cfg.kernel, cfg.filters

    def a(t):
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(dt))

    C0 = cfg.n_classes + 1
    w = {}
    w["T1z"] = a(model.z_convs[0].weight.permute(2, 3, 4, 1, 0).reshape(p * k * k, C0, 2 * F))
    w["b1z"] = a(model.z_convs[0].bias)
    w["T1v"] = a(model.v_convs[0].weight[:, :, 0].permute(2, 3, 1, 0).reshape(p * k, C0, 2 * F))
    w["T1h"] = a(model.h_convs[0].weight[:, :, 0, 0].permute(2, 1, 0))  # (p, C0, 2F)
    nz = max(n - 1, 1)
    Wz = np.zeros((nz, (p + 1) * k * k * F, 2 * F), dt)
    bz = np.zeros((nz, 2 * F), dt)
    Wv = np.zeros((nz, (p + 1) * k * F, 2 * F), dt)
    Wh = np.zeros((nz, (p + 1) * F, 2 * F), dt)
    for m in range(1, n):
        Wz[m - 1] = a(model.z_convs[m].weight.permute(2, 3, 4, 1, 0).reshape(-1, 2 * F))
        bz[m - 1] = a(model.z_convs[m].bias)
        Wv[m - 1] = a(model.v_convs[m].weight[:, :, 0].permute(2, 3, 1, 0).reshape(-1, 2 * F))
        Wh[m - 1] = a(model.h_convs[m].weight[:, :, 0, 0].permute(2, 1, 0).reshape(-1, 2 * F))
    w["Wz"], w["bz"], w["Wv"], w["Wh"] = Wz, bz, Wv, Wh
    # the vertical conv bias is folded into the depth-to-vertical term, the horizontal one into vertical-to-horizontal
    w["Wzv"] = np.stack([a(model.z2v[m].weight.flatten(1).T) for m in range(n)])
    w["bzv"] = np.stack([a(model.z2v[m].bias + model.v_convs[m].bias) for m in range(n)])
    w["Wvh"] = np.stack([a(model.v2h[m].weight.flatten(1).T) for m in range(n)])
    w["bvh"] = np.stack([a(model.v2h[m].bias + model.h_convs[m].bias) for m in range(n)])
    w.update(head_weights(model, a))
    return w


@torch.no_grad()
def _boundary_depth(model: GatedPixelCNN3D, top: np.ndarray, Z: np.ndarray) -> None:
    """Write the depth stack of layers 1..n-1 on the last p boundary planes into the ring ``Z``.

    ``top`` (K, L, Hc, Wc) are the planes before the volume; layer m lives at canvas
    planes [m p, L), rows [m p, Hc - m p) and columns [m p, Wc - m p) there, and the first
    sample planes read it on planes L - p .. L - 1 (slot P mod (p + 1) of ``Z``).
    """
    n, p = model.config.layers, model.p
    L = model.context_range
    if n == 1:
        return
    Hc, Wc = top.shape[2:]
    x = model.one_hot(torch.as_tensor(top, dtype=torch.long))  # (K, C, L, Hc, Wc)
    z = gate(model.z_convs[0](x[:, :, :-1]))  # layer 1 at planes [p, L)
    for m in range(1, n):
        d = m * p
        block = z[:, :, -p:].permute(2, 3, 4, 0, 1).numpy()  # (p, rows, cols, K, F)
        for j in range(p):
            Z[m - 1, (L - p + j) % (p + 1), d : Hc - d, d : Wc - d] = block[j]
        if m < n - 1:
            z = gate(model.z_convs[m](z))


WEIGHT_NAMES = ("T1z", "b1z", "T1v", "T1h", "Wz", "bz", "Wv", "Wh", "Wzv", "bzv", "Wvh", "bvh",
                "Wres", "bres", "Wskip", "bskip", "W1", "b1", "W2", "b2")
"""Order of the repacked weights passed to the kernel."""

STEPS_PER_CALL = 64
"""Front steps per compiled call (progress is reported between calls)."""

SUBSTEPS = 16
"""S: front steps whose depth and vertical stacks are computed together (each layer one BLAS product over
S times as many lanes; the 12-layer x 32-filter weights, 3 MB, then stream through the cache S times less
often).  The row and plane lags grow to L + S and (L + S)(L + 1) steps (:func:`row_lag`, :func:`plane_lag`)."""


@njit(cache=True)
def _scratch(maxl, n, p, k, F, S, nc, dt):
    """Work arrays of one thread, allocated once per call: lane indices, the im2col inputs of the
    three stacks, pre-activations, 1x1 terms and :func:`mapsim.sampling.pixelcnn_fast.lane_scratch`."""
    return (np.empty(maxl, np.int64), np.empty((maxl, (p + 1) * k * k * F), dt), np.empty((maxl, (p + 1) * k * F), dt),
            np.empty((maxl, (p + 1) * F), dt), np.empty((maxl, 2 * F), dt), np.empty((maxl, 2 * F), dt),
            lane_scratch(maxl, n, F, S, nc, dt))


@njit(cache=True)
def _select(idx, lS, s, lY, lC, a, rlo, rhi, clo, chi):
    """Put the entries of sub-step ``s`` (any if s < 0) whose row lY + a lies in [rlo, rhi) and column
    lC + a in [clo, chi) into idx; their count."""
    nt = 0
    for i in range(lY.shape[0]):
        r, c = lY[i] + a, lC[i] + a
        if (s < 0 or lS[i] == s) and r >= rlo and r < rhi and c >= clo and c < chi:
            idx[nt] = i
            nt += 1
    return nt


@njit(cache=True)
def _lanes_step3d(lk, lS, lP, lY, lC, canvas, U, logp_out, caches, weights, geometry, beta, approx, scratch):
    """Advance the given lanes by the S sub-steps of one macro-step (see the module docstring): the depth and
    vertical stacks of every entry (lane, sub-step) layer by layer, then the horizontal stack and the draws
    sub-step by sub-step.  Every sub-step of a lane is in the same call.

    ``caches`` = (Z (n-1, p+1, Hc, Wc, K, F), ZV (n, Hc, Wc, K, 2F), V (n-1, Hc, Wc, K, F),
    VH (n, Hc, Wc, K, 2F), HS (n-1, Hc, Wc, K, F)), ``weights`` as :data:`WEIGHT_NAMES`,
    ``geometry`` = (n, p, L, H, W, S).
    """
    Z, ZV, V, VH, HS = caches
    (T1z, b1z, T1v, T1h, Wz, bz, Wv, Wh, Wzv, bzv, Wvh, bvh,
     Wres, bres, Wskip, bskip, W1, b1, W2, b2) = weights
    n, p, L, H, W, S = geometry
    idx, Az, Av, Ah, pre, term, common = scratch
    g, gx, ge, gsc, h, G, Gd, so, o, lg, lgd = common
    k = 2 * p + 1
    F = Wres.shape[1]
    Hc, Wc = canvas.shape[2], canvas.shape[3]
    RZ = p + 1
    # ---- depth stack, running ahead by (n - m) p rows and columns
    for m in range(1, n + 1):
        a = (n - m) * p
        nt = _select(idx, lS, -1, lY, lC, a, m * p, Hc - m * p, m * p, Wc - m * p)
        if nt == 0:
            continue
        if m == 1:
            for t in range(nt):
                i = idx[t]
                kk, P, r, c = lk[i], lP[i], lY[i] + a, lC[i] + a
                for q in range(2 * F):
                    pre[t, q] = b1z[q]
                for dp in range(p):
                    for dy in range(k):
                        for dx in range(k):
                            row = T1z[(dp * k + dy) * k + dx, canvas[kk, P - p + dp, r - p + dy, c - p + dx]]
                            for q in range(2 * F):
                                pre[t, q] += row[q]
        else:
            for t in range(nt):
                i = idx[t]
                kk, P, r, c = lk[i], lP[i], lY[i] + a, lC[i] + a
                q = 0
                for dp in range(p + 1):
                    slab = Z[m - 2, (P - p + dp) % RZ]
                    for dy in range(k):
                        for dx in range(k):
                            src = slab[r - p + dy, c - p + dx, kk]
                            for f in range(F):
                                Az[t, q] = src[f]
                                q += 1
            gemm_bias(Az, nt, Wz[m - 2], bz[m - 2], pre)
        project_and_gate(pre, nt, Wzv[m - 1], term, m < n, g, gx, ge, gsc, approx)
        for t in range(nt):
            i = idx[t]
            kk, P, r, c = lk[i], lP[i], lY[i] + a, lC[i] + a
            dst = ZV[m - 1, r, c, kk]
            for q in range(2 * F):
                dst[q] = term[t, q] + bzv[m - 1, q]
            if m < n:
                for f in range(F):
                    Z[m - 1, P % RZ, r, c, kk, f] = g[t, f]
    # ---- vertical stack at row Y, running ahead by (n - m) p columns
    for m in range(1, n + 1):
        a = (n - m) * p
        nt = _select(idx, lS, -1, lY, lC, a, m * p + a, Hc + a, m * p, Wc - m * p)  # rows lY >= m p
        if nt == 0:
            continue
        if m == 1:
            for t in range(nt):
                i = idx[t]
                kk, P, Y, c = lk[i], lP[i], lY[i], lC[i] + a
                src = ZV[0, Y, c, kk]
                for q in range(2 * F):
                    pre[t, q] = src[q]
                for dy in range(p):
                    for dx in range(k):
                        row = T1v[dy * k + dx, canvas[kk, P, Y - p + dy, c - p + dx]]
                        for q in range(2 * F):
                            pre[t, q] += row[q]
        else:
            for t in range(nt):
                i = idx[t]
                kk, Y, c = lk[i], lY[i], lC[i] + a
                q = 0
                for dy in range(p + 1):
                    for dx in range(k):
                        src = V[m - 2, Y - p + dy, c - p + dx, kk]
                        for f in range(F):
                            Av[t, q] = src[f]
                            q += 1
            np.dot(Av[:nt], Wv[m - 2], pre[:nt])
            for t in range(nt):
                i = idx[t]
                src = ZV[m - 1, lY[i], lC[i] + a, lk[i]]
                for q in range(2 * F):
                    pre[t, q] += src[q]
        project_and_gate(pre, nt, Wvh[m - 1], term, m < n, g, gx, ge, gsc, approx)
        for t in range(nt):
            i = idx[t]
            kk, Y, c = lk[i], lY[i], lC[i] + a
            dst = VH[m - 1, Y, c, kk]
            for q in range(2 * F):
                dst[q] = term[t, q] + bvh[m - 1, q]
            if m < n:
                for f in range(F):
                    V[m - 1, Y, c, kk, f] = g[t, f]
    for sub in range(S):
        _horizontal_and_draw(sub, lk, lS, lP, lY, lC, canvas, U, logp_out, caches, weights, geometry, beta, approx,
                             scratch)


@njit(cache=True)
def _horizontal_and_draw(sub, lk, lS, lP, lY, lC, canvas, U, logp_out, caches, weights, geometry, beta, approx,
                         scratch):
    """The horizontal stack and the draws of the entries of sub-step ``sub`` (in order: h_1 reads the
    voxel its lane drew at the sub-step before)."""
    VH, HS = caches[3], caches[4]
    T1h, Wh = weights[3], weights[7]  # positions in WEIGHT_NAMES
    Wres, bres, Wskip, bskip, W1, b1, W2, b2 = weights[12:]
    n, p, L, H, W = geometry[:5]
    idx, Ah, pre, common = scratch[0], scratch[3], scratch[4], scratch[6]
    g, gx, ge, gsc, h, G, Gd, so, o, lg, lgd = common
    F = Wres.shape[1]
    Hc = canvas.shape[2]
    # ---- horizontal stack at column C (sample rows only)
    for m in range(1, n + 1):
        nt = _select(idx, lS, sub, lY, lC, 0, L, Hc, m * p, L + W)
        if nt == 0:
            continue
        if m == 1:
            for t in range(nt):
                i = idx[t]
                kk, P, Y, C = lk[i], lP[i], lY[i], lC[i]
                src = VH[0, Y, C, kk]
                for q in range(2 * F):
                    pre[t, q] = src[q]
                for w in range(p):
                    row = T1h[w, canvas[kk, P, Y, C - p + w]]
                    for q in range(2 * F):
                        pre[t, q] += row[q]
        else:
            for t in range(nt):
                i = idx[t]
                kk, Y, C = lk[i], lY[i], lC[i]
                for w in range(p + 1):
                    src = HS[m - 2, Y, C - p + w, kk]
                    for f in range(F):
                        Ah[t, w * F + f] = src[f]
            np.dot(Ah[:nt], Wh[m - 2], pre[:nt])
            for t in range(nt):
                i = idx[t]
                src = VH[m - 1, lY[i], lC[i], lk[i]]
                for q in range(2 * F):
                    pre[t, q] += src[q]
        _gate(pre, nt, F, g, gx, ge, gsc, approx)
        if m < n:
            np.dot(g[:nt], Wres[m - 1], h[:nt])
            for t in range(nt):
                i = idx[t]
                kk, Y, C = lk[i], lY[i], lC[i]
                dst = HS[m - 1, Y, C, kk]
                if m == 1:
                    for f in range(F):
                        dst[f] = h[t, f] + bres[m - 1, f]
                else:
                    prev = HS[m - 2, Y, C, kk]
                    for f in range(F):
                        dst[f] = h[t, f] + bres[m - 1, f] + prev[f]
        for t in range(nt):
            i = idx[t]
            for f in range(F):
                G[i, (m - 1) * F + f] = g[t, f]
    # ---- output layers and draws for lanes on sample voxels
    nt = _select(idx, lS, sub, lY, lC, 0, L, Hc, L, L + W)
    if nt == 0:
        return
    head_logits(G, idx, nt, Gd, so, o, lg, Wskip, bskip, W1, b1, W2)
    nc = lg.shape[1]
    for t in range(nt):
        i = idx[t]
        kk, P, Y, C = lk[i], lP[i], lY[i], lC[i]
        for c in range(nc):
            lgd[c] = np.float64(lg[t, c]) + np.float64(b2[c])
        chosen, lp = draw_pixel(lgd, beta, U[kk, P - L, Y - L, C - L])
        canvas[kk, P, Y, C] = chosen
        logp_out[kk, P - L, Y - L, C - L] = lp


@njit(cache=True, parallel=True)
def _run_steps3d(m0, m1, K, D, canvas, U, logp_out, caches, weights, geometry, beta, nchunks, approx):
    """Macro-steps m0 .. m1 - 1 (steps S m0 .. S m1 - 1)."""
    n, p, L, H, W, S = geometry
    Wres, W1, W2 = weights[12], weights[16], weights[18]
    ymin = cmin = 2 * p - L
    ny = L + H - ymin  # rows a plane's lanes visit
    span = L + W - cmin  # columns a lane visits
    lag, plag = row_lag(L, S), plane_lag(L, S)
    k = 2 * p + 1
    F = Wres.shape[1]
    So = W1.shape[0]
    nc = W2.shape[1]
    planes = min(D, (span + S + lag * (ny - 1)) // plag + 2)
    lanes = K * planes * (-(-(span + S) // lag) + 1)  # lanes active in a macro-step, at most
    maxl = (lanes // nchunks + 2) * S
    scratches = [_scratch(maxl, n, p, k, F, So, nc, caches[1].dtype) for _ in range(nchunks)]
    lk, lS, lY, lC, first = lane_arrays(lanes, S)
    lP = np.empty(lanes * S, np.int64)  # plane of each entry
    for mstep in range(m0, m1):
        t0 = mstep * S
        q = 0
        nl = 0
        for z in range(D):
            tt = t0 - plag * z  # step of the plane's first lane at sub-step 0
            if tt + S - 1 < 0:
                break
            y1 = min(ny, (tt + S - 1) // lag + 1)
            y0 = max(0, -((span - 1 - tt) // lag))
            for y in range(y0, y1):
                for kk in range(K):
                    q0 = q
                    q, nl = lane_entries(lk, lS, lY, lC, first, q, nl, kk, ymin + y, tt - lag * y, S, span, cmin)
                    lP[q0:q] = L + z
        first[nl] = q
        if nl == 0:
            continue
        nch = min(nchunks, nl)
        for ch in prange(nch):
            lo = first[ch * nl // nch]
            hi = first[(ch + 1) * nl // nch]
            _lanes_step3d(lk[lo:hi], lS[lo:hi], lP[lo:hi], lY[lo:hi], lC[lo:hi], canvas, U, logp_out, caches,
                          weights, geometry, beta, approx, scratches[ch])


@njit(cache=True)
def plane_lag(context_range, substeps):
    """Steps between a plane's lanes and the plane before's: (L + S)(L + 1) (the depth stack at row Y + L,
    column C + L of the plane before is drawn S steps before)."""
    return (context_range + substeps) * (context_range + 1)


def total_steps(depth: int, height: int, width: int, context_range: int, p: int, substeps: int | None = None) -> int:
    """Steps of the cached 3D sampler (see the module docstring); macro-steps are ceil(steps / S)."""
    S = SUBSTEPS if substeps is None else substeps
    ny = height + 2 * context_range - 2 * p
    span = width + 2 * context_range - 2 * p
    return plane_lag(context_range, S) * (depth - 1) + row_lag(context_range, S) * (ny - 1) + span


def planes_done(t: int, depth: int, height: int, width: int, context_range: int, p: int,
                substeps: int | None = None) -> int:
    """Planes completely drawn once steps 0..t are done."""
    S = SUBSTEPS if substeps is None else substeps
    last0 = total_steps(1, height, width, context_range, p, S) - 1  # the step of plane 0's last voxel
    return max(0, min(depth, (t - last0) // plane_lag(context_range, S) + 1))


def sample_pixelcnn3d_cached(model: GatedPixelCNN3D, n_samples: int, depth: int, height: int, width: int, *,
                             u: np.ndarray, top: np.ndarray, beta: float = 1.0, progress=None,
                             threads: int | None = None) -> SampleResult:
    """Exact volumes from a 3D Gated PixelCNN with cached activations (CPU).

    Parameters
    ----------
    model : GatedPixelCNN3D
        Computed in its floating-point precision (float32 models use the fast vectorised gates
        of the 2D kernel).
    n_samples, depth, height, width : int
        K, D, H, W.
    u : ndarray of float64, shape (K, D, H, W)
        The class uniforms (:mod:`mapsim.sampling.rng`, contract ``lines-v2``).
    top : ndarray of int, shape (K, L, H + 2L, W + 2L)
        The planes before the volume.
    beta : float
        Inverse temperature (checked by the caller).
    progress : callable, optional
        Called with the number of complete planes.
    threads : int, optional
        Threads of the lanes (default numba's thread count).

    Returns
    -------
    SampleResult
        ``grids`` (K, D, H, W) uint8, ``log_probs`` (K, D, H, W) float32, ``top``.
    """
    if getattr(model, "kind", None) != "pixelcnn3d" or model.device.type != "cpu":
        raise MapsimError(f"the cached 3D sampler needs a pixelcnn3d model on the CPU, found "
                          f"{getattr(model, 'kind', type(model).__name__)} on {getattr(model, 'device', 'cpu')}")
    K, D, H, W = n_samples, depth, height, width
    cfg = model.config
    n, p, F = cfg.layers, model.p, cfg.filters
    L = model.context_range
    dt = np.float64 if model.dtype == torch.float64 else np.float32
    w = _weights(model, dt)
    Hc, Wc = H + 2 * L, W + 2 * L
    nz = max(n - 1, 1)
    caches = (np.zeros((nz, p + 1, Hc, Wc, K, F), dt), np.zeros((n, Hc, Wc, K, 2 * F), dt),
              np.zeros((nz, Hc, Wc, K, F), dt), np.zeros((n, Hc, Wc, K, 2 * F), dt),
              np.zeros((nz, Hc, Wc, K, F), dt))
    _boundary_depth(model, np.asarray(top), caches[0])
    canvas = np.full((K, D + L, Hc, Wc), model.outside_class, np.uint8)
    canvas[:, :L] = top
    canvas[:, L:, L : L + H, L : L + W] = 0
    u = np.ascontiguousarray(u, dtype=np.float64)
    logp = np.zeros((K, D, H, W), np.float32)
    S = SUBSTEPS
    T = -(-total_steps(D, H, W, L, p, S) // S)  # macro-steps
    per_call = max(1, STEPS_PER_CALL // S)
    nthreads = threads or numba.get_num_threads()
    weights = tuple(w[name] for name in WEIGHT_NAMES)
    with kernel_threads(nthreads):
        for m0 in range(0, T, per_call):
            m1 = min(T, m0 + per_call)
            _run_steps3d(m0, m1, K, D, canvas, u, logp, caches, weights, (n, p, L, H, W, S), float(beta), nthreads,
                         dt == np.float32)
            if progress is not None:
                progress(planes_done(m1 * S - 1, D, H, W, L, p, S))
    return SampleResult(canvas[:, L:, L : L + H, L : L + W].copy(), logp, np.asarray(top))
