"""Cached, front-parallel exact sampler for the Gated PixelCNN (CPU, numba).

Every layer's activation at a canvas position is computed exactly once, and
pixels are drawn along a front (every row in flight at once, each pixel once
its context is drawn), all samples together.

Schedule.  A *lane* is one sample row (canvas row R = L + r of sample k).  At
step t lane R sits at canvas column C = t - (L+S) r + (2p - L) (with S = 1 the
anti-diagonal front of :mod:`mapsim.sampling.front`) and, for every layer
m = 1..n (p = kernel // 2, L = n p):

* computes the vertical stack v_m and its vertical-to-horizontal term at
  column C + (n - m) p (the vertical stack runs ahead: v_m needs v_{m-1} up to p
  columns further right, and the row above only up to column C + L, which the
  previous lane, L + S columns ahead, has drawn);
* computes the horizontal stack h_m at column C (it needs h_{m-1} at C-p..C);
* when C is a sample column (L <= C < L + W), applies the output layers and
  draws the pixel with the shared uniforms.

*Macro-steps.*  S consecutive steps (:data:`SUBSTEPS`) run together: the
vertical stacks of all lanes and all S steps layer by layer (each layer one
BLAS product over about S (L + 1) / (L + S) times as many rows as one step of
the S = 1 front; the weights, 1.7 MB at 20 layers x 32 filters, stream through
the cache once per S steps), then the horizontal stacks and the draws step by
step (h_1 reads the pixel drawn the step before).  The row lag of L + S makes
every value a lane reads from another lane come from an earlier macro-step, so
the lanes of a macro-step (each with all its steps) are independent and are
split across threads.

Lanes start at C = 2p - L so the leftmost vertical positions (inside the side
padding) are covered.  Rows above the sample (the boundary) are known, so their
vertical stacks are computed once, up front, with the model's own convolutions.
Caches are rings: p + 1 + ceil((W + 2L - 2p + S - 1) / (L + S)) rows (the lanes
in flight) of p (L + S + 2) + S + 1 columns of vertical activations
(:func:`vertical_window`; the p boundary rows above the sample are kept whole),
L + S columns of vertical-to-horizontal terms and p + 1 columns of horizontal
activations per lane; cache memory grows with W only through the number of
lanes, not with H.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numba
import numpy as np
import torch
from numba import njit, prange
# numba's np.dot calls the BLAS of scipy.linalg.cython_blas; load it now so that threadpool_limits
# below limits it too (loaded lazily by the first kernel call, it ran multi-threaded inside the
# parallel lanes: oversubscription and OpenBLAS 'OpenMP loop' warnings on a process's first call)
import scipy.linalg.cython_blas  # noqa: F401,E402
from threadpoolctl import threadpool_limits

from mapsim.models.pair_term import add_pair
from mapsim.models.pixelcnn import GatedPixelCNN, gate, pair_slots
from mapsim.sampling.common import Boundary, check_beta
from mapsim.sampling.draw import draw_pixel, draw_position, draw_position_joint
from mapsim.sampling.providers import top_offset_channels
from mapsim.sampling.reference import SampleResult, offsets_of, prepare
from mapsim.sampling.rng import POSITION, uniforms


def _weights(model: GatedPixelCNN, dt):
    """Repack the model's parameters as matrices for the kernel."""
    cfg = model.config
    n, p, k, F, S = cfg.layers, model.p, cfg.kernel, cfg.filters, cfg.out_width
    C0 = cfg.n_classes + 1

    def a(t):
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(dt))

    w = {}
    wv0 = model.v_convs[0].weight  # (2F, C0 (+ 2 offset channels), p, k)
    w["T1v"] = a(wv0[:, :C0].permute(2, 3, 1, 0).reshape(p * k, C0, 2 * F))
    w["b1v"] = a(model.v_convs[0].bias)
    wh0 = model.h_convs[0].weight  # (2F, C0 (+ 2), 1, p)
    w["T1h"] = a(wh0[:, :C0, 0, :].permute(2, 1, 0))  # (p, C0, 2F)
    nv = max(n - 1, 1)
    Wv = np.zeros(((p + 1) * k * F, 2 * F, nv), dt)
    bv = np.zeros((2 * F, nv), dt)
    Wh = np.zeros(((p + 1) * F, 2 * F, nv), dt)
    for m in range(1, n):
        Wv[:, :, m - 1] = a(model.v_convs[m].weight.permute(2, 3, 1, 0).reshape((p + 1) * k * F, 2 * F))
        bv[:, m - 1] = a(model.v_convs[m].bias)
        Wh[:, :, m - 1] = a(model.h_convs[m].weight[:, :, 0, :].permute(2, 1, 0).reshape((p + 1) * F, 2 * F))
    # layer-major contiguous blocks
    w["Wv"] = np.ascontiguousarray(Wv.transpose(2, 0, 1))
    w["bv"] = np.ascontiguousarray(bv.T)
    w["Wh"] = np.ascontiguousarray(Wh.transpose(2, 0, 1))
    w["Wvh"] = np.stack([a(model.v2h[m].weight[:, :, 0, 0].T) for m in range(n)])
    # the horizontal conv bias is folded into the vertical-to-horizontal term
    w["bvh"] = np.stack([a(model.v2h[m].bias + model.h_convs[m].bias) for m in range(n)])
    w.update(head_weights(model, a))
    # the position head (zero-size stand-ins for class-only models: one kernel signature for both)
    if cfg.positions:
        nb, occ = cfg.position_bins, cfg.n_classes - 1
        w["T1vo"] = a(wv0[:, C0:].permute(2, 3, 1, 0).reshape(p * k, 2, 2 * F))
        w["T1ho"] = a(wh0[:, C0:, 0, :].permute(2, 1, 0))  # (p, 2, 2F)
        # matrices (S, (N_c - 1) B) for one BLAS product over all atoms of a step; column (c - 1) B + b
        w["Wy"] = a(model.pos_y.weight.T)
        w["by"] = a(model.pos_y.bias)
        w["E"] = a(model.pos_embed.weight + model.pos_x_in.bias)  # (B, S): the projection's bias folded in
        w["Wx"] = a(model.pos_x.weight.T)
        w["bx"] = a(model.pos_x.bias)
        w["Ax"] = a(model.pos_x_in.weight.T)  # (S in, S out)
    else:
        w["T1vo"], w["T1ho"] = np.zeros((0, 2, 2 * F), dt), np.zeros((0, 2, 2 * F), dt)
        w["Wy"], w["Wx"] = np.zeros((S, 1), dt), np.zeros((S, 1), dt)
        w["by"], w["bx"] = np.zeros(1, dt), np.zeros(1, dt)
        w["E"] = np.zeros((1, S), dt)
        w["Ax"] = np.zeros((S, S), dt)
    return w


