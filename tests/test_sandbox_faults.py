"""Fault injection, recording and the control API, on sandboxes started by start_sandboxes."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from courier_sandbox import DEFAULT_PORTS, Sandboxes, start_sandboxes
from courier_sandbox.kpn import KpnSandbox
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS

ZERO_PORTS = dict.fromkeys(DEFAULT_PORTS, 0)


@pytest.fixture(scope="module")
def all_sandboxes(reactor):
    sandboxes: Sandboxes = on_reactor(
        start_sandboxes, reactor, credentials=TEST_CREDENTIALS, ports=ZERO_PORTS, seed=7
    )
    yield sandboxes
    on_reactor(sandboxes.stop)


@pytest.fixture
def qliq(all_sandboxes):
    sandbox = all_sandboxes.qliq
    on_reactor(sandbox.reset)
    yield sandbox
    on_reactor(sandbox.set_faults, outage=None)
    on_reactor(sandbox.reset)


def status_url(sandbox) -> str:
    return f"{sandbox.base_url}/secure_messages/message_status?api_key={TEST_CREDENTIALS.qliq_api_key}"


def get(sandbox, timeout: float = 5) -> requests.Response:
    return requests.get(status_url(sandbox), timeout=timeout)


def test_all_five_listen_on_distinct_free_ports(all_sandboxes):
    urls = all_sandboxes.api_urls()
    assert set(urls) == {"qliq", "conneqt", "medallies", "kpn", "http", "kpn_oauth"}
    assert urls["medallies"].endswith("/MessagingAPI")
    assert len({s.port for s in all_sandboxes}) == 5
    for sandbox in all_sandboxes:
        r = requests.get(f"{sandbox.base_url}/_sandbox/state", timeout=5)
        assert r.status_code == 200 and r.json()["name"] == sandbox.name


def test_fail_next_and_throttle_next_are_exact(qliq):
    on_reactor(qliq.set_faults, fail_next=2, throttle_next=1)
    codes = [get(qliq) for _ in range(4)]
    assert [r.status_code for r in codes] == [429, 500, 500, 400]
    assert codes[0].headers["Retry-After"] == "1"
    assert [r.fault for r in qliq.state.requests] == ["429", "500", "500", None]


def test_pass_next_lets_requests_through_before_the_counted_faults(qliq):
    on_reactor(qliq.set_faults, pass_next=1, fail_next=1)
    assert [get(qliq).status_code for _ in range(3)] == [400, 500, 400]  # 400: no message_id


def test_rates_are_repeatable_with_a_seed(qliq):
    def pattern() -> list[int]:
        on_reactor(qliq.set_faults, seed=3, error_rate=0.5, rate_429=0.2, retry_after_s=4)
        return [get(qliq).status_code for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert {500, 429, 400} <= set(first)


def test_outage_503_spares_the_control_api(qliq):
    on_reactor(qliq.set_faults, outage="503")
    r = get(qliq)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert requests.get(f"{qliq.base_url}/_sandbox/state", timeout=5).status_code == 200
    on_reactor(qliq.set_faults, outage=None)
    assert get(qliq).status_code == 400


def test_outage_refuse_really_refuses_then_recovers(qliq):
    with requests.Session() as session:
        assert session.get(status_url(qliq), timeout=5).status_code == 400  # keep-alive open
        on_reactor(qliq.set_faults, outage="refuse")
        with pytest.raises(requests.ConnectionError):
            session.get(status_url(qliq), timeout=2)
    with pytest.raises(requests.ConnectionError):
        get(qliq, timeout=2)
    on_reactor(qliq.set_faults, outage=None)
    assert get(qliq).status_code == 400


def test_refuse_through_control_api_restores_itself(qliq):
    r = requests.post(
        f"{qliq.base_url}/_sandbox/faults", json={"outage": "refuse", "restore_after_s": 1.5}, timeout=5
    )
    assert r.status_code == 200
    with pytest.raises(requests.ConnectionError):
        get(qliq, timeout=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert get(qliq).status_code == 400
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    pytest.fail("the refuse outage did not end")


def test_blackhole_never_answers(qliq):
    on_reactor(qliq.set_faults, blackhole_next=1)
    with pytest.raises(requests.ReadTimeout):
        get(qliq, timeout=0.3)
    assert get(qliq).status_code == 400
    on_reactor(qliq.set_faults, blackhole=True)
    with pytest.raises(requests.ReadTimeout):
        get(qliq, timeout=0.3)
    assert qliq.state.requests[-1].fault == "blackhole"


def test_latency_delays_answers(qliq):
    on_reactor(qliq.set_faults, latency_s=0.5)
    with pytest.raises(requests.ReadTimeout):
        get(qliq, timeout=0.15)
    assert get(qliq, timeout=5).status_code == 400


def test_control_api_validates_and_resets(qliq):
    bad = requests.post(f"{qliq.base_url}/_sandbox/faults", json={"error_rate": 2}, timeout=5)
    assert bad.status_code == 400
    unknown = requests.post(f"{qliq.base_url}/_sandbox/faults", json={"chaos": 1}, timeout=5)
    assert unknown.status_code == 400
    ok = requests.post(f"{qliq.base_url}/_sandbox/faults", json={"fail_next": 1}, timeout=5)
    assert ok.json()["fail_next"] == 1
    assert get(qliq).status_code == 500
    assert requests.post(f"{qliq.base_url}/_sandbox/reset", timeout=5).status_code == 200
    state = requests.get(f"{qliq.base_url}/_sandbox/state", timeout=5).json()
    assert state["requests"] == [] and state["faults"]["fail_next"] == 0
    assert (
        requests.post(f"{qliq.base_url}/_sandbox/config", json={"nonsense": 1}, timeout=5).status_code == 400
    )


def test_recording_hides_secrets(all_sandboxes):
    medallies = all_sandboxes.medallies
    on_reactor(medallies.reset)
    requests.get(
        f"{medallies.base_url}/dirmsg/status",
        params={"xdMsgId": "x"},
        auth=("courier", TEST_CREDENTIALS.medallies_password),
        timeout=5,
    )
    qliq = all_sandboxes.qliq
    on_reactor(qliq.reset)
    requests.post(
        f"{qliq.base_url}/secure_messages/send",
        data={"api_key": TEST_CREDENTIALS.qliq_api_key, "to": "x"},
        timeout=5,
    )
    recorded = [*medallies.state.requests, *qliq.state.requests]
    assert recorded[0].headers["authorization"] == "***"
    assert recorded[1].body["form"] == {"api_key": "***", "to": "x"}
    basic = base64.b64encode(f"courier:{TEST_CREDENTIALS.medallies_password}".encode()).decode()
    assert basic not in repr(recorded)


@pytest.mark.parametrize(
    "name, content_type, key",
    [
        ("qliq", "application/json", "error"),
        ("conneqt", "application/problem+json", "title"),
        ("medallies", "application/json", "result"),
        ("kpn", "application/json", "error"),
    ],
)
def test_fault_answers_use_each_vendors_error_format(all_sandboxes, name, content_type, key):
    sandbox = getattr(all_sandboxes, name)
    on_reactor(sandbox.reset)
    try:
        on_reactor(sandbox.set_faults, throttle_next=1, fail_next=1)
        answers = [requests.get(f"{sandbox.base_url}/anything", timeout=5) for _ in range(2)]
        on_reactor(sandbox.set_faults, outage="503")
        answers.append(requests.get(f"{sandbox.base_url}/anything", timeout=5))
    finally:
        on_reactor(sandbox.set_faults, outage=None)
    assert [a.status_code for a in answers] == [429, 500, 503]
    for answer in answers:
        assert answer.headers["Content-Type"] == content_type and key in answer.json()


def test_reset_ends_a_refuse_outage(qliq):
    on_reactor(qliq.set_faults, outage="refuse", seed=99)
    with pytest.raises(requests.ConnectionError):
        get(qliq, timeout=2)
    on_reactor(qliq.reset)
    assert get(qliq).status_code == 400
    assert qliq.faults.seed == 7  # back to the seed start_sandboxes was given


def test_a_stopped_sandbox_stays_stopped(reactor):
    sandbox = KpnSandbox(reactor, credentials=TEST_CREDENTIALS)
    on_reactor(sandbox.listen)
    on_reactor(sandbox.stop)
    on_reactor(sandbox.set_faults, outage=None)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sandbox.base_url}/_sandbox/state", timeout=2)
