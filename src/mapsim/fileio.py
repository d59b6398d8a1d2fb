"""Atomic file writing: an output appears complete under its final name or not at all.

Every file and directory mapsim writes goes through :func:`atomic_path` or
:func:`atomic_dir` (or, for a directory built over several runs, :func:`publish_dir`): the writer fills a temporary sibling, which is flushed to
disk (``fsync``), given the mode a plain ``open`` would have given it
(0o666 or 0o777 masked by the user's umask; the temporary names are created
private) and renamed onto the final name; the parent directory is then synced
too, where the platform allows, so that the rename itself survives a crash.
On an exception the temporary is removed and the final name is left as it was.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_UMASK_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def process_umask() -> int:
    """The process's umask, read once.

    Linux reports it in ``/proc/self/status``, which changes nothing.  Elsewhere
    the only way to read it is to set it and set it back; it is set to 0o077 for
    that instant, so a file another thread creates meanwhile is at worst more
    private than asked, never less.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def _fsync_path(path: Path) -> None:
    """Flush a regular file's contents to disk."""
    try:
        fd = os.open(path, os.O_RDWR)  # Windows syncs only files open for writing
    except PermissionError:  # a writer made it read-only; POSIX syncs through any descriptor
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Best effort: flush a directory's entries (not possible on every platform or file system)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The writer may write the temporary file in place or create it anew.  On
    success it is synced, given mode ``0o666 & ~umask`` and renamed; on any
    exception it is removed and ``path`` is untouched.  The parent directory is
    created if needed.

    Parameters
    ----------
    path : path-like
        Final destination.
    suffix : str, optional
        Suffix for the temporary name (some writers insist on an extension);
        defaults to the suffix of ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=(final.suffix if suffix is None else suffix) + ".tmp",
        dir=final.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_path(tmp_path)
        # mkstemp makes the file 0600; outputs get the mode open() would have given them
        os.chmod(tmp_path, 0o666 & ~process_umask())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it becomes ``path`` in one rename.

    On success every file in it is synced, the directory gets mode
    ``0o777 & ~umask`` and is renamed onto ``path``; on any exception it is
    removed with its contents and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        The final directory; its parent is created if needed.
    replace : bool
        Whether an existing ``path`` is replaced (see :func:`publish_dir`).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~process_umask())  # mkdtemp makes it 0700
        publish_dir(tmp, final, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(src: str | os.PathLike, final: str | os.PathLike, replace: bool = False) -> None:
    """Move a complete directory onto ``final`` in one rename, after syncing everything in it.

    The end of :func:`atomic_dir`, and the way for a writer that builds its output
    over several runs (a resumable partial directory) to make it appear.  Every
    file under ``src`` and ``src`` itself are synced, ``src`` is renamed onto
    ``final`` and ``final``'s parent is synced (best effort).

    Parameters
    ----------
    src : path-like
        The complete directory, on the same file system as ``final``.
    final : path-like
        Its destination.
    replace : bool
        Whether an existing ``final`` is replaced: it is renamed aside, ``src``
        renamed in, and the old one deleted (POSIX has no atomic swap of two
        directories, so a crash between the two renames leaves the old one under a
        hidden ``.NAME.*.old`` name); if the second rename fails the old one is put
        back.  Otherwise an existing non-empty ``final`` makes the rename fail and
        nothing changes.
    """
    src, final = Path(src), Path(final)
    for root, dirs, files in os.walk(src):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync_path(Path(root, name))
        for name in dirs:
            _fsync_dir(Path(root, name))
    _fsync_dir(src)
    if replace and final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / "d")
        try:
            os.replace(src, final)
        except BaseException:
            os.replace(old / "d", final)  # put the old directory back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, final)
    _fsync_dir(final.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_figure_atomic(fig, path: str | os.PathLike, **kwargs) -> None:
    """Save a matplotlib figure atomically; the format comes from ``path``'s suffix."""
    final = Path(path)
    fmt = final.suffix.lstrip(".") or "png"
    with atomic_path(final) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