def _pair_weights(model: GatedPixelCNN) -> tuple:
    """(pair flag, W, slots, a_x / a_y, knots per pixel, joint flag) for :func:`_pair_positions` and
    :func:`_joint_class_terms`; float64 table (pairs of classes, knots + 2) ending in two zero knots;
    stand-ins of the same types without a pair term."""
    cfg = model.config
    if not getattr(cfg, "position_pairs", 0):
        return False, np.zeros((1, 2)), np.zeros((0, 2), np.int64), 1.0, 1.0, False
    table = np.ascontiguousarray(model.pair_table().detach().double().cpu().numpy())
    slots = np.array(pair_slots(cfg.position_pairs), np.int64).reshape(-1, 2)
    return (True, table, slots, cfg.pixel_size[1] / cfg.pixel_size[0], float(cfg.pair_knots),
            bool(getattr(cfg, "joint_pairs", False)))


def head_weights(model, a) -> dict:
    """The 1x1 layers after the stacks as matrices (2D and 3D models alike): residuals ``Wres`` (n, F, F),
    skips stacked ``Wskip`` (n F, S) with their biases summed, output layers ``W1`` (S, S), ``W2`` (S, N_c);
    ``a`` converts a tensor to the kernel's array type."""
    n = model.config.layers
    return {"Wres": np.stack([a(model.h_res[m].weight.flatten(1).T) for m in range(n)]),
            "bres": np.stack([a(model.h_res[m].bias) for m in range(n)]),
            "Wskip": a(torch.cat([model.skips[m].weight.flatten(1).T for m in range(n)], 0)),
            "bskip": a(sum(model.skips[m].bias for m in range(n))),
            "W1": a(model.out1.weight.flatten(1).T), "b1": a(model.out1.bias),
            "W2": a(model.out2.weight.flatten(1).T), "b2": a(model.out2.bias)}


@torch.no_grad()
def _boundary_vertical(model: GatedPixelCNN, top: np.ndarray, dt, top_channels: np.ndarray | None = None) -> np.ndarray:
    """Vertical activations of layers 1..n-1 on the last p boundary rows.

    ``top_channels`` (K, 2, L, Wc): offset channels of the boundary rows (models with positions;
    default 0, atoms at their pixel centres).

    Returns
    -------
    ndarray, shape (n-1, K, p, Wc, F)
        Layer m's activation at canvas rows L-p..L-1; columns outside the layer's
        valid range are zero (never read).
    """
    n, p, F = model.config.layers, model.p, model.config.filters
    K, L, Wc = top.shape
    out = np.zeros((max(n - 1, 1), K, p, Wc, F), dt)
    if n == 1:
        return out
    canvas = torch.as_tensor(top, dtype=torch.long)
    # boundary rows carry classes only: their offset channels are 0 (atoms at pixel centres)
    offs = None
    if model.positions:
        offs = (torch.zeros((K, 2, L, Wc), dtype=model.out2.weight.dtype) if top_channels is None
                else torch.as_tensor(top_channels, dtype=model.out2.weight.dtype))
    x = model.inputs(canvas, offs)
    v = gate(model.v_convs[0](x[:, :, :-1, :]))  # rows [p, L)
    for m in range(1, n):
        # v is layer m (1-based) at rows [m p, L), columns [m p, Wc - m p)
        out[m - 1, :, :, m * p : Wc - m * p, :] = v[:, :, -p:, :].permute(0, 2, 3, 1).numpy().astype(dt)
        if m < n - 1:
            v = gate(model.v_convs[m](v))
    return out


# Fast float32 exp for the gates: LLVM vectorises these loops, while libm's
# scalar tanh/exp would dominate the sampler's run time.  Relative error ~1e-7
# (float32 round-off); float64 models use exact math instead.
_FM = {"nnan", "ninf", "nsz", "contract", "afn", "arcp"}
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds to an integer
_XMAX = np.float32(88.0)
_XMIN = np.float32(-87.0)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_C2, _C3, _C4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
_C5, _C6 = np.float32(1 / 120), np.float32(1 / 720)
_AMAX, _GMIN, _QUARTER = np.float32(9.0), np.float32(-60.0), np.float32(0.25)
_T3, _T5, _T7, _T9 = np.float32(-1 / 3), np.float32(2 / 15), np.float32(-17 / 315), np.float32(62 / 2835)


@njit(cache=True, fastmath=_FM)
def _exp32(x, out, scale):
    """out = exp(x) for 1-D float32 arrays (range reduction + degree-6 polynomial)."""
    for i in range(x.size):
        v = min(max(x[i], _XMIN), _XMAX)
        kf = (v * _LOG2E + _MAGIC) - _MAGIC
        r = (v - kf * _LN2_HI) - kf * _LN2_LO
        out[i] = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * _C6)))))
        scale[i] = (np.int32(kf) + np.int32(127)) << np.int32(23)
    s = scale.view(np.float32)
    for i in range(x.size):
        out[i] *= s[i]


