"""What one request did: the row the usage table keeps for it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields

__all__ = ["USAGE_COLUMNS", "UsageRecord"]


@dataclass
class UsageRecord:
    """One request's usage; `status` is the gRPC code name (OK on success)."""

    created_at: float
    token_id: str | None
    requested_model: str | None
    status: str = "OK"
    model: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    error_reason: str | None = None
    http_status: int | None = None
    latency_ms: float = 0.0
    images: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    end_user: str | None = None
    safety_identifier: str | None = None
    team_id: str | None = None
    cost: float | None = None
    # "generate", "edit", "list_models" or "get_model": which call the request was.
    operation: str = "generate"
    # The id the caller saw (`x-request-id`): what support looks a request up by.
    request_id: str | None = None
    # Unique per request: recovery after a crash finds by it whether the row
    # reached the database, so no request is counted twice or not at all.
    request_key: str = field(default_factory=lambda: secrets.token_hex(16))


USAGE_COLUMNS = tuple(f.name for f in fields(UsageRecord))
"""The usage table's columns that a record fills, in order."""
