"""A test PKI for mutual TLS: one CA, a server certificate and a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject, subject_key, issuer, issuer_key, *, ca: bool, usage=None, san=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert, key) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _localhost_server(issuer, issuer_key):
    """A server certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    usage = ExtendedKeyUsageOID.SERVER_AUTH
    return _issue(_name("localhost"), key, issuer.subject, issuer_key, ca=False, usage=usage, san=san), key


def make_pki(directory: Path, ca_name: str = "Test CA") -> PKI:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(_name(ca_name), ca_key, _name(ca_name), ca_key, ca=True)
    server_cert, server_key = _localhost_server(ca_cert, ca_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue(
        _name("lab-interface"),
        client_key,
        ca_cert.subject,
        ca_key,
        ca=False,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca = _write(directory / "ca.pem", ca_cert, ca_key)
    server = _write(directory / "server.pem", server_cert, server_key)
    client = _write(directory / "client.pem", client_cert, client_key)
    return PKI(ca, server, server.with_suffix(".key"), client, client.with_suffix(".key"))


def make_chained_server(directory: Path) -> tuple[Path, Path, Path]:
    """A root CA, an intermediate CA under it, and a server certificate from the intermediate
    whose file holds the chain (server, then intermediate), as public CAs issue them.

    Returns the root's file, the chain's file and the server key's file."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue(_name("Test Root CA"), root_key, _name("Test Root CA"), root_key, ca=True)
    middle_key = ec.generate_private_key(ec.SECP256R1())
    middle = _issue(_name("Test Intermediate CA"), middle_key, root.subject, root_key, ca=True)
    server_cert, server_key = _localhost_server(middle, middle_key)
    directory.mkdir(parents=True, exist_ok=True)
    ca = _write(directory / "root.pem", root, root_key)
    server = _write(directory / "server.pem", server_cert, server_key)
    server.write_bytes(server.read_bytes() + middle.public_bytes(serialization.Encoding.PEM))
    return ca, server, server.with_suffix(".key")