@njit(cache=True, fastmath=_FM)
def _gate_approx(a, nt, F, out, x, e, sc):
    """out[:nt] = tanh(a[:nt, :F]) * sigmoid(a[:nt, F:]) with the fast float32 exp (scratch x, e, sc).

    tanh(a) = (1 - e) / (1 + e) with e = exp(-2a), sigmoid(g) = 1 / (1 + e_g) with
    e_g = exp(-g), in one division.  Clamping a to [-9, 9] changes tanh by < 3e-8
    and g >= -60 only affects outputs below 1e-25, and it keeps (1 + e)(1 + e_g)
    below 1e34, far from float32 overflow.  For |a| < 1/4, 1 - e cancels, so the
    numerator comes from the Taylor series of tanh (error < 1e-8 there).
    """
    for i in range(nt):
        for f in range(F):
            x[i, f] = -_TWO * min(max(np.float32(a[i, f]), -_AMAX), _AMAX)
        for f in range(F, 2 * F):
            x[i, f] = -max(np.float32(a[i, f]), _GMIN)
    n2 = nt * 2 * F
    _exp32(x.ravel()[:n2], e.ravel()[:n2], sc[:n2])
    for i in range(nt):
        for f in range(F):
            av = np.float32(a[i, f])
            ep = _ONE + e[i, f]
            a2 = av * av
            series = av * (_ONE + a2 * (_T3 + a2 * (_T5 + a2 * (_T7 + a2 * _T9)))) * ep
            num = series if abs(av) < _QUARTER else _ONE - e[i, f]
            out[i, f] = num / (ep * (_ONE + e[i, F + f]))


@njit(cache=True)
def _gate_exact(a, nt, F, out):
    for i in range(nt):
        for f in range(F):
            out[i, f] = math.tanh(a[i, f]) / (1.0 + math.exp(-a[i, F + f]))


@njit(cache=True)
def _gate(a, nt, F, out, x, e, sc, approx):
    if approx:
        _gate_approx(a, nt, F, out, x, e, sc)
    else:
        _gate_exact(a, nt, F, out)


@njit(cache=True)
def gemm_bias(A, nt, Wm, b, out):
    """out[:nt] = A[:nt] Wm + b (one BLAS product over the lanes of a step)."""
    np.dot(A[:nt], Wm, out[:nt])
    for t in range(nt):
        for c in range(out.shape[1]):
            out[t, c] += b[c]


@njit(cache=True)
def project_and_gate(pre, nt, Wt, term, gated, g, gx, ge, gsc, approx):
    """term[:nt] = pre[:nt] Wt (a stack's 1x1 term for the next stack) and, if ``gated``,
    g[:nt] = gate(pre[:nt]) (the stack's output for the next layer)."""
    np.dot(pre[:nt], Wt, term[:nt])
    if gated:
        _gate(pre, nt, g.shape[1], g, gx, ge, gsc, approx)


@njit(cache=True)
def lane_scratch(maxl, n, F, S, nc, dt):
    """Work arrays of the gates and the output layers for ``maxl`` lanes (2D and 3D kernels):
    (gate output, three gate scratch arrays, residual, every layer's gate output G, its gathered
    rows, skip sum, features, logits, float64 logits of one lane)."""
    return (np.empty((maxl, F), dt), np.empty((maxl, 2 * F), np.float32), np.empty((maxl, 2 * F), np.float32),
            np.empty(maxl * 2 * F, np.int32), np.empty((maxl, F), dt), np.empty((maxl, n * F), dt),
            np.empty((maxl, n * F), dt), np.empty((maxl, S), dt), np.empty((maxl, S), dt),
            np.empty((maxl, nc), dt), np.empty(nc, np.float64))


@njit(cache=True)
def _scratch(maxl, n, p, k, F, S, nc, nb, nbo, dt, nj):
    """Work arrays of one thread, allocated once per call (not per step: large per-step
    allocations would be fresh pages, i.e. page faults, every step); ``nj`` lanes of joint
    class terms (``joint_pairs``; 1 otherwise)."""
    D = max((p + 1) * k * F, 1)
    idx = np.empty(maxl, np.int64)
    Av = np.empty((maxl, D), dt)
    vpre = np.empty((maxl, 2 * F), dt)
    vh = np.empty((maxl, 2 * F), dt)
    Ah = np.empty((maxl, (p + 1) * F), dt)
    hpre = np.empty((maxl, 2 * F), dt)
    ly = np.empty(nb, np.float64)
    pidx = np.empty(maxl, np.int64)  # the step's atoms: lane slot, class, bin of y, y, log-density
    pcls = np.empty(maxl, np.int64)
    pyb = np.empty(maxl, np.int64)
    py = np.empty(maxl, np.float64)
    pld = np.empty(maxl, np.float64)
    plc = np.empty(maxl, np.float64)  # the class log-probability, summed as the reference does
    Po = np.empty((maxl, S), dt)
    PL = np.empty((maxl, nbo), dt)
    PX = np.empty((maxl, S), dt)
    jscr = (np.empty((nj, max(nc - 1, 1), nb, nb), np.float64), np.empty((nj, nc), np.float64))
    return (idx, Av, vpre, vh, Ah, hpre, lane_scratch(maxl, n, F, S, nc, dt),
            (ly, pidx, pcls, pyb, py, pld, plc, Po, PL, PX), jscr)


@njit(cache=True)
def head_logits(G, idx, nt, Gd, so, o, lg, Wskip, bskip, W1, b1, W2):
    """Logits without the last bias, lg[:nt] = relu(relu(G[idx] Wskip + bskip) W1 + b1) W2, for the
    lanes ``idx[:nt]`` (rows of G: every layer's gate output); o[:nt] keeps the features (scratch Gd, so)."""
    for t in range(nt):
        Gd[t] = G[idx[t]]
    np.dot(Gd[:nt], Wskip, so[:nt])
    for t in range(nt):
        for c in range(so.shape[1]):
            so[t, c] = max(so[t, c] + bskip[c], 0.0)
    np.dot(so[:nt], W1, o[:nt])
    for t in range(nt):
        for c in range(o.shape[1]):
            o[t, c] = max(o[t, c] + b1[c], 0.0)
    np.dot(o[:nt], W2, lg[:nt])


@njit(cache=True)
def _draw_coordinate(logits_row, bias, c, ly, v):
    """One coordinate of an atom of class c from its row of head outputs (all classes' B bins)."""
    nb = ly.shape[0]
    off = (c - 1) * nb
    for b in range(nb):
        ly[b] = np.float64(logits_row[off + b]) + np.float64(bias[off + b])
    return draw_position(ly, v)


