"""Schemathesis over the service's own /openapi.json, against `python -m service` on the real
Redis: every operation, positive and negative cases, every check (no 5xx but the documented
503s, status codes, content types, headers and bodies as the document declares them, bad input
refused, good input taken, auth enforced). A bounded number of examples keeps it within the
suite's budget; hypothesis runs derandomized, so a failure here fails the same way again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from service.app import create_app
from service.launch import wait_ready
from service.settings import Settings
from tests.keys import own_prefix
from tests.service.conftest import ADMIN, service_process

TOKENS = f'[{{"name": "fuzzer", "token": "{ADMIN}", "scopes": ["write", "read", "admin"]}}]'
EXAMPLES = 150  # per operation and phase


def accepted(*statuses: str) -> list[str]:
    """What a schema-valid request may get: schemathesis's default, and `statuses`."""
    return ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", *statuses]


# Rules of the bundle the document cannot state, answered with their documented refusal to a
# request that is valid by the document alone (check `positive_data_acceptance`, ST202):
CONFIG = SchemathesisConfig.from_dict(
    {
        "headers": {"Authorization": f"Bearer {ADMIN}"},
        "operations": [
            {
                # an embedding of the bundle's d floats, features only for a `features`
                # encoder, base64 that decodes to a JPEG, PNG or WAV: 422 naming the item
                "include-path-regex": "^/v1/items",
                "include-method": ["POST", "PUT"],
                "checks": {"positive_data_acceptance": {"expected-statuses": accepted("422")}},
            },
            {
                # a semantic ID of the bundle's L codes, a prefix of at most L codes each under
                # its Nc, a limit under QARM_MAX_PREFIX_ITEMS: 400 (service/routes/sids.py and
                # codes.py check them; their path parameters declare no pattern)
                "include-path-regex": "^/v1/(sids|codes/rq)/",
                "checks": {"positive_data_acceptance": {"expected-statuses": accepted("400")}},
            },
        ],
    }
)

# The document the service serves at /openapi.json (FastAPI answers `app.openapi()`), built
# without running the app; `test_the_fuzzed_document_is_the_served_one` holds them equal.
DOCUMENT = create_app(Settings(bundle="unused")).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def base_url(
    bundles: dict[str, Path], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`python -m service` on bundle `a` and the real Redis; `latest` (for a fuzzed reload)
    is an empty folder, so no reload can succeed and the bundle never changes."""
    artifacts = tmp_path_factory.mktemp("fuzz-artifacts")
    with own_prefix(redis_url) as prefix:
        env = {
            "QARM_REDIS_URL": redis_url,
            "QARM_REDIS_PREFIX": prefix,
            "QARM_TOKENS": TOKENS,
            "QARM_ARTIFACTS": str(artifacts),
            "QARM_LOG_LEVEL": "WARNING",
        }
        with service_process(env, bundles["a"]) as (proc, url):
            wait_ready(url, proc)
            yield url


def test_the_fuzzed_document_is_the_served_one(base_url: str) -> None:
    assert httpx.get(f"{base_url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_every_answer_is_the_documented_one(case: schemathesis.Case[Any], base_url: str) -> None:
    case.call_and_validate(base_url=base_url, timeout=30)
