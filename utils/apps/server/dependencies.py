"""What every recognition endpoint depends on: the API-key check and the one recognition path
(size limit, field checks, admission, decoding in a worker, errors as RequestError)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Optional

from fastapi import Depends, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from utils.apps.server.errors import RequestError
from utils.apps.server.pool import RecognitionPool
from utils.apps.server.settings import MB, ServerSettings
from utils.core.audio import AudioError, load_audio
from utils.core.languages import check_model_language, check_task, to_language_code
from utils.inference.transcriber import Segment, TranscribeOptions, Transcriber, TranscriptionInfo

bearer = HTTPBearer(auto_error=False, description="the server's --api_key")


def check_key(request: Request,
              credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]) -> None:
    api_key = request.app.state.settings.api_key
    if not api_key:
        return
    if credentials is None:
        raise RequestError(401, "this server needs an API key: send the header 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(credentials.credentials.encode(), api_key.encode()):
        raise RequestError(401, "the API key in the Authorization header is wrong",
                           headers={"WWW-Authenticate": "Bearer"})


@dataclass
class Recognizer:
    """The one path from an upload to segments that every endpoint shares."""
    transcriber: Transcriber
    settings: ServerSettings
    pool: RecognitionPool

    def options(self, **fields) -> TranscribeOptions:
        """A request's options on top of the server's beam size, VAD and fallback settings."""
        return TranscribeOptions(beam_size=self.settings.beam_size, vad_filter=self.settings.vad_filter,
                                 temperature_increment_on_fallback=self.settings.temperature_increment_on_fallback,
                                 **fields)

    async def recognise(self, upload: UploadFile, options: TranscribeOptions
                        ) -> tuple[list[Segment], TranscriptionInfo]:
        if upload.size is not None and upload.size > self.settings.max_upload_mb * MB:
            raise RequestError(413, self.settings.too_large())
        # Validate fields before queueing so that a bad request never waits for a worker.
        check_fields(options, self.transcriber.languages)
        if not self.pool.try_admit():
            retry = self.pool.retry_after_s()
            raise RequestError(503, self.pool.refusal(retry), headers={"Retry-After": str(retry)})
        try:
            return await self.pool.run(lambda: self._decode(upload, options))
        except AudioError as exc:
            raise RequestError(400, str(exc), "file")
        except ValueError as exc:
            # The transcriber's verdict on options (e.g. an English-only model asked for Chinese).
            raise RequestError(400, str(exc))
        except Exception as exc:
            raise RequestError(500, f"recognition failed: {type(exc).__name__}: {exc}")

    def _decode(self, upload: UploadFile, options: TranscribeOptions) -> tuple[list[Segment], TranscriptionInfo]:
        # Read inside the worker: only num_workers uploads sit in memory at once, the
        # waiting ones stay in Starlette's spooled temporary files.
        upload.file.seek(0)
        data = upload.file.read()
        # The upload's name is only ever shown in messages, never used as a path.
        shown_name = repr((upload.filename or "upload")[:80])
        try:
            audio = load_audio(data)
        except AudioError as exc:
            raise AudioError(str(exc).replace("<uploaded audio>", f"uploaded file {shown_name}")) from None
        segments, info = self.transcriber.transcribe(audio, options)
        return list(segments), info


def form_language(value: Optional[str]) -> Optional[str]:
    """A form's language as a code; None = detect, which the original project and the page spell "None"."""
    if value is not None and value.strip().lower() == "none":
        return None
    return to_language_code(value)


def check_fields(options: TranscribeOptions, languages: Optional[tuple[str, ...]] = None) -> None:
    """Normalise the language and task a request names, or refuse it naming the form field; `languages`
    (the served model's) decides which languages are accepted."""
    def model_language(value):
        code = form_language(value)
        return code if languages is None else check_model_language(code, languages, model="the served model")

    for field, check in (("language", model_language), ("task", check_task)):
        try:
            setattr(options, field, check(getattr(options, field)))
        except ValueError as exc:
            # The first clause says what is wrong; the list of 100 languages would drown it.
            raise RequestError(400, f"form field '{field}': {str(exc).split(';')[0]}", field) from None


def get_recognizer(request: Request) -> Recognizer:
    return request.app.state.recognizer
