"""Has a Monte Carlo run equilibrated? A verdict from the samples' energy traces.

Each sample is an independent chain whose energy per site was recorded at
``trace_sweeps`` (:func:`trace_sweeps`). Two checks on the traces of one run:

* **drift**: per chain, the mean energy over the third quarter of the sweeps and over
  the last quarter; a paired t-test over chains of their difference. At equilibrium
  the two means have the same expectation, so p < ``ALPHA`` (1e-3: one false alarm in
  a thousand equilibrated runs) says the energy was still moving.
* **autocorrelation**: the integrated autocorrelation time of the energy over the last
  half (chain-averaged autocovariance, Sokal's window c = 5), in sweeps, when the last
  half holds at least ``MIN_ACF_POINTS`` trace points. A last half shorter than
  ``MIN_TAU_MULTIPLE`` autocorrelation times cannot show a drift reliably, so such a
  run is not called equilibrated either.

Runs with a schedule (annealing, a mu ramp) are not expected to be stationary; the
caller should not ask for a verdict on them (see :func:`mapsim.montecarlo.params.has_schedule`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Verdict", "equilibration_verdict", "integrated_autocorrelation_time", "trace_sweeps",
           "ALPHA", "MIN_ACF_POINTS", "MIN_TAU_MULTIPLE"]

ALPHA = 1e-3
MIN_ACF_POINTS = 100
MIN_TAU_MULTIPLE = 20


def trace_sweeps(sweeps: int, points: int) -> np.ndarray:
    """Sweeps after which the energy is recorded: 0, then ``min(points, sweeps)`` evenly spread to ``sweeps``.

    Returns
    -------
    ndarray of int64, shape (n_points,)
        Strictly increasing, first 0 and last ``sweeps``.
    """
    n = min(int(points), int(sweeps))
    return np.unique(np.round(np.linspace(0, sweeps, n + 1)).astype(np.int64))


def integrated_autocorrelation_time(x: np.ndarray, c: float = 5.0) -> float:
    """Integrated autocorrelation time of stationary chains, in steps of the series.

    Parameters
    ----------
    x : ndarray, shape (n_chains, n)
        One series per chain; the autocovariance is averaged over chains.
    c : float
        Sokal's window: the smallest lag M with M >= c * tau(M).

    Returns
    -------
    float
        tau = 1 + 2 sum_{t=1}^{M} rho(t) (1 for uncorrelated values); nan for constant series.
    """
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None]
    n = x.shape[1]
    d = x - x.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(d, size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n].mean(axis=0) / n
    if acov[0] <= 0:
        return float("nan")
    rho = acov / acov[0]
    tau = 2.0 * np.cumsum(rho) - 1.0
    window = np.arange(n) >= c * tau
    m = int(np.argmax(window)) if window.any() else n - 1
    return float(tau[m])


@dataclass
class Verdict:
    """Outcome of :func:`equilibration_verdict` (all fields JSON-ready).

    ``equilibrated`` is None when the run is too short or has too few chains to judge;
    ``advice`` is the one-line warning for a run that is not (or cannot be shown to be)
    equilibrated, empty otherwise.
    """

    equilibrated: bool | None
    p_value: float | None
    drift: float | None
    drift_se: float | None
    tau_sweeps: float | None
    last_half_sweeps: int
    n_chains: int
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, with_advice: bool = True) -> str:
        """One line for the user (the advice appended unless ``with_advice`` is False)."""
        if self.equilibrated is None:
            head = "equilibration: not judged"
        else:
            head = "equilibration: " + ("yes" if self.equilibrated else "NOT equilibrated")
        parts = []
        if self.p_value is not None:
            parts.append(f"energy drift third->last quarter {self.drift:+.3g} ± {self.drift_se:.2g} per site "
                         f"(paired t-test over {self.n_chains} samples, p = {self.p_value:.2g})")
        if self.tau_sweeps is not None:
            parts.append(f"autocorrelation time {self.tau_sweeps:.3g} sweeps "
                         f"(last half {self.last_half_sweeps} sweeps)")
        advice = f". {self.advice}" if self.advice and with_advice else ""
        return head + (" — " + "; ".join(parts) if parts else "") + advice


def equilibration_verdict(trace: np.ndarray, sweeps_at: np.ndarray, *, alpha: float = ALPHA,
                          moves: str = "local") -> Verdict:
    """Judge whether the chains whose energy traces are given had reached equilibrium.

    Parameters
    ----------
    trace : ndarray, shape (n_chains, n_points)
        Energy per site of each chain (sample) at ``sweeps_at``.
    sweeps_at : ndarray of int, shape (n_points,)
        Increasing sweep numbers, from 0 to the run's length.
    alpha : float
        Significance of the drift test (false-alarm rate on an equilibrated run).
    moves : str
        The run's move set, for the advice (local runs are told to use non-local moves).

    Returns
    -------
    Verdict
    """
    trace = np.asarray(trace, np.float64)
    sweeps_at = np.asarray(sweeps_at, np.int64)
    n_chains = trace.shape[0]
    total = int(sweeps_at[-1]) if sweeps_at.size else 0
    half = sweeps_at >= total / 2
    last_half = int(total - sweeps_at[half][0]) if half.any() else 0
    q3 = (sweeps_at >= total / 2) & (sweeps_at < 3 * total / 4)
    q4 = sweeps_at >= 3 * total / 4
    more = "raise sweeps" + ("" if moves != "local" else " or use --set moves=mixed (non-local jumps)")

    p = drift = se = None
    if n_chains >= 2 and q3.any() and q4.any():
        diff = trace[:, q4].mean(axis=1) - trace[:, q3].mean(axis=1)
        drift = float(diff.mean())
        se = float(diff.std(ddof=1) / np.sqrt(n_chains))
        if se > 0:
            from scipy import stats

            p = float(stats.ttest_1samp(diff, 0.0).pvalue)
        else:  # identical differences: no drift if all zero, else a certain one
            p = 1.0 if drift == 0 else 0.0
    tau = None
    if half.sum() >= MIN_ACF_POINTS:
        t = integrated_autocorrelation_time(trace[:, half])
        step = last_half / max(int(half.sum()) - 1, 1)
        tau = None if np.isnan(t) else float(t * step)

    if p is None:
        why = "needs at least 2 samples" if n_chains < 2 else "run too short"
        return Verdict(None, None, None, None, tau, last_half, n_chains, f"equilibration not judged ({why})")
    if p < alpha:
        advice = (f"warning: the energy still drifts (p = {p:.2g}); the samples are not at equilibrium — {more}")
        return Verdict(False, p, drift, se, tau, last_half, n_chains, advice)
    if tau is not None and last_half < MIN_TAU_MULTIPLE * tau:
        advice = (f"warning: the last half ({last_half} sweeps) is shorter than {MIN_TAU_MULTIPLE} autocorrelation "
                  f"times ({tau:.3g} sweeps each), too short to show equilibrium — {more}")
        return Verdict(False, p, drift, se, tau, last_half, n_chains, advice)
    return Verdict(True, p, drift, se, tau, last_half, n_chains, "")
