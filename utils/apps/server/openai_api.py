"""OpenAI's audio API: `/v1/audio/transcriptions`, `/v1/audio/translations` and `/v1/models`, so the
official `openai` client and the tools that speak it work unchanged."""
from __future__ import annotations

import io
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from utils.apps.server.dependencies import Recognizer, check_key, get_recognizer
from utils.apps.server.errors import RequestError
from utils.core.languages import language_name
from utils.inference.transcriber import Segment, TranscriptionInfo
from utils.inference.writers import WriteSRT, WriteVTT, transcript_text

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")
FORMAT_HELP = f"one of {', '.join(RESPONSE_FORMATS)}"

router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])


@router.post("/audio/transcriptions", summary="Transcribe an upload (OpenAI-compatible)")
async def transcriptions(
        recognizer: Annotated[Recognizer, Depends(get_recognizer)],
        file: Annotated[UploadFile, File(description="audio file")],
        model: Annotated[Optional[str], Form(description="accepted for compatibility; this server "
                                                         "serves the one model it loaded")] = None,
        language: Annotated[Optional[str], Form(description="ISO-639-1 code, e.g. en; empty: detect")] = None,
        prompt: Annotated[Optional[str], Form(description="text to condition the first window on")] = None,
        response_format: Annotated[str, Form(description=FORMAT_HELP)] = "json",
        temperature: Annotated[float, Form(description="sampling temperature, 0 to 1")] = 0.0,
        timestamp_granularities: Annotated[Optional[list[str]], Form(
            alias="timestamp_granularities[]", description="segment and/or word (word needs verbose_json)")] = None):
    return await openai_audio(recognizer, "transcribe", file, language or recognizer.settings.language,
                              prompt, response_format, temperature, timestamp_granularities)


@router.post("/audio/translations", summary="Translate an upload into English text (OpenAI-compatible)")
async def translations(
        recognizer: Annotated[Recognizer, Depends(get_recognizer)],
        file: Annotated[UploadFile, File(description="audio file")],
        model: Annotated[Optional[str], Form(description="accepted for compatibility")] = None,
        prompt: Annotated[Optional[str], Form(description="English text to condition on")] = None,
        response_format: Annotated[str, Form(description=FORMAT_HELP)] = "json",
        temperature: Annotated[float, Form(description="sampling temperature, 0 to 1")] = 0.0):
    return await openai_audio(recognizer, "translate", file, None, prompt, response_format, temperature, None)


@router.get("/models", summary="The served model (OpenAI-compatible)")
async def models(request: Request):
    return {"object": "list", "data": [{"id": request.app.state.settings.model_name, "object": "model",
                                        "owned_by": "whisper-finetune"}]}


async def openai_audio(recognizer: Recognizer, task: str, file: UploadFile, language: Optional[str],
                       prompt: Optional[str], response_format: str, temperature: float,
                       granularities: Optional[list[str]]) -> Response:
    words = wants_words(response_format, granularities or ["segment"])
    if not 0.0 <= temperature <= 1.0:
        raise RequestError(400, f"form field 'temperature': {temperature} is outside 0 to 1", "temperature")
    options = recognizer.options(language=language, task=task, word_timestamps=words,
                                 initial_prompt=prompt or None, temperature=temperature)
    segments, info = await recognizer.recognise(file, options)
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(task, segments, info, temperature, words))
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


def render(response_format: str, segments: list[Segment], info: TranscriptionInfo) -> Response:
    """The transcript as json, text, srt or vtt."""
    text = transcript_text(segments)
    if response_format == "json":
        return JSONResponse({"text": text})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    writer_class, media_type = {"srt": (WriteSRT, "text/plain"), "vtt": (WriteVTT, "text/vtt")}[response_format]
    buffer = io.StringIO()
    writer_class(output_dir="").write(segments, info, buffer)
    return PlainTextResponse(buffer.getvalue(), media_type=media_type)


def verbose_json(task: str, segments: list[Segment], info: TranscriptionInfo, temperature: float,
                 words: bool) -> dict[str, Any]:
    """OpenAI's verbose_json; fields it fills from decoder internals (tokens, avg_logprob, ...) are
    left out rather than invented."""
    body: dict[str, Any] = {
        "task": task, "language": language_name(info.language),
        "duration": round(info.duration, 3), "text": transcript_text(segments),
        "segments": [{"id": i, "seek": int(s.start * 100), "start": round(s.start, 3),
                      "end": round(s.end, 3), "text": s.text, "temperature": temperature}
                     for i, s in enumerate(segments)]}
    if words:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                          "probability": round(w.probability, 4)}
                         for s in segments for w in (s.words or [])]
    return body
