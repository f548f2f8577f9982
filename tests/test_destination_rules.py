"""The shared vendor rules that are plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from engine.destinations.rules import parse_vendor_time


def test_vendor_times_read_z_either_case_offsets_and_naive_as_utc():
    assert parse_vendor_time("2017-06-13T16:25:54.873043z") == datetime(2017, 6, 13, 16, 25, 54, 873043, UTC)
    assert parse_vendor_time("2024-01-01T10:00:00Z") == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert parse_vendor_time("2024-01-01T10:00:00") == datetime(2024, 1, 1, 10, tzinfo=UTC)
    plus_two = datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    assert parse_vendor_time("2024-01-01T10:00:00+02:00") == plus_two
    assert parse_vendor_time("yesterday") is None and parse_vendor_time(None) is None
