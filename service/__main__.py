"""`python -m service [--host H] [--port P] [--bundle PATH|latest]`: serve with uvicorn.

Flags override the `QARM_*` environment; everything else is a setting (service/settings.py).
One worker per process: scale with processes or pods, so each Prometheus scrape sees all of
one process's counters.

Before numpy and faiss are loaded, `main` sets two thread-pool variables unless they are set
already: `OPENBLAS_NUM_THREADS=1` and `OMP_WAIT_POLICY=PASSIVE`. Idle BLAS and OpenMP threads
otherwise spin on the cores the event loop and the decode threads need; on 2 cores this more
than halved the encode throughput (docs/benchmarks.md). The service's parallelism comes from
its thread pools and from running several processes, not from BLAS threads.
"""

from __future__ import annotations

import argparse
import os
import sys

THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="interface to bind (QARM_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (QARM_PORT, default 8000)")
    parser.add_argument("--bundle", help="bundle folder or `latest` (QARM_BUNDLE)")
    args = parser.parse_args(argv)
    for name, value in THREAD_ENV.items():
        os.environ.setdefault(name, value)
    # Imported here, after the thread-pool variables: numpy and faiss read them when loaded.
    import uvicorn

    from service.app import create_app
    from service.logs import configure
    from service.protocol import deadline_protocol
    from service.settings import SettingsInvalidError, load_settings

    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsInvalidError as err:  # names each setting and its problem, never a value
        print(f"error: settings: {err}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    app = create_app(settings)
    read_timeouts = app.state.metrics.read_timeouts
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=deadline_protocol(
            settings.header_timeout_s,
            settings.body_timeout_s,
            lambda phase: read_timeouts.labels(phase).inc(),
        ),
        workers=1,
        log_config=None,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
