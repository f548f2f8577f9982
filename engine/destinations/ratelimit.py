"""A thread-safe token bucket, shared by every destination that uses the same credentials.

KPN allows 30 calls per second per OAuth client. Several channels may deliver to KPN with the
same client id from several worker threads, so the limit lives in one bucket per client id
(:func:`shared_bucket`), not in each destination.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``capacity``.

    The default capacity of one spaces requests evenly (1/rate apart). KPN does not say how it
    counts "30 calls per second"; a full burst followed by steady traffic would put more than
    30 calls in some one-second window, so even spacing is the reading that is always safe.
    """

    def __init__(
        self,
        rate: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; returns the seconds slept.

        The token is reserved under the lock (the balance may go negative) and the sleep
        happens outside it, so waiting threads queue up in order without holding the lock.
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)
        return wait


_buckets: dict[str, TokenBucket] = {}
_buckets_lock = threading.Lock()


def shared_bucket(key: str, rate: float) -> TokenBucket:
    """The one bucket for ``key`` (e.g. ``"kpn:" + client_id``) in this process."""
    with _buckets_lock:
        bucket = _buckets.get(key)
        if bucket is None:
            bucket = _buckets[key] = TokenBucket(rate)
        return bucket
