"""The admin endpoint in-process: health without a login, everything else behind one, actions
only from the console's own pages, and each action recorded with the operator's name."""

from __future__ import annotations

import logging
import time

import pytest
import requests
from twisted.web.resource import Resource

from engine.store import DeliverySelection
from engine.tls import TLSSettings
from tests.conftest import on_reactor
from tests.support.admin import OPERATOR, SECRET, csrf_token, log_in, start_admin, stop_admin
from tests.support.mllp import BlockingClient
from tests.support.pki import make_pki
from tests.support.waiting import wait_for
from tests.test_e2e_http import MAPPING

ORU = (
    b"MSH|^~\\&|LIS|CITYLAB|COURIER|CITYHOSP|20240131142501||ORU^R01|CT0001|P|2.5\r"
    b"PID|1||9434765919^^^NHS^NH||DOE^JANE\r"
    b"OBR|1||ORD1|GLU^Glucose\r"
)
PAGES = ["/", "/message?control_id=CT0001"]
ACTIONS = ["/deliveries/requeue", "/deliveries/cancel", "/outbox/skip", "/reload", "/logout"]


class _Extra(Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return b"mounted\n"


@pytest.fixture
def admin(reactor, tmp_path):
    started = start_admin(reactor, tmp_path, extra={b"extra": _Extra()})
    yield started
    stop_admin(started)


@pytest.fixture
def audited(reactor, tmp_path, store_location):
    """The console on a SQLite file, then on PostgreSQL."""
    started = start_admin(reactor, tmp_path, location=store_location)
    yield started
    stop_admin(started)


def dead_letter(admin) -> int:
    """A message over MLLP whose one delivery is then a dead letter; its delivery id."""
    with BlockingClient(admin.mllp_port) as client:
        assert b"MSA|AA|CT0001" in client.request(ORU)
    (delivery,) = on_reactor(admin.store.list_deliveries)
    on_reactor(admin.store.mark_error, delivery.id, "vendor said 400")
    return delivery.id


def test_health_answers_without_a_login(admin):
    answer = requests.get(f"{admin.url}/healthz", timeout=5)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    ready = wait_for(lambda: requests.get(f"{admin.url}/readyz", timeout=5).status_code == 200, 10, "ready")
    assert ready


def test_without_a_login_pages_redirect_and_everything_else_is_401(admin):
    for page in PAGES:
        answer = requests.get(admin.url + page, allow_redirects=False, timeout=5)
        assert (answer.status_code, answer.headers.get("location")) == (302, "/login"), page
    extra = requests.get(f"{admin.url}/extra", timeout=5)
    assert extra.status_code == 401 and extra.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ACTIONS:
        answer = requests.post(admin.url + path, data={"id": "1"}, headers={"Origin": admin.url}, timeout=5)
        assert answer.status_code == 401, path
    wrong = {"Authorization": "Bearer not-the-token-at-all-nope"}
    assert requests.get(f"{admin.url}/extra", headers=wrong, timeout=5).status_code == 401
    assert requests.get(f"{admin.url}/nothing-here", timeout=5).status_code == 404


def test_a_bearer_token_reads_pages_and_mounted_resources_but_never_acts(admin):
    bearer = {"Authorization": f"Bearer {SECRET}"}
    assert requests.get(f"{admin.url}/extra", headers=bearer, timeout=5).text == "mounted\n"
    page = requests.get(f"{admin.url}/", headers=bearer, timeout=5)
    assert page.status_code == 200 and "lab-to-hook" in page.text and 'name="csrf"' not in page.text
    delivery = dead_letter(admin)
    answer = requests.post(
        f"{admin.url}/deliveries/requeue",
        data={"id": delivery},
        headers={**bearer, "Origin": admin.url},
        timeout=5,
    )
    assert answer.status_code == 401
    assert on_reactor(admin.store.get_delivery, delivery).state == "ERROR"


def test_login_sets_a_strict_http_only_cookie_and_a_wrong_secret_is_refused_slowly(admin):
    client = requests.Session()
    started = time.monotonic()
    wrong = client.post(
        f"{admin.url}/login",
        data={"name": OPERATOR, "secret": "x" * 32},
        headers={"Origin": admin.url},
        timeout=10,
    )
    assert wrong.status_code == 401 and time.monotonic() - started >= 0.9
    assert "x" * 32 not in wrong.text
    right = client.post(
        f"{admin.url}/login",
        data={"name": OPERATOR, "secret": SECRET},
        headers={"Origin": admin.url},
        allow_redirects=False,
        timeout=5,
    )
    cookie = right.headers["Set-Cookie"]
    assert right.status_code == 302 and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure (test below)


def test_a_login_posted_from_another_site_is_refused(admin):
    forged = requests.post(
        f"{admin.url}/login",
        data={"name": OPERATOR, "secret": SECRET},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
        timeout=5,
    )
    assert forged.status_code == 403 and "Set-Cookie" not in forged.headers


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        (None, {}),
        ("wrong", {}),
        ("right", {"Origin": "http://evil.example"}),
        ("right", {"Origin": None, "Referer": "http://evil.example/page"}),
        ("right", {"Origin": None}),
    ],
    ids=["no token", "wrong token", "foreign origin", "foreign referer", "no origin"],
)
def test_a_forged_cross_site_post_is_refused(admin, csrf, headers):
    delivery = dead_letter(admin)
    client = log_in(admin)
    data = {"id": delivery}
    if csrf is not None:
        data["csrf"] = csrf_token(client, admin) if csrf == "right" else "forged-token"
    answer = client.post(f"{admin.url}/deliveries/requeue", data=data, headers=headers, allow_redirects=False)
    assert answer.status_code == 403
    assert on_reactor(admin.store.get_delivery, delivery).state == "ERROR"


