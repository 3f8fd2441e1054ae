"""OpenAI's audio API: `/v1/audio/transcriptions`, `/v1/audio/translations` and `/v1/models`, so the
official `openai` client and the tools that speak it work unchanged.

Field for field as OpenAI's reference; an option of that reference this server does not honour
(include[]=logprobs, chunking_strategy, diarization's known speakers, ...) is refused with a 400
naming the field, never silently ignored.
"""
from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import re
from typing import Annotated, Any, AsyncIterator, Callable, Iterator, Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from utils.apps.server.dependencies import Recognizer, check_key, get_recognizer
from utils.apps.server.errors import RequestError
from utils.core.languages import language_name
from utils.inference.transcriber import Segment, TranscriptionInfo
from utils.inference.writers import WriteSRT, WriteVTT, transcript_text

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
STREAM_FORMATS = ("json", "text")
GRANULARITIES = ("segment", "word")
FORMAT_HELP = f"one of {', '.join(RESPONSE_FORMATS)}"
TRANSCRIPTION_FIELDS = ("file", "model", "language", "prompt", "response_format", "temperature",
                        "timestamp_granularities", "stream")
TRANSLATION_FIELDS = ("file", "model", "prompt", "response_format", "temperature")
# What OpenAI's reference offers and this server does not do, and why: named in the refusal.
UNSUPPORTED = {
    "include": "token log-probabilities (include[]=logprobs) are not reported by this server",
    "chunking_strategy": "this server decodes the whole upload in Whisper's 30 s windows; "
                         "chunking_strategy is not supported",
    "known_speaker_names": "speaker diarization is not supported",
    "known_speaker_references": "speaker diarization is not supported",
}
# verbose_json's per-segment fields taken from the decoder, where the backend reports them.
DECODER_FIELDS = ("seek", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob")

router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])


@router.post("/audio/transcriptions", summary="Transcribe an upload (OpenAI-compatible)")
async def transcriptions(
        request: Request,
        recognizer: Annotated[Recognizer, Depends(get_recognizer)],
        file: Annotated[UploadFile, File(description="audio file")],
        model: Annotated[Optional[str], Form(description="accepted for compatibility; this server "
                                                         "serves the one model it loaded")] = None,
        language: Annotated[Optional[str], Form(description="ISO-639-1 code, e.g. en; empty: the server's "
                                                            "--language, else detect")] = None,
        prompt: Annotated[Optional[str], Form(description="text to condition the first window on")] = None,
        response_format: Annotated[str, Form(description=FORMAT_HELP)] = "json",
        temperature: Annotated[float, Form(description="sampling temperature, 0 to 1")] = 0.0,
        timestamp_granularities: Annotated[Optional[list[str]], Form(
            alias="timestamp_granularities[]", description="segment and/or word (word needs verbose_json)")] = None,
        stream: Annotated[bool, Form(description="true: server-sent events, transcript.text.delta per "
                                                 "segment as it is decoded, then transcript.text.done "
                                                 "(json or text format)")] = False):
    await refuse_unknown_fields(request, TRANSCRIPTION_FIELDS)
    return await openai_audio(recognizer, "transcribe", file, language or recognizer.settings.language,
                              prompt, response_format, temperature, timestamp_granularities, stream)


@router.post("/audio/translations", summary="Translate an upload into English text (OpenAI-compatible)")
async def translations(
        request: Request,
        recognizer: Annotated[Recognizer, Depends(get_recognizer)],
        file: Annotated[UploadFile, File(description="audio file")],
        model: Annotated[Optional[str], Form(description="accepted for compatibility")] = None,
        prompt: Annotated[Optional[str], Form(description="English text to condition on")] = None,
        response_format: Annotated[str, Form(description=FORMAT_HELP)] = "json",
        temperature: Annotated[float, Form(description="sampling temperature, 0 to 1")] = 0.0):
    await refuse_unknown_fields(request, TRANSLATION_FIELDS)
    return await openai_audio(recognizer, "translate", file, None, prompt, response_format, temperature,
                              None, False)


