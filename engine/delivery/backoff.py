"""When to try a failed delivery again, and when to stop trying (the dead letter).

Mirth's default queue retries forever; here every destination has a ``max_attempts`` and a
``max_age_s`` and a delivery past either goes to ERROR with the reason.
"""

from __future__ import annotations

import random

from engine.channel.config import Retry


def retry_delay(
    retry: Retry, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based).

    ``initial_delay_s * factor**(attempt-1)``, capped at ``max_delay_s``, spread by ±``jitter``
    so a recovered vendor is not hit by every queued message at once. A vendor's Retry-After is
    a floor: we never come back sooner than it asked.
    """
    base = min(retry.initial_delay_s * retry.factor ** max(attempt - 1, 0), retry.max_delay_s)
    spread = base * retry.jitter * (2 * (rng or random).random() - 1)
    delay = max(base + spread, 0.0)
    return max(delay, retry_after_s) if retry_after_s is not None else delay


def give_up_reason(retry: Retry, attempts: int, queued_at: float, now: float) -> str | None:
    """Why a delivery that just failed must not be retried again, or None to retry."""
    if attempts >= retry.max_attempts:
        return f"gave up after {attempts} attempts (max_attempts {retry.max_attempts})"
    age = now - queued_at
    if age >= retry.max_age_s:
        return f"gave up after {age:.0f} s in the queue (max_age_s {retry.max_age_s:g})"
    return None
