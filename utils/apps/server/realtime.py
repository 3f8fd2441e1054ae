"""Live transcription over WebSocket: OpenAI's realtime transcription protocol and a plain one.

`/v1/realtime?intent=transcription` speaks OpenAI's realtime transcription events, so a client
written for OpenAI works here: `transcription_session.update` (or `session.update` with a
transcription session) sets the language and prompt; `input_audio_buffer.append` carries base64
PCM16, 24 kHz mono; `input_audio_buffer.commit` ends an utterance. The server answers
`conversation.item.input_audio_transcription.delta` as words are committed and `.completed` with
the utterance's transcript when the VAD hears it end, or on commit.

`/ws/stream?language=en` is the plain mode (the web page uses it): binary frames of PCM16, 16 kHz
mono, in; JSON `{"type": "partial" | "commit", "text", "start", "end"}` out; a text frame
`{"type": "flush"}` commits everything and is answered `{"type": "flushed"}`.

Both take the HTTP API's limits: the API key (the `Authorization: Bearer` header, or for
browsers, which cannot set headers on a WebSocket, OpenAI's subprotocol
`openai-insecure-api-key.<key>`), --max_audio_s of audio per session, and at most --max_streams
streams at once. A refusal closes the socket with 1008 (policy) or 1013 (try again later) and a
one-sentence reason.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import secrets
from typing import Optional

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from utils.apps.server.settings import ServerSettings
from utils.core.audio import SAMPLE_RATE
from utils.core.errors import UserError
from utils.core.languages import to_language_code
from utils.inference.streaming import StreamEvent, StreamingOptions, StreamingTranscriber

router = APIRouter()

POLICY, TRY_AGAIN_LATER = 1008, 1013
OPENAI_RATE = 24000
KEY_SUBPROTOCOL = "openai-insecure-api-key."
# A WebSocket close reason may hold at most 123 bytes.
MAX_REASON_BYTES = 123
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}{secrets.token_hex(4)}"


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data[:len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


class StreamSlots:
    """How many live streams run; at most `settings.max_streams` (the event loop is the only user)."""

    def __init__(self, limit: int):
        self.limit, self.open = limit, 0


def _slots(websocket: WebSocket) -> StreamSlots:
    state = websocket.app.state
    if not hasattr(state, "stream_slots"):
        state.stream_slots = StreamSlots(state.settings.max_streams)
    return state.stream_slots


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.close(code, reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore"))


def _refusal(websocket: WebSocket, settings: ServerSettings) -> Optional[tuple[int, str]]:
    """(close code, reason) when this connection may not stream, else None."""
    if settings.api_key:
        header = websocket.headers.get("authorization", "")
        offered = [p.strip()[len(KEY_SUBPROTOCOL):] for p in
                   websocket.headers.get("sec-websocket-protocol", "").split(",")
                   if p.strip().startswith(KEY_SUBPROTOCOL)]
        given = header[7:] if header.lower().startswith("bearer ") else (offered[0] if offered else None)
        if given is None:
            return POLICY, "this server needs an API key: send 'Authorization: Bearer <key>'"
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            return POLICY, "the API key is wrong"
    backend = websocket.app.state.recognizer.transcriber
    if "word_timestamps" in backend.unsupported:
        return POLICY, f"live transcription needs word timestamps; the {backend.backend} backend has none"
    if _slots(websocket).open >= settings.max_streams:
        return TRY_AGAIN_LATER, f"all {settings.max_streams} live streams are taken (--max_streams); try again later"
    return None


def _subprotocol(websocket: WebSocket) -> Optional[str]:
    # A browser drops a connection whose answer names none of the subprotocols it offered.
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    return next((p for p in offered if not p.startswith(KEY_SUBPROTOCOL)), None)


class LiveSession:
    """One connection: audio in through a queue, decoding in a thread, events out in order.

    Audio that arrives while a decode runs waits and goes into the next feed in one piece, so a
    slow decode makes the next one cover more audio instead of the stream falling behind."""

    def __init__(self, websocket: WebSocket, options: StreamingOptions):
        self.websocket = websocket
        self.settings: ServerSettings = websocket.app.state.settings
        self.transcriber = websocket.app.state.recognizer.transcriber
        self.options = options
        self.stream: Optional[StreamingTranscriber] = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.received_s = 0.0

    def start(self) -> Optional[str]:
        """A fresh stream with the current options; the reason when the model cannot take them."""
        try:
            self.stream = StreamingTranscriber(self.transcriber, self.options)
        except UserError as exc:
            return str(exc)
        return None

    def add_audio(self, samples: np.ndarray) -> Optional[str]:
        """Queue samples; the reason to close when the session passes --max_audio_s."""
        self.received_s += len(samples) / SAMPLE_RATE
        if self.received_s > self.settings.max_audio_s:
            return (f"the stream passed this server's limit of {self.settings.max_audio_s:g} s of audio "
                    f"(--max_audio_s)")
        self.queue.put_nowait(samples)
        return None

    async def decode_loop(self, send) -> None:
        """Take everything queued, feed it in one piece (or flush on a None), send the events."""
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            for flush, group in itertools.groupby(items, key=lambda item: isinstance(item, str)):
                if not flush:
                    audio = np.concatenate(list(group))
                    await send(await asyncio.to_thread(self.stream.feed, audio), False)
                    continue
                for marker in group:
                    if marker == "close":
                        return
                    await send(await asyncio.to_thread(self.stream.flush), True)


class LiveProtocol:
    """What both modes share: the stream started, decoding alongside, messages handled until the
    client leaves or a message's answer is to close. A mode says how it greets (`opened`), what
    one message does (`handle`: the reason to close, or None) and how events go out (`send`)."""

    def __init__(self, websocket: WebSocket, options: StreamingOptions):
        self.websocket, self.session = websocket, LiveSession(websocket, options)

    async def opened(self) -> None:
        pass

    async def handle(self, message: dict) -> Optional[str]:
        raise NotImplementedError

    async def send(self, events: list[StreamEvent], flushed: bool) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        problem = self.session.start()
        if problem:
            await _refuse(self.websocket, POLICY, problem)
            return
        await self.opened()
        decoding = asyncio.create_task(self.session.decode_loop(self.send))
        try:
            while not decoding.done():
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                reason = await self.handle(message)
                if reason:
                    await _refuse(self.websocket, POLICY, reason)
                    break
            else:
                decoding.result()
        finally:
            self.session.queue.put_nowait("close")
            await asyncio.wait({decoding}, timeout=60)
            decoding.cancel()


async def _serve(websocket: WebSocket, protocol) -> None:
    settings = websocket.app.state.settings
    refusal = _refusal(websocket, settings)
    await websocket.accept(subprotocol=_subprotocol(websocket))
    if refusal:
        await _refuse(websocket, *refusal)
        return
    slots = _slots(websocket)
    slots.open += 1
    try:
        await protocol.run()
    except WebSocketDisconnect:
        pass
    finally:
        slots.open -= 1


# ---- plain mode --------------------------------------------------------------------------
class PlainProtocol(LiveProtocol):
    async def send(self, events: list[StreamEvent], flushed: bool) -> None:
        for event in events:
            if event.kind == "end":
                continue
            await self.websocket.send_json({"type": event.kind, "text": event.text, "start": event.start,
                                            "end": event.end})
        if flushed:
            await self.websocket.send_json({"type": "flushed"})

    async def handle(self, message: dict) -> Optional[str]:
        if message.get("bytes") is not None:
            return self.session.add_audio(pcm16(message["bytes"]))
        if _json_type(message.get("text")) == "flush":
            self.session.queue.put_nowait("flush")
        else:
            await self.websocket.send_json({"type": "error", "message": (
                "send binary frames of PCM16 16 kHz mono audio, or the text {\"type\": \"flush\"}")})
        return None


def _json_type(text: Optional[str]) -> Optional[str]:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value.get("type") if isinstance(value, dict) else None


@router.websocket("/ws/stream")
async def plain_stream(websocket: WebSocket):
    settings = websocket.app.state.settings
    try:
        language = to_language_code(websocket.query_params.get("language") or settings.language)
    except UserError as exc:
        await websocket.accept(subprotocol=_subprotocol(websocket))
        await _refuse(websocket, POLICY, f"query parameter 'language': {str(exc).split(';')[0]}")
        return
    options = StreamingOptions(language=language, beam_size=settings.beam_size)
    await _serve(websocket, PlainProtocol(websocket, options))


# ---- OpenAI's realtime transcription protocol ----------------------------------------------
class RealtimeProtocol(LiveProtocol):
    """One item per utterance: deltas are committed words, `.completed` its whole transcript."""

    def __init__(self, websocket: WebSocket, options: StreamingOptions):
        super().__init__(websocket, options)
        self.session_id = _id("sess")
        self.item_id = _id("item")
        self.previous_item: Optional[str] = None
        self.item_text = ""
        self.resampler = None

    def describe(self) -> dict:
        options = self.session.options
        return {"id": self.session_id, "object": "realtime.transcription_session",
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": self.websocket.app.state.settings.model_name,
                                              "language": options.language, "prompt": options.initial_prompt or ""},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": int(options.min_silence_s * 1000),
                                   "prefix_padding_ms": int(options.speech_pad_s * 1000),
                                   "threshold": options.vad_threshold}}

    async def event(self, kind: str, **fields) -> None:
        await self.websocket.send_json({"event_id": _id("event"), "type": kind, **fields})

    async def error(self, message: str, param: Optional[str] = None) -> None:
        await self.event("error", error={"type": "invalid_request_error", "code": None, "message": message,
                                         "param": param, "event_id": None})

    async def send(self, events: list[StreamEvent], flushed: bool) -> None:
        for event in events:
            if event.kind == "commit" and event.text:
                self.item_text += event.text
                await self.event("conversation.item.input_audio_transcription.delta", item_id=self.item_id,
                                 content_index=0, delta=event.text)
            elif event.kind == "end":
                await self.complete()

    async def complete(self) -> None:
        """The utterance is over: its item is committed and its transcript completed."""
        if not self.item_text:
            return
        await self.event("input_audio_buffer.committed", previous_item_id=self.previous_item, item_id=self.item_id)
        await self.event("conversation.item.input_audio_transcription.completed", item_id=self.item_id,
                         content_index=0, transcript=self.item_text.strip())
        self.previous_item, self.item_id, self.item_text = self.item_id, _id("item"), ""

    async def update(self, session: dict) -> Optional[str]:
        """Apply a session update (the beta's or the GA's shape); an error message, or None."""
        audio_input = (session.get("audio") or {}).get("input") or {}
        transcription = session.get("input_audio_transcription") or audio_input.get("transcription") or {}
        audio_format = session.get("input_audio_format") or audio_input.get("format")
        if isinstance(audio_format, dict):
            rate = audio_format.get("rate", OPENAI_RATE)
            if audio_format.get("type") not in (None, "audio/pcm") or rate != OPENAI_RATE:
                return "only audio/pcm at 24000 Hz is supported"
        elif audio_format not in (None, "pcm16"):
            return f"input_audio_format {audio_format!r} is not supported; use pcm16"
        if self.session.stream is not None and self.session.received_s > 0 and "language" in transcription:
            return "the language is fixed once audio has arrived; send the update first"
        options = self.session.options
        try:
            if "language" in transcription:
                options.language = to_language_code(transcription["language"] or None)
        except UserError as exc:
            return f"session.input_audio_transcription.language: {str(exc).split(';')[0]}"
        if transcription.get("prompt") is not None:
            options.initial_prompt = transcription["prompt"] or None
        turn = session.get("turn_detection") or audio_input.get("turn_detection") or {}
        if turn.get("silence_duration_ms"):
            options.min_silence_s = float(turn["silence_duration_ms"]) / 1000
        return self.session.start() if self.session.received_s == 0 else None

    async def receive(self, message: dict) -> Optional[str]:
        """Handle one client event; the reason to close the socket, or None."""
        kind = message.get("type")
        if kind in ("transcription_session.update", "session.update"):
            problem = await self.update(message.get("session") or {})
            if problem:
                await self.error(problem, "session")
            else:
                await self.event("transcription_session.updated", session=self.describe())
        elif kind == "input_audio_buffer.append":
            try:
                data = base64.b64decode(message.get("audio") or "", validate=True)
            except (binascii.Error, ValueError):
                await self.error("input_audio_buffer.append: 'audio' is not base64", "audio")
                return None
            return self.session.add_audio(self._resample(pcm16(data)))
        elif kind == "input_audio_buffer.commit":
            self.session.queue.put_nowait("flush")
        elif kind == "input_audio_buffer.clear":
            self.session.queue.put_nowait("flush")
            await self.event("input_audio_buffer.cleared")
        else:
            await self.error(f"unsupported event type {kind!r} in a transcription session", "type")
        return None

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if self.resampler is None:
            import soxr

            self.resampler = soxr.ResampleStream(OPENAI_RATE, SAMPLE_RATE, 1, dtype="float32")
        return self.resampler.resample_chunk(samples)

    async def opened(self) -> None:
        await self.event("transcription_session.created", session=self.describe())

    async def handle(self, message: dict) -> Optional[str]:
        try:
            event = json.loads(message.get("text") or "")
        except ValueError:
            event = None
        if not isinstance(event, dict):
            await self.error("send each client event as one JSON object in a text frame")
            return None
        return await self.receive(event)


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket):
    if websocket.query_params.get("intent") != "transcription":
        await websocket.accept(subprotocol=_subprotocol(websocket))
        await _refuse(websocket, POLICY, "this server serves only transcription sessions: "
                                         "connect to /v1/realtime?intent=transcription")
        return
    settings = websocket.app.state.settings
    options = StreamingOptions(language=settings.language, beam_size=settings.beam_size)
    await _serve(websocket, RealtimeProtocol(websocket, options))