def test_requeue_and_cancel_are_recorded_with_the_operators_name(admin, caplog):
    caplog.set_level(logging.WARNING, logger="engine.admin")
    delivery = dead_letter(admin)
    client = log_in(admin)
    token = csrf_token(client, admin)
    answer = client.post(
        f"{admin.url}/deliveries/requeue", data={"id": delivery, "csrf": token}, allow_redirects=False
    )
    assert answer.status_code == 302
    assert f"Delivery {delivery} requeued." in client.get(f"{admin.url}/").text
    client.post(f"{admin.url}/deliveries/cancel", data={"id": delivery, "csrf": token})
    assert on_reactor(admin.store.get_delivery, delivery).state == "CANCELLED"
    events = {e.kind: e.detail for e in on_reactor(admin.store.timeline, "CT0001")}
    assert (
        events["requeued"] == f"by operator {OPERATOR}" and events["cancelled"] == f"by operator {OPERATOR}"
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "engine.admin.console"]
    assert logged == [
        f"console: operator {OPERATOR} requeued delivery {delivery} (results-hook)",
        f"console: operator {OPERATOR} cancelled delivery {delivery} (results-hook)",
    ]
    assert SECRET not in caplog.text


def test_outbox_skip_keeps_the_operators_name_and_reason(admin):
    item = on_reactor(
        admin.store.outbox_add, "lab-to-hook", "tcp:host=127.0.0.1:port=9", b"MSH|...", "ST0001"
    )
    client = log_in(admin)
    assert "ST0001" in client.get(f"{admin.url}/").text
    client.post(
        f"{admin.url}/outbox/skip",
        data={"id": item, "csrf": csrf_token(client, admin), "reason": "test feed"},
    )
    skipped = on_reactor(admin.store.get_outbox_item, item)
    assert skipped.state == "ERROR" and skipped.last_error == f"skipped by operator {OPERATOR}: test feed"


def recorded(admin) -> list[tuple[str, str, str, str]]:
    """The operators' actions in the store, oldest first: (operator, action, subject, detail)."""
    return [
        (a.operator, a.action, a.subject, a.detail) for a in reversed(on_reactor(admin.store.list_actions))
    ]


def test_every_console_action_is_recorded_in_the_store_with_the_operators_name(audited, tmp_path):
    admin = audited
    delivery = dead_letter(admin)
    item = on_reactor(
        admin.store.outbox_add, "lab-to-hook", "tcp:host=127.0.0.1:port=9", b"MSH|...", "ST0001"
    )
    client = log_in(admin)
    token = csrf_token(client, admin)
    for path, data in (
        ("/deliveries/requeue", {"id": delivery}),
        ("/deliveries/cancel", {"id": delivery}),
        ("/outbox/skip", {"id": item, "reason": "test feed"}),
        ("/reload", {}),
    ):
        assert client.post(admin.url + path, data={**data, "csrf": token}).status_code == 200, path
    channel = tmp_path / "lab.toml"
    channel.write_text(channel.read_text().replace('type = "http"', 'type = "no-such-vendor"'))
    assert "no-such-vendor" in client.post(f"{admin.url}/reload", data={"csrf": token}).text
    before_logout = [
        (OPERATOR, "logged in", "session from 127.0.0.1", ""),
        (OPERATOR, "requeued", f"delivery {delivery}", ""),
        (OPERATOR, "cancelled", f"delivery {delivery}", ""),
        (OPERATOR, "skipped", f"outbox item {item}", f"skipped by operator {OPERATOR}: test feed"),
        (OPERATOR, "reloaded", "channel files", "nothing changed"),
        (OPERATOR, "reloaded", "channel files", f"refused {channel}"),  # not the reason: it quotes the file
    ]
    wait_for(lambda: recorded(admin) == before_logout, 10, "every action recorded")
    shown = client.get(f"{admin.url}/").text.split("<h2>Operator actions</h2>", 1)[1]
    assert f"<td>{OPERATOR}</td><td>requeued</td><td>delivery {delivery}</td>" in shown
    assert f"<td>skipped</td><td>outbox item {item}</td>" in shown
    client.post(f"{admin.url}/logout", data={"csrf": token})
    wait_for(lambda: recorded(admin)[-1:] == [(OPERATOR, "logged out", "session", "")], 10, "logout recorded")
    assert SECRET not in str(recorded(admin))


def test_the_dashboard_and_the_timeline_show_no_body(admin):
    dead_letter(admin)
    with BlockingClient(admin.mllp_port) as client:
        client.request(b"not hl7 at all")
    browser = log_in(admin)
    page = browser.get(f"{admin.url}/").text
    assert 'class="channel">lab-to-hook<' in page and "listening" in page and "results-hook" in page
    assert "<td>1</td><td><form" not in page  # sanity: cells are rendered, not a raw list
    timeline = browser.get(f"{admin.url}/message", params={"control_id": "CT0001"}).text
    assert "received" in timeline and "results-hook" in timeline and "vendor said 400" not in timeline
    assert "DOE" not in page + timeline and "9434765919" not in page + timeline
    refused = page.split('class="channel">lab-to-hook<', 1)[1].split("</tr>", 1)[0]
    assert refused.endswith("<td>1</td>")


def refused_on_the_page(page: str) -> int:
    """The channel row's last cell: its refusals since start."""
    row = page.split('class="channel">lab-to-hook<', 1)[1].split("</tr>", 1)[0]
    return int(row.rsplit("<td>", 1)[1].split("</td>", 1)[0])


def refused_in_the_metric(admin) -> float:
    registry = admin.engine.metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "courier_messages_refused"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["channel"] == "lab-to-hook"
    )


def test_the_refusals_shown_are_the_metrics_across_kinds_and_a_restart_of_the_channel(admin, tmp_path):
    """One count, not two: the page reads ``courier_messages_refused_total`` (every code), which
    goes on counting when a reload restarts the channel."""
    adt = ORU.replace(b"ORU^R01", b"ADT^A01")
    batch = b"BHS|^~\\&|LIS|CITYLAB|COURIER|CITYHOSP|20240131||||B1\r" + adt + ORU + b"BTS|2\r"
    with BlockingClient(admin.mllp_port) as client:
        client.request(b"not hl7 at all")  # 100
        client.request(adt)  # 200: message type not accepted
        client.request(ORU.replace(b"|CT0001|", b"||"))  # 101: no MSH-10
    (tmp_path / "hook.toml").write_text(MAPPING.replace("OBR-4.2", "OBR-4.1"))
    assert on_reactor(admin.engine.reload).restarted == ("lab-to-hook",)
    with BlockingClient(admin.mllp_port) as client:
        assert b"MSA|AR|CT0001" in client.request(batch)  # 200 again, beside an accepted message
    page = log_in(admin).get(f"{admin.url}/").text
    assert refused_on_the_page(page) == refused_in_the_metric(admin) == 4


def test_logout_ends_the_session(admin):
    client = log_in(admin)
    client.post(f"{admin.url}/logout", data={"csrf": csrf_token(client, admin)})
    assert client.get(f"{admin.url}/", allow_redirects=False).status_code == 302


def test_readyz_turns_503_within_seconds_of_a_listener_failing(admin):
    wait_for(lambda: requests.get(f"{admin.url}/readyz", timeout=5).status_code == 200, 10, "ready")
    on_reactor(admin.engine.listeners["lab-to-hook"].port.stopListening)
    answer = requests.get(f"{admin.url}/readyz", timeout=5)
    assert answer.status_code == 503 and answer.json()["reasons"] == ["listener lab-to-hook is not listening"]


def test_readyz_turns_503_within_seconds_of_the_store_becoming_unwritable(admin):
    import sqlite3

    wait_for(lambda: requests.get(f"{admin.url}/readyz", timeout=5).status_code == 200, 10, "ready")
    other = sqlite3.connect(admin.store_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        started = time.monotonic()
        wait_for(lambda: requests.get(f"{admin.url}/readyz", timeout=5).status_code == 503, 10, "503")
        assert time.monotonic() - started < 8
        reasons = requests.get(f"{admin.url}/readyz", timeout=5).json()["reasons"]
        assert reasons and reasons[0].startswith("store writer stalled")
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait_for(lambda: requests.get(f"{admin.url}/readyz", timeout=5).status_code == 200, 20, "ready again")


def test_readyz_turns_503_once_a_destination_is_held_too_long(reactor, tmp_path):
    admin = start_admin(reactor, tmp_path, max_held_s=1.0)
    try:
        delivery = dead_letter(admin)
        on_reactor(admin.store.requeue, DeliverySelection(ids=(delivery,)))
        (claimed,) = on_reactor(admin.store.claim_due, "results-hook", time.time(), 1, 60)
        assert claimed.id == delivery  # a hold is recorded by the node sending it
        on_reactor(admin.store.release, delivery, time.time() + 60, "401 from the vendor", None, "auth")
        answer = wait_for(
            lambda: (r := requests.get(f"{admin.url}/readyz", timeout=5)).status_code == 503 and r.json(),
            10,
            "503",
        )
        assert answer["reasons"][0].startswith("destination results-hook held (auth) for ")
        page = log_in(admin).get(f"{admin.url}/").text
        assert "held: auth" in page
    finally:
        stop_admin(admin)


def test_over_tls_the_session_cookie_is_secure(reactor, tmp_path):
    pki = make_pki(tmp_path / "pki")
    admin = start_admin(reactor, tmp_path, tls=TLSSettings(pki.server_cert, pki.server_key))
    try:
        answer = requests.post(
            f"{admin.url}/login",
            data={"name": OPERATOR, "secret": SECRET},
            headers={"Origin": admin.url},
            allow_redirects=False,
            verify=str(pki.ca),
            timeout=5,
        )
        assert answer.status_code == 302 and "; Secure" in answer.headers["Set-Cookie"]
    finally:
        stop_admin(admin)


def test_reload_channels_from_the_page_names_a_refused_file_and_keeps_the_channel(admin, tmp_path):
    client = log_in(admin)
    token = csrf_token(client, admin)
    assert 'action="/reload"' in client.get(f"{admin.url}/").text
    assert "Reload: nothing changed" in client.post(f"{admin.url}/reload", data={"csrf": token}).text
    channel = tmp_path / "lab.toml"
    channel.write_text(channel.read_text().replace('type = "http"', 'type = "no-such-vendor"'))
    page = client.post(f"{admin.url}/reload", data={"csrf": token}).text
    assert f"Reload: refused {channel}. {channel}: line " in page and "no-such-vendor" in page
    assert 'class="channel">lab-to-hook<' in page and "listening" in page
    with BlockingClient(admin.mllp_port) as mllp:
        assert b"MSA|AA|CT0001" in mllp.request(ORU)


def test_the_webhooks_pre_auth_limits_bound_the_admin_site(admin):
    assert requests.put(f"{admin.url}/", timeout=5).status_code == 405
    big = requests.post(f"{admin.url}/login", data={"name": "x" * 20_000}, timeout=5)
    assert big.status_code == 413
    headers = {f"X-Filler-{n}": "x" for n in range(50)}
    assert requests.get(f"{admin.url}/healthz", headers=headers, timeout=5).status_code == 400