def model_entry(request: Request) -> dict:
    settings = request.app.state.settings
    return {"id": settings.model_name, "object": "model", "created": settings.model_created,
            "owned_by": "whisper-finetune"}


@router.get("/models", summary="The served model (OpenAI-compatible)")
async def models(request: Request):
    return {"object": "list", "data": [model_entry(request)]}


@router.get("/models/{model_id:path}", summary="One model by id: the served one (OpenAI-compatible)")
async def model(request: Request, model_id: str):
    entry = model_entry(request)
    if model_id != entry["id"]:
        raise RequestError(404, f"the model {model_id!r} does not exist; this server serves {entry['id']!r}",
                           "model")
    return entry


async def refuse_unknown_fields(request: Request, known: tuple[str, ...]) -> None:
    """A form field outside `known` is refused in one sentence naming it (OpenAI refuses unknown
    arguments too), so an option this server does not honour is never silently dropped."""
    for name in (await request.form()).keys():
        base = re.sub(r"\[.*$", "", name)   # include[] -> include, chunking_strategy[type] -> ...
        if base in known:
            continue
        reason = UNSUPPORTED.get(base, "this server does not know this field")
        raise RequestError(400, f"form field '{name}': {reason}", name)


async def openai_audio(recognizer: Recognizer, task: str, file: UploadFile, language: Optional[str],
                       prompt: Optional[str], response_format: str, temperature: float,
                       granularities: Optional[list[str]], stream: bool) -> Response:
    granularities = granularities or ["segment"]
    words = wants_words(response_format, granularities)
    if not 0.0 <= temperature <= 1.0:
        raise RequestError(400, f"form field 'temperature': {temperature} is outside 0 to 1", "temperature")
    if stream and response_format not in STREAM_FORMATS:
        raise RequestError(400, f"form field 'stream': streaming answers in json or text format, "
                                f"not {response_format}", "stream")
    options = recognizer.options(language=language, task=task, word_timestamps=words,
                                 initial_prompt=prompt or None, temperature=temperature)
    if stream:
        return await streamed(recognizer, file, options)
    segments, info = await recognizer.recognise(file, options)
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(recognizer, task, segments, info, temperature, granularities))
    return render(response_format, segments, info)


def wants_words(response_format: str, granularities: list[str]) -> bool:
    """Whether word timestamps were asked for; RequestError for a format or granularity that cannot be."""
    if response_format not in RESPONSE_FORMATS:
        raise RequestError(400, f"form field 'response_format': unknown format {response_format!r}; "
                                f"use one of {', '.join(RESPONSE_FORMATS)}", "response_format")
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown:
        raise RequestError(400, f"form field 'timestamp_granularities[]': unknown value {unknown[0]!r}; "
                                f"use segment and/or word", "timestamp_granularities[]")
    words = "word" in granularities
    if words and response_format != "verbose_json":
        raise RequestError(400, "timestamp_granularities[] needs response_format=verbose_json",
                           "timestamp_granularities[]")
    return words


def usage(info: TranscriptionInfo) -> dict:
    # whisper-1 bills by the second and reports the rounded-up duration.
    return {"type": "duration", "seconds": math.ceil(info.duration)}


def render(response_format: str, segments: list[Segment], info: TranscriptionInfo) -> Response:
    """The transcript as json, text, srt or vtt."""
    text = transcript_text(segments)
    if response_format == "json":
        return JSONResponse({"text": text, "usage": usage(info)})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    writer_class, media_type = {"srt": (WriteSRT, "text/plain"), "vtt": (WriteVTT, "text/vtt")}[response_format]
    buffer = io.StringIO()
    writer_class(output_dir="").write(segments, info, buffer)
    return PlainTextResponse(buffer.getvalue(), media_type=media_type)


def whisper_text(recognizer: Recognizer, segment: Segment) -> str:
    """A segment's text as Whisper's decoder wrote it, leading space included (OpenAI's segments keep
    it); the toolkit's Segment.text is stripped."""
    decode = getattr(recognizer.transcriber, "decoded_text", None)
    if decode is None or not segment.tokens:
        return segment.text
    return decode(segment.tokens) or segment.text


