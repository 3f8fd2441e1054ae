"""The HTTP service around one Transcriber: the original `/recognition` API, OpenAI's audio API
(`/v1/audio/transcriptions`, `/v1/audio/translations`) and a web page.

`create_app(transcriber, ServerSettings(...))` builds the FastAPI app; infer_server.py only parses
arguments, loads the model and runs uvicorn, so tests can build the same app around any model.
"""
from __future__ import annotations

import asyncio
import io
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from utils import REPO_ROOT
from utils.core.audio import AudioError, load_audio
from utils.core.languages import LANGUAGES, check_task, language_name, to_language_code
from utils.core.text import remove_punctuation, to_simplified
from utils.inference.transcriber import Segment, TranscribeOptions, Transcriber, TranscriptionInfo
from utils.inference.writers import WriteSRT, WriteVTT, transcript_text

REPO_ROOT = Path(REPO_ROOT)
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")
MB = 1024 * 1024
# Multipart framing and the small text fields ride in the same body as the file.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ServerSettings:
    backend: str = "transformers"
    temperature_increment_on_fallback: float = 0.2
    model_name: str = "whisper"
    num_workers: int = 1
    max_queue: int = 16
    max_upload_mb: float = 100.0
    api_key: Optional[str] = None
    language: Optional[str] = None      # default when a request names none; None = detect
    beam_size: int = 1
    vad_filter: bool = False

    def public(self) -> dict:
        """The settings as /health shows them: the key itself never leaves the server."""
        shown = asdict(self)
        shown["api_key"] = "(set)" if self.api_key else None
        return shown


