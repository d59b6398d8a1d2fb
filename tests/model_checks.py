"""Reusable checks that any :class:`mapsim.models.base.MapModel` must pass.

Usage from a test module (``tests/`` is on ``sys.path`` under pytest's default rootdir insertion)::

    from model_checks import check_autoregressive, check_crop_invariance, check_sampler_log_probs

    def test_my_model_is_autoregressive():
        check_autoregressive(make_my_model_with_random_weights())

Each check raises ``AssertionError`` with the offending pixel on failure.  Give
models non-trivial (random) weights: a model whose output ignores its input
passes every check trivially.
"""

from __future__ import annotations

import numpy as np
import torch

from mapsim.models.base import MapModel, causal_offsets
from mapsim.sampling.common import Boundary
from mapsim.sampling.reference import sample_reference

# Logits of unchanged pixels are compared with this tolerance (float32 models
# may regroup sums when other inputs change; a real leak moves logits by O(0.1)).
ATOL = 1e-5
RTOL = 1e-5


def random_inputs(model: MapModel, n_samples: int, height: int, width: int, seed: int = 0,
                  density: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random grids (B, H, W) and top boundary rows (B, L, W + 2L).

    Non-empty classes appear with total probability ``density``; the boundary
    rows hold every input class, outside included.
    """
    rng = np.random.default_rng(seed)
    C = model.n_classes
    occupied = rng.random((n_samples, height, width)) < density
    grids = np.where(occupied, rng.integers(1, C, (n_samples, height, width)), 0)
    L = model.context_range
    top = rng.integers(0, C + 1, (n_samples, L, width + 2 * L))
    dev = model.device
    return torch.as_tensor(grids, device=dev).long(), torch.as_tensor(top, device=dev).long()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # equal infinities count as equal; NaN never does
    both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    diff = torch.where(both_inf, torch.zeros_like(a), (a - b).abs())
    tol = ATOL + RTOL * torch.where(both_inf, torch.zeros_like(b), b.abs())
    return bool(torch.all(diff <= tol))


@torch.no_grad()
def check_autoregressive(model: MapModel, height: int = 5, width: int = 7, n_samples: int = 2, seed: int = 0,
                         locality: bool = True, max_positions: int | None = None) -> None:
    """Changing pixel p never changes the logits of pixels up to p in raster order.

    With ``locality`` also: it changes no logits of later pixels whose causal
    neighbourhood of range ``model.context_range`` does not contain p (so the
    declared L_c really bounds the context).

    Parameters
    ----------
    max_positions : int, optional
        Check only this many changed positions (spread over the grid); default all.
    """
    model.eval()
    grids, top = random_inputs(model, n_samples, height, width, seed)
    base = model.logits(grids, top)
    assert base.shape == (n_samples, model.n_classes, height, width), f"logits shape {tuple(base.shape)}"
    L = model.context_range
    neigh = set(causal_offsets(L))
    positions = [(i, j) for i in range(height) for j in range(width)]
    if max_positions is not None and len(positions) > max_positions:
        pick = np.linspace(0, len(positions) - 1, max_positions).round().astype(int)
        positions = [positions[k] for k in pick]
    for pi, pj in positions:
        changed = grids.clone()
        changed[:, pi, pj] = (changed[:, pi, pj] + 1) % model.n_classes
        out = model.logits(changed, top)
        for qi in range(height):
            for qj in range(width):
                before = (qi, qj) <= (pi, pj)
                outside_reach = (pi - qi, pj - qj) not in neigh
                if before or (locality and outside_reach):
                    assert _close(out[:, :, qi, qj], base[:, :, qi, qj]), (
                        f"{model.kind}: changing pixel {(pi, pj)} changed the logits of pixel {(qi, qj)} "
                        f"({'earlier in raster order' if before else f'beyond context range {L}'})")


@torch.no_grad()
def check_crop_invariance(model: MapModel, height: int = 5, width: int = 7, n_samples: int = 2, seed: int = 0) -> None:
    """Logits on any canvas crop holding a pixel's neighbourhood equal those on the full canvas.

    Checks the minimal crop (L+1, 2L+1) of every pixel and a few larger crops.
    """
    model.eval()
    grids, top = random_inputs(model, n_samples, height, width, seed)
    L = model.context_range
    canvas = model.make_canvas(grids, top)
    full = model(canvas)
    for i in range(height):
        for j in range(width):
            small = model(canvas[:, i : i + L + 1, j : j + 2 * L + 1])
            assert small.shape[2:] == (1, 1), f"{model.kind}: minimal crop gave logits of shape {tuple(small.shape)}"
            assert _close(small[:, :, 0, 0], full[:, :, i, j]), f"{model.kind}: minimal crop differs at pixel {(i, j)}"
    rng = np.random.default_rng(seed + 1)
    for _ in range(4):
        i0, i1 = sorted(rng.integers(0, height + 1, 2))
        j0, j1 = sorted(rng.integers(0, width + 1, 2))
        if i1 == i0 or j1 == j0:
            continue
        crop = model(canvas[:, i0 : i1 + L, j0 : j1 + 2 * L])
        assert _close(crop, full[:, :, i0:i1, j0:j1]), f"{model.kind}: crop rows {i0}:{i1} cols {j0}:{j1} differs"


def check_sampler_log_probs(model: MapModel, height: int = 4, width: int = 6, n_samples: int = 3, seed: int = 0,
                            boundary: Boundary | None = None, beta: float = 1.0, sampler=sample_reference) -> None:
    """The sampler's per-pixel log-probs equal the teacher-forced ones of the finished samples.

    The teacher-forced pass uses the boundary rows the sampler returns (``top``)
    and the same ``beta``.
    """
    model.eval()
    res = sampler(model, n_samples, height, width, seed=seed, beta=beta, boundary=boundary)
    assert res.grids.shape == (n_samples, height, width) and res.log_probs.shape == (n_samples, height, width)
    with torch.no_grad():
        lp = model.log_prob_pixels(torch.as_tensor(res.grids.astype(np.int64), device=model.device), beta=beta,
                                   top=torch.as_tensor(res.top, device=model.device)).cpu().double().numpy()
    assert np.all(np.isfinite(res.log_probs)), f"{model.kind}: the sampler drew a pixel of probability 0"
    np.testing.assert_allclose(res.log_probs, lp, atol=1e-5, rtol=1e-5,
                               err_msg=f"{model.kind}: sampler log-probs differ from teacher-forced ones")
