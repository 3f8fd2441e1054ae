"""Fetching and unpacking a corpus archive: a resumable, MD5-checked download and an unpacking that
a rerun after an interruption continues instead of redoing (tens of GB for AIShell-1)."""
from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from typing import Optional

from tqdm import tqdm

from utils.core.files import promote_partial, write_text_atomic
from utils.data.builders.common import BuildError


def md5sum(path: str, desc: Optional[str] = None) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                     desc=desc or f"MD5 {os.path.basename(path)}") as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def download(url: str, target_dir: str, md5: str, offline_hint: str) -> str:
    """Fetch `url` into target_dir (once: a verified copy is reused) and return its path.

    The bytes arrive in `<file>.part`, which survives an interruption so the next run resumes it
    with an HTTP range request; that is why this is not utils.core.files.atomic_write, which
    deletes its temporary file on failure. The file gets its final name only once its MD5 matches.
    `offline_hint` says what to do instead when the server cannot be reached."""
    filepath = os.path.join(target_dir, os.path.basename(url))
    if os.path.exists(filepath):
        if not _verified(filepath, md5):
            raise BuildError(f"{filepath}: MD5 differs from {md5}; delete it and run again to "
                             "download a fresh copy")
        return filepath
    partial = filepath + ".part"
    _fetch_resuming(url, partial, offline_hint)
    actual = md5sum(partial)
    if actual != md5:
        os.remove(partial)
        raise BuildError(f"{url}: downloaded file has MD5 {actual}, expected {md5}; the "
                         "partial file was removed, run again to download it anew")
    promote_partial(partial, filepath)
    _remember_verified(filepath, md5)
    return filepath


def _verified(filepath: str, md5: str) -> bool:
    # Hashing 15 GB takes a while: a successful check is remembered next to the file.
    record = filepath + ".md5"
    if os.path.exists(record):
        with open(record) as f:
            if f.read().split() == [md5, str(os.path.getsize(filepath))]:
                return True
    if md5sum(filepath) != md5:
        return False
    _remember_verified(filepath, md5)
    return True


def _remember_verified(filepath: str, md5: str) -> None:
    write_text_atomic(filepath + ".md5", f"{md5} {os.path.getsize(filepath)}\n")


def _fetch_resuming(url: str, partial: str, offline_hint: str) -> None:
    done = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:    # the partial file already holds every byte
            return
        raise BuildError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise BuildError(f"cannot reach {url} ({exc}); {offline_hint}") from None
    with response:
        if done and response.status != 206:   # the server ignored the range: start over
            done = 0
        total = response.length + done if response.length is not None else None
        with open(partial, "ab" if done else "wb") as f, \
                tqdm(total=total, initial=done, unit="B", unit_scale=True,
                     desc=f"download {os.path.basename(url)}") as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))


def extract_stream(archive: str, dest: str, desc: str) -> None:
    """Extract member by member, skipping files already present at full size, so a rerun
    after an interruption does not rewrite what is done; `filter="data"` refuses unsafe paths."""
    try:
        with tarfile.open(archive, "r|*") as tar, tqdm(desc=desc, unit="file") as bar:
            for member in tar:
                target = os.path.join(dest, member.name)
                if not (member.isfile() and os.path.isfile(target) and os.path.getsize(target) == member.size):
                    tar.extract(member, dest, filter="data")
                bar.update(1)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BuildError(f"{archive}: cannot unpack ({exc}); the archive is damaged or "
                         "incomplete, fetch it again") from None


def mark_done(marker: str) -> None:
    """An empty file saying a step (unpacking one archive) finished; a rerun skips the step."""
    write_text_atomic(marker, "")