@njit(cache=True)
def _log_softmax_into(src, off, nb, out):
    """out[b] = log-softmax of src[off : off + nb] in float64."""
    mx = -np.inf
    for b in range(nb):
        mx = max(mx, np.float64(src[off + b]))
    tot = 0.0
    for b in range(nb):
        tot += math.exp(np.float64(src[off + b]) - mx)
    lse = mx + math.log(tot)
    for b in range(nb):
        out[b] = np.float64(src[off + b]) - lse


@njit(cache=True)
def _x_head(Po_row, pos_w, ax, hx, ox):
    """ox (B, (N_c - 1) B) = the x head's logits of every y bin, all classes, for features ``Po_row`` (1, S)."""
    Wy, by, E, Ax, Wx, bx = pos_w
    nb, S = E.shape
    np.dot(Po_row, Ax, ax)
    for b in range(nb):
        for q in range(S):
            hx[b, q] = max(ax[0, q] + E[b, q], 0.0)
    np.dot(hx, Wx, ox)
    for b in range(nb):
        for q in range(ox.shape[1]):
            ox[b, q] += bx[q]


@njit(cache=True)
def _pair_cells(J, PL_row, ox, c, kk, R, C, canvas, OC, pairs, ly, row):
    """J (B, B) = the joint log-weights of the cells for an atom of class c at canvas pixel (kk, R, C):
    y head ``PL_row`` (its biases added), x head ``ox`` (:func:`_x_head`), plus the pair sum over
    the atoms in the pair slots (``pairs`` as for :func:`_pair_positions`)."""
    Wp, slots, ratio, kpp = pairs
    nb = J.shape[0]
    occ = ox.shape[1] // nb
    _log_softmax_into(PL_row, (c - 1) * nb, nb, ly)
    for b in range(nb):
        _log_softmax_into(ox[b], (c - 1) * nb, nb, row)
        for q in range(nb):
            J[b, q] = ly[b] + row[q]
    for s in range(slots.shape[0]):
        rr, cc = R + slots[s, 0], C + slots[s, 1]
        cn = np.int64(canvas[kk, rr, cc])
        if cn < 1 or cn > occ:
            continue
        ny = slots[s, 0] + np.float64(OC[kk, rr, cc, 0]) + 0.5
        nx = slots[s, 1] + np.float64(OC[kk, rr, cc, 1]) + 0.5
        add_pair(J, Wp[(c - 1) * occ + cn - 1], ny, nx, ratio, kpp)


@njit(cache=True)
def _head_work(nb, S, nbo, dt):
    """Scratch of :func:`_x_head` and :func:`_pair_cells`: (ax, hx, ox, row)."""
    return np.empty((1, S), dt), np.empty((nb, S), dt), np.empty((nb, nbo), dt), np.empty(nb, np.float64)


@njit(cache=True)
def _pair_positions(nocc, pscr, pos_w, idx, lk, lR, lC, L, VP, pos_out, OC, logp_out, canvas, pairs):
    """The step's atoms for a position density with a pair term (``position_pairs`` of
    :mod:`mapsim.models.pixelcnn`): per atom the joint log-weights of the B x B cells (y head,
    x head for every y bin, pair sum over the atoms in the pair slots), drawn by
    :func:`mapsim.sampling.draw.draw_position_joint`.  ``pairs`` = (W (pairs of classes,
    knots + 2) with two zero knots, slots (M, 2), aspect a_x / a_y, knots per pixel)."""
    ly, pidx, pcls, pyb, py, pld, plc, Po, PL, PX = pscr
    Wy, by, E, Ax, Wx, bx = pos_w
    nb = E.shape[0]
    J = np.empty((nb, nb), np.float64)
    ax, hx, ox, row = _head_work(nb, Po.shape[1], Wx.shape[1], Po.dtype)
    np.dot(Po[:nocc], Wy, PL[:nocc])
    for a in range(nocc):
        i = idx[pidx[a]]
        kk, R, C = lk[i], lR[i], lC[i]
        for q in range(PL.shape[1]):
            PL[a, q] += by[q]
        _x_head(Po[a : a + 1], pos_w, ax, hx, ox)
        _pair_cells(J, PL[a], ox, pcls[a], kk, R, C, canvas, OC, pairs, ly, row)
        _, y, _, x, ld = draw_position_joint(J, VP[kk, R - L, C - L, 0], VP[kk, R - L, C - L, 1], row)
        pos_out[kk, R - L, C - L, 0] = y
        pos_out[kk, R - L, C - L, 1] = x
        OC[kk, R, C, 0] = y - 0.5
        OC[kk, R, C, 1] = x - 0.5
        logp_out[kk, R - L, C - L] = plc[a] + ld


@njit(cache=True)
def _logsumexp2(J):
    """log sum exp of a 2-D float64 array."""
    mx = -np.inf
    for b in range(J.shape[0]):
        for q in range(J.shape[1]):
            mx = max(mx, J[b, q])
    if mx == -np.inf:
        return mx
    tot = 0.0
    for b in range(J.shape[0]):
        for q in range(J.shape[1]):
            tot += math.exp(J[b, q] - mx)
    return mx + math.log(tot)


@njit(cache=True)
def _joint_class_terms(nt, o, idx, lk, lR, lC, lgd_all, canvas, OC, pos_w, pairs, Jc, PL, ly):
    """``joint_pairs`` (:mod:`mapsim.models.pixelcnn`): lgd_all[t, c] += log Z_c for the lanes
    ``idx[:nt]`` with features o[:nt] and every occupied class c; Jc[t, c - 1] keeps each class's
    cells for the position draw."""
    Wy, by, E, Ax, Wx, bx = pos_w
    nb = E.shape[0]
    ax, hx, ox, row = _head_work(nb, o.shape[1], Wx.shape[1], o.dtype)
    np.dot(o[:nt], Wy, PL[:nt])
    for t in range(nt):
        i = idx[t]
        for q in range(PL.shape[1]):
            PL[t, q] += by[q]
        _x_head(o[t : t + 1], pos_w, ax, hx, ox)
        for c in range(1, lgd_all.shape[1]):
            _pair_cells(Jc[t, c - 1], PL[t], ox, c, lk[i], lR[i], lC[i], canvas, OC, pairs, ly, row)
            lgd_all[t, c] += _logsumexp2(Jc[t, c - 1])


