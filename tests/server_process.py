"""Start the real `infer_server.py` as a process for the server tests: the one launcher
(utils/bench/server_process.py) with the tests' quieter log level.

The server is started with --port=0 and binds a free port itself; its `serving on http://...` line
names the port. (Picking a free port here and handing it over would race: another process may take
it between the check and the server's bind.)
"""
from __future__ import annotations

from pathlib import Path

from utils.bench.server_process import ServerProcess as _ServerProcess


class ServerProcess(_ServerProcess):
    def __init__(self, *args: str, log_path: Path, env: dict | None = None):
        super().__init__(["--log_level=warning", *args], log_path, env)
