"""One error type per failure kind, and the one place that maps them to HTTP answers.

Every error body has the same shape:
`{"error": {"kind": ..., "message": ..., "item": {"index", "id", "field"} | null}}`.
503s carry `Retry-After`, 401s `WWW-Authenticate: Bearer`, 408s `Connection: close`.
Routes, the batcher and the body parser (`service.bodies`) raise or return these; `install`
maps them, and also the answers FastAPI and Starlette would otherwise give in their own shape
(validation errors of path and query parameters, unknown routes, wrong methods, unhandled
exceptions), so that every non-2xx answer of the API has this body and is counted by kind.
`ErrorAnswer` builds each answer, for the handlers and for the body limit (which answers
before any route runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class ItemRef(BaseModel):
    """Which item of a request an error is about."""

    index: int | None = None  # position in the request's `items` (or a batchGet's `ids`)
    id: str | None = None
    field: str | None = None  # text, image, audio, embedding, id, ...


class ErrorInfo(BaseModel):
    """What went wrong: `kind` (one per failure, see `error_kinds`), a message for people, and
    the item it is about, if any."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="the failure's kind, e.g. `invalid_input`, `not_found`")
    message: str
    item: ItemRef | None = Field(description="the item or field it is about; null if none")


class ErrorBody(BaseModel):
    """Every non-2xx answer of the API (`error_body` builds it; the OpenAPI schema of errors)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorInfo


class ServiceError(Exception):
    """Base of the service's errors: `status` and `kind` say how it is answered."""

    status = 500
    kind = "internal"

    def __init__(self, message: str, *, item: ItemRef | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.item = item


class InvalidInputError(ServiceError):
    """An item or field breaks the API's rules (422)."""

    status = 422
    kind = "invalid_input"


class BadRequestError(ServiceError):
    """A malformed path parameter, e.g. an RQ prefix (400)."""

    status = 400
    kind = "bad_request"


class TooLargeError(ServiceError):
    """A body over `max_body_bytes` (413)."""

    status = 413
    kind = "too_large"


class RequestTimeoutError(ServiceError):
    """The body did not arrive within `body_timeout_s` (408): answered with `Connection:
    close`, since the rest of the body may still be on its way."""

    status = 408
    kind = "request_timeout"


class NotFoundError(ServiceError):
    status = 404
    kind = "not_found"


class UnknownRouteError(NotFoundError):
    """No route has this path (404). A kind of its own: `not_found` says an item, semantic ID
    or version is unknown, and a client must not read a mistyped URL as that."""

    kind = "unknown_route"


class MethodNotAllowedError(ServiceError):
    """The path is a route, but not for this method (405); `Allow` names the methods it takes."""

    status = 405
    kind = "method_not_allowed"


class UnauthorizedError(ServiceError):
    """No bearer token, or an unknown one (401); answered with the RFC 6750 challenge
    `WWW-Authenticate: Bearer`, plus `error="invalid_token"` when a token was given."""

    status = 401
    kind = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"


class ForbiddenError(ServiceError):
    status = 403
    kind = "forbidden"


class UnavailableError(ServiceError):
    """Base of the 503s; each answers with Retry-After."""

    status = 503
    kind = "unavailable"


class OverloadedError(UnavailableError):
    """The batcher's queue is full."""

    kind = "overloaded"


class DeadlineExceededError(UnavailableError):
    """The write's deadline passed before the batcher reached it; it was dropped."""

    kind = "deadline_exceeded"


class StoreUnavailableError(UnavailableError):
    """The store did not answer or failed; nothing of the write was acknowledged."""

    kind = "store_unavailable"


class BatcherDeadError(UnavailableError):
    """The batcher task stopped; the service is not ready."""

    kind = "batcher_dead"


class NotReadyError(UnavailableError):
    kind = "not_ready"


class EncoderFailedError(ServiceError):
    """The encoder or quantizer raised on a batch (500); the batch was not written."""

    kind = "encoder_failed"


class WriteFailedError(ServiceError):
    """Writing a batch failed for a reason other than the store being unreachable (500): a
    bug, not an outage. The batch is not acknowledged; the batcher goes on serving."""

    kind = "write_failed"


class ReloadFailedError(ServiceError):
    """The bundle asked for cannot be loaded (409); the old one keeps serving."""

    status = 409
    kind = "reload_failed"


def error_kinds() -> list[str]:
    """Every `kind` an error answer can carry (the label values of qarm_errors_total)."""
    found, todo = set(), [ServiceError]
    while todo:
        cls = todo.pop()
        found.add(cls.kind)
        todo.extend(cls.__subclasses__())
    return sorted(found)


def error_body(kind: str, message: str, item: ItemRef | None = None) -> dict[str, Any]:
    """The body; what it echoes of the request (an id, a field) is written so that UTF-8
    carries it (`utf8`)."""
    echoed = None
    if item is not None:
        echoed = {k: utf8(v) if isinstance(v, str) else v for k, v in item.model_dump().items()}
    return {"error": {"kind": kind, "message": utf8(message), "item": echoed}}


def utf8(text: str) -> str:
    """`text` with what UTF-8 cannot encode written out: a lone surrogate, which a JSON body
    makes from a `"\\ud800"` escape, becomes the six characters `\\ud800` (echoed as it was,
    it would make the answer itself fail to encode: a 500)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class ErrorAnswer:
    """A ServiceError as its JSON answer, counted by kind (`count_error(kind)`): the one place
    every error answer is built, whoever answers it."""

    retry_after_s: int
    count_error: Callable[[str], None]

    def __call__(self, err: ServiceError, headers: Mapping[str, str] | None = None) -> JSONResponse:
        self.count_error(err.kind)
        if err.status >= 500:
            log.warning("answered %d %s: %s", err.status, err.kind, err.message)
        all_headers = dict(headers or {})
        if isinstance(err, UnavailableError):
            all_headers["Retry-After"] = str(self.retry_after_s)
        if isinstance(err, UnauthorizedError):
            all_headers["WWW-Authenticate"] = err.challenge
        if isinstance(err, RequestTimeoutError):
            all_headers["Connection"] = "close"
        return JSONResponse(
            error_body(err.kind, err.message, err.item),
            status_code=err.status,
            headers=all_headers or None,
        )


def install(app: FastAPI, answer: ErrorAnswer) -> None:
    """Answer ServiceError, FastAPI's validation errors, Starlette's HTTP errors (routing's
    404 and 405, the body limit's 413) and any other exception (500) with `answer`."""

    async def on_service_error(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, ServiceError)
        return answer(err)

    async def on_validation_error(_: Request, err: Exception) -> JSONResponse:
        # path and query parameters (bodies are validated by service.bodies, not FastAPI)
        assert isinstance(err, RequestValidationError)
        return answer(invalid_input(err.errors(), err.body))

    async def on_http_error(request: Request, err: Exception) -> JSONResponse:
        # Any status Starlette or FastAPI raise by themselves (routing's 404 and 405, the body
        # limit's 413), whatever it is.
        assert isinstance(err, HTTPException)
        return answer(_from_http(err, f"{request.method} {request.url.path}"), err.headers)

    async def on_unexpected(request: Request, err: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this, then re-raises `err` for the server
        # to log with its traceback; the client learns the type, never the message.
        where = f"{request.method} {request.url.path}"
        return answer(ServiceError(f"{where}: internal error ({type(err).__name__})"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def invalid_input(errors: Sequence[Mapping[str, Any]], body: Any) -> InvalidInputError:
    """pydantic's first complaint (its `loc` from the request's root: `body`, `path`, `query`),
    naming the item (index, id, field) of the parsed `body` when it is about one."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    where = ".".join(loc)
    return InvalidInputError(f"{where}: {first.get('msg', 'invalid')}", item=_item_of(loc, body))


def _from_http(err: HTTPException, where: str) -> ServiceError:
    """Starlette's and FastAPI's own errors as the service's, whatever their status; `where` is
    `METHOD /path`."""
    if err.status_code == 404:
        return UnknownRouteError(f"{where}: no such route (the API is at /docs)")
    if err.status_code == 405:
        allowed = (err.headers or {}).get("Allow", "")
        return MethodNotAllowedError(f"{where}: method not allowed; this path takes {allowed}")
    if err.status_code == 413:
        return TooLargeError(f"{where}: {err.detail}")
    error = ServiceError(f"{where}: {err.detail}")  # any other status: keep it
    error.status = err.status_code
    if err.status_code < 500:
        error.kind = BadRequestError.kind
    return error


def _item_of(loc: list[str], body: Any) -> ItemRef | None:
    """`["body", "items", "3", "embedding", ...]` -> item 3 with its id and field;
    `["body", "ids", "3"]` -> the 4th id of a batchGet (`index` is its position in `ids`)."""
    if len(loc) >= 3 and loc[:2] == ["body", "items"] and loc[2].isdigit():
        index = int(loc[2])
        item_id = None
        items = body.get("items") if isinstance(body, dict) else None
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            raw = items[index].get("id")
            item_id = raw if isinstance(raw, str) else None
        field = loc[3] if len(loc) > 3 else None
        return ItemRef(index=index, id=item_id, field=field)
    if len(loc) >= 3 and loc[:2] == ["body", "ids"] and loc[2].isdigit():
        index = int(loc[2])
        ids = body.get("ids") if isinstance(body, dict) else None
        raw = ids[index] if isinstance(ids, list) and index < len(ids) else None
        return ItemRef(index=index, id=raw if isinstance(raw, str) else None, field="ids")
    if len(loc) >= 2 and loc[0] == "body":
        return ItemRef(field=loc[1])
    if len(loc) >= 2 and loc[0] == "path":
        return ItemRef(field=loc[1])
    return None