@njit(cache=True)
def _position_heads(nocc, pscr, pos_w, idx, lk, lR, lC, L, VP, pos_out, OC, logp_out):
    """Draw the positions of the step's ``nocc`` new atoms: y, then x given y (the head of
    :mod:`mapsim.models.pixelcnn`), with one BLAS product per layer of the head over all atoms.

    ``pscr`` holds their lane slots, classes, class log-probabilities and features ``Po``
    (nocc, S); ``pos_w`` =
    (Wy (S, (N_c-1) B), by, E (B, S) with the projection bias, Ax (S, S), Wx, bx).
    """
    ly, pidx, pcls, pyb, py, pld, plc, Po, PL, PX = pscr
    Wy, by, E, Ax, Wx, bx = pos_w
    S = Po.shape[1]
    np.dot(Po[:nocc], Wy, PL[:nocc])
    for a in range(nocc):
        i = idx[pidx[a]]
        pyb[a], py[a], pld[a] = _draw_coordinate(PL[a], by, pcls[a], ly, VP[lk[i], lR[i] - L, lC[i] - L, 0])
    np.dot(Po[:nocc], Ax, PX[:nocc])
    for a in range(nocc):
        for q in range(S):
            PX[a, q] = max(PX[a, q] + E[pyb[a], q], 0.0)
    np.dot(PX[:nocc], Wx, PL[:nocc])
    for a in range(nocc):
        i = idx[pidx[a]]
        kk, R, C = lk[i], lR[i], lC[i]
        xb, x, ldx = _draw_coordinate(PL[a], bx, pcls[a], ly, VP[kk, R - L, C - L, 1])
        pos_out[kk, R - L, C - L, 0] = py[a]
        pos_out[kk, R - L, C - L, 1] = x
        OC[kk, R, C, 0] = py[a] - 0.5
        OC[kk, R, C, 1] = x - 0.5
        logp_out[kk, R - L, C - L] = plc[a] + (pld[a] + ldx)


@njit(cache=True)
def _lanes_macro(lk, lS, lR, lC, canvas, U, logp_out, caches, weights, geometry, beta, approx, scratch,
                 pos_state):
    """Advance the given lanes by the S sub-steps of one macro-step (see the module docstring): the vertical
    stacks of every entry (lane, sub-step) layer by layer, each layer one BLAS product, then the horizontal
    stacks and the draws sub-step by sub-step (:func:`_horizontal_and_draw`).  Entry i is lane row lR[i]
    of sample lk[i] at column lC[i] and sub-step lS[i]; every sub-step of a lane is in the same call.

    ``caches`` = (V, VH, HS, Vb), ``weights`` as :data:`WEIGHT_NAMES`, ``geometry`` =
    (n, p, L, W, RB, RV, CW, S).  Classes are drawn by :func:`mapsim.sampling.draw.draw_pixel`.
    ``pos_state`` = (positions flag, offset canvas OC (K, H + L, W + 2L, 2) holding offset - 0.5
    of drawn atoms and 0 elsewhere, position uniforms (K, H, W, 2), positions out (K, H, W, 2),
    pair flag, the four pair weights of :func:`_pair_positions` and the ``joint_pairs`` flag, flat:
    numba's parallel loops take no nested tuples);
    positions by :func:`mapsim.sampling.draw.draw_position`.
    """
    V, VH, HS, Vb = caches
    (T1v, b1v, T1h, Wv, bv, Wh, Wvh, bvh, Wres, bres, Wskip, bskip, W1, b1, W2, b2,
     T1vo, T1ho, Wy, by, E, Wx, bx, Ax) = weights
    with_pos, OC = pos_state[0], pos_state[1]
    n, p, L, W, RB, RV, CW, S = geometry
    idx, Av, vpre, vh, Ah, hpre, common, _, _ = scratch
    gbuf, gx, ge, gsc = common[0], common[1], common[2], common[3]
    nl = lk.shape[0]
    k = 2 * p + 1
    F = Wres.shape[1]
    Wc = canvas.shape[2]
    # ---- vertical stack, running ahead
    for m in range(1, n + 1):
        nt = 0
        for i in range(nl):
            cv = lC[i] + (n - m) * p
            if cv >= m * p and cv < Wc - m * p:
                idx[nt] = i
                nt += 1
        if nt == 0:
            continue
        if m == 1:
            for t in range(nt):
                i = idx[t]
                kk, R, cv = lk[i], lR[i], lC[i] + (n - 1) * p
                for c in range(2 * F):
                    vpre[t, c] = b1v[c]
                for dr in range(p):
                    for dc in range(k):
                        cls = canvas[kk, R - p + dr, cv - p + dc]
                        row = T1v[dr * k + dc, cls]
                        for c in range(2 * F):
                            vpre[t, c] += row[c]
                        if with_pos:
                            oy = OC[kk, R - p + dr, cv - p + dc, 0]
                            ox = OC[kk, R - p + dr, cv - p + dc, 1]
                            if oy != 0 or ox != 0:
                                wy, wx = T1vo[dr * k + dc, 0], T1vo[dr * k + dc, 1]
                                for c in range(2 * F):
                                    vpre[t, c] += oy * wy[c] + ox * wx[c]
        else:
            for t in range(nt):
                i = idx[t]
                kk, R, cv = lk[i], lR[i], lC[i] + (n - m) * p
                q = 0
                for dr in range(p + 1):
                    r = R - p + dr
                    for dc in range(k):
                        if r < L:  # a boundary row: kept whole width
                            src = Vb[m - 2, r - (L - p), cv - p + dc, kk]
                        else:
                            src = V[m - 2, r % RB, (cv - p + dc) % CW, kk]
                        for f in range(F):
                            Av[t, q] = src[f]
                            q += 1
            gemm_bias(Av, nt, Wv[m - 2], bv[m - 2], vpre)
        project_and_gate(vpre, nt, Wvh[m - 1], vh, m < n, gbuf, gx, ge, gsc, approx)
        for t in range(nt):
            i = idx[t]
            kk, slot, cv = lk[i], lR[i] % RB, lC[i] + (n - m) * p
            dst = VH[m - 1, slot, cv % RV, kk]
            for c in range(2 * F):
                dst[c] = vh[t, c] + bvh[m - 1, c]
            if m < n:
                for f in range(F):
                    V[m - 1, slot, cv % CW, kk, f] = gbuf[t, f]
    for sub in range(S):
        _horizontal_and_draw(sub, lk, lS, lR, lC, canvas, U, logp_out, caches, weights, geometry, beta, approx,
                             scratch, pos_state)


