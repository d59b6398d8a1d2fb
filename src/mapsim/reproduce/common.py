"""Helpers shared by the pipeline and the report (so neither imports the other)."""

from __future__ import annotations

from typing import Any

import numpy as np


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars and arrays (anything else: its ``str``)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
