"""Stored vendor tokens: load, save, refresh from another process, and the conneQt access code
exchanged at engine start, against the conneQt sandbox with a real store file."""

from __future__ import annotations

from dataclasses import replace

import pytest

from courier_sandbox.conneqt import ConneqtSandbox
from engine.channel.check import load_channels
from engine.delivery.tokens import NAMESPACE, StoredToken, StoredTokens
from engine.destinations.conneqt.tokens import token_key as conneqt_token_key
from engine.service import build_engine
from engine.store import Cipher, Database
from tests.conftest import on_reactor
from tests.support.engine import TEST_KEY, open_store
from tests.support.sandbox import TEST_CREDENTIALS
from tests.test_delivery_queue import wait_for
from tests.test_wiring_requeue import REPO

CONNEQT_CHANNEL = REPO / "channels" / "lis_oru_to_conneqt.toml"


@pytest.fixture
def store_file(tmp_path):
    return tmp_path / "engine.sqlite3"


@pytest.fixture
def store(reactor, store_file):
    opened = open_store(reactor, store_file, durability="normal")
    yield opened
    on_reactor(opened.close)


@pytest.fixture
def conneqt(reactor):
    sandbox = ConneqtSandbox(reactor, credentials=TEST_CREDENTIALS)
    on_reactor(sandbox.listen)
    yield sandbox
    on_reactor(sandbox.stop)


def write_from_another_process(store_file, key: str, value: bytes) -> None:
    """What `courier kpn authorize` does: its own connection to the store file."""
    db = Database.open(store_file, Cipher(TEST_KEY))
    try:
        with db.transaction():
            db.kv_put(NAMESPACE, key, value)
    finally:
        db.close()


def test_a_saved_token_is_used_at_once_kept_encrypted_and_loaded_again(store, store_file, reactor):
    token = StoredToken(store, "kpn:client")
    assert on_reactor(token.load) is None and token.token() is None
    on_reactor(token.save, "bearer-abc-123")
    assert token.token() == "bearer-abc-123"
    assert on_reactor(StoredToken(store, "kpn:client").load) == "bearer-abc-123"
    assert on_reactor(StoredToken(store, "kpn:other").load) is None
    on_reactor(store.close)
    assert b"bearer-abc-123" not in store_file.read_bytes()


def test_tokens_written_by_another_process_are_picked_up_without_a_restart(store, store_file, reactor):
    tokens = StoredTokens(store, reactor, refresh_s=0.1)
    kpn = tokens.get("kpn:client")
    assert tokens.get("kpn:client") is kpn
    on_reactor(tokens.load)
    on_reactor(tokens.startService)
    try:
        assert kpn.token() is None
        write_from_another_process(store_file, "kpn:client", b"fresh-grant")
        wait_for(lambda: kpn.token() == "fresh-grant", 5, "the refreshed token")
        write_from_another_process(store_file, "kpn:client", b"second-grant")
        wait_for(lambda: kpn.token() == "second-grant", 5, "the replaced token")
    finally:
        on_reactor(tokens.stopService)


def conneqt_channel(conneqt, **settings):
    env = {
        "CONNEQT_BASE_URL": conneqt.base_url,
        "CONNEQT_API_KEY": TEST_CREDENTIALS.conneqt_api_key,
        "CONNEQT_ACCESS_CODE": TEST_CREDENTIALS.conneqt_access_code,
    }
    (channel,) = load_channels([CONNEQT_CHANNEL], env=env)
    (destination,) = channel.destinations
    destination = replace(destination, settings={**destination.settings, **settings})
    return replace(
        channel,
        source=replace(channel.source, listen="tcp:0:interface=127.0.0.1"),
        destinations=(destination,),
    )


def exchanges(conneqt) -> int:
    return sum(r.path.endswith("/access/token") for r in conneqt.state.requests)


def test_the_engine_exchanges_the_access_code_once_and_stores_the_token(reactor, store, conneqt):
    channel = conneqt_channel(conneqt)
    key = conneqt_token_key(channel.name, "gp-conneqt")
    engine = build_engine(reactor, [channel], store, hold_deliveries=True)
    on_reactor(engine.start)
    on_reactor(engine.stop)
    stored = on_reactor(store.kv_get, NAMESPACE, key)
    assert stored and exchanges(conneqt) == 1
    destination = engine.deliveries.queues["gp-conneqt"].destination
    assert destination.token_provider.token() == stored.decode()

    again = build_engine(reactor, [channel], store, hold_deliveries=True)
    on_reactor(again.start)
    on_reactor(again.stop)
    assert exchanges(conneqt) == 1  # the stored token is reused, not exchanged again
    assert again.deliveries.queues["gp-conneqt"].destination.token_provider.token() == stored.decode()


def test_a_refused_access_code_does_not_stop_the_engine(reactor, store, conneqt):
    channel = conneqt_channel(conneqt, access_code="WRONG-CODE")
    engine = build_engine(reactor, [channel], store, hold_deliveries=True)
    on_reactor(engine.start)
    try:
        assert engine.port(channel.name) > 0
        assert engine.deliveries.queues["gp-conneqt"].destination.token_provider.token() is None
    finally:
        on_reactor(engine.stop)
    assert on_reactor(store.kv_get, NAMESPACE, conneqt_token_key(channel.name, "gp-conneqt")) is None


def test_a_configured_access_token_needs_no_exchange(reactor, store, conneqt):
    channel = conneqt_channel(conneqt, access_token="given-token")
    engine = build_engine(reactor, [channel], store, hold_deliveries=True)
    on_reactor(engine.start)
    on_reactor(engine.stop)
    assert exchanges(conneqt) == 0
    assert engine.deliveries.queues["gp-conneqt"].destination.token_provider is None
