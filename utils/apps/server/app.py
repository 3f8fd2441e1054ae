"""`create_app`: the FastAPI app around one Transcriber, assembled from the routers of each API."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from utils.apps.server.dependencies import Recognizer
from utils.apps.server.errors import add_error_handlers
from utils.apps.server.openai_api import router as openai_router
from utils.apps.server.pool import RecognitionPool, UploadGate
from utils.apps.server.realtime import router as realtime_router
from utils.apps.server.recognition import router as recognition_router
from utils.apps.server.settings import ServerSettings
from utils.apps.server.web import mount_files
from utils.apps.server.web import router as web_router
from utils.inference.transcriber import Transcriber

DESCRIPTION = ("Whisper speech recognition: the original `/recognition` API, OpenAI's audio API and a web "
               "page. Errors: `/recognition` answers `{\"code\": <HTTP status>, \"msg\": ...}`, `/v1/...` "
               "answers OpenAI's `{\"error\": {\"message\": ...}}`.")


def request_batcher(transcriber: Transcriber, settings: ServerSettings):
    if settings.batch_requests <= 1:
        return None
    from utils.apps.server.batching import RequestBatcher

    return RequestBatcher(transcriber, settings.batch_requests, window_s=settings.batch_window_s)


def create_app(transcriber: Transcriber, settings: ServerSettings) -> FastAPI:
    # A batched request waits in its worker for its batch, so a batch of N needs N workers.
    pool = RecognitionPool(max(settings.num_workers, settings.batch_requests), settings.max_queue)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(lifespan=lifespan, title="Whisper-Finetune speech recognition", description=DESCRIPTION,
                  version="1.0", docs_url=None)
    app.state.settings = settings
    app.state.pool = pool
    app.state.recognizer = Recognizer(transcriber, settings, pool, batcher=request_batcher(transcriber, settings))
    app.add_middleware(UploadGate, max_bytes=settings.max_body_bytes, pool=pool)
    if settings.cors_origins:
        # Added last, so outermost: a preflight is answered before any other check, and refusals
        # (413, 503) carry the headers a browser needs to show them.
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])
    add_error_handlers(app)
    mount_files(app)
    for router in (recognition_router, openai_router, realtime_router, web_router):
        app.include_router(router)
    return app
