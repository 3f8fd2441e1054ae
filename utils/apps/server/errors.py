"""Every refusal is one sentence in the error format of the API the client speaks: `/v1/...` answers
OpenAI's `{"error": {"message", "type", "param", "code"}}`, everything else the original project's
`{"code": <HTTP status>, "msg": ...}`."""
from __future__ import annotations

from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

OPENAI_ERROR_TYPES = {401: "authentication_error", 413: "invalid_request_error", 503: "server_busy",
                      504: "timeout", 500: "server_error"}
# Starlette's limit on a text field of a multipart form (MultiPartParser's max_part_size).
FIELD_LIMIT_KB = 1024


class RequestError(Exception):
    """A request the server refuses: becomes `status` with `message` in the route's error format."""

    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


def error_response(request: Request, status: int, message: str, param: Optional[str] = None,
                   headers: Optional[dict] = None) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        kind = OPENAI_ERROR_TYPES.get(status, "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    else:
        body = {"code": status, "msg": message}
    return JSONResponse(body, status_code=status, headers=headers)


async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
    return error_response(request, exc.status, exc.message, exc.param, exc.headers)


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = str(first["loc"][-1]) if first.get("loc") else "?"
    if first.get("type") == "missing":
        message = f"missing form field '{field}'"
    else:
        message = f"form field '{field}': {first.get('msg', 'invalid value')}"
    return error_response(request, 400, message, param=field)


def http_error_message(request: Request, exc: StarletteHTTPException) -> str:
    status = exc.status_code
    if status == 413:
        return request.app.state.settings.too_large()
    if status == 503:   # raised by UploadGate before the body was read
        return request.app.state.pool.refusal(int(exc.headers["Retry-After"]))
    if status == 404:
        return f"no such endpoint: {request.url.path}"
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}"
    if status == 400:
        field = oversized_field(exc)
        if field is not None:
            return (f"form field {field!r} is larger than the {FIELD_LIMIT_KB} KB a text field may hold "
                    f"(only the file may be larger)")
        return "the request body is not a valid multipart form upload"
    return str(exc.detail)


def oversized_field(exc: StarletteHTTPException) -> Optional[str]:
    """The name of the text field that broke Starlette's part-size limit, when that is why the
    form could not be parsed; else None.

    FastAPI answers every form-parsing failure with one 400 and Starlette's message does not name
    the part, so the name is read from the parser that raised (the innermost frame whose `self`
    holds a current part). Any other parsing failure keeps the generic sentence.
    """
    cause = exc.__cause__ or exc.__context__
    if type(cause).__name__ != "MultiPartException" or "exceeded maximum size" not in str(cause):
        return None
    traceback, name = cause.__traceback__, None
    while traceback is not None:
        part = getattr(traceback.tb_frame.f_locals.get("self"), "_current_part", None)
        name = getattr(part, "field_name", None) or name
        traceback = traceback.tb_next
    return name or "?"


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = 413 if exc.status_code == 400 and oversized_field(exc) is not None else exc.status_code
    return error_response(request, status, http_error_message(request, exc),
                          headers=getattr(exc, "headers", None))


async def on_bug(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 500, f"internal error: {type(exc).__name__}: {exc}")


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_bug)
