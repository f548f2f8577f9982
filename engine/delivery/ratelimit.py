"""A token bucket on the reactor's clock: how long a destination's queue must wait to send.

Unlike :class:`engine.destinations.ratelimit.TokenBucket` (shared per vendor credentials,
blocking a worker thread), this one never sleeps: the queue asks how many sends it may start
now and schedules its next look at the bucket on the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """``per_second`` sends on average, up to ``burst`` at once after a quiet spell."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float]) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def available(self) -> int:
        """Whole tokens that can be taken now."""
        self._refill()
        return int(self._tokens)

    def take(self, n: int) -> None:
        self._refill()
        self._tokens -= n

    def wait_s(self) -> float:
        """Seconds until the next whole token."""
        self._refill()
        return max(0.0, (1 - self._tokens) / self.per_second)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
