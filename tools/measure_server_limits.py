"""Send the real server (infer_server.py) hostile uploads and print what each one cost it.

    python tools/measure_server_limits.py
    python tools/measure_server_limits.py --model_path=models/whisper-base-ct2 --output_file=limits.md

Two servers are started on free loopback ports: one with the defaults (but --num_workers=2
--max_queue=4, so that the concurrency case shows the queue), one with short limits
(--request_timeout_s and --shutdown_timeout_s) for the time-limit, hang-up and SIGTERM cases. Each
case prints a row: what was sent, the status, the sentence (the error message, or the transcript),
the seconds until the answer and the peak RSS of the server's process tree while it ran.
"""
from __future__ import annotations

import io
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import requests  # noqa: E402
import soundfile  # noqa: E402

from utils.bench.report import machine_description  # noqa: E402
from utils.bench.server_process import PeakMemory, ServerProcess, flac_of_silence, raw_upload  # noqa: E402
from utils.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.files import write_text_atomic  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

ENGLISH = os.path.join(REPO, "dataset", "audio", "en_test_0001.flac")


@dataclass
class LimitArguments:
    model_path: str = field(default="models/whisper-tiny.en-ct2", metadata={
        "help": f"CTranslate2 model the servers load (the toolkit's default is {default_model('ct2')})"})
    request_timeout_s: float = field(default=10.0, metadata={
        "help": "--request_timeout_s of the second server (the time-limit case)"})
    shutdown_timeout_s: float = field(default=3.0, metadata={
        "help": "--shutdown_timeout_s of the second server (the SIGTERM case)"})
    cpu_threads: int = field(default=1, metadata={
        "help": "--cpu_threads of the servers; on a shared 2-core machine one thread per worker decodes a "
                "window several times faster than CTranslate2's default, whose threads wait on each other"})
    clients: int = field(default=30, metadata={"help": "clients sending at once in the concurrency case"})
    output_file: Optional[str] = field(default=None, metadata={"help": "also write the table here (markdown)"})


@dataclass
class Row:
    case: str
    status: str
    sentence: str
    seconds: float
    before_mb: float     # at the case's start: memory a process once took is seldom given back
    peak_mb: float


# --- uploads ----------------------------------------------------------------------------------

def wav_of_silence(seconds: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(seconds * SAMPLE_RATE, dtype=np.int16), SAMPLE_RATE, format="WAV",
                    subtype="PCM_16")
    return buffer.getvalue()


def english_speech(seconds: float) -> bytes:
    """The shipped English clips one after another, with pauses, until `seconds` are filled (WAV)."""
    clips = sorted(os.path.join(REPO, "dataset", "audio", name)
                   for name in os.listdir(os.path.join(REPO, "dataset", "audio")) if name.startswith("en_test_"))
    pause, parts, total = np.zeros(SAMPLE_RATE // 2, np.float32), [], 0
    while total < seconds * SAMPLE_RATE:
        for clip in clips:
            parts += [load_audio(clip), pause]
            total += len(parts[-2]) + len(pause)
            if total >= seconds * SAMPLE_RATE:
                break
    buffer = io.BytesIO()
    soundfile.write(buffer, np.concatenate(parts), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# --- requests ---------------------------------------------------------------------------------

def post(url: str, audio: bytes, name: str, timeout: float = 600, **fields) -> requests.Response:
    return requests.post(f"{url}/v1/audio/transcriptions", files={"file": (name, audio)}, data=fields,
                         timeout=timeout)


def sentence(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:160]
    if "error" in body:
        return body["error"]["message"]
    text = body.get("text", "")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def measured(server: ServerProcess, case: str, send: Callable[[], tuple]) -> Row:
    """Run one case; `send` returns (status, sentence) or (status, sentence, seconds until the answer)."""
    wait_idle(server.url)     # a case starts with every worker free, so no case pays for the one before
    with PeakMemory(server) as peak:
        before = peak.mb
        started = time.monotonic()
        status, said, *answered = send()
        seconds = answered[0] if answered else time.monotonic() - started
    row = Row(case, status, said, round(seconds, 1), round(before), round(peak.mb))
    print(f"  {row.case}: {row.status} in {row.seconds} s, peak {row.peak_mb} MB", flush=True)
    return row


def one(url: str, audio: bytes, name: str, **fields) -> Callable[[], tuple[str, str]]:
    def send():
        response = post(url, audio, name, **fields)
        return str(response.status_code), sentence(response)
    return send


def concurrent(url: str, clients: int) -> Callable[[], tuple[str, str]]:
    clip = open(ENGLISH, "rb").read()

    def send():
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda _: post(url, clip, "clip.flac", language="en"), range(clients)))
        counts = {}
        for answer in answers:
            counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
        busy = next((a for a in answers if a.status_code == 503), None)
        texts = {a.json()["text"] for a in answers if a.status_code == 200}
        said = f"{len(texts)} distinct text(s) among the 200s"
        if busy is not None:
            said += f"; 503 (Retry-After {busy.headers['Retry-After']} s): {sentence(busy)}"
        return ", ".join(f"{n} x {status}" for status, n in sorted(counts.items())), said
    return send


