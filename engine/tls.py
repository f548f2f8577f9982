"""TLS and mutual TLS settings turned into Twisted connection creators.

Endpoint strings (``ssl:2575:privateKey=...``) cannot require and verify a client
certificate against a CA, so listeners with TLS settings are wrapped here instead: the
same listener code then serves plain TCP, TLS and mutual TLS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import ssl
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory


@dataclass(frozen=True)
class TLSSettings:
    """Files for one side of a TLS connection (PEM)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    """Server side: CA that client certificates must chain to. Client side: CA of the server."""
    require_client_cert: bool = False


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _read(path: Path) -> bytes:
    return Path(path).read_bytes()


def _ca_certificates(path: Path) -> list[ssl.Certificate]:
    """Every certificate of a PEM bundle: ``Certificate.loadPEM`` reads only the first, so a
    client or server certified by the bundle's second CA used to be refused."""
    blocks = _PEM_CERTIFICATE.findall(_read(path))
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate in the CA file")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


def server_options(settings: TLSSettings) -> ssl.CertificateOptions:
    """Server TLS options; with ``require_client_cert`` a client without a valid cert is refused."""
    if settings.cert_file is None or settings.key_file is None:
        raise ValueError("a TLS listener needs cert_file and key_file")
    certificate = ssl.PrivateCertificate.loadPEM(_read(settings.cert_file) + b"\n" + _read(settings.key_file))
    kwargs = {}
    if settings.require_client_cert:
        if settings.ca_file is None:
            raise ValueError("require_client_cert needs ca_file to verify client certificates")
        kwargs = {
            "verify": True,
            "requireCertificate": True,
            "caCerts": [certificate.original for certificate in _ca_certificates(settings.ca_file)],
        }
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        **kwargs,
    )


def client_options(settings: TLSSettings, hostname: str) -> object:
    """Client TLS options verifying the server against ``ca_file`` (or the system roots)."""
    trust = ssl.trustRootFromCertificates(_ca_certificates(settings.ca_file)) if settings.ca_file else None
    client_certificate = None
    if settings.cert_file and settings.key_file:
        client_certificate = ssl.PrivateCertificate.loadPEM(
            _read(settings.cert_file) + b"\n" + _read(settings.key_file)
        )
    return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client_certificate)


def wrap_server_factory(factory: IProtocolFactory, settings: TLSSettings) -> IProtocolFactory:
    """Serve ``factory``'s protocol over TLS on any stream endpoint."""
    return TLSMemoryBIOFactory(server_options(settings), False, factory)
