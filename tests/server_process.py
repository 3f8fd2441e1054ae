"""Start the real `infer_server.py` as a process for the server tests.

The server is started with --port=0 and binds a free port itself; its `serving on http://...` line
names the port. (Picking a free port here and handing it over would race: another process may take
it between the check and the server's bind.)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
SERVING_LINE = re.compile(r"^serving on (http://\S+?)/ ", re.MULTILINE)


class ServerProcess:
    def __init__(self, *args: str, log_path: Path, env: dict | None = None):
        self.url: str | None = None
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "infer_server.py", "--port=0", "--log_level=warning", *args],
            cwd=REPO, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600.0) -> "ServerProcess":
        """Wait for the serving line, then for /health. The timeout only stops a hung start: a start
        on a loaded machine (model load and warm-up) takes a small fraction of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infer_server.py exited with {self.proc.returncode}:\n{self.log()}")
            if self.url is None:
                found = SERVING_LINE.search(self.log())
                self.url = found.group(1) if found else None
            if self.url is not None and self._healthy():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"infer_server.py did not answer /health within {timeout} s:\n{self.log()}")

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url + "/health", timeout=10).status_code == 200
        except (requests.ConnectionError, requests.Timeout):   # bound, but not served on yet
            return False

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
