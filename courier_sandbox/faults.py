"""Fault injection: the ways a vendor API misbehaves, switchable per sandbox.

Rates draw from a seeded random generator so a run can be repeated; the ``*_next``
counters make the next N requests misbehave for tests that need exact outcomes.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OUTAGE_MODES = (None, "503", "refuse")


@dataclass
class Faults:
    """The current fault settings of one sandbox (control requests are never faulted)."""

    error_rate: float = 0.0  # share of requests answered 500
    rate_429: float = 0.0  # share of requests answered 429 with Retry-After
    retry_after_s: int = 1
    latency_s: float = 0.0  # delay before every answer
    outage: str | None = None  # "503": answer 503; "refuse": stop listening
    blackhole: bool = False  # read every request, never answer
    pass_next: int = 0  # the next N requests are answered normally, before any other fault
    fail_next: int = 0  # the next N requests get 500
    throttle_next: int = 0  # the next N requests get 429
    blackhole_next: int = 0  # the next N requests are never answered
    status_next: int = 0  # the next N requests get status_code
    status_code: int = 400  # what status_next answers: any 4xx or 5xx (400 rejects, 409, 502…)
    seed: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply settings by name; unknown names or bad values raise ValueError."""
        known = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}")
            if name == "outage":
                value = None if value in (None, "", "none") else str(value)
                if value not in OUTAGE_MODES:
                    raise ValueError("outage must be null, '503' or 'refuse'")
            elif name == "blackhole":
                value = bool(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            elif name.endswith("_next") or name in ("retry_after_s", "seed", "status_code"):
                value = int(value)
            if name == "status_code" and not 400 <= value <= 599:
                raise ValueError("status_code must be a 4xx or 5xx status")
            if name in ("error_rate", "rate_429") and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
            setattr(self, name, value)
        if "seed" in changes:
            self._random.seed(self.seed)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting at its default: no faults."""
        return {f.name: f.default for f in fields(cls) if not f.name.startswith("_")}

    def draw(self) -> str | None:
        """Decide the fate of one request: 'blackhole', a status code as text ('503', '429',
        '500', or ``status_code`` for ``status_next``) or None."""
        if self._take("pass_next"):
            return None
        if self.blackhole or self._take("blackhole_next"):
            return "blackhole"
        if self.outage == "503":
            return "503"
        if self._take("throttle_next"):
            return "429"
        if self._take("status_next"):
            return str(self.status_code)
        if self._take("fail_next"):
            return "500"
        if self.rate_429 and self._random.random() < self.rate_429:
            return "429"
        if self.error_rate and self._random.random() < self.error_rate:
            return "500"
        return None

    def _take(self, counter: str) -> bool:
        left = getattr(self, counter)
        if left > 0:
            setattr(self, counter, left - 1)
            return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}
