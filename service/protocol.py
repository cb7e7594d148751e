"""uvicorn's HTTP protocol with read deadlines: a client must send a request's headers in time.

uvicorn bounds only the idle time between two requests of a kept-alive connection
(`timeout_keep_alive`, and every byte received resets it); nothing bounds a connection that
sends nothing after connecting, a request's headers a byte at a time, or a body the app never
reads, so 16 such connections were held for 85 s and more (slowloris). The body an app reads
has its deadline in `service.app.BodyLimitMiddleware` (a 408 with the error body); this is the
part no ASGI middleware can see, since no request exists before its headers are in:

- from the connection, or from the first byte of the next request on it, its headers must be
  in within `header_timeout_s`;
- once the answer is sent, what remains of a body the app did not read must arrive within
  `body_timeout_s` (the connection cannot serve another request before it has).

Past either deadline the connection is closed without an answer and `on_timeout(phase)` is
called (`headers` or `body`). A subclass of uvicorn's httptools protocol, which
`uvicorn[standard]` installs and uvicorn picks by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def deadline_protocol(
    header_timeout_s: float, body_timeout_s: float, on_timeout: Callable[[str], None]
) -> type[HttpToolsProtocol]:
    """The protocol class to hand uvicorn (`uvicorn.run(app, http=...)`), with these deadlines."""

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self, seconds: float, phase: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, phase: str) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                on_timeout(phase)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a later request; the first one's runs from connecting
                self._arm(header_timeout_s, "headers")

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
                self._arm(body_timeout_s, "body")  # answered before its body was all in

    return DeadlineProtocol
