"""infer_server.py's limits, on real server processes with tiny.en (CTranslate2) and small limits:
audio length (--max_audio_s), time (--request_timeout_s), a client that hangs up, SIGTERM
(--shutdown_timeout_s), long prompts, oversized form fields and CORS (--cors_origins)."""
from __future__ import annotations

import io
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
from server_process import ServerProcess
from transcription_audio import english_clip, long_english

from utils.bench.server_process import flac_of_silence, raw_upload
from utils.core.audio import AudioTooLong, load_audio

MODEL = "models/whisper-tiny.en-ct2"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> bytes:
    """About 300 s of English speech: more than ten seconds of work for tiny.en."""
    path, _ = long_english(tmp_path_factory.mktemp("speech") / "long.wav", 300)
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("limited-server") / "server.log"
    # One thread: on shared cores CTranslate2's default threads wait on each other, several times slower.
    server = ServerProcess(f"--model_path={MODEL}", "--cpu_threads=1", "--max_audio_s=400", "--request_timeout_s=3",
                           f"--cors_origins={ORIGIN}", log_path=log).wait_ready()
    yield server
    server.stop()


def workers(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=10).json()["workers"]


def peak_rss_mb(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def post(url: str, data: bytes, name: str, timeout: float = 120, **fields) -> requests.Response:
    return requests.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data)}, data=fields,
                         timeout=timeout)


def test_long_audio_is_refused_from_its_header_without_decoding(limited_server):
    before = peak_rss_mb(limited_server)
    # 500 s of 8-bit audio at 1 kHz: a 0.5 MB WAV whose header declares the length.
    wav = io.BytesIO()
    soundfile.write(wav, np.zeros(500_000, dtype=np.float32), 1000, subtype="PCM_U8", format="WAV")
    response = post(limited_server.url, wav.getvalue(), "long.wav")
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "uploaded file 'long.wav' holds 500.0 s of audio, longer than this server's limit of 400 s "
        "(--max_audio_s)")
    # An hour of 48 kHz stereo silence in a 0.6 MB FLAC: 1.4 GB as float32 had it been decoded, so a
    # peak under 100 MB (a margin of 14x) proves it was refused from the header, whatever the load.
    response = post(limited_server.url, flac_of_silence(3600), "hour.flac")
    assert response.status_code == 413, response.text
    assert response.json()["error"]["message"] == (
        "uploaded file 'hour.flac' holds 3600.0 s of audio, longer than this server's limit of 400 s "
        "(--max_audio_s)")
    assert peak_rss_mb(limited_server) - before < 100
    assert workers(limited_server.url)["busy"] == 0


def test_load_audio_stops_decoding_at_the_limit_when_the_header_does_not_say():
    data = flac_of_silence(600, rate=16000, declared_s=0)
    assert soundfile.info(io.BytesIO(data)).frames > 1 << 60    # libsndfile: length unknown
    with pytest.raises(AudioTooLong) as refused:
        load_audio(data, max_seconds=30, name="silence.flac")
    assert str(refused.value) == "silence.flac: the audio lasts more than 30 s, longer than the limit of 30 s"
    assert refused.value.seconds is None
    assert len(load_audio(data[:200_000])) > 0      # the same stream decodes without a limit


def test_request_time_limit_stops_the_work_and_frees_the_worker(limited_server, speech):
    started = time.monotonic()
    response = post(limited_server.url, speech, "speech.wav")
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["message"] == (
        "the recognition did not finish within this server's limit of 3 s (--request_timeout_s) and was "
        "stopped; send shorter audio")
    assert elapsed >= 3
    # The worker is freed at the job's next check; cancelled counts only work cut short (the deadline
    # only keeps a broken server from hanging the suite).
    deadline = time.monotonic() + 120
    while workers(limited_server.url)["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers(limited_server.url)["busy"] == 0 and workers(limited_server.url)["cancelled"] >= 1


def test_long_prompt_keeps_its_end(limited_server):
    path, _ = english_clip(0)
    audio = Path(path).read_bytes()
    response = post(limited_server.url, audio, "clip.flac", prompt="Mister Quilter. " * 640)   # 10,240 chars
    assert response.status_code == 200, response.text
    assert response.json()["text"].strip()


def test_oversized_form_field_is_named(limited_server):
    path, _ = english_clip(0)
    response = post(limited_server.url, Path(path).read_bytes(), "clip.flac", prompt="x" * 2_000_000)
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "form field 'prompt' is larger than the 1024 KB a text field may hold (only the file may be larger)")
    assert requests.get(f"{limited_server.url}/health", timeout=10).status_code == 200


def test_cors_preflight_from_allowed_and_other_origins(limited_server):
    url = f"{limited_server.url}/v1/audio/transcriptions"
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = requests.options(url, headers={"Origin": ORIGIN, **asked}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = requests.options(url, headers={"Origin": "https://evil.example.org", **asked}, timeout=10)
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    health = requests.get(f"{limited_server.url}/health", headers={"Origin": ORIGIN}, timeout=10)
    assert health.headers["access-control-allow-origin"] == ORIGIN


def wait_busy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while workers(url)["busy"] == 0:
        assert time.monotonic() < deadline, "the recognition never started"
        time.sleep(0.05)


def test_hang_up_frees_the_worker_and_sigterm_exits_cleanly(tmp_path, speech):
    # The request time limit (600 s) lies beyond the 300 s waited below: only the hang-up can cut it short.
    server = ServerProcess(f"--model_path={MODEL}", "--cpu_threads=1", "--request_timeout_s=600",
                           "--shutdown_timeout_s=1",
                           log_path=tmp_path / "server.log").wait_ready()
    try:
        client = raw_upload(server.url, speech)
        wait_busy(server.url)
        client.close()
        # No clock: /health counts a job as cancelled only when it stopped before its end (raised
        # Cancelled), so cancelled == 1 with the worker free proves the hang-up cut the work short.
        # The deadline only keeps a broken server from hanging the suite.
        deadline = time.monotonic() + 300
        while workers(server.url)["busy"] and time.monotonic() < deadline:
            time.sleep(0.05)
        state = workers(server.url)
        assert (state["busy"], state["cancelled"]) == (0, 1), state

        answers: list = []
        thread = threading.Thread(target=lambda: answers.append(_post_quietly(server.url, speech)))
        thread.start()
        wait_busy(server.url)
        server.proc.send_signal(signal.SIGTERM)
        # 1 s of grace, then the running recognition stops at its next segment: exit code 0, and the
        # client never gets a finished transcript (the work was stopped, not waited for).
        assert server.proc.wait(timeout=300) == 0, server.log()
        thread.join(timeout=60)
        assert answers and answers[0] != 200
    finally:
        server.stop()


def _post_quietly(url: str, audio: bytes):
    try:
        return post(url, audio, "speech.wav").status_code
    except requests.ConnectionError:
        return "connection closed"
