"""Shared helpers for the operations tests: repo paths, required binaries, free ports, test certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]


def require_binary(name: str, package: str) -> str:
    """The path of a tool the test needs; a clear failure (not a skip) when it is missing: CI installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package {package!r} (scripts/provision/ops.sh)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pki:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capacityd test CA")])
    ca_cert = _issue("capacityd test CA", ca_key, ca_name, ca_key, ca=True)
    other_ca_key = _key()
    other_ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    paths: dict[str, Path] = {"directory": directory}

    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        paths[f"{name}_cert"] = directory / f"{name}.crt"
        paths[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            paths[f"{name}_key"] = directory / f"{name}.key"
            _write_key(key, paths[f"{name}_key"])

    save("ca", ca_cert, None)
    server_key = _key()
    save(
        "server",
        _issue(
            "localhost",
            server_key,
            ca_name,
            ca_key,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ),
        server_key,
    )
    client_key = _key()
    save(
        "client",
        _issue("prometheus", client_key, ca_name, ca_key, client=True, sans=[x509.DNSName("prometheus.example.org")]),
        client_key,
    )
    other_key = _key()
    save(
        "other_client",
        _issue("intruder", other_key, ca_name, ca_key, client=True, sans=[x509.DNSName("intruder.example.org")]),
        other_key,
    )
    untrusted_key = _key()
    save(
        "untrusted_client",
        _issue(
            "prometheus",
            untrusted_key,
            other_ca_name,
            other_ca_key,
            client=True,
            sans=[x509.DNSName("prometheus.example.org")],
        ),
        untrusted_key,
    )
    return Pki(**paths)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
