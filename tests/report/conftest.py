"""Fixtures of the report tests: a real SMTP server (aiosmtpd) on loopback with STARTTLS or implicit
TLS and authentication, a self-signed certificate made here with `cryptography`, and the synthetic
estate (tests/report/estate.py) with real History.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.app.config import Config, parse_config
from exporters.report import metrics
from tests.report.estate import SyntheticEstate

USER = "capacityd"
PASSWORD = "s3cret-Pa55-do-not-log"
PASSWORD_ENV = "CAPACITYD_TEST_SMTP_PASSWORD"


@dataclass
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 / localhost (the client trusts it through smtp.ca_file)."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capacityd test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(cert_path, key_path)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    """Stores every accepted message; `fail_next` answers the next DATA with a transient 451."""

    messages: list[Received] = field(default_factory=list)
    fail_next: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 4.3.0 try again later"
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content))
        )
        self.arrived.set()
        return "250 2.0.0 OK"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmtpServer:
    controller: Controller
    handler: Handler
    port: int
    security: str

    def stop(self) -> None:
        self.controller.stop()


def start_server(certificate: Certificate, security: str = "starttls") -> SmtpServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    handler = Handler()
    port = free_port()
    kwargs: dict[str, Any] = {
        "authenticator": authenticator,
        "auth_required": True,
        "server_hostname": "relay.test",
        "data_size_limit": 50_000_000,
    }
    if security == "tls":
        # Implicit TLS: the whole connection is TLS, but aiosmtpd only counts STARTTLS as "TLS" for its
        # auth_require_tls check, so it must be off here (the wire is still encrypted end to end).
        kwargs.update(ssl_context=context, auth_require_tls=False)
    else:
        kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return SmtpServer(controller, handler, port, security)


@pytest.fixture
def smtp_server(certificate: Certificate) -> Iterator[SmtpServer]:
    server = start_server(certificate, "starttls")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    metrics.forget_except(set())
    yield
    metrics.forget_except(set())


def make_config(state_dir: Path, server: SmtpServer, certificate: Certificate, **report: Any) -> Config:
    smtp = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": server.security,
        "username": USER,
        "password_env": PASSWORD_ENV,
        "from": "capacityd@example.org",
        "ca_file": str(certificate.cert),
        "timeout": "10s",
        "attempts": 3,
        "backoff": "0.2s",
    }
    entry = {
        "name": "weekly",
        "recipients": ["planners@example.org", "sre@example.org"],
        "schedule": "0 7 * * 1",
        "timezone": "Europe/Berlin",
        "accuracy_backtest": False,
        **report,
    }
    return parse_config({"state_dir": str(state_dir), "smtp": smtp, "reports": [entry]})


@pytest.fixture(scope="session")
def estate() -> SyntheticEstate:
    return SyntheticEstate.build(down_sources={"k8s-1-api": dt.timedelta(hours=30)})


@pytest.fixture(scope="session")
def estate_history(estate: SyntheticEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    history = estate.history(tmp_path_factory.mktemp("history"))
    yield history
    history.close()
