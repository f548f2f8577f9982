"""What a sandbox saw and did, kept for tests and demos to inspect.

Secrets (auth headers, api keys, client secrets, tokens) are replaced by ``"***"`` before
anything is recorded, so the recording can be printed or served by the control API.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from courier_sandbox.http import ParsedRequest

SECRET_HEADERS = frozenset({"authorization", "apikey", "accesstoken", "cookie", "x-api-key"})
SECRET_FIELDS = frozenset({"api_key", "client_secret", "code", "accessCode", "token"})
REDACTED = "***"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float
    fault: str | None = None


@dataclass
class SandboxState:
    """The recording of one sandbox: requests, accepted messages, duplicates, polls, webhooks."""

    requests: list[RecordedRequest] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    status_polls: Counter[str] = field(default_factory=Counter)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    _first_by_content: dict[str, str] = field(default_factory=dict, repr=False)

    def count_if_duplicate(self, content: Any, message_id: str) -> None:
        """For APIs without a client message id: content seen before counts as a duplicate
        of the first message that carried it."""
        first = self._first_by_content.setdefault(fingerprint(content), message_id)
        if first != message_id:
            self.duplicates[first] += 1

    def record(self, request: ParsedRequest, at: float) -> RecordedRequest:
        entry = RecordedRequest(
            method=request.method,
            path=request.path,
            query=_redact(request.query),
            headers={k: (REDACTED if k in SECRET_HEADERS else v) for k, v in request.headers.items()},
            body=_body_of(request),
            at=at,
        )
        self.requests.append(entry)
        return entry

    def reset(self) -> None:
        self.requests.clear()
        self.messages.clear()
        self.duplicates.clear()
        self.status_polls.clear()
        self.webhooks.clear()
        self._first_by_content.clear()

    def snapshot(self) -> dict[str, Any]:
        """What a restarted sandbox keeps: the messages (with their statuses) and duplicate
        counts, not the request log."""
        return {
            "messages": self.messages,
            "duplicates": dict(self.duplicates),
            "first_by_content": self._first_by_content,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.messages.update(saved["messages"])
        self.duplicates.update(saved["duplicates"])
        self._first_by_content.update(saved["first_by_content"])

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": [asdict(r) for r in self.requests],
            "messages": self.messages,
            "duplicates": dict(self.duplicates),
            "status_polls": dict(self.status_polls),
            "webhooks": self.webhooks,
        }


def fingerprint(content: Any) -> str:
    """A stable hash of a request's content, for vendors whose API has no client message id."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _redact(values: Any) -> Any:
    """Hide top-level secret parameters (nested keys such as a SNOMED ``code`` are data)."""
    if isinstance(values, dict):
        return {k: (REDACTED if k in SECRET_FIELDS else v) for k, v in values.items()}
    return values


def _body_of(request: ParsedRequest) -> Any:
    if request.json is not None:
        return _redact(request.json)
    if request.form or request.files:
        files = [
            {"name": p.name, "filename": p.filename, "content_type": p.content_type, "size": len(p.data)}
            for p in request.files
        ]
        return {"form": _redact(request.form), "files": files}
    if request.raw:
        return {"raw_bytes": len(request.raw)}
    return None
