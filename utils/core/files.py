"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything the toolkit writes for a user (checkpoints, models, manifests, reports, transcripts,
exports) goes through here: the content is written beside the target under a hidden temporary
name, flushed to disk, then renamed onto it, so an interrupted run, a full disk or a crash never
leaves a half-written file where a reader expects a whole one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import IO, Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _parent(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return parent


def _sync_dir(folder: str) -> None:
    # The rename itself is only durable once the folder's entry is on disk; not every OS can say so.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """`with atomic_write("out.json") as f: f.write(...)`: on success the file replaces `path`; on an
    exception (or Ctrl-C) the temporary file is removed and `path` keeps what it held before."""
    path = os.fspath(path)
    parent = _parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _sync_dir(parent)


def write_text_atomic(path: PathLike, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_json_atomic(path: PathLike, data: Any, indent: int | None = 2) -> None:
    """JSON (UTF-8, non-ASCII kept readable) written atomically."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=indent, ensure_ascii=False)
        handle.write("\n")


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[str]:
    """`with atomic_dir("models/x") as tmp: save into tmp`: the finished folder replaces `path`; on an
    exception the temporary folder is deleted and `path` is untouched."""
    path = os.fspath(path)
    parent = _parent(path)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.normpath(path))}.", suffix=".part", dir=parent)
    try:
        yield tmp
        _give_usual_modes(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync_dir(parent)


def _give_usual_modes(root: str) -> None:
    """mkdtemp makes the folder owner-only (0700), safetensors and mkstemp make owner-only files; a model or
    checkpoint folder is shared like any other the user creates, so every entry gets the modes the umask
    gives a new one (0755 folders, 0644 files under umask 022), execute bits kept."""
    umask = os.umask(0)     # the only portable way to read it; set back at once
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~umask)
        for name in files:
            entry = os.path.join(folder, name)
            if not os.path.islink(entry):
                os.chmod(entry, (0o666 | (os.stat(entry).st_mode & 0o111)) & ~umask)


def promote_partial(partial: PathLike, path: PathLike) -> None:
    """A finished, checked `.part` file (a resumable download, which must outlive an interruption and
    so cannot be an atomic_write) takes its final name."""
    os.replace(os.fspath(partial), os.fspath(path))
    _sync_dir(os.path.dirname(os.path.abspath(os.fspath(path))))


def publish_dir(src: str, dst: str) -> bool:
    """Give a finished folder its final name unless one is there already (made by another process, maybe on
    another machine sharing the disk): True when `src` became `dst`; else `src` is left for the caller."""
    try:
        os.rename(src, dst)     # fails on an existing non-empty folder: the first to finish keeps it
    except OSError:
        if os.path.isdir(dst):
            return False
        raise
    _sync_dir(_parent(dst))
    return True


def replace_dir(src: str, dst: str) -> None:
    """Move a finished folder onto `dst`; a reader sees the old or the new folder, never a mix."""
    if os.path.isdir(dst):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.normpath(dst))}.", suffix=".old",
                               dir=os.path.dirname(os.path.abspath(dst)))
        os.rmdir(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
