"""The exporter-toolkit web configuration file (TLS, basic auth, headers) for /metrics.

SREs already write this file for node_exporter and Prometheus (`--web.config.file`); capacityd reads
the same format so one file, one habit, one set of bcrypt hashes serves every exporter on a host:

    tls_server_config:
      cert_file: /etc/capacityd/tls/server.crt     # or `cert:` inline PEM
      key_file: /etc/capacityd/tls/server.key      # or `key:` inline PEM
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: /etc/capacityd/tls/ca.crt
      client_allowed_sans: [prometheus.example.org]
      min_version: TLS12
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2y$10$...
    rate_limit: {interval: 100ms, burst: 10}

The file is validated by pydantic; every error names the key at fault and never echoes a value (a
value may be a private key or a hash). Relative paths are resolved against the file's directory, as
exporter-toolkit does. Where Go's crypto/tls offers something Python's `ssl` cannot do
(`RequestClientCert`, `RequireAnyClientCert`: a client certificate without verification; more than
one curve), loading fails with a message saying so instead of silently weakening the setting.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from collector.contract.settings import Duration

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go crypto/tls cipher suite names (TLS <= 1.2; Go does not let TLS 1.3 suites be chosen) -> OpenSSL names.
GO_CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    # Older Go aliases of the two above.
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}

# Go tls.CurveID names -> OpenSSL group names.
GO_CURVES: dict[str, str] = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

# The headers exporter-toolkit lets a web config set, with the values it accepts (None: any).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}

# $2a$, $2b$, $2y$ (htpasswd -B) with a two-digit cost and 53 characters of salt+hash.
_BCRYPT_RE = re.compile(r"^\$2[aby]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$")


def _rate_interval(value: Any) -> Any:
    """`0`/`0s` disables the limiter (exporter-toolkit), so zero is allowed here unlike other durations."""
    if value in (0, "0", "0s") or value is None:
        return None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    """`tls_server_config`: the server certificate and the TLS policy."""

    cert: str | None = Field(default=None, description="Inline PEM certificate (instead of cert_file).")
    key: SecretStr | None = Field(default=None, description="Inline PEM private key (instead of key_file).")
    client_ca: str | None = Field(default=None, description="Inline PEM CA bundle (instead of client_ca_file).")
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] = Field(default_factory=list)
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = Field(default_factory=list)

    @field_validator("cipher_suites")
    @classmethod
    def _known_ciphers(cls, suites: list[str]) -> list[str]:
        for suite in suites:
            if suite not in GO_CIPHER_SUITES:
                raise ValueError(
                    f"unknown or unsupported cipher suite {suite!r} (TLS 1.3 suites cannot be chosen; "
                    f"known: {', '.join(sorted(GO_CIPHER_SUITES))})"
                )
        return suites

    @field_validator("curve_preferences")
    @classmethod
    def _known_curves(cls, curves: list[str]) -> list[str]:
        for curve in curves:
            if curve not in GO_CURVES:
                raise ValueError(f"unknown curve {curve!r} (known: {', '.join(GO_CURVES)})")
        if len(curves) > 1:
            raise ValueError("Python's ssl module can restrict the handshake to one curve only; list one")
        return curves

    @field_validator("client_auth_type")
    @classmethod
    def _python_can_do_it(cls, value: str) -> str:
        if value in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(
                f"{value} (a client certificate accepted without verification) cannot be done with Python's "
                "ssl module; use RequireAndVerifyClientCert with client_ca_file, or VerifyClientCertIfGiven"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if (self.cert is None) == (self.cert_file is None):
            raise ValueError("exactly one of cert_file and cert is required")
        if (self.key is None) == (self.key_file is None):
            raise ValueError("exactly one of key_file and key is required")
        if self.client_ca is not None and self.client_ca_file is not None:
            raise ValueError("client_ca and client_ca_file are exclusive; give one")
        verifying = self.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
        has_ca = self.client_ca is not None or self.client_ca_file is not None
        if verifying and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file (or client_ca)")
        if has_ca and not verifying:
            raise ValueError(
                "client_ca_file is set but client_auth_type does not verify client certificates; "
                "set client_auth_type: RequireAndVerifyClientCert"
            )
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError("client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is above max_version")
        return self


class HTTPServerConfig(_Strict):
    """`http_server_config`: HTTP/2 (accepted, not served: capacityd speaks HTTP/1.1) and extra headers."""

    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            canonical = next((h for h in ALLOWED_HEADERS if h.lower() == name.lower()), None)
            if canonical is None:
                raise ValueError(f"header {name!r} cannot be set (allowed: {', '.join(ALLOWED_HEADERS)})")
            allowed = ALLOWED_HEADERS[canonical]
            if allowed is not None and value.strip().lower() not in allowed:
                raise ValueError(f"{canonical} accepts {' or '.join(allowed)}")
            if "\r" in value or "\n" in value:
                raise ValueError(f"{canonical}: a header value cannot contain a line break")
        return {
            next(h for h in ALLOWED_HEADERS if h.lower() == name.lower()): value
            for name, value in headers.items()
            if value != ""  # exporter-toolkit: blank means unset
        }


class RateLimitConfig(_Strict):
    """`rate_limit`: a token bucket in front of every request (interval 0 disables it)."""

    interval: Annotated[Duration | None, BeforeValidator(_rate_interval)] = None
    burst: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _burst_when_limited(self) -> RateLimitConfig:
        if self.interval is not None and self.burst < 1:
            raise ValueError("burst must be at least 1 when interval is set (0 would refuse every request)")
        return self


class WebConfig(_Strict):
    """The whole web config file."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, SecretStr] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, hashed in users.items():
            if not user:
                raise ValueError("a user name cannot be empty")
            if ":" in user:
                raise ValueError(f"user {user!r}: a basic-auth user name cannot contain ':'")
            if not _BCRYPT_RE.match(hashed.get_secret_value()):
                raise ValueError(
                    f"user {user!r}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                )
        return users

    @property
    def tls_enabled(self) -> bool:
        return self.tls_server_config is not None


class WebConfigError(Exception):
    """A web config that cannot be used; `errors` holds one `key: problem` line per problem."""

    def __init__(self, path: str, errors: list[str]):
        self.path = path
        self.errors = errors
        super().__init__(f"web config {path}: " + "; ".join(errors))


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{part}]"]
        elif isinstance(part, str) and not part.startswith("function-"):
            parts.append(part)
    return ".".join(parts) or "(top level)"


