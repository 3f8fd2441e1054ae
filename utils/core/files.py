"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything the toolkit writes for a user (checkpoints, models, manifests, reports, transcripts,
exports) goes through here: the content is written beside the target under a hidden temporary
name, flushed to disk, then renamed onto it, so an interrupted run, a full disk or a crash never
leaves a half-written file where a reader expects a whole one.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from typing import IO, Any, Iterator, Optional, Union

from utils.core.errors import UsageError, UserError

PathLike = Union[str, "os.PathLike[str]"]

# What a write meets when the machine refuses it (not a bug): full, quota, read-only, no permission.
REFUSED_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
# Below this much free space a failed write is taken for a full disk (torch.save and safetensors do not
# always say ENOSPC: torch reports "unexpected pos ..."), so the user reads "No space left on device".
_FULL_BELOW_BYTES = 16 * 1024 * 1024


def sha256_of(path: PathLike) -> str:
    """The file's sha256 as hex, read in 1 MiB blocks (models are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(path: PathLike, flag: str, kind: str = "file") -> str:
    """Refuse, before any slow work, an output location this run could not write: UsageError (one
    sentence naming `flag` and the path) unless `path` is (kind="dir") a writable folder or one that can
    be created, or (kind="file") a file that can be written or created there. Creates nothing; returns
    the path."""
    path = os.fspath(path)
    if not path:
        raise UsageError(f"{flag}: empty path")
    wanted = "folder" if kind == "dir" else "file"
    if os.path.exists(path):
        if kind == "dir" and not os.path.isdir(path):
            raise UsageError(f"{flag}: {path} is a file, not a folder")
        if kind == "file" and os.path.isdir(path):
            raise UsageError(f"{flag}: {path} is a folder; name a file")
    folder = path if kind == "dir" and os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    # The nearest folder that exists is the one that must let us create the rest.
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag}: cannot create the {wanted} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write the {wanted} {path}: {existing} is read-only or not yours "
                         f"to write")
    return path


def write_failure(exc: BaseException, path: PathLike) -> Optional[OSError]:
    """The OSError (errno, reason, `path`) that explains why writing `path` failed with `exc`, or None when
    the machine did not refuse it (then `exc` is a bug). shutil names the source of a failed copy and a
    plain write names nothing, so the reason is given `path`, the thing the user asked for."""
    path = os.fspath(path)
    if isinstance(exc, UserError):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in REFUSED_WRITE_ERRNOS:
            return OSError(exc.errno, exc.strerror, path)
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.isdir(folder):
            return OSError(exc.errno, "its folder was removed while it was written", path)
        return OSError(exc.errno, exc.strerror, path) if exc.filename is None else None
    if not os.path.isdir(folder):
        return OSError(errno.ENOENT, "its folder was removed while it was written", path)
    if not os.access(folder, os.W_OK | os.X_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), path)
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < _FULL_BELOW_BYTES:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return None


def _raise_write_failure(exc: BaseException, path: str) -> None:
    explained = write_failure(exc, path)
    if explained is not None:
        raise explained from exc


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=parent)
    except OSError as exc:
        _raise_write_failure(exc, path)
        raise
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, Exception):
            _raise_write_failure(exc, path)
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
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.normpath(path))}.", suffix=".part",
                               dir=parent)
    except OSError as exc:
        _raise_write_failure(exc, path)
        raise
    try:
        yield tmp
        _give_usual_modes(tmp)
        replace_dir(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):
            _raise_write_failure(exc, path)
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
