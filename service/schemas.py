"""The API's request and response bodies (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from codebooks.sid import ID_PATTERN
from service.errors import ErrorBody

ItemId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

# Floats in one embedding or feature vector: far above any bundle's d or F (the engine checks
# those exactly); it keeps a hostile body from building millions of floats in a request. They
# are strict: a JSON number, never `"1.5"` or `true` made into one.
MAX_VECTOR = 65_536


def within_limit(value: Any, info: ValidationInfo, what: str) -> Any:
    """A request's list against its limit, before any element is validated (160,000 items
    cost a count, not 160,000 validations). The limit is a per-app setting, so it comes in the
    validation context (`{"limit": n}`, service.deps.JsonBody); without one there is none."""
    limit = (info.context or {}).get("limit")
    if isinstance(value, list) and isinstance(limit, int) and len(value) > limit:
        raise PydanticCustomError(
            "too_long",
            "{count} {what}, more than the limit of {limit} per request",
            {"count": len(value), "what": what, "limit": limit},
        )
    return value


class ItemBody(BaseModel):
    """PUT /v1/items/{id}: one item, its id from the path."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="title, description, ...")
    image: str | None = Field(None, description="base64 JPEG or PNG (standard alphabet)")
    audio: str | None = Field(None, description="base64 PCM WAV")
    embedding: list[StrictFloat] | None = Field(
        None,
        max_length=MAX_VECTOR,
        description="d floats, for callers that already have the item's embedding",
    )
    features: list[StrictFloat] | None = Field(
        None,
        max_length=MAX_VECTOR,
        description="F upstream floats, for a bundle whose encoder has mode `features`",
    )


class _WithId(BaseModel):
    """The item id, in a base of its own: pydantic orders fields from the last base to the
    first, so `ItemIn(ItemBody, _WithId)` lists `id` first, in the OpenAPI schema and in
    validation errors (the first of which is the 422's message)."""

    model_config = ConfigDict(extra="forbid")

    id: ItemId = Field(description="1..128 characters of [A-Za-z0-9_.:-]")


class ItemIn(ItemBody, _WithId):
    """One item: its content (any of text, image, audio) or an embedding computed elsewhere."""


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, description="1..max_items_per_request items")

    @field_validator("items", mode="before")
    @classmethod
    def _at_most(cls, value: Any, info: ValidationInfo) -> Any:
        return within_limit(value, info, "items")


class Codes(BaseModel):
    """An item's codes under one bundle version."""

    id: str
    vq: list[int] = Field(description="K row ids into the bundle's item_ids, nearest first")
    rq: list[int] = Field(description="L RQ codes, coarse to fine")
    suffix: int = Field(description="disambiguation suffix; (rq, suffix) is unique")
    sid: str = Field(description="semantic ID: the RQ codes and the suffix joined by '-'")
    bundle_version: str


class ItemsOut(BaseModel):
    bundle_version: str
    items: list[Codes]


class BatchGetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the id rule of items and paths: an id no item can have ("abc\n") is a 422, not a null
    ids: list[ItemId] = Field(min_length=1, description="1..max_batch_get item ids")

    @field_validator("ids", mode="before")
    @classmethod
    def _at_most(cls, value: Any, info: ValidationInfo) -> Any:
        return within_limit(value, info, "ids")


class BatchGetOut(BaseModel):
    bundle_version: str
    items: list[Codes | None] = Field(description="in request order; null for unknown ids")


class SidOut(BaseModel):
    sid: str
    id: str
    bundle_version: str


class PrefixItemsOut(BaseModel):
    prefix: list[int]
    items: list[str] = Field(
        description="item ids in the text order of their semantic IDs, at most `limit`"
    )
    bundle_version: str


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str = Field("latest", description="a bundle folder, or `latest` under artifacts")


class ReloadOut(BaseModel):
    previous_version: str
    bundle_version: str


class Health(BaseModel):
    status: str
    bundle_version: str | None = None
    detail: str | None = None


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_CHALLENGE = {
    "WWW-Authenticate": {
        "description": '`Bearer`, or `Bearer error="invalid_token"` for an unknown token',
        "schema": {"type": "string"},
    }
}
# status -> (the kinds it answers, headers): docs/service.md's error table
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("`bad_request`: a malformed path or query parameter, or a body that is not JSON", {}),
    401: ("`unauthorized`: no bearer token, or an unknown one", _CHALLENGE),
    408: (
        "`request_timeout`: the body did not arrive within QARM_BODY_TIMEOUT_S; the "
        "connection is closed",
        {},
    ),
    403: ("`forbidden`: the token lacks the route's scope", {}),
    404: ("`not_found`: an unknown item or semantic ID", {}),
    409: ("`reload_failed`: the bundle cannot be loaded; the old one keeps serving", {}),
    413: ("`too_large`: the body is over QARM_MAX_BODY_BYTES", {}),
    422: ("`invalid_input`: an item or field breaks the API's rules; `item` names it", {}),
    500: ("`encoder_failed`, `write_failed` or `internal`: a failure on the service's side", {}),
    503: (
        "`overloaded`, `deadline_exceeded`, `store_unavailable`, `batcher_dead`, `not_ready` "
        "or `unavailable`: try again after Retry-After",
        _RETRY_AFTER,
    ),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each status answered with the error body (`ErrorBody`), its
    kinds and headers, for the OpenAPI document. A declared 422 replaces FastAPI's own
    `HTTPValidationError`, which the service never answers."""
    return {
        status: {"model": ErrorBody, "description": _ERRORS[status][0]}
        | ({"headers": _ERRORS[status][1]} if _ERRORS[status][1] else {})
        for status in statuses
    }
