"""The app factory and its lifespan: `create_app(settings)` builds an app; nothing is global.

The lifespan owns every resource: the store (Redis pool or SQLite thread), the thread pools
(decode: media and light; encode, one thread), the engine (bundle, ONNX Runtime session,
quantizer) and the batcher task. Start-up loads and verifies the bundle, warms the encoder,
seeds and activates the version in the store and starts the batcher; only then does the server
accept requests, so /readyz is green from the first request it answers. A store that does not
answer at start-up is waited for instead: the server accepts requests (/healthz 200, /readyz
and the rest 503) while a task retries with backoff, and serves once the store answers.
Shutdown (SIGTERM: uvicorn first waits for the requests in flight) cancels that wait, drains
the batcher, then closes the store and pools.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batcher import Batcher, Limits
from service.bodies import BodyParser
from service.deps import body_models
from service.errors import ErrorAnswer, RequestTimeoutError, TooLargeError, error_kinds, install
from service.follower import Follower
from service.logs import REQUEST_ID
from service.metrics import Metrics
from service.prepare import DecodePools
from service.routes import admin, codes, health, items, sids
from service.settings import Settings
from service.state import AppState, first_engine, publish
from store import StoreError, open_store

log = logging.getLogger(__name__)


class Resources:
    """What the lifespan owns: the store, the thread pools (decode: media and light; encode,
    one thread), the batcher, and once the store answers the engine, the app's state and the
    follower."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.store = open_store(settings)
        metrics.declare(error_kinds(), self.store.kind)
        metrics.queue_capacity.set(settings.max_queue)
        self.decoders = DecodePools.start(settings.decode_threads, settings.light_threads)
        self.encode_pool = ThreadPoolExecutor(1, thread_name_prefix="qarm-encode")
        self.parser = BodyParser(settings.parse_inline_bytes, metrics.bodies_parsing)
        self.batcher = Batcher(
            self.store,
            self.encode_pool,
            metrics,
            limits=Limits(
                max_batch=settings.max_batch,
                max_tokens=settings.max_batch_tokens,
                max_pixels=settings.max_batch_pixels,
                max_audio_s=settings.max_batch_audio_s,
            ),
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            wait_always=settings.batch_wait == "always",
        )
        self.follower: Follower | None = None
        self.waiting: asyncio.Task[None] | None = None

    async def start(self, app: FastAPI) -> None:
        """Serve now, or, when the store does not answer, stay up (/healthz answers, /readyz
        says why not ready, requests get 503s) and serve once it does."""
        self.batcher.start()
        try:
            await self.serve(app)
        except StoreError as err:
            log.warning("the store is unreachable (%s); waiting for it, not ready", err)
            app.state.waiting = f"the store is unreachable: {err}"
            self.waiting = asyncio.create_task(
                self._serve_when_the_store_answers(app), name="qarm-wait"
            )

    async def serve(self, app: FastAPI) -> None:
        """What needs the store: the first engine (activated in the store) and the first
        round of following it; then requests are served (app.state.qarm is set)."""
        settings, metrics, store = self.settings, self.metrics, self.store
        engine = await first_engine(settings, metrics, store)
        state = AppState(
            settings=settings,
            metrics=metrics,
            store=store,
            batcher=self.batcher,
            engine=engine,
            decoders=self.decoders,
            encode_pool=self.encode_pool,
            parser=self.parser,
        )
        if settings.follow:
            follower = Follower(state)
            await follower.follow()  # staged versions are written from the first request
            follower.start()
            self.follower = follower
        publish(metrics, engine, state.written)
        app.state.qarm = state
        app.state.follower = self.follower
        app.state.waiting = None
        log.info(
            "serving bundle %s from the %s store; encoder on %s",
            engine.version,
            store.kind,
            engine.provider,
        )

    async def _serve_when_the_store_answers(self, app: FastAPI) -> None:
        """Try `serve` again, backing off from 0.5 s to 5 s, until the store answers.
        A failure that is not the store's is a bug or a bad bundle: /healthz turns red."""
        delay = 0.5
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    await self.serve(app)
                    log.info("the store answers again; ready")
                    return
                except StoreError as err:
                    app.state.waiting = f"the store is unreachable: {err}"
                    delay = min(2 * delay, 5.0)
        except Exception as err:
            app.state.start_error = err
            log.exception("start-up failed after the store came back; restart the process")

    async def close(self, app: FastAPI) -> None:
        """Cancel a wait for the store, stop following, drain the batcher, close the rest."""
        if self.waiting is not None:
            self.waiting.cancel()
            await asyncio.gather(self.waiting, return_exceptions=True)
        if self.follower is not None:
            await self.follower.close()
        await self.batcher.close()
        log.info("batcher drained")
        app.state.qarm = None
        await self.store.close()
        self.decoders.shutdown()
        self.encode_pool.shutdown(wait=True)
        await self.parser.close()


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.tokens:
            log.warning(
                "NO AUTH: no bearer tokens are configured (QARM_TOKENS); anyone who reaches "
                "this port can write and reload. Configure tokens before exposing the service."
            )
        resources = Resources(settings, metrics)
        try:
            await resources.start(app)
            yield
        finally:
            await resources.close(app)

    routers = [module.router for module in (items, codes, sids, admin, health)]
    app = QarmAPI(
        bodies=body_models(route for router in routers for route in router.routes),
        title="qarm",
        summary="Semantic IDs (VQ and RQ codes) for recommender items, in real time",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.qarm = None
    app.state.follower = None
    app.state.waiting = None  # why not ready while the store has not answered since start-up
    app.state.start_error = None  # a start-up that failed after waiting for the store
    answer = ErrorAnswer(settings.retry_after_s, lambda kind: metrics.errors.labels(kind).inc())
    install(app, answer)
    for router in routers:
        app.include_router(router)
    # the last added runs first: RequestMiddleware also sees (logs, counts) the body limit's 413s
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        answer=answer,
        count_timeout=metrics.read_timeouts.labels("body").inc,
    )
    app.add_middleware(RequestMiddleware, metrics=metrics)
    return app