@njit(cache=True)
def _horizontal_and_draw(sub, lk, lS, lR, lC, canvas, U, logp_out, caches, weights, geometry, beta, approx,
                         scratch, pos_state):
    """The horizontal stacks and the draws of the entries of sub-step ``sub`` (in order: h_1 reads the
    pixel its lane drew at the sub-step before)."""
    VH, HS = caches[1], caches[2]
    (T1v, b1v, T1h, Wv, bv, Wh, Wvh, bvh, Wres, bres, Wskip, bskip, W1, b1, W2, b2,
     T1vo, T1ho, Wy, by, E, Wx, bx, Ax) = weights
    with_pos, OC, VP, pos_out, with_pairs, Wp, slots, ratio, kpp, joint = pos_state
    n, p, L, W, RB, RV, CW, S = geometry
    idx, Av, vpre, vh, Ah, hpre, common, pscr, jscr = scratch
    gbuf, gx, ge, gsc, h, G, Gd, so, o, lg, lgd = common
    nl = lk.shape[0]
    F = Wres.shape[1]
    # ---- horizontal stack at column C
    for m in range(1, n + 1):
        nt = 0
        for i in range(nl):
            if lS[i] == sub and lC[i] >= m * p and lC[i] < L + W:
                idx[nt] = i
                nt += 1
        if nt == 0:
            continue
        if m == 1:
            for t in range(nt):
                i = idx[t]
                kk, R, C = lk[i], lR[i], lC[i]
                src = VH[0, R % RB, C % RV, kk]
                for c in range(2 * F):
                    hpre[t, c] = src[c]
                for w in range(p):
                    row = T1h[w, canvas[kk, R, C - p + w]]
                    for c in range(2 * F):
                        hpre[t, c] += row[c]
                    if with_pos:
                        oy, ox = OC[kk, R, C - p + w, 0], OC[kk, R, C - p + w, 1]
                        if oy != 0 or ox != 0:
                            wy, wx = T1ho[w, 0], T1ho[w, 1]
                            for c in range(2 * F):
                                hpre[t, c] += oy * wy[c] + ox * wx[c]
        else:
            for t in range(nt):
                i = idx[t]
                kk, slot, C = lk[i], lR[i] % RB, lC[i]
                for w in range(p + 1):
                    src = HS[m - 2, slot, (C - p + w) % (p + 1), kk]
                    for f in range(F):
                        Ah[t, w * F + f] = src[f]
            np.dot(Ah[:nt], Wh[m - 2], hpre[:nt])
            for t in range(nt):
                i = idx[t]
                src = VH[m - 1, lR[i] % RB, lC[i] % RV, lk[i]]
                for c in range(2 * F):
                    hpre[t, c] += src[c]
        _gate(hpre, nt, F, gbuf, gx, ge, gsc, approx)
        if m < n:
            np.dot(gbuf[:nt], Wres[m - 1], h[:nt])
            for t in range(nt):
                i = idx[t]
                kk, slot, C = lk[i], lR[i] % RB, lC[i]
                dst = HS[m - 1, slot, C % (p + 1), kk]
                if m == 1:
                    for f in range(F):
                        dst[f] = h[t, f] + bres[m - 1, f]
                else:
                    prev = HS[m - 2, slot, C % (p + 1), kk]
                    for f in range(F):
                        dst[f] = h[t, f] + bres[m - 1, f] + prev[f]
        for t in range(nt):
            i = idx[t]
            for f in range(F):
                G[i, (m - 1) * F + f] = gbuf[t, f]
    # ---- output layers and draws for lanes on sample columns
    nt = 0
    for i in range(nl):
        if lS[i] == sub and lC[i] >= L and lC[i] < L + W:
            idx[nt] = i
            nt += 1
    if nt == 0:
        return
    head_logits(G, idx, nt, Gd, so, o, lg, Wskip, bskip, W1, b1, W2)
    nc = lg.shape[1]
    pidx, pcls, plc, Po = pscr[1], pscr[2], pscr[6], pscr[7]
    Jc, LG = jscr
    if joint:
        for t in range(nt):
            for c in range(nc):
                LG[t, c] = np.float64(lg[t, c]) + np.float64(b2[c])
        _joint_class_terms(nt, o, idx, lk, lR, lC, LG, canvas, OC, (Wy, by, E, Ax, Wx, bx), (Wp, slots, ratio, kpp),
                           Jc, pscr[8], pscr[0])
    nocc = 0
    for t in range(nt):
        i = idx[t]
        kk, R, C = lk[i], lR[i], lC[i]
        for c in range(nc):
            lgd[c] = LG[t, c] if joint else np.float64(lg[t, c]) + np.float64(b2[c])
        chosen, lp = draw_pixel(lgd, beta, U[kk, R - L, C - L])
        canvas[kk, R, C] = chosen
        logp_out[kk, R - L, C - L] = lp
        if joint and chosen > 0:
            _, y, _, x, ld = draw_position_joint(Jc[t, chosen - 1], VP[kk, R - L, C - L, 0], VP[kk, R - L, C - L, 1],
                                                 pscr[0])
            pos_out[kk, R - L, C - L, 0] = y
            pos_out[kk, R - L, C - L, 1] = x
            OC[kk, R, C, 0] = y - 0.5
            OC[kk, R, C, 1] = x - 0.5
            logp_out[kk, R - L, C - L] = lp + ld
        elif with_pos and chosen > 0:
            pidx[nocc], pcls[nocc], plc[nocc] = t, chosen, lp
            for q in range(o.shape[1]):
                Po[nocc, q] = o[t, q]
            nocc += 1
    if nocc > 0 and with_pairs:
        _pair_positions(nocc, pscr, (Wy, by, E, Ax, Wx, bx), idx, lk, lR, lC, L, VP, pos_out, OC, logp_out,
                        canvas, (Wp, slots, ratio, kpp))
    elif nocc > 0:
        _position_heads(nocc, pscr, (Wy, by, E, Ax, Wx, bx), idx, lk, lR, lC, L, VP, pos_out, OC, logp_out)


