"""Managed Redis asks for an ACL user and TLS: the store connects over rediss:// with a user
and password in the URL, a CA file and a client certificate, to a real `redis-server` started
here with `--tls-port` and a certificate made here; the user may touch only its key prefix;
the password reaches no error message and no settings dump."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.launch import free_port
from store import CatalogSeed, NewCodes, RedisStore, StoreError, StoreSettings, open_store

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-pass-7f1e"
PREFIX = "qarmtls"
CATALOG = CatalogSeed(
    np.array(["c0"]), np.array([[1, 2]], dtype=np.int32), np.array([0], dtype=np.int32), 4, 2, 4
)


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path
    cert: Path
    key: Path

    def url(self, password: str = PASSWORD) -> str:
        return f"rediss://qarm:{password}@127.0.0.1:{self.port}/0"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(d: Path) -> tuple[Path, Path, Path, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    ca_key, ca = d / "ca.key", d / "ca.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
            str(ca), "-days", "2", "-subj", "/CN=qarm test CA")  # fmt: skip
    made = []
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        key, csr, crt, ext = (d / f"{name}.{x}" for x in ("key", "csr", "crt", "ext"))
        ext.write_text(extra + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                "-subj", f"/CN=qarm test {name}")  # fmt: skip
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                "-CAcreateserial", "-out", str(crt), "-days", "2",
                "-extfile", str(ext))  # fmt: skip
        made += [crt, key]
    return ca, made[0], made[1], made[2], made[3]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """redis-server on a TLS port only, client certificates required, the default user off and
    a user `qarm` allowed only keys and channels under its prefix."""
    d = tmp_path_factory.mktemp("tls")
    ca, server_crt, server_key, client_crt, client_key = make_certificates(d)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(server_crt), "--tls-key-file", str(server_key),
         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(d),
         "--user", "default", "off",
         "--user", "qarm", "on", f">{PASSWORD}", f"~{PREFIX}:*", f"&{PREFIX}:*",
         "+@all", "-@dangerous"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield TlsRedis(port, ca, client_crt, client_key)
    finally:
        proc.terminate()
        proc.wait()


def settings(r: TlsRedis, **overrides: Any) -> StoreSettings:
    fields: dict[str, Any] = {
        "redis_url": r.url(),
        "redis_prefix": PREFIX,
        "redis_timeout_s": 5.0,
        "redis_ca_file": r.ca,
        "redis_cert_file": r.cert,
        "redis_key_file": r.key,
    }
    return StoreSettings(**{**fields, **overrides})


@pytest.fixture
async def store(tls_redis: TlsRedis) -> AsyncIterator[RedisStore]:
    s = open_store(settings(tls_redis))
    assert isinstance(s, RedisStore)
    yield s
    await s.close()


async def test_the_store_works_over_tls_as_an_acl_user(store: RedisStore) -> None:
    await store.activate("v1", CATALOG, seed_lookups=True)
    (written,) = await store.write("v1", [NewCodes("a:1", (0, 0), (1, 2))])
    assert written.suffix == 1
    assert await store.get_many("v1", ["a:1", "c0"]) == [written, None]
    assert await store.item_for_sid("v1", "1-2-0") == "c0"
    assert await store.active_version() == "v1"


async def test_without_a_client_certificate_or_the_password_nothing_is_stored(
    tls_redis: TlsRedis,
) -> None:
    for s in (
        open_store(settings(tls_redis, redis_cert_file=None, redis_key_file=None)),
        open_store(settings(tls_redis, redis_url=tls_redis.url("wrong-password"))),
    ):
        with pytest.raises(StoreError) as refused:
            await s.ping()
        await s.close()
        assert PASSWORD not in str(refused.value)
        assert "wrong-password" not in str(refused.value)


async def test_the_acl_user_touches_only_its_prefix(tls_redis: TlsRedis) -> None:
    other = open_store(settings(tls_redis, redis_prefix="elsewhere"))
    with pytest.raises(StoreError, match="NoPermissionError"):
        await other.active_version()
    await other.close()


def test_tls_settings_are_checked_and_the_password_never_shown(tls_redis: TlsRedis) -> None:
    s = settings(tls_redis)
    assert PASSWORD not in repr(s)
    assert PASSWORD not in s.model_dump_json()
    with pytest.raises(ValidationError, match="set only with a rediss:// QARM_REDIS_URL") as bad:
        settings(tls_redis, redis_url=f"redis://qarm:{PASSWORD}@127.0.0.1:6379/0")
    assert PASSWORD not in str(bad.value)
    with pytest.raises(ValidationError, match="set both or neither"):
        settings(tls_redis, redis_key_file=None)
    with pytest.raises(ValidationError, match="is not a readable file"):
        settings(tls_redis, redis_ca_file=tls_redis.ca.parent / "missing.crt")