def verbose_json(recognizer: Recognizer, task: str, segments: list[Segment], info: TranscriptionInfo,
                 temperature: float, granularities: list[str]) -> dict[str, Any]:
    """OpenAI's verbose_json. Decoder fields (seek, tokens, temperature, avg_logprob, ...) are the
    backend's own values; one a backend does not report is left out rather than invented."""
    body: dict[str, Any] = {
        "task": task, "language": language_name(info.language),
        "duration": round(info.duration, 3), "text": transcript_text(segments)}
    if "segment" in granularities:
        body["segments"] = []
        for i, s in enumerate(segments):
            entry = {"id": i, "start": round(s.start, 3), "end": round(s.end, 3), "text": whisper_text(recognizer, s)}
            entry.update({name: getattr(s, name) for name in DECODER_FIELDS if getattr(s, name) is not None})
            body["segments"].append(entry)
    if "word" in granularities:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                          "probability": round(w.probability, 4)}
                         for s in segments for w in (s.words or [])]
    body["usage"] = usage(info)
    return body


# --- stream=true ----------------------------------------------------------------------------

class SegmentTap:
    """A Transcriber that hands every segment to `on_segment` as it is decoded (in the worker thread),
    so the stream sends each one while the rest of the upload is still being decoded."""

    def __init__(self, transcriber, on_segment: Callable[[Segment], None]):
        self.transcriber, self.on_segment = transcriber, on_segment

    def __getattr__(self, name):
        # Everything else (languages, multilingual, decoded_text ...) is the wrapped transcriber's.
        return getattr(self.transcriber, name)

    def transcribe(self, audio, options):
        segments, info = self.transcriber.transcribe(audio, options)
        return self._tapped(segments), info

    def _tapped(self, segments) -> Iterator[Segment]:
        for segment in segments:
            self.on_segment(segment)
            yield segment


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def streamed(recognizer: Recognizer, file: UploadFile, options) -> StreamingResponse:
    """Server-sent events as OpenAI streams a transcription: `transcript.text.delta` per segment (the
    deltas add up to the json answer's text), then `transcript.text.done` with the whole text.

    A refusal found before the first segment (bad field, unreadable audio, busy server) is a plain
    error response; one after it arrives as an event with OpenAI's error body, which the client raises.
    """
    loop = asyncio.get_running_loop()
    decoded: asyncio.Queue = asyncio.Queue()
    tap = SegmentTap(recognizer.transcriber, lambda seg: loop.call_soon_threadsafe(decoded.put_nowait, seg))
    job = asyncio.ensure_future(dataclasses.replace(recognizer, transcriber=tap).recognise(file, options))
    first = asyncio.ensure_future(decoded.get())
    await asyncio.wait({job, first}, return_when=asyncio.FIRST_COMPLETED)
    if job.done() and not first.done():
        first.cancel()
        job.result()        # raises the refusal as a normal error response
        return StreamingResponse(events(job, decoded, None), media_type="text/event-stream")
    return StreamingResponse(events(job, decoded, first.result()), media_type="text/event-stream")


async def events(job: asyncio.Future, decoded: asyncio.Queue, first: Optional[Segment]) -> AsyncIterator[bytes]:
    seen: list[Segment] = []

    def delta(segment: Segment) -> bytes:
        before = transcript_text(seen)
        seen.append(segment)
        return sse({"type": "transcript.text.delta", "delta": transcript_text(seen)[len(before):]})

    if first is not None:
        yield delta(first)
    while True:
        next_segment = asyncio.ensure_future(decoded.get())
        await asyncio.wait({job, next_segment}, return_when=asyncio.FIRST_COMPLETED)
        if next_segment.done():
            yield delta(next_segment.result())
            continue
        next_segment.cancel()
        break
    while not decoded.empty():   # segments queued just before the job finished
        yield delta(decoded.get_nowait())
    try:
        job.result()
    except RequestError as exc:
        yield sse({"error": {"message": exc.message, "type": "server_error", "param": exc.param, "code": None}})
        return
    yield sse({"type": "transcript.text.done", "text": transcript_text(seen)})
    yield b"data: [DONE]\n\n"