@njit(cache=True, parallel=True)
def _run_steps(m0, m1, K, H, canvas, U, logp_out, caches, weights, geometry, beta, nchunks, approx,
               pos_state):
    """Macro-steps m0 .. m1 - 1 (steps S m0 .. S m1 - 1)."""
    n, p, L, W, RB, RV, CW, S = geometry
    Wres, W1, W2 = weights[8], weights[12], weights[14]
    V = caches[0]
    cmin = 2 * p - L
    span = L + W - cmin  # columns a lane visits
    lag = row_lag(L, S)
    k = 2 * p + 1
    F = Wres.shape[1]
    So = W1.shape[0]
    nc = W2.shape[1]
    nb = weights[20].shape[0]  # E: (B, S)
    nbo = weights[18].shape[1]  # Wy: (S, (N_c - 1) B)
    lanes = K * (-(-(span + S - 1) // lag) + 1)  # lanes active in a macro-step, at most
    maxl = (lanes // nchunks + 2) * S
    nj = lanes // nchunks + 2 if pos_state[9] else 1  # lanes of one sub-step
    scratches = [_scratch(maxl, n, p, k, F, So, nc, nb, nbo, V.dtype, nj) for _ in range(nchunks)]
    lk, lS, lR, lC, first = lane_arrays(lanes, S)
    for mstep in range(m0, m1):
        t0 = mstep * S
        r1 = min(H, (t0 + S - 1) // lag + 1)
        r0 = max(0, -((span - 1 - t0) // lag))
        q = 0
        nl = 0
        for r in range(r0, r1):
            for kk in range(K):
                q, nl = lane_entries(lk, lS, lR, lC, first, q, nl, kk, L + r, t0 - lag * r, S, span, cmin)
        first[nl] = q
        if nl == 0:
            continue
        nch = min(nchunks, nl)
        if nch == 1:  # no parallel region: entering one per macro-step costs as much as the step on one thread
            _lanes_macro(lk[:q], lS[:q], lR[:q], lC[:q], canvas, U, logp_out, caches, weights, geometry, beta,
                         approx, scratches[0], pos_state)
            continue
        for ch in prange(nch):
            lo = first[ch * nl // nch]
            hi = first[(ch + 1) * nl // nch]
            _lanes_macro(lk[lo:hi], lS[lo:hi], lR[lo:hi], lC[lo:hi], canvas, U, logp_out, caches, weights,
                         geometry, beta, approx, scratches[ch], pos_state)


@njit(cache=True)
def lane_arrays(lanes, S):
    """Entry arrays of :func:`lane_entries` for ``lanes`` lanes of ``S`` sub-steps (2D and 3D kernels):
    sample, sub-step, row, column of each entry, and ``first`` (entries of lane j: first[j] .. first[j + 1] - 1)."""
    return (np.empty(lanes * S, np.int64), np.empty(lanes * S, np.int64), np.empty(lanes * S, np.int64),
            np.empty(lanes * S, np.int64), np.empty(lanes + 1, np.int64))


@njit(cache=True)
def lane_entries(lk, lS, lR, lC, first, q, nl, kk, row, c0, S, span, cmin):
    """Append lane ``row`` of sample ``kk`` as entries q, q + 1, ... (one per sub-step whose column c0 + sub
    lies in [0, span); canvas column c0 + sub + cmin) and record its first entry as lane nl; (q, nl) after."""
    first[nl] = q
    for sub in range(S):
        c = c0 + sub
        if c >= 0 and c < span:
            lk[q] = kk
            lS[q] = sub
            lR[q] = row
            lC[q] = c + cmin
            q += 1
    return q, nl + 1 if q > first[nl] else nl


@njit(cache=True)
def row_lag(context_range, substeps):
    """Steps between a row's lane and the row above's: L + S (the S sub-steps of a macro-step are batched,
    so a lane reads only what the row above drew in earlier macro-steps)."""
    return context_range + substeps


WEIGHT_NAMES = ("T1v", "b1v", "T1h", "Wv", "bv", "Wh", "Wvh", "bvh", "Wres", "bres", "Wskip", "bskip",
                "W1", "b1", "W2", "b2", "T1vo", "T1ho", "Wy", "by", "E", "Wx", "bx", "Ax")
"""Order of the repacked weights passed to the kernel."""

STEPS_PER_CALL = 64
"""Front steps per compiled call (progress is reported between calls)."""

SUBSTEPS = 16
"""S: front steps whose vertical stacks are computed together (each layer one BLAS product over about
S (L + 1) / (L + S) times as many rows; the weights then stream through the cache S times less often).
The row lag grows from L + 1 to L + S steps (:func:`row_lag`); S = 1 is the plain front schedule.  A call
uses at most this many (:func:`substeps_for`)."""

MACRO_ROWS = 512
"""Most rows (samples x lanes x sub-steps) of a macro-step's vertical products.  Many samples already give
large products at S = 1 (64 x 256^2: 896 rows a step); S = 16 there made 9,216-row work arrays and was 6 %
slower per CPU-second, while one 1024^2 sample (480 rows at S = 16) was 1.2x faster."""


def lanes_in_flight(width: int, context_range: int, p: int, substeps: int) -> int:
    """Lanes (rows) of one sample active in a macro-step, at most."""
    return -(-(width + 2 * context_range - 2 * p + substeps - 1) // (context_range + substeps)) + 1


def substeps_for(n_samples: int, width: int, context_range: int, p: int) -> int:
    """S for a call: :data:`SUBSTEPS`, less while n_samples x lanes x S exceeds :data:`MACRO_ROWS` (never
    below 1)."""
    S = SUBSTEPS
    while S > 1 and n_samples * lanes_in_flight(width, context_range, p, S) * S > MACRO_ROWS:
        S -= 1
    return S


@contextmanager
def kernel_threads(nthreads: int):
    """Run a cached kernel's lanes on ``nthreads`` numba threads with one-thread BLAS inside them
    (the lanes are already split across threads: threaded BLAS inside them oversubscribes the cores)."""
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(nthreads, numba.config.NUMBA_NUM_THREADS)))
    blas_limit = threadpool_limits(1, user_api="blas")
    try:
        yield
    finally:
        numba.set_num_threads(old)
        blas_limit.restore_original_limits()


def vertical_window(context_range: int, p: int, substeps: int = 1) -> int:
    """Columns of the vertical-stack ring kept per row.

    Layer m's vertical activation at row R, column c is written by lane R when
    it is (n - m) p columns behind c and read last by lane R + p, which runs
    p (L + S) columns behind lane R and reads up to 2p columns further left;
    within a macro-step lane R writes up to S - 1 columns further right while
    lane R + p (maybe on another thread) reads, so p (L + S + 2) + S columns
    are live at a time (one more for safety; S = 1: p (L + 3) + 2).
    Memory per row is then independent of the width.
    """
    return p * (context_range + substeps + 2) + substeps + 1


def total_steps(height: int, width: int, context_range: int, p: int, substeps: int = 1) -> int:
    """Steps of the cached sampler: the row lag L + S (:func:`row_lag`) times H - 1 plus the
    W + 2L - 2p columns a lane visits (lanes start 2L - 2p columns before the sample); macro-steps are
    ceil(steps / S)."""
    return (context_range + substeps) * (height - 1) + width + 2 * context_range - 2 * p


def rows_finished(t: int, height: int, width: int, context_range: int, p: int, substeps: int = 1) -> int:
    """Rows completely drawn once steps 0..t are done."""
    span = width + 2 * context_range - 2 * p
    return max(0, min(height, (t - span + 1) // (context_range + substeps) + 1))


def sample_pixelcnn_cached(model: GatedPixelCNN, n_samples: int, height: int, width: int, *, seed=0,
                           beta: float = 1.0, boundary: Boundary | None = None, u: np.ndarray | None = None,
                           top: np.ndarray | None = None, progress=None, threads: int | None = None,
                           v: np.ndarray | None = None, top_offsets: np.ndarray | None = None) -> SampleResult:
    """Exact samples from a Gated PixelCNN with cached activations (CPU).

    Same contract as :func:`mapsim.sampling.reference.sample_reference` (``progress``
    is called with the number of rows finished); computes in the model's
    floating-point precision (float32 models use fast vectorised gates).  ``threads`` defaults to numba's
    thread count.  Models with positions: ``v`` (K, H, W, 2) explicit position uniforms and
    ``top_offsets`` (K, L, W + 2L, 2) the positions of the boundary atoms, as for the reference sampler.
    """
    beta = check_beta(beta)
    K, H, W = n_samples, height, width
    cfg = model.config
    n, p, F = cfg.layers, model.p, cfg.filters
    L = model.context_range
    u, top, entropy = prepare(model, K, H, W, seed, boundary, u, top, with_entropy=True)
    dt = np.float64 if model.dtype == torch.float64 else np.float32
    w = _weights(model, dt)
    Wc = W + 2 * L
    S = substeps_for(K, W, L, p)
    # rows in flight: those of a macro-step's lanes and the p rows above them that they read
    lanes_max = -(-(W + 2 * L - 2 * p + S - 1) // (L + S))
    RB = p + 1 + lanes_max
    RV = L + S  # vertical-to-horizontal terms: written up to (n - 1) p + S - 1 columns ahead of the lane
    nv = max(n - 1, 1)
    CW = vertical_window(L, p, S)
    # sample index next to the channels: the lanes of one row, all samples, are processed together
    V = np.zeros((nv, RB, CW, K, F), dt)
    VH = np.zeros((n, RB, RV, K, 2 * F), dt)
    HS = np.zeros((nv, RB, p + 1, K, F), dt)
    top_ch = None
    if model.positions and top_offsets is not None and L:
        top_ch = top_offset_channels(top_offsets)  # (K, 2, L, Wc)
    Vb = np.ascontiguousarray(_boundary_vertical(model, top, dt, top_ch).transpose(0, 2, 3, 1, 4))  # (nv, p, Wc, K, F)
    canvas = np.full((K, H + L, Wc), model.outside_class, np.uint8)
    canvas[:, :L, :] = top
    canvas[:, L:, L : L + W] = 0
    logp = np.zeros((K, H, W), np.float32)
    if model.positions:
        OC = np.zeros((K, H + L, Wc, 2), dt)
        if top_ch is not None:
            OC[:, :L] = top_ch.transpose(0, 2, 3, 1)
        # C order: a sliced block of uniforms must not compile another kernel signature
        VP = uniforms(entropy, K, H, W, stream=POSITION, ndim=2) if v is None else np.ascontiguousarray(v, np.float64)
        if VP.shape != (K, H, W, 2):
            raise ValueError(f"position uniforms must have shape {(K, H, W, 2)}, found {VP.shape}")
        pos = np.full((K, H, W, 2), np.nan)
    else:  # stand-ins of the same types: class-only models never make the position stream
        OC, VP, pos = np.zeros((1, 1, 1, 2), dt), np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2))
    pos_state = (bool(model.positions), OC, VP, pos) + _pair_weights(model)
    T = -(-total_steps(H, W, L, p, S) // S)  # macro-steps
    per_call = max(1, STEPS_PER_CALL // S)
    nthreads = threads or numba.get_num_threads()
    weights = tuple(w[name] for name in WEIGHT_NAMES)
    geometry = (n, p, L, W, RB, RV, CW, S)
    with kernel_threads(nthreads):
        for m0 in range(0, T, per_call):
            m1 = min(T, m0 + per_call)
            _run_steps(m0, m1, K, H, canvas, u, logp, (V, VH, HS, Vb), weights, geometry, float(beta), nthreads,
                       dt == np.float32, pos_state)
            if progress is not None:
                progress(rows_finished(m1 * S - 1, H, W, L, p, S))
    grids = canvas[:, L:, L : L + W].copy()
    return SampleResult(grids, logp, top, offsets_of(pos) if model.positions else None)