def two_at_once(url: str, audio: bytes, name: str) -> Callable[[], tuple[str, str]]:
    def send():
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: post(url, audio, name), range(2)))
        return " + ".join(str(a.status_code) for a in answers), sentence(answers[0])
    return send


def workers(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=10).json()["workers"]


def wait_idle(url: str, timeout: float = 300) -> float:
    """Seconds until no recognition runs or waits."""
    started = time.monotonic()
    while True:
        now = workers(url)
        if now["busy"] == 0 and now["waiting"] == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the server's workers stayed busy for {timeout:.0f} s")
        time.sleep(0.05)


def freed_after(url: str, send: Callable[[], tuple[str, str]]) -> Callable[[], tuple[str, str, float]]:
    """`send`, and how long after its answer the worker was free (a stopped recognition ends at its
    next window)."""
    def timed():
        started = time.monotonic()
        status, said = send()
        answered = time.monotonic() - started
        return status, f"{said}; worker free {wait_idle(url):.1f} s after the answer", answered
    return timed


def wait_busy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while workers(url)["busy"] == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the recognition never started")
        time.sleep(0.05)


def hang_up(url: str, audio: bytes) -> Callable[[], tuple[str, str]]:
    """Send a whole upload on a plain socket, close it once the recognition runs, time until the
    worker is free."""
    def send():
        client = raw_upload(url, audio)
        wait_busy(url)
        client.close()
        closed = time.monotonic()
        while workers(url)["busy"]:
            time.sleep(0.05)
        return "(closed)", f"worker free {time.monotonic() - closed:.1f} s after the hang-up; " \
                           f"cancelled: {workers(url)['cancelled']}"
    return send


def sigterm(server: ServerProcess, audio: bytes) -> Callable[[], tuple[str, str]]:
    def send():
        answer: list = []

        def client():
            try:
                answer.append(str(post(server.url, audio, "speech.wav").status_code))
            except requests.ConnectionError:
                answer.append("connection closed")

        thread = threading.Thread(target=client)
        thread.start()
        wait_busy(server.url)
        server.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = server.proc.wait(timeout=120)
        exited = time.monotonic() - sent
        thread.join(timeout=60)
        return f"exit {code}", f"server exited {exited:.1f} s after SIGTERM; the client got: {answer[0]}"
    return send


# --- the run ----------------------------------------------------------------------------------

