"""Atomic outputs: the user's umask decides their mode, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
import stat

import pytest

from mapsim import fileio
from mapsim.fileio import atomic_dir, atomic_path, process_umask, publish_dir, write_text_atomic

UMASKS = [0o022, 0o002, 0o027, 0o077]


@pytest.fixture
def umask():
    """Set the process umask for one test (and forget the cached value before and after)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value: int) -> None:
        os.umask(value)
        process_umask.cache_clear()

    yield set_umask
    os.umask(saved)
    process_umask.cache_clear()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_only_old(tmp_path, final):
    """Nothing but the earlier run's directory, unchanged: no temporary left beside it."""
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]


def existing_dir(tmp_path):
    """An output directory from an earlier run, holding ``old.txt``."""
    final = tmp_path / "export"
    final.mkdir()
    (final / "old.txt").write_text("old")
    return final


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_files_get_the_mode_open_would_give_them(tmp_path, umask, mask):
    umask(mask)
    target = tmp_path / "out.txt"
    write_text_atomic(target, "x")
    assert mode(target) == 0o666 & ~mask  # mkstemp alone would give 0o600
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert mode(target) == mode(plain)


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_directories_get_the_mode_mkdir_would_give_them(tmp_path, umask, mask):
    umask(mask)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    assert mode(tmp_path / "out") == 0o777 & ~mask  # mkdtemp alone would give 0o700
    assert (tmp_path / "out" / "a.txt").read_text() == "a"


def test_umask_read_without_proc_is_the_same_and_left_unchanged(tmp_path, umask, monkeypatch):
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(fileio, "open", no_proc, raising=False)  # shadows the builtin inside fileio
    assert process_umask() == 0o027
    assert os.umask(0o027) == 0o027  # the fallback set it back


def test_a_failed_file_write_leaves_no_temporary_and_the_old_file(tmp_path):
    target = tmp_path / "data.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
    assert target.read_text() == "old"


def test_a_writer_may_create_the_temporary_anew(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "fig.png"
    with atomic_path(target) as tmp:
        tmp.unlink()  # e.g. a library that removes and recreates its output
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png" and mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_a_failed_directory_write_leaves_no_temporary_and_the_old_directory(tmp_path):
    final = existing_dir(tmp_path)
    with pytest.raises(RuntimeError):
        with atomic_dir(final, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("export failed")
    assert_only_old(tmp_path, final)


def test_directory_replace_swaps_contents_and_cleans_up(tmp_path):
    final = existing_dir(tmp_path)
    with atomic_dir(final, replace=True) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert (final / "sub" / "new.txt").read_text() == "new" and not (final / "old.txt").exists()


def test_without_replace_a_non_empty_directory_is_kept(tmp_path):
    final = existing_dir(tmp_path)
    with pytest.raises(OSError):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
    assert_only_old(tmp_path, final)


def test_old_directory_is_put_back_when_the_final_rename_fails(tmp_path, monkeypatch):
    final = existing_dir(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".tmp"):  # the new directory moving in
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(final, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert_only_old(tmp_path, final)


def test_publish_dir_moves_a_directory_built_over_several_runs(tmp_path):
    partial = tmp_path / "out.partial"
    partial.mkdir()
    (partial / "block_0").write_text("0")
    (partial / "block_1").write_text("1")  # a later run finished the rest
    final = tmp_path / "out"
    final.mkdir()
    (final / "stale").write_text("old run")
    publish_dir(partial, final, replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in final.iterdir()) == ["block_0", "block_1"]
