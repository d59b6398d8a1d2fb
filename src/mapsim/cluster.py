"""Dask clusters: connect by address (or use a given client), one-line errors, tidy cancellation.

Used by ``mapsim simulate --dask`` and ``mapsim generate --dask``; the
workers need mapsim installed (e.g. from the same ``requirements.txt``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

from mapsim.errors import MapsimError

CONNECT_TIMEOUT = 20  # seconds


@contextlib.contextmanager
def dask_client(dask: Any, timeout: float | None = None) -> Iterator[tuple[Any, str]]:
    """Yield ``(client, where)`` for a scheduler address or an existing ``distributed.Client``.

    A client made here (waiting ``timeout`` seconds, default :data:`CONNECT_TIMEOUT`, for the
    scheduler) is closed on exit; ``where`` names it in error messages.
    """
    try:
        import distributed
    except ModuleNotFoundError:
        raise MapsimError("--dask needs the 'distributed' package (pip install -e .[dask])") from None
    if isinstance(dask, distributed.Client):
        yield dask, "dask client"
        return
    where = f"--dask {dask}"
    if not isinstance(dask, str) or not dask.strip():
        raise MapsimError(f"--dask: expected a scheduler address such as tcp://host:8786, found {dask!r}")
    try:
        client = distributed.Client(dask, timeout=CONNECT_TIMEOUT if timeout is None else timeout,
                                    set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise MapsimError(f"{where}: cannot connect to a Dask scheduler ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]})") from None
    try:
        yield client, where
    finally:
        client.close()


def run_tasks(dask: Any, func: Callable, args: Sequence[tuple], *, ordered: bool = False,
              timeout: float | None = None) -> Iterator[Any]:
    """Submit ``func(*a)`` for every ``a`` in ``args`` and yield the results.

    As they complete, or in submission order with ``ordered``.  On any
    exception (Ctrl-C included) the outstanding tasks are cancelled.
    """
    with dask_client(dask, timeout) as (client, where):
        import distributed  # present: dask_client checked

        futures = []
        try:
            futures = [client.submit(func, *a, pure=False) for a in args]
            source = futures if ordered else distributed.as_completed(futures, loop=client.loop)
            for fut in source:
                try:
                    yield fut.result()
                except ImportError as exc:  # the workers' environment lacks mapsim or a dependency
                    raise MapsimError(f"{where}: a worker could not run a task ({type(exc).__name__}: {exc}); "
                                      "the workers need mapsim installed") from None
        except BaseException:
            if futures:
                with contextlib.suppress(Exception):
                    client.cancel(futures)
            raise