class QarmAPI(FastAPI):
    """FastAPI whose OpenAPI document also holds the schemas of `bodies`, the request bodies'
    models: routes take their bodies as dependencies (`service.deps.JsonBody`, so that auth
    comes first), which FastAPI does not document by itself; each route's `openapi_extra`
    refers to these."""

    def __init__(self, *, bodies: list[type[BaseModel]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bodies = bodies

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:  # built once
            return self.openapi_schema
        doc = super().openapi()
        schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
        modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (model, "validation") for model in self.bodies
        ]
        _, defs = models_json_schema(modes, ref_template="#/components/schemas/{model}")
        for name, schema in defs.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        self.openapi_schema = ecma_patterns(doc)
        return self.openapi_schema


def ecma_patterns(node: Any) -> Any:
    """The document with every `pattern` written for ECMA-262, JSON Schema's regex dialect,
    which has no `\\z`: the validators' patterns (Rust's regex) end in `\\z`, the very end of
    the text; in ECMA-262 (no multiline flag) `$` means the same, and a client or a fuzzer
    reading the document can use it. (Python's `$` would also match before a final newline;
    no Python regex reads these.)"""
    if isinstance(node, dict):
        return {
            key: _ecma(value)
            if key == "pattern" and isinstance(value, str)
            else ecma_patterns(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [ecma_patterns(value) for value in node]
    return node


def _ecma(pattern: Any) -> Any:
    if isinstance(pattern, str) and pattern.endswith("\\z"):
        return pattern.removesuffix("\\z") + "$"
    return ecma_patterns(pattern)  # a property named `pattern`: a schema, not a regex


class BodyLimitMiddleware:
    """Limits on a request body, in size and in time, answered as the JSON error every other
    failure gets.

    413 `too_large` for a body over `max_bytes` (not FastAPI's `max_body_size`, whose 413 is
    plain text): a Content-Length over the limit is answered at once, before routing and auth,
    without reading the body; a body without one (chunked) is cut off as soon as what arrived
    passes the limit. 408 `request_timeout` (then the connection is closed) when the body has
    not all arrived `timeout_s` after the request began: a client that sends a short body or
    trickles it (slowloris) holds the request no longer. Headers have their deadline in the
    HTTP protocol (service.protocol); a body the app never reads is bounded there too."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float,
        answer: ErrorAnswer,
        count_timeout: Callable[[], None],
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.answer = answer
        self.count_timeout = count_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            where = f"{scope['method']} {scope['path']}"
            error = TooLargeError(
                f"{where}: a body of {declared} bytes (Content-Length), over the limit of "
                f"{self.max_bytes} bytes (QARM_MAX_BODY_BYTES)"
            )
            await self.answer(error)(scope, receive, send)
            return
        await self.app(scope, self._limited(scope, receive), send)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        received = 0
        complete = False  # the body is in (or the client left): no deadline after it
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def receive_limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                self.count_timeout()
                raise RequestTimeoutError(
                    f"{scope['method']} {scope['path']}: the body did not arrive within "
                    f"{self.timeout_s:g} s (QARM_BODY_TIMEOUT_S)"
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # an HTTPException: FastAPI re-raises only those while it reads a body (any
                    # other becomes a 400); the errors module answers it as `too_large`
                    raise HTTPException(
                        413,
                        f"the body passed the limit of {self.max_bytes} bytes "
                        "(QARM_MAX_BODY_BYTES)",
                    )
            return message

        return receive_limited


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None without one or when it is not a number."""
    try:
        return int(Headers(scope=scope)["content-length"])
    except (KeyError, ValueError):
        return None


class RequestMiddleware:
    """Per request: a request id (X-Request-ID or new) for logs and the answer, the request
    counter and latency histogram by route template, one log line; also for the body limit's
    413s (a declared one is refused before routing: its route is `unmatched`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            method = scope["method"]
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.request_seconds.labels(template, method, str(status)).observe(elapsed)
            log.info(
                "%s %s -> %d",
                method,
                template,
                status,
                extra={
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_s": round(elapsed, 6),
                    # the name of the bearer token that passed auth (deps.require), never the token
                    "token": scope.get("state", {}).get("token_name"),
                },
            )
            REQUEST_ID.reset(token)
