"""SMTP delivery: STARTTLS or implicit TLS, authentication, retries with backoff on transient failures.

Transient failures (connection refused or reset, timeouts, 4xx replies, a relay that hangs up)
are retried with exponential backoff and jitter, `smtp.attempts` times in all. Permanent ones —
authentication refused, a certificate that does not verify, every recipient rejected — stop at
once with a `DeliveryError` that says what to fix. The password is read from the environment at
send time (so a rotated secret needs no restart) and never appears in a log line or an error.
"""

from __future__ import annotations

import logging
import os
import random
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

from exporters.report.settings import SmtpConfig

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A send that failed; `transient` tells whether trying again later may succeed."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Delivered:
    message_id: str
    attempts: int
    refused: dict[str, str]
    """Recipients the relay refused while accepting the others (address -> reply)."""


def smtp_password(config: SmtpConfig) -> str | None:
    """The password from `password_env` (environment file) or the inline SecretStr; None without auth."""
    if config.password_env:
        value = os.environ.get(config.password_env)
        if value is None:
            raise DeliveryError(
                f"smtp.password_env: environment variable {config.password_env} is not set "
                "(put it in the service's environment file)",
                transient=False,
            )
        return value
    if config.password is not None:
        return config.password.get_secret_value()
    return None


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _where(config: SmtpConfig) -> str:
    return f"{config.host}:{config.effective_port} ({config.security})"


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
    return f"{error.smtp_code} {text}".strip()


def _send_once(config: SmtpConfig, message: EmailMessage, recipients: list[str]) -> dict[str, str]:
    timeout = config.timeout.total_seconds()
    password = smtp_password(config)
    client: smtplib.SMTP
    if config.security == "tls":
        client = smtplib.SMTP_SSL(config.host, config.effective_port, timeout=timeout, context=_tls_context(config))
    else:
        client = smtplib.SMTP(config.host, config.effective_port, timeout=timeout)
    try:
        client.ehlo()
        if config.security == "starttls":
            if not client.has_extn("starttls"):
                raise DeliveryError(
                    f"{_where(config)}: the server does not offer STARTTLS; refusing to send "
                    "in clear text (set smtp.security: none if that is intended)",
                    transient=False,
                )
            client.starttls(context=_tls_context(config))
            client.ehlo()
        if config.username:
            client.login(config.username, password or "")
        refused = client.send_message(message, from_addr=config.from_address, to_addrs=recipients)
        return {address: f"{code} {reply.decode('utf-8', 'replace')}" for address, (code, reply) in refused.items()}
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def classify(error: BaseException, config: SmtpConfig) -> DeliveryError:
    """Turn whatever smtplib/ssl/socket raised into a DeliveryError with an actionable message."""
    where = _where(config)
    if isinstance(error, DeliveryError):
        return error
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"{where}: authentication failed for user {config.username!r}: {_reply(error)} "
            f"(check smtp.username and the password in {config.password_env or 'smtp.password'})",
            transient=False,
        )
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"{where}: {error} (the server may not offer AUTH before TLS)", transient=False)
    if isinstance(error, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"{where}: the server's TLS certificate does not verify: {error.verify_message} "
            "(set smtp.ca_file to the CA that signed it)",
            transient=False,
        )
    if isinstance(error, ssl.SSLError):
        return DeliveryError(f"{where}: TLS failed: {error.reason or error}", transient=False)
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        detail = "; ".join(
            f"{address}: {code} {reply.decode('utf-8', 'replace')}"
            for address, (code, reply) in error.recipients.items()
        )
        transient = all(400 <= code < 500 for code, _ in error.recipients.values())
        return DeliveryError(f"{where}: every recipient was refused: {detail}", transient=transient)
    if isinstance(error, smtplib.SMTPResponseException):
        return DeliveryError(f"{where}: the server replied {_reply(error)}", transient=400 <= error.smtp_code < 500)
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"{where}: the server closed the connection: {error}", transient=True)
    if isinstance(error, socket.timeout | TimeoutError):
        return DeliveryError(f"{where}: timed out after {config.timeout.total_seconds():g} s", transient=True)
    if isinstance(error, OSError):
        return DeliveryError(f"{where}: cannot connect: {error.strerror or error}", transient=True)
    if isinstance(error, smtplib.SMTPException):
        return DeliveryError(f"{where}: {type(error).__name__}: {error}", transient=True)
    return DeliveryError(f"{where}: {type(error).__name__}: {error}", transient=False)


def send(
    config: SmtpConfig, message: EmailMessage, recipients: list[str], *, sleep: Callable[[float], None] = time.sleep
) -> Delivered:
    """Send `message`; retries transient failures with backoff, raises DeliveryError when it gives up."""
    delay = config.backoff.total_seconds()
    for attempt in range(1, config.attempts + 1):
        try:
            refused = _send_once(config, message, recipients)
        except Exception as raw:  # noqa: BLE001 - classified below; anything unexpected is a permanent failure
            error = classify(raw, config)
            if not error.transient or attempt == config.attempts:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise DeliveryError(f"{error}{suffix}", transient=error.transient) from None
            wait = delay * (1 + random.random() * 0.25)
            log.warning(
                "report mail to %s failed (attempt %d of %d), retrying in %.1f s: %s",
                _where(config),
                attempt,
                config.attempts,
                wait,
                error,
            )
            sleep(wait)
            delay *= 2
            continue
        for address, reply in refused.items():
            log.warning("report mail: the relay refused recipient %s: %s", address, reply)
        return Delivered(message_id=str(message["Message-ID"]), attempts=attempt, refused=refused)
    raise AssertionError("unreachable")