def parse_web_config(data: Any, path: str = "<web config>", base_dir: Path | None = None) -> WebConfig:
    """Validate parsed YAML and resolve relative paths against `base_dir` (the file's directory)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(path, ["(top level): expected a mapping of keys to values"])
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors(include_input=False, include_url=False):
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
            message = message.removeprefix("Value error, ")
            lines.append(f"{_location(tuple(item['loc']))}: {message}")
        raise WebConfigError(path, lines) from None
    tls = config.tls_server_config
    if tls is not None and base_dir is not None:
        resolved = {
            key: base_dir / value
            for key in ("cert_file", "key_file", "client_ca_file")
            if (value := getattr(tls, key)) is not None and not value.is_absolute()
        }
        if resolved:
            config = config.model_copy(update={"tls_server_config": tls.model_copy(update=resolved)})
    if config.tls_server_config is not None:
        build_ssl_context(config.tls_server_config, path)  # fail now, naming the key, not at the first scrape
    return config


def load_web_config(path: str | Path) -> WebConfig:
    """Read, validate and try out a web config file; raises WebConfigError naming each bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise WebConfigError(str(path), [f"cannot read: {error.strerror}"]) from None
    except UnicodeDecodeError:
        raise WebConfigError(str(path), ["(top level): not UTF-8 text"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise WebConfigError(str(path), [f"{where}: {getattr(error, 'problem', None) or 'invalid YAML'}"]) from None
    return parse_web_config(data, str(path), path.parent)


def _read_pem(tls: TLSServerConfig, inline_key: str, file_key: str, path: str) -> str | None:
    inline = getattr(tls, inline_key)
    if inline is not None:
        return inline.get_secret_value() if isinstance(inline, SecretStr) else inline
    file_path: Path | None = getattr(tls, file_key)
    if file_path is None:
        return None
    try:
        return file_path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not a PEM text file"
        raise WebConfigError(path, [f"tls_server_config.{file_key}: cannot read {file_path}: {reason}"]) from None


def build_ssl_context(tls: TLSServerConfig, path: str = "<web config>") -> ssl.SSLContext:
    """An `ssl.SSLContext` for the server side implementing `tls`; errors name the key at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        context.maximum_version = TLS_VERSIONS[tls.max_version]
    except ValueError as error:
        raise WebConfigError(path, [f"tls_server_config.min_version: {error}"]) from None
    cert_pem = _read_pem(tls, "cert", "cert_file", path)
    key_pem = _read_pem(tls, "key", "key_file", path)
    assert cert_pem is not None and key_pem is not None  # guaranteed by TLSServerConfig
    _load_cert_chain(context, cert_pem, key_pem, tls, path)
    if tls.client_auth_type != "NoClientCert":
        ca_pem = _read_pem(tls, "client_ca", "client_ca_file", path)
        ca_key = "client_ca_file" if tls.client_ca_file is not None else "client_ca"
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError):
            raise WebConfigError(path, [f"tls_server_config.{ca_key}: no valid PEM CA certificate"]) from None
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.client_auth_type == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
        )
    if tls.cipher_suites:
        try:
            context.set_ciphers(":".join(GO_CIPHER_SUITES[s] for s in tls.cipher_suites))
        except ssl.SSLError:
            raise WebConfigError(
                path, ["tls_server_config.cipher_suites: none of these suites is available in this OpenSSL"]
            ) from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        try:
            context.set_ecdh_curve(GO_CURVES[tls.curve_preferences[0]])
        except (ssl.SSLError, ValueError):
            raise WebConfigError(
                path, [f"tls_server_config.curve_preferences: {tls.curve_preferences[0]} unavailable here"]
            ) from None
    return context


def _load_cert_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str, tls: TLSServerConfig, path: str) -> None:
    """`load_cert_chain` only takes files: inline PEM goes through a private temporary file, deleted at once."""

    cert_key = "cert_file" if tls.cert_file is not None else "cert"
    key_key = "key_file" if tls.key_file is not None else "key"
    if "BEGIN CERTIFICATE" not in cert_pem:
        raise WebConfigError(path, [f"tls_server_config.{cert_key}: no PEM certificate found"])
    if "PRIVATE KEY" not in key_pem:
        raise WebConfigError(path, [f"tls_server_config.{key_key}: no PEM private key found"])
    try:
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
            return
        with tempfile.TemporaryDirectory(prefix="capacityd-tls-") as workdir:
            os.chmod(workdir, 0o700)
            cert_path, key_path = Path(workdir, "cert.pem"), Path(workdir, "key.pem")
            cert_path.write_text(cert_pem, encoding="ascii")
            descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(key_pem)
            context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as error:
        mismatch = "KEY_VALUES_MISMATCH" in str(error)
        reason = (
            "the private key does not match the certificate"
            if mismatch
            else "cannot be loaded as a PEM certificate and private key"
        )
        raise WebConfigError(path, [f"tls_server_config.{cert_key}/{key_key}: {reason}"]) from None
