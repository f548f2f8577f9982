"""The pure rules of delivery: backoff, dead letter, token bucket, poll schedule, status moves."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from engine.channel.config import Retry, StatusPolling
from engine.delivery.backoff import give_up_reason, retry_delay
from engine.delivery.polling import (
    EXPIRY_MARGIN_S,
    first_poll,
    next_poll_at,
    payload_expiry,
)
from engine.delivery.tracker import leading_update, next_state
from engine.destinations.base import StatusUpdate
from engine.destinations.conneqt.polling import MIN_POLL_INTERVAL_S as CONNEQT_MIN_INTERVAL_S
from engine.store.base import DELIVERED, ERROR, QUEUED, READ, SENT
from engine.store.rate_buckets import RateBucket, schedule

RETRY = Retry(max_attempts=5, initial_delay_s=10, max_delay_s=100, factor=2, jitter=0, max_age_s=1000)
POLLING = StatusPolling(poll=True, poll_every_s=60, give_up_after_s=3600)
T0 = 1_700_000_000.0


def test_backoff_grows_by_factor_and_is_capped():
    assert [retry_delay(RETRY, n) for n in (1, 2, 3, 4, 5, 6)] == [10, 20, 40, 80, 100, 100]


def test_jitter_spreads_within_its_fraction():
    retry = Retry(5, 10, 100, 2, 0.5, 1000)
    delays = {retry_delay(retry, 1, rng=random.Random(seed)) for seed in range(50)}
    assert all(5 <= d <= 15 for d in delays) and len(delays) > 40


def test_retry_after_is_a_floor_not_a_ceiling():
    assert retry_delay(RETRY, 1, retry_after_s=30) == 30
    assert retry_delay(RETRY, 3, retry_after_s=30) == 40


def test_dead_letter_after_max_attempts_or_max_age():
    assert give_up_reason(RETRY, 4, T0, T0 + 10) is None
    assert "5 attempts" in give_up_reason(RETRY, 5, T0, T0 + 10)
    assert "max_age_s" in give_up_reason(RETRY, 1, T0, T0 + 1000)


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = [RateBucket("hook", per_second=2, burst=3)]
    # an idle bucket: the burst at once, then the rate; it is booked from T0 to T0 + 2
    assert schedule(bucket, [0.0], T0, 4) == ([T0, T0, T0, T0 + 0.5], [T0 + 2])
    assert schedule(bucket, [T0 + 2], T0, 1) == ([T0 + 1], [T0 + 2.5])  # the next one follows on
    assert schedule(bucket, [T0 + 2.5], T0 + 100, 1) == ([T0 + 100], [T0 + 100.5])  # long ago: now


def test_a_send_waits_for_every_bucket_and_moves_each_on_from_its_time():
    destination = RateBucket("hook", per_second=10, burst=1)
    account = RateBucket("account:x", per_second=2, burst=1)
    # the account is booked a second ahead (another destination on it): the destination's
    # sends go when the account lets them, and its own bucket moves on from there, so the
    # sends the account held back never go at the account's pace instead of the destination's
    times, until = schedule([destination, account], [T0, T0 + 1], T0, 3)
    assert times == [T0 + 1, T0 + 1.5, T0 + 2]
    assert until == pytest.approx([T0 + 2.1, T0 + 2.5])
    # the other way round: an account with room lets the destination's own pace through
    times, until = schedule([RateBucket("hook", 2), RateBucket("account:x", 10)], [T0, T0], T0, 3)
    assert times == [T0, T0 + 0.5, T0 + 1]
    assert until == pytest.approx([T0 + 1.5, T0 + 1.1])


def test_qliq_polls_every_interval_until_give_up():
    poll = first_poll("qliq", POLLING, "team", T0, None)
    assert (poll.next_at, poll.give_up_at) == (T0 + 60, T0 + 3600)
    assert next_poll_at("qliq", POLLING, poll, T0 + 60) == T0 + 120
    assert next_poll_at("qliq", POLLING, poll, T0 + 3590) == T0 + 3600
    assert next_poll_at("qliq", POLLING, poll, T0 + 3600) is None


def test_kpn_is_never_polled_and_polling_can_be_switched_off():
    assert first_poll("kpn", POLLING, "chat", T0, None) is None
    off = StatusPolling(poll=False, poll_every_s=60, give_up_after_s=3600)
    assert first_poll("qliq", off, "team", T0, None) is None


def test_conneqt_polls_at_most_four_times_a_day_and_around_expiry():
    day = StatusPolling(poll=True, poll_every_s=60, give_up_after_s=7 * 86400)
    expires = T0 + 86400 + 3600
    poll = first_poll("conneqt", day, "gp", T0, expires)
    times = [T0]
    while (following := next_poll_at("conneqt", day, poll, times[-1])) is not None:
        times.append(following)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:4] == [CONNEQT_MIN_INTERVAL_S] * 4
    assert times[-2:] == [expires - EXPIRY_MARGIN_S, expires + EXPIRY_MARGIN_S]
    assert len(times) - 1 == 6


def test_conneqt_expiry_comes_from_the_payload():
    assert (
        payload_expiry("conneqt", {"expiryDateTime": "2024-01-01T00:00:00Z"})
        == datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    )
    assert payload_expiry("conneqt", {}) is None
    assert payload_expiry("qliq", {"expiryDateTime": "2024-01-01T00:00:00Z"}) is None


@pytest.mark.parametrize(
    ("current", "update", "expected"),
    [
        (SENT, "delivered", (DELIVERED, "delivered")),
        (SENT, "read", (READ, "read")),
        (SENT, "failed", (ERROR, "failed")),
        (SENT, "expired", (ERROR, "expired")),
        (SENT, "pending", None),
        (SENT, "accepted", None),
        (DELIVERED, "read", (READ, "read")),  # DISPATCHED upgraded to DISPLAYED
        (DELIVERED, "failed", None),  # a later FAILED never overrides DISPATCHED
        (DELIVERED, "delivered", None),
        (READ, "delivered", None),
        (ERROR, "delivered", None),
        (QUEUED, "delivered", None),
    ],
)
def test_status_moves_only_forward(current, update, expected):
    assert next_state(current, update) == expected


def test_the_most_advanced_recipient_leads():
    failed, pending, read = StatusUpdate("failed"), StatusUpdate("pending"), StatusUpdate("read")
    assert leading_update([failed, read, pending]) is read
    assert leading_update([failed, pending]) is pending
    assert leading_update([failed]) is failed
    assert leading_update([]) is None