class RequestError(Exception):
    """A request the server refuses: becomes `status` with `message` in the route's error format."""

    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class RecognitionPool:
    """`num_workers` recognitions run at once in threads; up to `max_queue` more wait; beyond, 503.

    A thread pool rather than processes: every backend releases the GIL inside its engine
    (torch, CTranslate2), and one copy of the model serves all workers.
    """

    def __init__(self, num_workers: int, max_queue: int):
        self.num_workers, self.max_queue = num_workers, max_queue
        self._executor = ThreadPoolExecutor(num_workers, thread_name_prefix="recognition")
        self._lock = threading.Lock()
        self.admitted = 0     # running + waiting
        self.running = 0
        self.served = 0
        self.rejected = 0
        self._durations: list[float] = []

    def try_admit(self) -> bool:
        with self._lock:
            if self.admitted >= self.num_workers + self.max_queue:
                return False
            self.admitted += 1
            return True

    def count_rejection(self) -> None:
        with self._lock:
            self.rejected += 1

    def full(self) -> bool:
        with self._lock:
            return self.admitted >= self.num_workers + self.max_queue

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times a recent recognition's time."""
        with self._lock:
            recent = self._durations[-20:]
            per_request = sum(recent) / len(recent) if recent else 2.0
            ahead = self.admitted / max(self.num_workers, 1)
        return max(1, int(round(per_request * ahead)))

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on a worker; the caller must have been admitted."""
        def timed():
            with self._lock:
                self.running += 1
            started = time.monotonic()
            try:
                return fn()
            finally:
                with self._lock:
                    self.running -= 1
                    self._durations = self._durations[-19:] + [time.monotonic() - started]

        def release(_future):
            # On the job's end, not the caller's: a client that hangs up does not stop a running
            # recognition, so its slot stays taken until the worker is really free.
            with self._lock:
                self.admitted -= 1
                self.served += 1

        job = self._executor.submit(timed)
        job.add_done_callback(release)
        return await asyncio.wrap_future(job)

    def status(self) -> dict:
        with self._lock:
            return {"total": self.num_workers, "busy": self.running,
                    "free": self.num_workers - self.running,
                    "waiting": self.admitted - self.running, "max_queue": self.max_queue,
                    "served": self.served, "rejected_busy": self.rejected}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class UploadGate:
    """Refuse an upload before its body is read: 503 when every worker and queue slot is taken,
    413 when the body is over `max_bytes` (by Content-Length, or counted as a chunked body
    streams in), so an overloaded or abused server does not spool bodies it will refuse.

    Starlette's own body limiter answers with its own plain-text 413; raising HTTPException from
    `receive` instead lets FastAPI pass it to this app's handler, which answers in the format of
    the API the client speaks.
    """

    def __init__(self, app, max_bytes: int, pool: "RecognitionPool"):
        self.app, self.max_bytes, self.pool = app, max_bytes, pool

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def gated_receive():
            nonlocal received
            if received == 0 and self.pool.full():
                raise StarletteHTTPException(503, headers={"Retry-After": str(self.pool.retry_after_s())})
            if too_large:
                raise StarletteHTTPException(413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(413)
            return message

        await self.app(scope, gated_receive, send)


# --- text post-processing of the original API --------------------------------------------

def subtitles(writer_class, segments: list[Segment], info: TranscriptionInfo) -> str:
    buffer = io.StringIO()
    writer_class(output_dir="").write(segments, info, buffer)
    return buffer.getvalue()


# --- the app ------------------------------------------------------------------------------

def create_app(transcriber: Transcriber, settings: ServerSettings) -> FastAPI:
    pool = RecognitionPool(settings.num_workers, settings.max_queue)
    max_body = int(settings.max_upload_mb * MB) + FORM_OVERHEAD_BYTES
    templates = Jinja2Templates(directory=str(REPO_ROOT / "templates"))
    bearer = HTTPBearer(auto_error=False, description="the server's --api_key")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="Whisper-Finetune speech recognition",
        description="Whisper speech recognition: the original `/recognition` API, OpenAI's "
                    "audio API and a web page. Errors: `/recognition` answers "
                    "`{\"code\": <HTTP status>, \"msg\": ...}`, `/v1/...` answers OpenAI's "
                    "`{\"error\": {\"message\": ...}}`.",
        version="1.0",
        docs_url=None)
    app.add_middleware(UploadGate, max_bytes=max_body, pool=pool)
    app.state.pool = pool
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=str(REPO_ROOT / "static")), name="static")
    # FastAPI's default /docs page loads Swagger UI from a CDN, which servers on closed
    # networks cannot reach; swagger-ui-bundle ships those files, so they are served locally.
    app.mount("/swagger-ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url="/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    def check_key(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if not settings.api_key:
            return
        if credentials is None:
            raise RequestError(401, "this server needs an API key: send the header "
                                    "'Authorization: Bearer <key>'",
                               headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), settings.api_key.encode()):
            raise RequestError(401, "the API key in the Authorization header is wrong",
                               headers={"WWW-Authenticate": "Bearer"})

    # ---- errors: one sentence, in the format of the API the client speaks ----

    def refuse_busy(retry: int) -> str:
        pool.count_rejection()
        return (f"all {settings.num_workers} workers are busy and {settings.max_queue} requests "
                f"are waiting; retry in {retry} s")

    def error_response(request: Request, status: int, message: str, param: Optional[str] = None,
                       headers: Optional[dict] = None) -> JSONResponse:
        if request.url.path.startswith("/v1/"):
            kind = {401: "authentication_error", 413: "invalid_request_error",
                    503: "server_busy", 500: "server_error"}.get(status, "invalid_request_error")
            body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        else:
            body = {"code": status, "msg": message}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError):
        return error_response(request, exc.status, exc.message, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else "?"
        if first.get("type") == "missing":
            message = f"missing form field '{field}'"
        else:
            message = f"form field '{field}': {first.get('msg', 'invalid value')}"
        return error_response(request, 400, message, param=field)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:
            message = (f"the upload is larger than this server's limit of "
                       f"{settings.max_upload_mb:g} MB (--max_upload_mb)")
        elif exc.status_code == 503:
            message = refuse_busy(int(exc.headers["Retry-After"]))
        elif exc.status_code == 404:
            message = f"no such endpoint: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 400:
            message = "the request body is not a valid multipart form upload"
        else:
            message = str(exc.detail)
        return error_response(request, exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        return error_response(request, 500, f"internal error: {type(exc).__name__}: {exc}")

    # ---- the one recognition path every endpoint shares ----

    async def recognise(upload: UploadFile, options: TranscribeOptions
                        ) -> tuple[list[Segment], TranscriptionInfo]:
        if upload.size is not None and upload.size > settings.max_upload_mb * MB:
            raise RequestError(413, f"the upload is larger than this server's limit of "
                                    f"{settings.max_upload_mb:g} MB (--max_upload_mb)")
        # Validate fields before queueing so that a bad request never waits for a worker.
        for field, check in (("language", to_language_code), ("task", check_task)):
            try:
                setattr(options, field, check(getattr(options, field)))
            except ValueError as exc:
                # The first clause says what is wrong; the list of 100 languages would drown it.
                raise RequestError(400, f"form field '{field}': {str(exc).split(';')[0]}", field)
        if not pool.try_admit():
            retry = pool.retry_after_s()
            raise RequestError(503, refuse_busy(retry), headers={"Retry-After": str(retry)})
        # The upload's name is only ever shown in messages, never used as a path.
        shown_name = repr((upload.filename or "upload")[:80])

        def work():
            # Read inside the worker: only num_workers uploads sit in memory at once, the
            # waiting ones stay in Starlette's spooled temporary files.
            upload.file.seek(0)
            data = upload.file.read()
            try:
                audio = load_audio(data)
            except AudioError as exc:
                raise AudioError(str(exc).replace("<uploaded audio>", f"uploaded file {shown_name}"))
            segments, info = transcriber.transcribe(audio, options)
            return list(segments), info

        try:
            return await pool.run(work)
        except AudioError as exc:
            raise RequestError(400, str(exc), "file")
        except ValueError as exc:
            # The transcriber's verdict on options (e.g. an English-only model asked for Chinese).
            raise RequestError(400, str(exc))
        except Exception as exc:
            raise RequestError(500, f"recognition failed: {type(exc).__name__}: {exc}")

    # ---- the original project's API ----

    @app.post("/recognition", dependencies=[Depends(check_key)],
              summary="Transcribe an upload (the original project's API)")
    async def recognition(
            audio: UploadFile = File(..., description="audio file: wav, mp3, m4a, ogg/opus, flac, webm ..."),
            to_simple: int = Form(1, description="1: convert traditional to simplified Chinese"),
            remove_pun: int = Form(0, description="1: remove punctuation"),
            task: str = Form("transcribe", description="transcribe or translate (to English)"),
            language: Optional[str] = Form(None, description="code or name, e.g. zh, en, chinese; "
                                                             "'None' or 'auto': detect; empty: server default")):
        options = TranscribeOptions(language=language if language not in (None, "") else settings.language,
                                    task=task, beam_size=settings.beam_size,
                                    vad_filter=settings.vad_filter,
                                    temperature_increment_on_fallback=settings.temperature_increment_on_fallback)
        segments, info = await recognise(audio, options)
        results = []
        for segment in segments:
            text = segment.text.strip()
            if to_simple == 1:
                text = to_simplified(text)
            if remove_pun == 1:
                text = remove_punctuation(text)
            # "result" is the original project's key; "text" the name the rest of this toolkit uses.
            results.append({"result": text, "text": text, "start": round(segment.start, 2),
                            "end": round(segment.end, 2)})
        return {"results": results, "code": 0, "language": info.language,
                "language_probability": info.language_probability,
                "duration": round(info.duration, 3)}

    # ---- OpenAI's audio API ----

    async def openai_audio(task: str, file: UploadFile, language: Optional[str],
                           prompt: Optional[str], response_format: str, temperature: float,
                           granularities: Optional[list[str]]) -> Response:
        if response_format not in RESPONSE_FORMATS:
            raise RequestError(400, f"form field 'response_format': unknown format "
                                    f"{response_format!r}; use one of {', '.join(RESPONSE_FORMATS)}",
                               "response_format")
        granularities = granularities or ["segment"]
        unknown = [g for g in granularities if g not in GRANULARITIES]
        if unknown:
            raise RequestError(400, f"form field 'timestamp_granularities[]': unknown value "
                                    f"{unknown[0]!r}; use segment and/or word",
                               "timestamp_granularities[]")
        words = "word" in granularities
        if words and response_format != "verbose_json":
            raise RequestError(400, "timestamp_granularities[] needs response_format=verbose_json",
                               "timestamp_granularities[]")
        if not 0.0 <= temperature <= 1.0:
            raise RequestError(400, f"form field 'temperature': {temperature} is outside 0 to 1",
                               "temperature")
        options = TranscribeOptions(
            language=language if language else (settings.language if task == "transcribe" else None),
            task=task, beam_size=settings.beam_size, vad_filter=settings.vad_filter,
            word_timestamps=words, initial_prompt=prompt or None, temperature=temperature,
            temperature_increment_on_fallback=settings.temperature_increment_on_fallback)
        segments, info = await recognise(file, options)
        text = transcript_text(segments)
        if response_format == "json":
            return JSONResponse({"text": text})
        if response_format == "text":
            return PlainTextResponse(text + "\n")
        if response_format == "srt":
            return PlainTextResponse(subtitles(WriteSRT, segments, info))
        if response_format == "vtt":
            return PlainTextResponse(subtitles(WriteVTT, segments, info), media_type="text/vtt")
        body: dict[str, Any] = {
            "task": task, "language": language_name(info.language),
            "duration": round(info.duration, 3), "text": text,
            "segments": [{"id": i, "seek": int(s.start * 100), "start": round(s.start, 3),
                          "end": round(s.end, 3), "text": s.text, "temperature": temperature}
                         for i, s in enumerate(segments)]}
        if words:
            body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                              "probability": round(w.probability, 4)}
                             for s in segments for w in (s.words or [])]
        return JSONResponse(body)

    format_help = f"one of {', '.join(RESPONSE_FORMATS)}"

    @app.post("/v1/audio/transcriptions", dependencies=[Depends(check_key)],
              summary="Transcribe an upload (OpenAI-compatible)")
    async def transcriptions(
            file: UploadFile = File(..., description="audio file"),
            model: Optional[str] = Form(None, description="accepted for compatibility; this server "
                                                          "serves the one model it loaded"),
            language: Optional[str] = Form(None, description="ISO-639-1 code, e.g. en; empty: detect"),
            prompt: Optional[str] = Form(None, description="text to condition the first window on"),
            response_format: str = Form("json", description=format_help),
            temperature: float = Form(0.0, description="sampling temperature, 0 to 1"),
            timestamp_granularities: Optional[list[str]] = Form(
                None, alias="timestamp_granularities[]",
                description="segment and/or word (word needs verbose_json)")):
        return await openai_audio("transcribe", file, language, prompt, response_format,
                                  temperature, timestamp_granularities)

    @app.post("/v1/audio/translations", dependencies=[Depends(check_key)],
              summary="Translate an upload into English text (OpenAI-compatible)")
    async def translations(
            file: UploadFile = File(..., description="audio file"),
            model: Optional[str] = Form(None, description="accepted for compatibility"),
            prompt: Optional[str] = Form(None, description="English text to condition on"),
            response_format: str = Form("json", description=format_help),
            temperature: float = Form(0.0, description="sampling temperature, 0 to 1")):
        return await openai_audio("translate", file, None, prompt, response_format, temperature, None)

    @app.get("/v1/models", dependencies=[Depends(check_key)], summary="The served model (OpenAI-compatible)")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model",
                                            "owned_by": "whisper-finetune"}]}

    # ---- operations and the page ----

    @app.get("/health", summary="Model loaded, backend, workers busy/free")
    async def health():
        return {"status": "ok", "model_loaded": True, "backend": settings.backend,
                "model": settings.model_name, "workers": pool.status(), "settings": settings.public()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request):
        # The page itself holds no data; a browser cannot attach a Bearer header to a page load,
        # so the page asks for the key and sends it with each upload instead.
        return templates.TemplateResponse(request, "index.html", {
            "model_name": settings.model_name, "backend": settings.backend,
            "max_upload_mb": settings.max_upload_mb, "needs_key": bool(settings.api_key),
            "default_language": settings.language or "",
            "languages": sorted(LANGUAGES.items(), key=lambda item: item[1]),
            "languages_json": json.dumps(LANGUAGES)})

    return app
