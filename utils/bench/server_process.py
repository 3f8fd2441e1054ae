"""`infer_server.py` as a child process for the tools that measure it: started on a free port, ready
once /health answers, and its memory (the whole process tree's RSS) sampled while a case runs."""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Optional
from urllib.parse import urlparse

import numpy as np
import psutil
import requests
import soundfile

from utils import REPO_ROOT as REPO

# The server picks the port itself (--port=0) and names it on this line.
SERVING_LINE = re.compile(r"^serving on (http://\S+?)/ ", re.MULTILINE)


class ServerProcess:
    """`infer_server.py --port=0 <flags>` with its output in `log_path`; `wait_ready()` returns once the
    server named its port and /health answers. The one launcher of the tests, the benchmarks and the
    measuring tools. A start that fails raises RuntimeError with the log's end (a tool turns it into
    its own sentence)."""

    def __init__(self, flags: list[str], log_path, env: Optional[dict] = None):
        self.log_path = str(log_path)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "infer_server.py", "--port=0", *flags], cwd=REPO,
                                     env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.url: Optional[str] = None

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def wait_ready(self, timeout: float = 600.0) -> "ServerProcess":
        """The timeout only stops a hung start: model load and warm-up on a loaded machine take a
        small fraction of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infer_server.py exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if self.url is None:
                found = SERVING_LINE.search(self.log())
                self.url = found.group(1) if found else None
            if self.url is not None and self._healthy():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"infer_server.py did not answer /health within {timeout:.0f} s: {self.log()[-2000:]}")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=10).status_code == 200
        except requests.RequestException:    # bound, not serving yet
            return False

    def rss_mb(self) -> float:
        """Resident memory of the server and any processes it started, in MB."""
        try:
            root = psutil.Process(self.proc.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def raw_upload(url: str, audio: bytes, name: str = "speech.wav") -> socket.socket:
    """Send a whole multipart upload to /v1/audio/transcriptions on a plain socket and return the socket
    unread, so the caller decides when the client hangs up (an HTTP library would wait for the answer)."""
    boundary = "raw-upload-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    address = urlparse(url)
    client = socket.create_connection((address.hostname, address.port), timeout=30)
    client.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {address.netloc}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return client


def flac_of_silence(seconds: int, rate: int = 48000, declared_s: Optional[int] = None) -> bytes:
    """Stereo FLAC of silence, written a minute at a time (a few hundred KB for an hour). With
    `declared_s`, STREAMINFO's total-samples field says that many seconds (0: "unknown") instead."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, 2, format="FLAC") as sound:
        minute = np.zeros((rate * 60, 2), dtype=np.float32)
        for start in range(0, seconds, 60):
            sound.write(minute[:rate * min(60, seconds - start)])
    data = bytearray(buffer.getvalue())
    if declared_s is not None:
        # The low 36 bits of bytes 18-25 (after "fLaC" and the block header) count the samples.
        fields = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
        data[18:26] = (fields | declared_s * rate).to_bytes(8, "big")
    return bytes(data)


class PeakMemory:
    """`with PeakMemory(server) as peak:` samples the server's RSS every 20 ms; `peak.mb` is the highest."""

    def __init__(self, server: ServerProcess, interval_s: float = 0.02):
        self.server, self.interval_s, self.mb = server, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.mb = max(self.mb, self.server.rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self.mb = self.server.rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, self.server.rss_mb())
