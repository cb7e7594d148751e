"""What routes need, as `Annotated` dependencies: the app state and its parts, and auth.

Every dependency is `async def` although none awaits: FastAPI runs a plain `def` dependency
in its thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runtime.engine import Engine
from service.batcher import Batcher
from service.errors import (
    ForbiddenError,
    NotReadyError,
    StoreUnavailableError,
    UnauthorizedError,
)
from service.settings import Scope, Settings
from service.state import AppState
from store import Store

_bearer = HTTPBearer(auto_error=False)


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
