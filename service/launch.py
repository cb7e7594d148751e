"""Starting a service process and waiting for it: a free port to give it, and a wait until its
/readyz is green (the demo, the benchmark and the load test launch `python -m service`)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (another process may take it
    before the service binds it: good enough for local runs and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 300.0) -> None:
    """Poll /readyz until the service is ready; fail if the process exits first."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with status {proc.returncode}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the service at {url} was not ready within {timeout_s:.0f} s")


async def until_ready(
    client: httpx.AsyncClient,
    proc: subprocess.Popen[bytes] | None = None,
    timeout_s: float = 300.0,
) -> None:
    """`wait_ready` for an async client already pointed at the service (after a start, or after
    its store came back); with `proc`, fail as soon as the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with status {proc.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the service was not ready within {timeout_s:.0f} s")