def default_server_cases(url: str, server: ServerProcess, clients: int) -> list[Row]:
    print("preparing uploads", flush=True)
    silent_wav = wav_of_silence(30 * 60)
    hour_flac = flac_of_silence(3600)
    two_hours_flac = flac_of_silence(7200)
    declared = flac_of_silence(10, rate=16000, declared_s=10 * 3600)
    unknown = flac_of_silence(2 * 3600, rate=16000, declared_s=0)
    clip = open(ENGLISH, "rb").read()
    mb = lambda data: f"{len(data) / 2**20:.1f} MB"   # noqa: E731
    cases = [
        (f"30 min silent WAV, 16 kHz mono ({mb(silent_wav)})", one(url, silent_wav, "silence.wav")),
        ("two of those at once", two_at_once(url, silent_wav, "silence.wav")),
        (f"FLAC, 1 h of 48 kHz stereo silence ({mb(hour_flac)})", one(url, hour_flac, "hour.flac")),
        (f"FLAC, 2 h of 48 kHz stereo silence ({mb(two_hours_flac)})", one(url, two_hours_flac, "2h.flac")),
        (f"FLAC whose header declares 10 h, holding 10 s ({mb(declared)})", one(url, declared, "declared.flac")),
        (f"FLAC of 2 h, length 'unknown' in its header ({mb(unknown)})", one(url, unknown, "unknown.flac")),
        ("prompt of 10,240 characters", one(url, clip, "clip.flac", language="en",
                                            prompt="Mister Quilter. " * 640)),
        ("prompt of 2,000,000 characters", one(url, clip, "clip.flac", language="en", prompt="x" * 2_000_000)),
        (f"{clients} clients at once, 3.6 s clip each", concurrent(url, clients)),
    ]
    return [measured(server, case, send) for case, send in cases]


def short_limit_cases(server: ServerProcess, timeout_s: float) -> list[Row]:
    speech = english_speech(300)
    return [
        measured(server, f"300 s of speech, --request_timeout_s={timeout_s:g}",
                 freed_after(server.url, one(server.url, speech, "speech.wav"))),
        measured(server, "client hangs up mid-recognition", hang_up(server.url, speech)),
        measured(server, "SIGTERM mid-recognition", sigterm(server, speech)),
    ]


def table(rows: list[Row]) -> str:
    lines = ["| case | status | sentence | seconds | server RSS before → peak (MB) |", "|---|---|---|---|---|"]
    for row in rows:
        said = row.sentence.replace("|", "\\|")
        lines.append(f"| {row.case} | {row.status} | {said} | {row.seconds} | {row.before_mb} → {row.peak_mb} |")
    return "\n".join(lines)


def measure(args: LimitArguments) -> None:
    print_config("measure_server_limits.py configuration", args)
    started = time.monotonic()
    logs = tempfile.mkdtemp(prefix="server-limits-")
    threads = f"--cpu_threads={args.cpu_threads}"
    first = ServerProcess([f"--model_path={args.model_path}", "--num_workers=2", "--max_queue=4", threads,
                           "--log_level=warning"], os.path.join(logs, "defaults.log")).wait_ready()
    try:
        idle = round(first.rss_mb())
        rows = default_server_cases(first.url, first, args.clients)
    finally:
        first.stop()
    second = ServerProcess([f"--model_path={args.model_path}", threads, f"--request_timeout_s={args.request_timeout_s}",
                            f"--shutdown_timeout_s={args.shutdown_timeout_s}", "--log_level=warning"],
                           os.path.join(logs, "short-limits.log")).wait_ready()
    try:
        rows += short_limit_cases(second, args.request_timeout_s)
    finally:
        second.stop()
    report = ("# infer_server.py under hostile uploads\n\n"
              "Written by `python tools/measure_server_limits.py` (the table below is its output).\n\n"
              f"{args.model_path} on the ct2 backend; {machine_description()}; load average "
              f"{os.getloadavg()[0]:.1f} at the end.\n"
              f"Both servers {threads}. Server 1: defaults but --num_workers=2 --max_queue=4 (idle RSS "
              f"{idle} MB); server 2: --request_timeout_s={args.request_timeout_s:g} "
              f"--shutdown_timeout_s={args.shutdown_timeout_s:g}.\n\n"
              + table(rows))
    print("\n" + report)
    if args.output_file:
        write_text_atomic(args.output_file, report + "\n")
    print(f"\n{len(rows)} cases in {time.monotonic() - started:.0f} s; server logs in {logs}")


def main(argv=None) -> int:
    args = parse_args(LimitArguments, argv, description=__doc__)
    return guarded(lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
