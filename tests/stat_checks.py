"""Sampled checks that do not pass only for their seeds.

A statistical check at significance alpha fails a correct implementation with
probability alpha, whatever the seed; one fixed seed only hides that.  So a
check runs on several independent seeds and fails when more than one of them
rejects: under the null that happens with probability
``false_alarm(len(seeds), alpha)`` (3 seeds at alpha = 0.01: 3.0e-4), which is
the check's stated false-alarm budget, while a real discrepancy rejects at
every seed.
"""

from __future__ import annotations

from typing import Sequence

SEEDS = (101, 202, 303)
"""Independent seeds of every multi-seed check (any other choice must pass as often)."""


def false_alarm(n_seeds: int, alpha: float) -> float:
    """P(more than one of ``n_seeds`` independent checks at level ``alpha`` rejects)."""
    return 1.0 - (1.0 - alpha) ** n_seeds - n_seeds * alpha * (1.0 - alpha) ** (n_seeds - 1)


def assert_rarely_rejected(rejected: Sequence[bool], alpha: float, detail: object = "") -> None:
    """Fail when more than one seed rejected (false-alarm budget :func:`false_alarm`)."""
    n = int(sum(bool(r) for r in rejected))
    assert n <= 1, (f"{n} of {len(rejected)} seeds rejected at level {alpha:g} "
                    f"(a correct implementation does this with probability {false_alarm(len(rejected), alpha):.1e}): "
                    f"{detail}")
