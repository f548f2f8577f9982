"""HTTP classification shared by all destinations, over a real loopback HTTP server.

:class:`ScriptedServer` (``tests/support/scripted_http.py``) is a tiny stand-in vendor: it
answers each request with the next scripted response and records what it received.
The vendor sandboxes test vendor behaviour; this server tests our classification of answers
no sandbox may produce on demand.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests

from engine.destinations import DestinationError, Outcome
from engine.destinations.medallies.destination import MedAlliesDestination
from engine.destinations.transport import MAX_RETRY_AFTER_S, retry_after_seconds
from engine.spec import parse
from tests.support.scripted_http import Reply, ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def make_settings(cls: type, table: dict[str, Any]) -> Any:
    """Parse a settings table with the destination's own spec, as a channel file would be."""
    settings, problems = parse(cls.settings_spec, table, env={})
    assert problems == []
    return settings


def medallies(base_url: str, session: requests.Session, **extra: Any) -> MedAlliesDestination:
    settings = make_settings(
        MedAlliesDestination,
        {
            "base_url": base_url,
            "username": "edge",
            "password": "pw",
            "from_direct_address": "lab@direct.example.org",
            **extra,
        },
    )
    return MedAlliesDestination(settings, session)


PAYLOAD = {
    "toDirectAddress": "smith@direct.example.org",
    "emailAttachmentList": [
        {"attachmentClass": "application/pdf", "attachmentContent": "JVBERi0=", "attachmentTitle": "Report"},
    ],
}


def send(server: ScriptedServer, session: requests.Session, *replies: Reply, **settings: Any):
    server.reply(*replies)
    return medallies(server.base_url, session, **settings).send(PAYLOAD, idempotency_key="m1:d")


# -- Retry-After -------------------------------------------------------------------------


def test_retry_after_in_seconds():
    assert retry_after_seconds("120") == 120.0


def test_retry_after_as_http_date():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(header, now) == 90.0


@pytest.mark.parametrize(
    "header",
    ["99999999999999999999999999", "Fri, 31 Dec 9999 23:59:59 -2359", "Fri, 31 Dec 9999 23:59:59 GMT"],
)
def test_retry_after_is_at_most_a_day_whatever_the_vendor_says(header):
    assert retry_after_seconds(header) == MAX_RETRY_AFTER_S == 86400


@pytest.mark.parametrize("header", ["²", "١٢٠", "12.5", "soon"])
def test_retry_after_that_is_neither_ascii_seconds_nor_a_date_is_ignored(header):
    assert retry_after_seconds(header) is None


def test_retry_after_in_the_past_means_now():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0


@pytest.mark.parametrize("header", [None, "", "soon", "-5"])
def test_retry_after_absent_or_unreadable(header):
    assert retry_after_seconds(header) is None


# -- classification over a real socket ---------------------------------------------------


def test_2xx_is_accepted(server, session):
    result = send(
        server, session, Reply(200, {"messageId": "x", "status": "SUCCESS", "transactionId": "t-1"})
    )
    assert result.outcome is Outcome.ACCEPTED
    assert result.http_status == 200
    assert result.vendor_ids["transactionId"] == "t-1"


def test_429_is_retried_after_the_vendors_delay(server, session):
    result = send(server, session, Reply(429, {"message": "slow down"}, {"Retry-After": "7"}))
    assert result.outcome is Outcome.RETRY
    assert result.retry_after_s == 7.0
    assert result.http_status == 429


def test_503_honours_an_http_date_retry_after(server, session):
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    result = send(server, session, Reply(503, "", {"Retry-After": later}))
    assert result.outcome is Outcome.RETRY
    assert 50 < result.retry_after_s <= 60


@pytest.mark.parametrize("status", [408, 500, 502, 503])
def test_transient_statuses_are_retried(server, session, status):
    result = send(server, session, Reply(status, {}))
    assert result.outcome is Outcome.RETRY
    assert result.retry_after_s is None


@pytest.mark.parametrize("status", [400, 405, 412])
def test_other_4xx_are_rejected_with_the_vendors_reason(server, session, status):
    result = send(server, session, Reply(status, {"message": "toDirectAddress unknown"}))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == f"HTTP {status}: toDirectAddress unknown"


@pytest.mark.parametrize(("status", "hold"), [(401, "auth"), (403, "forbidden"), (404, "endpoint not found")])
def test_set_up_errors_hold_the_destination(server, session, status, hold):
    """One wrong base URL or key must not fail every message in the queue for good."""
    result = send(server, session, Reply(status, {"message": "Check your URL"}))
    assert (result.outcome, result.hold) == (Outcome.AUTH_FAILED, hold)


def test_an_unknown_host_holds_the_destination(session):
    result = medallies("http://courier-test.invalid", session).send(PAYLOAD, idempotency_key="k")
    assert (result.outcome, result.hold) == (Outcome.AUTH_FAILED, "dns")
    assert "courier-test.invalid" not in result.reason


def test_the_vendors_words_are_kept_for_the_store_but_left_out_of_logs(server, session):
    """A vendor may echo the value it refuses, such as an NHS number."""
    result = send(server, session, Reply(400, {"message": "invalid patientId 9434765919"}))
    assert result.reason == "HTTP 400: invalid patientId 9434765919"
    assert "9434765919" not in result.loggable_reason
    assert result.loggable_reason.startswith("HTTP 400: ")


def test_401_is_an_auth_failure_not_a_rejection(server, session):
    result = send(server, session, Reply(401, {"message": "bad key"}))
    assert result.outcome is Outcome.AUTH_FAILED
    assert "MedAllies credentials rejected" in result.reason


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_nor_posted_again(server, session, status):
    result = send(server, session, Reply(status, "", {"Location": "/elsewhere"}))
    assert result.outcome is Outcome.REJECTED
    assert "never sent twice on a redirect" in result.reason
    assert [r.path for r in server.received] == ["/dirmsg/send_ccda"]


def test_a_read_timeout_is_retried(server, session):
    result = send(server, session, Reply(200, {}, delay_s=1.0), read_timeout_s=0.2)
    assert result.outcome is Outcome.RETRY
    assert result.reason == "medallies: timed out"


def test_connection_refused_is_retried_without_leaking_the_url(session):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = medallies(f"http://127.0.0.1:{port}", session).send(PAYLOAD, idempotency_key="k")
    assert result.outcome is Outcome.RETRY
    assert result.reason == "medallies: ConnectionError"


def test_the_ca_file_setting_is_used_for_https(tmp_path, session):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("")
    destination = medallies("https://127.0.0.1:1", session, ca_file=str(ca_file))
    assert destination.verify == str(ca_file)
    assert medallies("https://127.0.0.1:1", session).verify is True


# -- status queries and token exchanges --------------------------------------------------


def test_a_failed_status_query_raises_a_phi_free_error(server, session):
    server.reply(Reply(500, {"message": "database down"}))
    with pytest.raises(DestinationError, match="MedAllies status query failed: HTTP 500"):
        medallies(server.base_url, session).check_status("urn:uuid:1")


def test_an_unreachable_status_api_raises(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DestinationError, match="ConnectionError"):
        medallies(f"http://127.0.0.1:{port}", session).check_status("urn:uuid:1")
