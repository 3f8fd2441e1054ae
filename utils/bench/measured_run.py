"""Run one of the toolkit's scripts as a child process and measure it: wall time and peak memory.

Used by the experiment and benchmark tools, which must time each stage on its own."""
from __future__ import annotations

import os
import shlex
import subprocess
import time

from utils import REPO_ROOT as REPO
from utils.core.errors import UserError


class StageFailed(UserError):
    """A measured command exited with an error; the message names it and the last line of its log,
    where the whole story is."""


def run_measured(command: list[str], log_path: str) -> dict:
    """{"seconds", "peak_rss_gib"} of `command` run in the repository with output to `log_path`.

    Peak RSS comes from wait4 on this very child: getrusage(RUSAGE_CHILDREN) would report the largest
    of all children so far, mixing the runs. It covers the process and the workers it waited for."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    print(f"$ {shlex.join(command)}", flush=True)
    env = dict(os.environ, PYTHONPATH=REPO, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = log.read().strip().splitlines()[-1:] or ["(no output)"]
        raise StageFailed(f"exit status {process.returncode}: {shlex.join(command)}; log {log_path}: {tail[0]}")
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}
