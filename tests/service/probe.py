"""A request model that records which process validated it (test_bodies imports it; the body
parser's worker process imports it by name)."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field


class WhereValidated(BaseModel):
    """Any JSON object; `pid` is the process that validated it."""

    pid: int = Field(default_factory=os.getpid)
    padding: str = ""
