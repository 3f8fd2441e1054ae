"""What every recognition endpoint depends on: the API-key check and the one recognition path
(size limit, field checks, admission, decoding in a worker, errors as RequestError)."""
from __future__ import annotations

import dataclasses
import secrets
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from fastapi import Depends, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from utils.apps.server.errors import RequestError
from utils.apps.server.pool import Cancelled, ClientGone, RecognitionPool, TimedOut
from utils.apps.server.settings import MB, ServerSettings
from utils.core.audio import AudioError, AudioTooLong, load_audio
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


# The status nginx logs for a client that closed the connection; nobody reads the answer.
CLIENT_CLOSED = 499


@dataclass
class Recognizer:
    """The one path from an upload to segments that every endpoint shares."""
    transcriber: Transcriber
    settings: ServerSettings
    pool: RecognitionPool
    request: Optional[Request] = None    # the request being served; get_recognizer sets it
    batcher: Optional[Any] = None        # utils.apps.server.batching.RequestBatcher, with --batch_requests

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
        client_gone = self.request.is_disconnected if self.request is not None else None
        try:
            return await self.pool.run(lambda cancel: self._decode(upload, options, cancel),
                                       self.settings.request_timeout_s, client_gone)
        except TimedOut:
            raise RequestError(504, self.settings.too_slow()) from None
        except ClientGone:
            raise RequestError(CLIENT_CLOSED, "the client closed the connection before the answer") from None
        except AudioTooLong as exc:
            raise RequestError(413, self.settings.too_long(exc, shown_name(upload)), "file") from None
        except AudioError as exc:
            raise RequestError(400, str(exc), "file")
        except ValueError as exc:
            # The transcriber's verdict on options (e.g. an English-only model asked for Chinese).
            raise RequestError(400, str(exc))
        except Exception as exc:
            raise RequestError(500, f"recognition failed: {type(exc).__name__}: {exc}")

    def _decode(self, upload: UploadFile, options: TranscribeOptions, cancel: threading.Event
                ) -> tuple[list[Segment], TranscriptionInfo]:
        # Decoded inside the worker, straight from Starlette's spooled temporary file: only
        # num_workers uploads are decoded at once, and never more than --max_audio_s of one.
        upload.file.seek(0)
        audio = load_audio(upload.file, max_seconds=self.settings.max_audio_s,
                           name=f"uploaded file {shown_name(upload)}")
        if self.batcher is not None and self.batcher.accepts(audio, options):
            return self.batcher.transcribe(audio, options)
        segments, info = self.transcriber.transcribe(audio, options)
        kept = []
        # Segments come from a generator, one window's decoding at a time: between two of them is
        # where a timed-out, hung-up or shut-down request stops.
        for segment in segments:
            if cancel.is_set():
                raise Cancelled()
            kept.append(segment)
        return kept, info


def shown_name(upload: UploadFile) -> str:
    # The upload's name is only ever shown in messages, never used as a path.
    return repr((upload.filename or "upload")[:80])


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
    # One per request, so that its recognition can watch whether this request's client hung up.
    return dataclasses.replace(request.app.state.recognizer, request=request)
