"""Live transcription over WebSocket on a real infer_server.py (tiny.en, ct2): the plain mode and
OpenAI's realtime transcription protocol give the clip's words; refusals close with 1008 or 1013
and a reason."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import soundfile
from server_process import ServerProcess
from test_server_web import launch, playwright  # noqa: F401  (the browser fixture)
from transcription_audio import english_clip, normalize, wer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from utils.core.audio import SAMPLE_RATE, load_audio, resample

KEY = "live-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("realtime-server") / "server.log"
    server = ServerProcess("--model_path=models/whisper-tiny.en-ct2", "--compute_type=int8", f"--api_key={KEY}",
                           "--max_streams=1", "--max_audio_s=20", log_path=log).wait_ready()
    yield server
    server.stop()


def ws_url(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


@pytest.fixture(scope="module")
def speech():
    """(16 kHz samples, reference): one English clip, then a second of silence."""
    path, sentence = english_clip(0)
    return np.concatenate([load_audio(path), np.zeros(SAMPLE_RATE, dtype=np.float32)]), sentence


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def closed(socket) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as ended:
        while True:
            socket.recv(timeout=60)
    return ended.value.rcvd.code, ended.value.rcvd.reason


def test_plain_mode_commits_the_clip(server, speech):
    audio, reference = speech
    with connect(ws_url(server, "/ws/stream?language=en"), additional_headers=AUTH) as socket:
        for begin in range(0, len(audio), SAMPLE_RATE // 2):
            socket.send(pcm16(audio[begin:begin + SAMPLE_RATE // 2]))
        socket.send(json.dumps({"type": "flush"}))
        messages = []
        while not messages or messages[-1]["type"] != "flushed":
            messages.append(json.loads(socket.recv(timeout=120)))
    commits = [m for m in messages if m["type"] == "commit"]
    text = "".join(m["text"] for m in commits)
    assert wer(reference, text) <= 0.3, text
    assert {"train", "minutes"} <= set(normalize(text).split())
    assert all(0 <= m["start"] <= m["end"] <= len(audio) / SAMPLE_RATE for m in commits)
    assert {m["type"] for m in messages} <= {"partial", "commit", "flushed"}


def test_openai_realtime_protocol_deltas_and_completed(server, speech):
    audio, reference = speech
    at_24k = resample(audio, SAMPLE_RATE, 24000)
    with connect(ws_url(server, "/v1/realtime?intent=transcription"), additional_headers=AUTH) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "transcription_session.created"
        socket.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1", "language": "en"}}}))
        updated = json.loads(socket.recv(timeout=30))
        assert updated["type"] == "transcription_session.updated", updated
        assert updated["session"]["input_audio_transcription"]["language"] == "en"
        for begin in range(0, len(at_24k), 12000):
            socket.send(json.dumps({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(pcm16(at_24k[begin:begin + 12000])).decode()}))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = []
        while not events or events[-1]["type"] != "conversation.item.input_audio_transcription.completed":
            events.append(json.loads(socket.recv(timeout=120)))
    deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    completed = events[-1]
    assert deltas and all(e["item_id"] == completed["item_id"] for e in deltas)
    assert "".join(e["delta"] for e in deltas).strip() == completed["transcript"]
    assert wer(reference, completed["transcript"]) <= 0.3, completed["transcript"]
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert committed["item_id"] == completed["item_id"] and committed["previous_item_id"] is None


def test_refusals_close_with_1008_or_1013_and_a_reason(server):
    with connect(ws_url(server, "/ws/stream")) as socket:
        code, reason = closed(socket)
    assert code == 1008 and "API key" in reason
    with connect(ws_url(server, "/ws/stream"), subprotocols=["openai-insecure-api-key.wrong"]) as socket:
        assert closed(socket) == (1008, "the API key is wrong")
    with connect(ws_url(server, "/v1/realtime"), additional_headers=AUTH) as socket:
        code, reason = closed(socket)
    assert code == 1008 and "intent=transcription" in reason
    with connect(ws_url(server, "/ws/stream?language=klingon"), additional_headers=AUTH) as socket:
        code, reason = closed(socket)
    assert code == 1008 and "klingon" in reason
    # --max_streams=1: while one stream is open, a second one is told to come back later (the
    # browser's subprotocol carries the key here).
    with connect(ws_url(server, "/ws/stream"), additional_headers=AUTH) as first:
        first.send(json.dumps({"type": "flush"}))
        assert json.loads(first.recv(timeout=60))["type"] in ("partial", "flushed")
        with connect(ws_url(server, "/ws/stream"),
                     subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as second:
            code, reason = closed(second)
        assert code == 1013 and "--max_streams" in reason
        # --max_audio_s=20: the 21st second of audio ends the stream.
        silence = pcm16(np.zeros(SAMPLE_RATE * 3, dtype=np.float32))
        for _ in range(7):
            first.send(silence)
        code, reason = closed(first)
    assert code == 1008 and "--max_audio_s" in reason


@pytest.mark.browser
def test_page_live_switch_shows_committed_words(server, playwright, tmp_path, artifacts_dir):  # noqa: F811
    # Chromium's fake microphone loops a WAV: the clip, then silence that ends the utterance.
    path, _ = english_clip(0)
    audio = np.concatenate([load_audio(path), np.zeros(2 * SAMPLE_RATE, dtype=np.float32)])
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, resample(audio, SAMPLE_RATE, 48000), 48000, subtype="PCM_16")
    browser = launch(playwright, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-audio-capture={speech}")
    try:
        page = browser.new_context(permissions=["microphone"]).new_page()
        page.goto(server.url + "/")
        page.fill("#api_key", KEY)          # the page sends it as the WebSocket subprotocol
        page.check("#live")
        page.click("#record")
        # The words arrive while the microphone is still on. The fake microphone may start inside the
        # clip (under load the file plays before the page listens), so the first pass can lack the
        # first word; the loop brings the whole clip next time.
        page.wait_for_function("(t => t.includes('train') && t.includes('minutes'))("
                               "document.querySelector('#live-text .committed').textContent.toLowerCase())",
                               timeout=120_000)
        assert page.inner_text("#record").startswith("■")
        page.screenshot(path=str(artifacts_dir / "server_web_live.png"), full_page=True)
        page.click("#record")
        page.wait_for_function("document.getElementById('record').textContent.includes('Record')",
                               timeout=60_000)
        committed = page.inner_text("#live-text .committed")
        assert {"train", "minutes"} <= set(normalize(committed).split()), committed
        assert page.inner_text("#live-text .partial") == ""
        grey = page.eval_on_selector("#live-text .partial", "e => getComputedStyle(e).color")
        assert grey == "rgb(138, 147, 166)", grey
        assert page.is_hidden("#error")
    finally:
        browser.close()
