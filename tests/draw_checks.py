"""Replace one of the draw rules of :mod:`mapsim.sampling.draw` in every compiled backend.

The backends import the rule by name and numba compiles it into them, so the
rule is replaced where each backend looks it up, and every compiled function
that (transitively) calls it is recompiled from its Python source, uncached.
Before replacing, this checks that each backend's name is the one rule of
``mapsim.sampling.draw`` and not a copy.
"""

from __future__ import annotations

import numba
from numba.core.dispatcher import Dispatcher

import mapsim.sampling.draw as draw_module
import mapsim.sampling.pixelcnn3d_fast as pixelcnn3d_fast
import mapsim.sampling.pixelcnn_fast as pixelcnn_fast
import mapsim.sampling.rho_eff as rho_eff

BACKENDS = (draw_module, pixelcnn_fast, pixelcnn3d_fast, rho_eff)


def replace_rule(monkeypatch, name: str, fn) -> None:
    """Make every sampler use ``fn`` as ``mapsim.sampling.draw.<name>`` (undone by ``monkeypatch``)."""
    for mod in BACKENDS:
        if hasattr(mod, name):
            assert getattr(mod, name) is getattr(draw_module, name), f"{mod.__name__}.{name} is a copy"
    for mod in BACKENDS:
        if not hasattr(mod, name):
            continue
        monkeypatch.setattr(mod, name, fn)
        own = {a: d for a, d in vars(mod).items()
               if isinstance(d, Dispatcher) and d.py_func.__module__ == mod.__name__ and a != name}
        stale, grew = {name}, True
        while grew:  # every function that calls the rule, or calls one that does
            callers = {a for a, d in own.items() if stale & set(d.py_func.__code__.co_names)}
            grew = not callers <= stale
            stale |= callers
        for a in stale - {name}:
            opts = {k: v for k, v in own[a].targetoptions.items() if k not in ("cache", "nopython")}
            monkeypatch.setattr(mod, a, numba.njit(**opts)(own[a].py_func))
