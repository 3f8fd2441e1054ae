"""The page at `/`, the API documentation at `/docs`, `/health`, and the static files they load."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from swagger_ui_bundle import swagger_ui_path

from utils import REPO_ROOT
from utils.core.languages import LANGUAGES

templates = Jinja2Templates(directory=str(Path(REPO_ROOT) / "templates"))
router = APIRouter()


def mount_files(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(Path(REPO_ROOT) / "static")), name="static")
    # FastAPI's default /docs page loads Swagger UI from a CDN, which servers on closed
    # networks cannot reach; swagger-ui-bundle ships those files, so they are served locally.
    app.mount("/swagger-ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")


# The bundled Swagger UI (4.x) reads OpenAPI 3.0 only; FastAPI writes 3.1. /openapi.json stays 3.1
# for other tools, and /docs reads the same schema rewritten as 3.0 here (the few 3.1 forms FastAPI
# emits have direct 3.0 spellings; no maintained library does this rewrite).
DOCS_SCHEMA_URL = "/docs/openapi-3.0.json"


def as_openapi_30(node: Any) -> Any:
    """A FastAPI 3.1 schema (or part of it) in OpenAPI 3.0's words."""
    if isinstance(node, list):
        return [as_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: as_openapi_30(value) for key, value in node.items()}
    if node.get("openapi", "").startswith("3.1"):
        node["openapi"] = "3.0.3"
    if "anyOf" in node and {"type": "null"} in node["anyOf"]:
        rest = [choice for choice in node.pop("anyOf") if choice != {"type": "null"}]
        node.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        node["nullable"] = True
    if isinstance(node.get("type"), list):
        types = [t for t in node["type"] if t != "null"]
        node["nullable"] = len(types) < len(node["type"]) or node.get("nullable", False)
        node["type"] = types[0]
    if "contentMediaType" in node:    # an uploaded file
        node.pop("contentMediaType")
        node["format"] = "binary"
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return node


@router.get(DOCS_SCHEMA_URL, include_in_schema=False)
async def docs_schema(request: Request) -> JSONResponse:
    return JSONResponse(as_openapi_30(request.app.openapi()))


@router.get("/docs", include_in_schema=False)
async def docs_page(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(openapi_url=DOCS_SCHEMA_URL, title=f"{app.title} - API",
                               swagger_js_url="/swagger-ui/swagger-ui-bundle.js",
                               swagger_css_url="/swagger-ui/swagger-ui.css",
                               swagger_favicon_url="data:,")


@router.get("/health", summary="Model loaded, backend, workers busy/free")
async def health(request: Request):
    # Answered by the event loop, never by a worker, so it stays quick while every worker is busy.
    settings = request.app.state.settings
    return {"status": "ok", "model_loaded": True, "backend": settings.backend, "model": settings.model_name,
            "workers": request.app.state.pool.status(), "settings": settings.public()}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request):
    # The page itself holds no data; a browser cannot attach a Bearer header to a page load,
    # so the page asks for the key and sends it with each upload instead.
    settings = request.app.state.settings
    # Only the languages the served model has tokens for (99, or 100 with yue for large-v3).
    model_languages = {code: LANGUAGES[code] for code in request.app.state.recognizer.transcriber.languages}
    return templates.TemplateResponse(request, "index.html", {
        "model_name": settings.model_name, "backend": settings.backend,
        "max_upload_mb": settings.max_upload_mb, "needs_key": bool(settings.api_key),
        "default_language": settings.language or "",
        "languages": sorted(model_languages.items(), key=lambda item: item[1]),
        "languages_json": json.dumps(model_languages)})
