"""A hostile client's requests: bodies FastAPI cannot parse, ids, semantic IDs and prefixes with
a trailing newline, answers to a missing or wrong token; and settings errors that must not
print a token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError

from codebooks.sid import ID_PATTERN, ID_RE
from service.settings import SettingsInvalidError, load_settings
from tests.service.conftest import READ, auth, running
from tests.service.test_errors import JSON, errors_counted, the_error

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])
TOKENS = [{"name": "reader", "token": READ, "scopes": ["read"]}]

UNPARSABLE = [
    # (case, body, what the message must say)
    ("bad UTF-8", b'{"items": [{"id": "a", "text": "\xff\xfe"}]}', "not UTF-8 (byte 0xff"),
    ("nested 10,000 deep", b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    (
        "a 5,000-digit integer",
        b'{"items": [{"id": "a", "embedding": [' + b"9" * 5000 + b"]}]}",
        "too many digits",
    ),
    ("cut short", b'{"items": ', "not valid JSON"),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("case", "body", "says"), UNPARSABLE, ids=[c[0] for c in UNPARSABLE])
async def test_an_unparsable_body_is_400_bad_request(
    make_settings: Any, case: str, body: bytes, says: str
) -> None:
    async with running(make_settings()) as (_, client):
        r = await client.post("/v1/items", content=body, headers=JSON)
        error = the_error(r, 400, "bad_request")
        assert error["message"].startswith("POST /v1/items: "), case
        assert says in error["message"], error["message"]
        assert "There was an error" not in error["message"]
        assert error["item"] is None
        assert await errors_counted(client, "bad_request") == 1


def test_one_id_rule_refuses_a_trailing_newline_in_every_engine() -> None:
    ids = ["abc", "abc\n", "a\nb", ""]
    assert [bool(ID_RE.fullmatch(i)) for i in ids] == [True, False, False, False]
    assert [bool(ID_RE.match(i)) for i in ids] == [True, False, False, False]
    rust = TypeAdapter(Annotated[str, StringConstraints(pattern=ID_PATTERN)])
    assert rust.validate_python("abc") == "abc"
    with pytest.raises(ValidationError):
        rust.validate_python("abc\n")
    re2 = pc.match_substring_regex(pa.array(ids), ID_PATTERN).to_pylist()
    assert re2 == [True, False, False, False]


@SQLITE_ONLY
async def test_a_trailing_newline_is_refused_in_ids_sids_and_prefixes(make_settings: Any) -> None:
    async with running(make_settings()) as (_, client):
        (r_ok, r_bad) = [await client.get(f"/v1/codes/rq/1-2{end}/items") for end in ("", "%0A")]
        assert r_ok.status_code == 200, r_ok.text
        assert "prefix '1-2\\n'" in the_error(r_bad, 400, "bad_request")["message"]
        error = the_error(await client.get("/v1/sids/1-2-3-0%0A"), 400, "bad_request")
        assert "sid '1-2-3-0\\n'" in error["message"]
        error = the_error(await client.get("/v1/items/abc%0A/codes"), 422, "invalid_input")
        assert error["item"]["field"] == "item_id"
        r = await client.put("/v1/items/abc%0A", json={"text": "cat"})
        assert the_error(r, 422, "invalid_input")["item"]["field"] == "item_id"
        r = await client.post("/v1/items", json={"items": [{"id": "abc\n", "text": "cat"}]})
        error = the_error(r, 422, "invalid_input")
        assert error["item"] == {"index": 0, "id": "abc\n", "field": "id"}
        assert (await client.get("/v1/items/abc/codes")).status_code == 404  # nothing written


BAD_IDS = ["abc\n", "a\nb", "", "x" * 129, "bad id", 7]


@SQLITE_ONLY
@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_batch_get_checks_every_id_with_the_id_rule(make_settings: Any, bad: Any) -> None:
    """Not a `null` for an id that could never be stored: a 422 naming its position, the id
    and the rule (the pattern), as for an id in the path or in an item."""
    async with running(make_settings()) as (_, client):
        r = await client.post("/v1/codes:batchGet", json={"ids": ["abc", "ok-1", bad]})
        error = the_error(r, 422, "invalid_input")
        bad_id = bad if isinstance(bad, str) else None
        assert error["item"] == {"index": 2, "id": bad_id, "field": "ids"}
        assert error["message"].startswith("body.ids.2: "), error["message"]
        if isinstance(bad, str):
            assert ID_PATTERN in error["message"], error["message"]  # the rule it breaks
        r = await client.post("/v1/codes:batchGet", json={"ids": ["abc", "ok-1"]})
        assert r.json()["items"] == [None, None]  # good ids that are unknown: null


@SQLITE_ONLY
async def test_401_carries_the_bearer_challenge(make_settings: Any) -> None:
    async with running(make_settings(tokens=TOKENS)) as (_, client):
        r = await client.get("/v1/items/x/codes")
        the_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        r = await client.get("/v1/items/x/codes", headers=auth("wrong-token-0123456789"))
        the_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        r = await client.get("/v1/items/x/codes", headers=auth(READ))
        assert r.status_code == 404
        assert "www-authenticate" not in r.headers


SECRET = "short-secret-x"  # refused: under 16 characters
BAD_SETTINGS = [
    # (case, QARM_TOKENS, what the message must say)
    (
        "a token too short",
        f'[{{"name": "a", "token": "{SECRET}", "scopes": ["read"]}}]',
        "QARM_TOKENS (tokens.0.token): Value error, a token must be at least 16 characters",
    ),
    (
        "malformed JSON",
        f'[{{"name": "a", "token": "{SECRET}-0123456789",',
        "QARM_TOKENS: not valid JSON (",
    ),
]


@pytest.mark.parametrize(("case", "tokens", "says"), BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_a_settings_error_names_the_setting_never_the_token(
    monkeypatch: pytest.MonkeyPatch, case: str, tokens: str, says: str
) -> None:
    monkeypatch.setenv("QARM_TOKENS", tokens)
    with pytest.raises(SettingsInvalidError) as err:
        load_settings()
    assert says in str(err.value), case
    assert SECRET not in str(err.value)


def test_python_m_service_exits_2_on_a_bad_token_without_printing_it(tmp_path: Path) -> None:
    """The process, for each bad setting: exit 2, one line on stderr, no token, no traceback."""
    for case, tokens, says in BAD_SETTINGS:
        env = {**os.environ, "QARM_TOKENS": tokens, "QARM_SQLITE_PATH": str(tmp_path / "s")}
        done = subprocess.run(
            [sys.executable, "-m", "service", "--bundle", str(tmp_path / "none")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (case, done.stderr)
        assert done.stderr.startswith("error: settings: QARM_TOKENS"), done.stderr
        assert says in done.stderr
        assert SECRET not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr
