"""``courier kpn authorize`` against the KPN sandbox, then the engine delivers with the token.

The command runs as the operator runs it (``engine.cli.main`` in the test thread, its own
store connection); the engine, on the session reactor, reads the stored token and a
document sent over MLLP reaches the sandbox's group chat.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import replace

import pytest
import requests

from courier_sandbox.kpn import KpnSandbox
from engine.channel.check import load_channels
from engine.cli import main
from engine.delivery.tokens import NAMESPACE
from engine.destinations.kpn.tokens import token_key as kpn_token_key
from engine.message.batch import split_file
from engine.service import build_engine
from engine.store import Cipher, SQLiteStore, load_or_create_key
from engine.store.base import SENT
from tests.conftest import on_reactor
from tests.support.mllp import BlockingClient
from tests.support.sandbox import TEST_CREDENTIALS
from tests.test_delivery_queue import wait_for
from tests.test_wiring_requeue import REPO

CLIENT_ID = "sandbox-kpn-client"
AUX_CHATS = {"courier-ward-7": "sandbox-group-1", "courier-emergency-department": "sandbox-group-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def kpn(reactor):
    sandbox = KpnSandbox(reactor, credentials=TEST_CREDENTIALS)
    on_reactor(sandbox.listen)
    sandbox.configure({"aux_groupchats": AUX_CHATS})
    yield sandbox
    on_reactor(sandbox.stop)


@pytest.fixture
def redirect_port() -> int:
    return free_port()


@pytest.fixture
def channel_file(tmp_path, kpn, redirect_port):
    """The shipped KPN channel, with the mapping found from tmp_path and a free redirect port."""
    text = (REPO / "channels" / "ehr_mdm_to_kpn.toml").read_text()
    text = text.replace('"../mappings/', f'"{REPO}/mappings/')
    redirect = f'  redirect_uri = "http://127.0.0.1:{redirect_port}/callback"\n'
    text = text.replace("  authorize_url", redirect + "  authorize_url", 1)
    path = tmp_path / "kpn.toml"
    path.write_text(text)
    return path


@pytest.fixture
def cli_args(tmp_path, channel_file, kpn, monkeypatch):
    monkeypatch.setenv("KPN_BASE_URL", kpn.base_url)
    monkeypatch.setenv("KPN_CLIENT_SECRET", TEST_CREDENTIALS.kpn_client_secret)
    monkeypatch.delenv("COURIER_STORE_KEY", raising=False)
    store = ["--store", str(tmp_path / "courier.sqlite3"), "--key-file", str(tmp_path / "store.key")]
    return ["kpn", "authorize", str(channel_file), "ward-kpn", "--timeout", "5", *store]


def test_authorize_auto_stores_the_token_and_the_engine_delivers_with_it(
    reactor, tmp_path, channel_file, kpn, cli_args, capsys
):
    assert main([*cli_args, "--auto"]) == 0
    assert "token is stored" in capsys.readouterr().out
    assert len(kpn.tokens) == 1

    store = SQLiteStore(
        tmp_path / "courier.sqlite3",
        reactor=reactor,
        cipher=Cipher(load_or_create_key(key_file=tmp_path / "store.key")),
    )
    on_reactor(store.start)
    (channel,) = load_channels([channel_file])
    channel = replace(
        channel, source=replace(channel.source, listen="tcp:0:interface=127.0.0.1"), status_reports=None
    )
    engine = build_engine(reactor, [channel], store)
    on_reactor(engine.start)
    try:
        token = on_reactor(store.kv_get, NAMESPACE, kpn_token_key(CLIENT_ID)).decode()
        assert token in kpn.tokens
        document = split_file((REPO / "sample_messages" / "mdm_t02_discharge_summary.hl7").read_bytes())[0]
        with BlockingClient(engine.port(channel.name)) as client:
            client.request(document)
        sent = wait_for(lambda: on_reactor(store.list_deliveries, state=SENT), 10, "the KPN delivery SENT")
        assert sent[0].destination == "ward-kpn"
        # The sandbox accepts a send only with a bearer token it issued and has not expired.
        assert [r.path.rsplit("/", 1)[-1] for r in kpn.state.requests if r.method == "POST"] == [
            "token",
            "attachments",
        ]
        assert len(kpn.state.messages) == 1
    finally:
        on_reactor(engine.stop)
        on_reactor(store.close)


def test_a_refused_authorization_says_so_and_stores_nothing(tmp_path, kpn, cli_args, monkeypatch, capsys):
    monkeypatch.setenv("KPN_CLIENT_ID", "unknown-client")
    assert main([*cli_args, "--auto"]) == 1
    error = capsys.readouterr().err
    assert "KPN did not authorise Courier" in error and "HTTP 400" in error
    assert not kpn.tokens
    assert not (tmp_path / "courier.sqlite3").exists()


def test_a_redirect_with_the_wrong_state_is_refused(kpn, cli_args, redirect_port, capsys):
    attacker = threading.Timer(
        0.3,
        lambda: requests.get(
            f"http://127.0.0.1:{redirect_port}/callback?code=stolen&state=forged", timeout=5
        ),
    )
    attacker.start()
    assert main([*cli_args]) == 1
    attacker.join()
    captured = capsys.readouterr()
    assert "Open this URL" in captured.out and "state does not match" in captured.err
    assert not kpn.tokens


def test_run_with_sandbox_authorizes_kpn_destinations_without_a_token(
    reactor, tmp_path, channel_file, kpn, monkeypatch
):
    from courier_sandbox import default_base_urls
    from engine.commands.run import start_sandbox_hooks

    monkeypatch.setenv("KPN_BASE_URL", kpn.base_url)
    monkeypatch.setenv("KPN_CLIENT_SECRET", TEST_CREDENTIALS.kpn_client_secret)
    store = SQLiteStore(tmp_path / "run.sqlite3", reactor=reactor, cipher=Cipher(b"k" * 32))
    on_reactor(store.start)
    (channel,) = load_channels([channel_file])
    engine = build_engine(reactor, [channel], store, hold_deliveries=True)
    try:
        on_reactor(engine.tokens.load)
        on_reactor(start_sandbox_hooks, reactor, engine.deliveries.queues.values(), default_base_urls())
        provider = engine.deliveries.queues["ward-kpn"].destination.token_provider
        assert provider.token() in kpn.tokens
        assert on_reactor(store.kv_get, NAMESPACE, kpn_token_key(CLIENT_ID)).decode() == provider.token()
        on_reactor(start_sandbox_hooks, reactor, engine.deliveries.queues.values(), default_base_urls())
        assert len(kpn.tokens) == 1  # a destination with a token is left alone
    finally:
        on_reactor(store.close)
