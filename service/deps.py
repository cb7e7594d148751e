"""What routes need, as `Annotated` dependencies: the app state and its parts, auth, and
request bodies (`JsonBody`).

Every dependency is `async def`, also those that do not await: FastAPI runs a plain `def`
dependency in its thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import email.message
import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute

from runtime.engine import Engine
from service.batcher import Batcher
from service.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidInputError,
    NotReadyError,
    StoreUnavailableError,
    UnauthorizedError,
)
from service.settings import Scope, Settings
from service.state import AppState
from store import Store

_bearer = HTTPBearer(auto_error=False)
M = TypeVar("M", bound=BaseModel)


async def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "qarm", None)
    if not isinstance(state, AppState):
        waiting = getattr(request.app.state, "waiting", None)
        if waiting:  # up since start-up, but the store has not answered yet
            raise StoreUnavailableError(waiting)
        raise NotReadyError("the service is starting")
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_engine(state: StateDep) -> Engine:
    """The engine this request uses from start to end, even if a reload swaps it meanwhile."""
    return state.engine


async def get_store(state: StateDep) -> Store:
    return state.store


async def get_batcher(state: StateDep) -> Batcher:
    return state.batcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[Store, Depends(get_store)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]


def require(scope: Scope) -> Callable[..., Awaitable[None]]:
    """A dependency that lets the request through when its bearer token has `scope`.

    No tokens configured: everything is open (the lifespan warned at start-up). Tokens are
    compared in constant time and never logged; logs name the token's `name` only.
    """

    async def check(
        request: Request,
        settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if not settings.tokens:
            return
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise UnauthorizedError("a bearer token is required (Authorization: Bearer <token>)")
        given = credentials.credentials.encode()
        match = None
        for entry in settings.tokens:
            if hmac.compare_digest(given, entry.token.get_secret_value().encode()):
                match = entry
        if match is None:
            raise UnauthorizedError("unknown bearer token", invalid_token=True)
        request.state.token_name = match.name
        if scope not in match.scopes:
            raise ForbiddenError(f"token {match.name!r} lacks the {scope!r} scope")

    return check


WriteAuth = Depends(require("write"))
ReadAuth = Depends(require("read"))
AdminAuth = Depends(require("admin"))


class JsonBody(Generic[M]):
    """A route's JSON body as a dependency: `Annotated[ItemsIn, Depends(ITEMS)]` with
    `ITEMS = JsonBody(ItemsIn, ...)`, and `openapi_extra=ITEMS.openapi` on the route.

    FastAPI reads and parses a body parameter before it runs any dependency, auth included;
    as a dependency listed after the route's `dependencies=[...Auth]` the body is read only
    once the token has passed (a request without one gets its 401 with its body unread), and
    parsed and validated by the app's `BodyParser` (large bodies in a worker process). `limit`
    picks the setting that caps the model's list (items, ids), checked before its elements.
    `required=False` (for a model whose every field has a default): an empty body is the
    model's defaults."""

    def __init__(
        self,
        model: type[M],
        limit: Callable[[Settings], int] | None = None,
        *,
        required: bool = True,
    ) -> None:
        self.model = model
        self.limit = limit
        self.required = required

    @property
    def openapi(self) -> dict[str, Any]:
        """The route's `openapi_extra`: its request body, by reference to the model's schema
        (`service.app.QarmAPI` adds the schemas of every route's body)."""
        schema = {"$ref": f"#/components/schemas/{self.model.__name__}"}
        return {
            "requestBody": {
                "required": self.required,
                "content": {"application/json": {"schema": schema}},
            }
        }

    async def __call__(self, request: Request, state: StateDep) -> M:
        where = f"{request.method} {request.url.path}"
        try:
            raw = await request.body()  # the body limit and read deadline apply (service.app)
        except ClientDisconnect:
            raise BadRequestError(
                f"{where}: the client left before its body was complete"
            ) from None
        if not raw:
            if self.required:
                raise InvalidInputError("body: a JSON body is required")
            return self.model()
        kind = request.headers.get("content-type")
        if kind is None or not _is_json(kind):
            got = f"Content-Type {kind[:100]!r}" if kind else "no Content-Type"
            raise InvalidInputError(
                f"body: expected JSON (Content-Type: application/json), got {got}"
            )
        caps = {"limit": self.limit(state.settings)} if self.limit is not None else {}
        return await state.parser.parse(self.model, raw, caps, where)


def body_models(routes: Iterable[BaseRoute]) -> list[type[BaseModel]]:
    """The models of the routes' `JsonBody` dependencies, each once, for the OpenAPI document."""
    found: list[type[BaseModel]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            for dependency in route.dependant.dependencies:
                call = dependency.call
                if isinstance(call, JsonBody) and call.model not in found:
                    found.append(call.model)
    return found


def _is_json(content_type: str) -> bool:
    """`application/json` or `application/<anything>+json`, parameters aside (as FastAPI)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
