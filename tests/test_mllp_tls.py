"""TLS and mutual TLS on the same listener code, over real sockets."""

from __future__ import annotations

import ssl

import pytest

from engine.tls import TLSSettings, client_options, wrap_server_factory
from tests.conftest import on_reactor
from tests.support.engine import listen
from tests.support.mllp import BlockingClient
from tests.support.pki import make_chained_server, make_pki
from tests.support.waiting import wait_for
from tests.test_mllp_server import EchoHandler


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_certificate:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


@pytest.fixture
def tls_listener(reactor):
    ports = []

    def start(settings: TLSSettings) -> int:
        port, listening, _ = listen(
            reactor, "tls", EchoHandler(reactor), wrap=lambda f: wrap_server_factory(f, settings)
        )
        ports.append(listening)
        return port

    yield start
    for listening in ports:
        on_reactor(listening.stopListening)


def test_tls_listener_serves_mllp(pki, tls_listener) -> None:
    port = tls_listener(TLSSettings(pki.server_cert, pki.server_key))
    with BlockingClient(port, tls=client_context(pki, with_certificate=False)) as client:
        assert client.request(b"MSH|1") == b"ACK:MSH|1"
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_mutual_tls_accepts_a_client_certificate_from_the_ca(pki, tls_listener) -> None:
    port = tls_listener(TLSSettings(pki.server_cert, pki.server_key, pki.ca, require_client_cert=True))
    with BlockingClient(port, tls=client_context(pki, with_certificate=True)) as client:
        assert client.request(b"MSH|1") == b"ACK:MSH|1"


def test_mutual_tls_refuses_a_client_without_a_certificate(pki, tls_listener) -> None:
    port = tls_listener(TLSSettings(pki.server_cert, pki.server_key, pki.ca, require_client_cert=True))
    with BlockingClient(port, tls=client_context(pki, with_certificate=False)) as client:
        # TLS 1.3 finishes the client's handshake before the server checks the certificate,
        # so the refusal shows on first use: no ACK ever comes back.
        client.send(b"MSH|1")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            client.receive()


def test_mutual_tls_refuses_a_certificate_from_another_ca(pki, tls_listener, tmp_path) -> None:
    other = make_pki(tmp_path / "other")
    port = tls_listener(TLSSettings(pki.server_cert, pki.server_key, pki.ca, require_client_cert=True))
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(other.client_cert), str(other.client_key))
    with BlockingClient(port, tls=context) as client:
        client.send(b"MSH|1")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            client.receive()


def test_plain_client_on_a_tls_listener_gets_no_ack(pki, tls_listener) -> None:
    port = tls_listener(TLSSettings(pki.server_cert, pki.server_key))
    with BlockingClient(port, timeout=2) as client:
        client.send(b"MSH|1")
        with pytest.raises((ConnectionError, TimeoutError)):
            client.receive()


def test_ssl_endpoint_string_serves_the_same_listener(pki, reactor) -> None:
    from twisted.internet import endpoints

    from engine.mllp.server import Limits, MLLPServerFactory

    description = f"ssl:0:interface=127.0.0.1:privateKey={pki.server_key}:certKey={pki.server_cert}"
    factory = MLLPServerFactory("ssl", EchoHandler(reactor), reactor, Limits())
    port = on_reactor(endpoints.serverFromString(reactor, description).listen, factory)
    try:
        with BlockingClient(port.getHost().port, tls=client_context(pki, with_certificate=False)) as client:
            assert client.request(b"MSH|1") == b"ACK:MSH|1"
    finally:
        on_reactor(port.stopListening)


@pytest.fixture(scope="module")
def second_pki(tmp_path_factory):
    """Another CA, as a hospital that moves to a new CA trusts the old and the new one."""
    return make_pki(tmp_path_factory.mktemp("second-pki"), ca_name="Second CA")


@pytest.fixture(scope="module")
def bundle(pki, second_pki, tmp_path_factory):
    """One ``ca_file`` holding both CAs, the first one first."""
    path = tmp_path_factory.mktemp("bundle") / "cas.pem"
    path.write_bytes(pki.ca.read_bytes() + second_pki.ca.read_bytes())
    return path


@pytest.mark.parametrize("issuer", ["first", "second"])
def test_mutual_tls_trusts_every_ca_of_the_bundle(pki, second_pki, bundle, tls_listener, issuer) -> None:
    client_pki = pki if issuer == "first" else second_pki
    port = tls_listener(TLSSettings(pki.server_cert, pki.server_key, bundle, require_client_cert=True))
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(client_pki.client_cert), str(client_pki.client_key))
    with BlockingClient(port, tls=context) as client:
        assert client.request(b"MSH|1") == b"ACK:MSH|1"


def test_a_tls_client_trusts_every_ca_of_the_bundle(reactor, second_pki, bundle, tls_listener) -> None:
    from twisted.internet import endpoints

    from engine.mllp.client import MLLPClientProtocol

    port = tls_listener(TLSSettings(second_pki.server_cert, second_pki.server_key))
    options = client_options(TLSSettings(ca_file=bundle), "localhost")
    endpoint = endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    client = on_reactor(endpoints.connectProtocol, endpoint, MLLPClientProtocol(reactor))
    try:
        assert on_reactor(client.send, b"MSH|1", 10) == b"ACK:MSH|1"
    finally:
        on_reactor(client.close)


def test_a_tls_listener_presents_the_whole_chain_of_its_cert_file(tls_listener, tmp_path) -> None:
    root, chain, key = make_chained_server(tmp_path / "chain")
    port = tls_listener(TLSSettings(chain, key))
    context = ssl.create_default_context(cafile=str(root))  # the root only
    with BlockingClient(port, tls=context) as client:
        assert client.request(b"MSH|1") == b"ACK:MSH|1"


def test_a_draining_tls_listener_answers_then_closes(pki, reactor) -> None:
    settings = TLSSettings(pki.server_cert, pki.server_key)
    port, listening, factory = listen(
        reactor, "tls", EchoHandler(reactor), wrap=lambda f: wrap_server_factory(f, settings)
    )
    try:
        drained = []
        with BlockingClient(port, tls=client_context(pki, with_certificate=False)) as client:
            assert client.request(b"MSH|1") == b"ACK:MSH|1"
            on_reactor(lambda: factory.drain(grace_s=60).addCallback(drained.append) and None)
            assert client.is_closed_by_peer()
        wait_for(lambda: drained == [None], what="the TLS connection closed by the drain")
    finally:
        on_reactor(listening.stopListening)
