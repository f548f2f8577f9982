"""TLS and mutual TLS settings turned into Twisted connection creators.

Endpoint strings (``ssl:2575:privateKey=...``) cannot require and verify a client
certificate against a CA, so listeners with TLS settings are wrapped here instead: the
same listener code then serves plain TCP, TLS and mutual TLS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from OpenSSL.crypto import X509
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


def _pem_certificates(path: Path) -> list[bytes]:
    """Every certificate of a PEM file, in order: ``Certificate.loadPEM`` reads only the
    first, which trusted only the first CA of a bundle and dropped a chain's intermediates."""
    blocks = _PEM_CERTIFICATE.findall(_read(path))
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate in the file")
    return blocks


def _ca_certificates(path: Path) -> list[ssl.Certificate]:
    return [ssl.Certificate.loadPEM(block) for block in _pem_certificates(path)]


@dataclass(frozen=True)
class _Identity:
    """Our certificate with its key, and the intermediates that follow it in the cert file."""

    certificate: ssl.PrivateCertificate
    chain: list[X509]

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> _Identity:
        leaf, *chain = _pem_certificates(cert_file)
        certificate = ssl.PrivateCertificate.loadPEM(leaf + b"\n" + _read(key_file))
        return cls(certificate, [ssl.Certificate.loadPEM(block).original for block in chain])


def server_options(settings: TLSSettings) -> ssl.CertificateOptions:
    """Server TLS options; with ``require_client_cert`` a client without a valid cert is refused."""
    if settings.cert_file is None or settings.key_file is None:
        raise ValueError("a TLS listener needs cert_file and key_file")
    identity = _Identity.load(settings.cert_file, settings.key_file)
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
        privateKey=identity.certificate.privateKey.original,
        certificate=identity.certificate.original,
        extraCertChain=identity.chain,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        **kwargs,
    )


def client_options(settings: TLSSettings, hostname: str) -> object:
    """Client TLS options verifying the server against ``ca_file`` (or the system roots)."""
    trust = ssl.trustRootFromCertificates(_ca_certificates(settings.ca_file)) if settings.ca_file else None
    if not (settings.cert_file and settings.key_file):
        return ssl.optionsForClientTLS(hostname, trustRoot=trust)
    identity = _Identity.load(settings.cert_file, settings.key_file)
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=trust,
        clientCertificate=identity.certificate,
        extraCertificateOptions={"extraCertChain": identity.chain},
    )


def wrap_server_factory(
    factory: IProtocolFactory, tls: TLSSettings | ssl.CertificateOptions
) -> IProtocolFactory:
    """Serve ``factory``'s protocol over TLS on any stream endpoint; ``tls``: the settings, or
    the options :func:`server_options` made of them (its files read beforehand)."""
    options = server_options(tls) if isinstance(tls, TLSSettings) else tls
    return TLSMemoryBIOFactory(options, False, factory)
