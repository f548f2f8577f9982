"""A sandbox keeps what it issued and accepted in a file, and a new one over that file goes on
where the old one stopped: known messages and conversations, statuses still to come, keys."""

from __future__ import annotations

import stat

import pytest
import requests

from courier_sandbox.persistence import write_atomically
from courier_sandbox.qliq import QliqSandbox, QliqTimings
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS, fake_clock

KEY = TEST_CREDENTIALS.qliq_api_key
GROUP = "469841783"  # three members


def qliq(reactor, clock, path) -> QliqSandbox:
    sandbox = QliqSandbox(
        reactor,
        credentials=TEST_CREDENTIALS,
        clock=clock,
        timings=QliqTimings(delivered_after_s=2, read_after_s=None),
    )
    sandbox.keep_state_in(path)
    on_reactor(sandbox.listen)
    return sandbox


def call(sandbox: QliqSandbox, method: str, path: str, **params) -> requests.Response:
    return requests.request(
        method, f"{sandbox.base_url}/secure_messages/{path}", params={"api_key": KEY, **params}, timeout=5
    )


def test_a_restarted_qliq_sandbox_knows_its_messages_and_delivers_what_was_pending(reactor, tmp_path):
    path = tmp_path / "state" / "qliq.json"
    first_clock = fake_clock()
    first = qliq(reactor, first_clock, path)
    try:
        sent = call(first, "POST", "send", to=GROUP, text="Handover").json()
        on_reactor(first_clock.advance, 2)  # the first member got it; the other two not yet (staggered)
    finally:
        on_reactor(first.stop)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    second_clock = fake_clock()
    second = qliq(reactor, second_clock, path)
    try:
        assert len(call(second, "GET", "message_status", message_id=sent["message_id"]).json()) == 1
        follow_up = call(
            second, "POST", "send", to=GROUP, text="More", conversation_id=sent["conversation_id"]
        )
        assert follow_up.status_code == 202, follow_up.text
        on_reactor(second_clock.advance, 4)  # the resumed schedule: from the restart on
        assert len(call(second, "GET", "message_status", message_id=sent["message_id"]).json()) == 3
    finally:
        on_reactor(second.stop)
    assert path.read_text().count(sent["message_id"]) >= 1
    assert [p.name for p in path.parent.iterdir()] == ["qliq.json"], "no temporary file is left"


def test_a_state_file_that_is_not_json_stops_the_start_with_its_name(reactor, tmp_path):
    path = tmp_path / "qliq.json"
    write_atomically(path, b"{not json")
    with pytest.raises(ValueError, match="qliq.json is not the JSON a sandbox saved; remove it"):
        QliqSandbox(reactor, credentials=TEST_CREDENTIALS).keep_state_in(path)


def test_an_atomic_write_replaces_the_whole_file_and_keeps_it_private(tmp_path):
    path = tmp_path / "var" / "sandbox" / "state" / "kpn.json"
    write_atomically(path, b'{"old": true}')
    path.chmod(0o644)
    write_atomically(path, b'{"new": true}')
    assert path.read_bytes() == b'{"new": true}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
