"""The arithmetic of rate buckets booked in the store: when each send may start.

A bucket is a token bucket of ``per_second`` sends and ``burst`` capacity, kept in its
equivalent form (GCRA, the "virtual scheduling" of ATM cell rate policing): one time,
``booked_until``, up to which send times have been handed out. A send may start once every
bucket it counts against lets it go (``booked_until - (burst - 1) × interval_s``, or now),
and then moves each of them on by its interval from there. Sending at the time handed out
keeps every bucket within ``burst + t / interval_s`` sends in any ``t`` seconds, also when one
bucket (a vendor account shared by several destinations) holds a send back that another (its
destination) would have let go: both are moved on from the later time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ACCOUNT_PREFIX = "account:"
"""Names an account's bucket (then a keyed hash of the plugin's account key); a destination's
bucket is its name, which never holds a colon."""


@dataclass(frozen=True)
class RateBucket:
    """One limit a send counts against: a destination's, or a vendor account's."""

    name: str
    per_second: float
    burst: int = 1

    @property
    def interval_s(self) -> float:
        return 1.0 / self.per_second


def schedule(
    buckets: Sequence[RateBucket], booked_until: Sequence[float], now: float, count: int
) -> tuple[list[float], list[float]]:
    """The start times of ``count`` sends, and each bucket's new ``booked_until``."""
    until = [max(booked, now) for booked in booked_until]
    times: list[float] = []
    for _ in range(count):
        at = max([now, *(u - (b.burst - 1) * b.interval_s for u, b in zip(until, buckets, strict=True))])
        until = [max(u, at) + b.interval_s for u, b in zip(until, buckets, strict=True)]
        times.append(at)
    return times, until
