"""`POST /recognition`: the original Whisper-Finetune project's API, field for field."""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Depends, File, Form, UploadFile

from utils.apps.server.dependencies import Recognizer, check_key, get_recognizer
from utils.core.text import remove_punctuation, to_simplified
from utils.inference.transcriber import Segment

router = APIRouter()


@router.post("/recognition", dependencies=[Depends(check_key)],
             summary="Transcribe an upload (the original project's API)")
async def recognition(
        recognizer: Annotated[Recognizer, Depends(get_recognizer)],
        audio: Annotated[UploadFile, File(description="audio file: wav, mp3, m4a, ogg/opus, flac, webm ...")],
        to_simple: Annotated[int, Form(description="1: convert traditional to simplified Chinese")] = 1,
        remove_pun: Annotated[int, Form(description="1: remove punctuation")] = 0,
        task: Annotated[str, Form(description="transcribe or translate (to English)")] = "transcribe",
        language: Annotated[Optional[str], Form(description="code or name, e.g. zh, en, chinese; 'auto' or "
                                                            "'None': detect; empty: the server's --language, "
                                                            "else zh (en for an English-only model)")] = None):
    options = recognizer.options(language=default_language(recognizer, language), task=task)
    segments, info = await recognizer.recognise(audio, options)
    return {"results": [result(segment, to_simple == 1, remove_pun == 1) for segment in segments],
            "code": 0, "language": info.language, "language_probability": info.language_probability,
            "duration": round(info.duration, 3)}


def default_language(recognizer: Recognizer, language: Optional[str]) -> Optional[str]:
    """The original project assumed Chinese when a request named no language, and its README's client
    sends its fields as `json=`, which requests drops next to `files=`: so an empty field means the
    server's --language, else Chinese (English for an English-only model); "auto" or "None" detect."""
    if language not in (None, ""):
        return language
    if recognizer.settings.language:
        return recognizer.settings.language
    return "zh" if recognizer.transcriber.multilingual else "en"


def result(segment: Segment, simplified: bool, without_punctuation: bool) -> dict:
    text = segment.text.strip()
    if simplified:
        text = to_simplified(text)
    if without_punctuation:
        text = remove_punctuation(text)
    # "result" is the original project's key; "text" the name the rest of this toolkit uses.
    return {"result": text, "text": text, "start": round(segment.start, 2), "end": round(segment.end, 2)}
