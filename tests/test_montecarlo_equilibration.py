"""The equilibration verdict on synthetic energy traces whose answer is known."""

import numpy as np
import pytest

from mapsim.montecarlo.equilibration import (
    equilibration_verdict,
    integrated_autocorrelation_time,
    trace_sweeps,
)


def _ar1(rng, n_chains, n, phi, drift=None):
    """AR(1) chains x_t = phi x_{t-1} + e_t started in equilibrium; tau_int = (1 + phi) / (1 - phi)."""
    x = np.empty((n_chains, n))
    x[:, 0] = rng.normal(size=n_chains) / np.sqrt(1 - phi**2)
    e = rng.normal(size=(n_chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x if drift is None else x + drift[None, :]


def test_trace_sweeps():
    assert trace_sweeps(100, 256).tolist() == list(range(101))
    assert trace_sweeps(1000, 4).tolist() == [0, 250, 500, 750, 1000]
    assert trace_sweeps(0, 256).tolist() == [0]


def test_autocorrelation_time_of_ar1():
    rng = np.random.default_rng(0)
    for phi in (0.0, 0.5, 0.8):
        tau = integrated_autocorrelation_time(_ar1(rng, 32, 4000, phi))
        assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.1)
    assert np.isnan(integrated_autocorrelation_time(np.ones((3, 50))))


def test_stationary_chains_pass_with_the_stated_false_alarm_rate():
    # 100 equilibrated runs (16 chains, 400 points, tau 3): at p < 1e-3 about 0.1 false alarm is
    # expected; 3 or more happen with probability 1.5e-4 (binomial), so this bound is robust
    rng = np.random.default_rng(1)
    at = trace_sweeps(1000, 400)
    verdicts = [equilibration_verdict(_ar1(rng, 16, at.size, 0.5), at) for _ in range(100)]
    assert sum(v.equilibrated is False for v in verdicts) <= 2
    v = verdicts[0]
    assert v.tau_sweeps == pytest.approx(3 * 2.5, rel=0.3) and v.last_half_sweeps == 500 and v.advice == ""


def test_drifting_chains_are_flagged_with_advice():
    rng = np.random.default_rng(2)
    at = trace_sweeps(1000, 400)
    # still relaxing: the quarter means differ by 0.07, ten times their standard error over 16 chains
    relax = np.exp(-at / 300.0)
    v = equilibration_verdict(0.1 * _ar1(rng, 16, at.size, 0.5) + relax, at, moves="local")
    assert v.equilibrated is False and v.p_value < 1e-3
    assert v.advice.startswith("warning:") and "moves=mixed" in v.advice and "\n" not in v.advice
    assert "NOT equilibrated" in v.summary()


def test_slow_chains_are_not_called_equilibrated():
    # stationary but tau (~40 sweeps) is too long for a 250-sweep last half to show anything
    rng = np.random.default_rng(3)
    at = trace_sweeps(500, 500)
    v = equilibration_verdict(_ar1(rng, 16, at.size, 0.95), at, moves="mixed")
    assert v.equilibrated is False and "autocorrelation times" in v.advice and "moves=mixed" not in v.advice


def test_too_little_data_is_not_judged():
    at = trace_sweeps(100, 100)
    v = equilibration_verdict(np.zeros((1, at.size)), at)
    assert v.equilibrated is None and "2 samples" in v.advice
    v = equilibration_verdict(np.zeros((4, at.size)), at)  # frozen (T = 0) chains: no drift at all
    assert v.equilibrated is True and v.p_value == 1.0 and v.tau_sweeps is None
