"""HTTPS sandboxes with the throwaway CA: clients that trust the CA connect, others do not."""

from __future__ import annotations

import pytest
import requests
from cryptography import x509

from courier_sandbox import DEFAULT_PORTS, start_sandboxes
from courier_sandbox.certs import make_certificates
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS


@pytest.fixture(scope="module")
def tls_sandboxes(reactor, tmp_path_factory):
    paths = make_certificates(tmp_path_factory.mktemp("certs"))
    sandboxes = on_reactor(
        start_sandboxes,
        reactor,
        tls=paths.server_tls(),
        credentials=TEST_CREDENTIALS,
        ports=dict.fromkeys(DEFAULT_PORTS, 0),
    )
    yield sandboxes, paths
    on_reactor(sandboxes.stop)


def test_certificate_names_loopback_and_is_signed_by_the_ca(tmp_path):
    paths = make_certificates(tmp_path)
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    server.verify_directly_issued_by(ca)
    assert paths.server_key.stat().st_mode & 0o077 == 0


def test_https_sandboxes_verify_against_the_ca(tls_sandboxes):
    sandboxes, paths = tls_sandboxes
    for sandbox in sandboxes:
        assert sandbox.base_url.startswith("https://127.0.0.1:")
        r = requests.get(f"{sandbox.base_url}/_sandbox/state", verify=str(paths.ca_cert), timeout=5)
        assert r.status_code == 200
    localhost = sandboxes.kpn.base_url.replace("127.0.0.1", "localhost")
    assert (
        requests.get(f"{localhost}/_sandbox/state", verify=str(paths.ca_cert), timeout=5).status_code == 200
    )


def test_clients_without_the_ca_are_refused(tls_sandboxes):
    sandboxes, _ = tls_sandboxes
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sandboxes.qliq.base_url}/_sandbox/state", timeout=5)
