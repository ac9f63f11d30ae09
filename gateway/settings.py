"""One frozen settings object, read from environment variables (and a TOML file).

Precedence: environment over the TOML file named by ``QUIETROOM_CONFIG`` over defaults.
Everything is validated at start; every problem is reported at once. Outside the
explicit development mode a missing or short secret refuses to start.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from gateway.errors import ConfigError
from turn.urls import parse_ice_url

__all__ = [
    "MIN_SECRET_LENGTH",
    "RECORDING_KEY_BYTES",
    "Settings",
    "decode_recording_key",
    "new_data_key",
    "new_recording_key",
    "new_secret_key",
]

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 32
ENV_PREFIX = "QUIETROOM_"
#: A recording master key is 256 random bits (AES-256), written in standard base64.
RECORDING_KEY_BYTES = 32


def new_secret_key() -> str:
    """A fresh link and session signing secret (384 bits, URL-safe)."""
    return secrets.token_urlsafe(48)


def new_data_key() -> str:
    """A fresh key for encryption at rest (a Fernet key)."""
    return Fernet.generate_key().decode("ascii")


def new_recording_key() -> str:
    """A fresh master key for sealed recordings (256 bits, standard base64)."""
    return base64.b64encode(secrets.token_bytes(RECORDING_KEY_BYTES)).decode("ascii")


def decode_recording_key(text: str) -> bytes:
    """The raw bytes of a recording master key; ValueError if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != RECORDING_KEY_BYTES:
        raise ValueError(f"not {RECORDING_KEY_BYTES} bytes")
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway is told from outside. Build with :meth:`load`."""

    #: Link and session signing secrets, newest first: the first signs, all verify.
    secret_keys: tuple[str, ...] = field(repr=False)
    #: Encryption-at-rest keys (Fernet), newest first.
    data_keys: tuple[str, ...] = field(repr=False)
    #: Master keys for sealed recordings (base64, 32 bytes), newest first: the first seals
    #: new recordings, all open old ones. Empty: recording is unavailable.
    recording_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Where sealed recordings are written (created when missing; mode 0700).
    recording_dir: str = "recordings"
    dev_mode: bool = False
    bind_host: str = "127.0.0.1"
    port: int = 8080
    #: The origin browsers use to reach the gateway; links are built on it.
    public_url: str = "http://127.0.0.1:8080"
    #: Empty: the embedded MemoryStore. Otherwise RedisStore on this URL.
    redis_url: str = ""
    #: Origins allowed to open sockets and post forms; the public origin is always in.
    allowed_origins: tuple[str, ...] = ()
    #: Platform origins allowed to embed the gateway in a frame.
    frame_ancestors: tuple[str, ...] = ()
    client_link_max_age: int = 48 * 3600
    host_link_max_age: int = 15 * 60
    totp_digits: int = 6
    totp_max_failures: int = 5
    totp_lockout_seconds: int = 15 * 60
    totp_issuer: str = "Quietroom"
    host_idle_timeout: int = 30 * 60
    session_max_age: int = 12 * 3600
    #: A client that drops and comes back on the same device within this keeps its place.
    reconnect_grace: int = 60
    #: A host whose last connection closed is shown as away after this.
    host_away_grace: int = 5
    #: TURN REST API secrets shared with coturn, newest first; empty: no TURN.
    turn_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: stun:, turn: and turns: URLs handed to browsers as their ICE servers.
    turn_urls: tuple[str, ...] = ()
    #: How long a TURN credential may start new allocations, seconds.
    turn_ttl: int = 3600
    #: The only addresses the gateway's own ICE candidates come from (its media sockets
    #: bind there). Empty: no host candidates (media needs TURN).
    media_addresses: tuple[str, ...] = ()
    #: Loopback media addresses, and client candidates toward loopback (tests only).
    media_allow_loopback: bool = False
    #: Client ICE candidates toward these ranges (CIDR) are ignored, beside the
    #: loopback, link-local and unspecified ones that always are.
    media_denied_ranges: tuple[str, ...] = ()
    #: Sessions whose media this process carries at most; a new one past it is refused
    #: (placement sends it to a media node with room). 0: no limit.
    media_max_sessions: int = 0
    #: Forward RTP in compiled code while a call is in its steady state
    #: (gateway/media/_native.pyx, if it was built); off: every packet on Python.
    media_native: bool = True
    #: While media flows, the event loop polls its sockets at most once per this many
    #: microseconds, so that one wake-up reads many datagrams
    #: (gateway/media/event_loop.py): a packet waits at most this much longer. 0: poll
    #: as soon as asked.
    media_poll_interval_us: int = 2000
    #: Log lines as ``text`` (one line, for people) or ``json`` (one object a line).
    log_format: str = "text"
    #: The gateway's log level: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    #: Webhook URLs may reach loopback and private addresses (development and tests:
    #: never in production, where it lets an API key probe the gateway's own network).
    #: Unset: true in dev mode, else false.
    webhook_allow_private: bool = False
    #: Bearer token that opens /metrics to scrapers off this machine; empty: loopback only.
    metrics_token: str = field(default="", repr=False)
    #: Seconds after SIGTERM during which the gateway still answers (not ready, new joins
    #: refused, clients told) before it closes its connections.
    shutdown_drain: int = 5
    #: Days audit entries are kept (0: forever). Six years by default: the retention HIPAA
    #: sets for compliance documentation (45 CFR 164.316(b)(2)), which audit trails follow.
    audit_retention_days: int = 2190
    #: Days a sealed recording is kept after it was last written (0: forever).
    recording_retention_days: int = 30
    #: Days after an appointment ends that its participants (names, TOTP secrets),
    #: consents and browser sessions are kept (0: forever).
    appointment_retention_days: int = 30
    #: Days after its creation that an appointment nobody ended is ended by the retention,
    #: once nobody is in it, so that its data can then go (0: never). Platforms that create
    #: appointments further ahead than this must raise it.
    appointment_max_days: int = 90
    #: Seconds between two passes of the retention sweeper.
    retention_interval: int = 3600
    #: Generated secrets are ephemeral: set when dev mode made them up.
    ephemeral_secrets: bool = field(default=False, compare=False)

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def origins(self) -> frozenset[str]:
        return frozenset((self.public_origin, *self.allowed_origins))

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dev_mode: bool | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Settings from ``environ`` (default: the process environment), validated."""
        env = dict(os.environ if environ is None else environ)
        raw: dict[str, Any] = {}
        config_path = env.get(f"{ENV_PREFIX}CONFIG")
        if config_path:
            raw.update(_read_toml(Path(config_path)))
        for name in _FIELDS:
            value = env.get(ENV_PREFIX + name.upper())
            if value is not None:
                raw[name] = value
        raw.update(overrides or {})
        if dev_mode is not None:
            raw["dev_mode"] = dev_mode
        return _build(raw)


_Parser = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value.strip()


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    text = _text(value)
    if not text.lstrip("-").isdigit():
        raise ValueError("expected a whole number")
    return int(text)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _text_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(_text(v) for v in value if _text(v))
    return tuple(part.strip() for part in _text(value).split(",") if part.strip())


_FIELDS: dict[str, _Parser] = {
    "secret_keys": _text_list,
    "data_keys": _text_list,
    "recording_keys": _text_list,
    "recording_dir": _text,
    "dev_mode": _flag,
    "bind_host": _text,
    "port": _integer,
    "public_url": _text,
    "redis_url": _text,
    "allowed_origins": _text_list,
    "frame_ancestors": _text_list,
    "client_link_max_age": _integer,
    "host_link_max_age": _integer,
    "totp_digits": _integer,
    "totp_max_failures": _integer,
    "totp_lockout_seconds": _integer,
    "totp_issuer": _text,
    "host_idle_timeout": _integer,
    "session_max_age": _integer,
    "reconnect_grace": _integer,
    "host_away_grace": _integer,
    "turn_secrets": _text_list,
    "turn_urls": _text_list,
    "turn_ttl": _integer,
    "media_addresses": _text_list,
    "media_allow_loopback": _flag,
    "media_denied_ranges": _text_list,
    "media_max_sessions": _integer,
    "media_native": _flag,
    "media_poll_interval_us": _integer,
    "log_format": _text,
    "log_level": _text,
    "metrics_token": _text,
    "webhook_allow_private": _flag,
    "shutdown_drain": _integer,
    "audit_retention_days": _integer,
    "recording_retention_days": _integer,
    "appointment_retention_days": _integer,
    "appointment_max_days": _integer,
    "retention_interval": _integer,
}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None
    section = data.get("quietroom", data)
    if not isinstance(section, dict):
        raise ConfigError(f"settings file {path}: [quietroom] must be a table")
    unknown = sorted(set(section) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"settings file {path}: unknown settings {', '.join(unknown)}")
    return dict(section)


def _build(raw: dict[str, Any]) -> Settings:
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, parse in _FIELDS.items():
        if name in raw:
            try:
                values[name] = parse(raw[name])
            except ValueError as exc:
                problems.append(f"{ENV_PREFIX}{name.upper()}: {exc}")
    dev = bool(values.get("dev_mode", False))
    ephemeral = False
    if dev and not values.get("secret_keys"):
        values["secret_keys"] = (new_secret_key(),)
        ephemeral = True
    if dev and not values.get("data_keys"):
        values["data_keys"] = (new_data_key(),)
        ephemeral = True
    if dev and not values.get("recording_keys"):
        # Recordings sealed under it are unreadable once this process exits.
        values["recording_keys"] = (new_recording_key(),)
        ephemeral = True
    values.setdefault("webhook_allow_private", dev)
    values.setdefault("secret_keys", ())
    values.setdefault("data_keys", ())
    if "public_url" not in values:
        host = values.get("bind_host", "127.0.0.1")
        shown = f"[{host}]" if ":" in host else host
        values["public_url"] = f"http://{shown}:{values.get('port', 8080)}"
    problems.extend(_check(values))
    if problems:
        raise ConfigError("invalid settings:\n  - " + "\n  - ".join(problems))
    return Settings(**values, ephemeral_secrets=ephemeral)


def _check(values: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    keys: tuple[str, ...] = values["secret_keys"]
    if not keys:
        problems.append(f"{ENV_PREFIX}SECRET_KEYS is required (make one with: quietroom keys new)")
    for index, key in enumerate(keys):
        if len(key) < MIN_SECRET_LENGTH:
            problems.append(
                f"{ENV_PREFIX}SECRET_KEYS: key #{index + 1} is shorter than "
                f"{MIN_SECRET_LENGTH} characters"
            )
    data_keys: tuple[str, ...] = values["data_keys"]
    if not data_keys:
        problems.append(
            f"{ENV_PREFIX}DATA_KEYS is required (make one with: quietroom keys new --kind data)"
        )
    for index, key in enumerate(data_keys):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            problems.append(f"{ENV_PREFIX}DATA_KEYS: key #{index + 1} is not a Fernet key")
    for index, key in enumerate(values.get("recording_keys", ()), start=1):
        try:
            decode_recording_key(key)
        except ValueError as exc:
            problems.append(
                f"{ENV_PREFIX}RECORDING_KEYS: key #{index} is {exc} "
                "(make one with: quietroom keys new --kind recording)"
            )
    port = values.get("port", 8080)
    if not 0 <= port <= 65535:
        problems.append(f"{ENV_PREFIX}PORT: {port} is not a TCP port")
    try:
        ipaddress.ip_address(values.get("bind_host", "127.0.0.1"))
    except ValueError:
        if values.get("bind_host") != "localhost":
            problems.append(f"{ENV_PREFIX}BIND_HOST: expected an IP address")
    public = urlsplit(values["public_url"])
    if public.scheme not in {"http", "https"} or not public.netloc or public.path not in {"", "/"}:
        problems.append(f"{ENV_PREFIX}PUBLIC_URL: expected http(s)://host[:port] with no path")
    if (
        public.scheme == "http"
        and not values.get("dev_mode")
        and public.hostname
        not in {
            "127.0.0.1",
            "localhost",
            "::1",
        }
    ):
        problems.append(f"{ENV_PREFIX}PUBLIC_URL: must be https outside development")
    for name in ("allowed_origins", "frame_ancestors"):
        for origin in values.get(name, ()):
            parts = urlsplit(origin)
            if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path:
                problems.append(f"{ENV_PREFIX}{name.upper()}: {origin!r} is not an origin")
    redis_url = values.get("redis_url", "")
    if redis_url and urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
        problems.append(f"{ENV_PREFIX}REDIS_URL: expected redis://, rediss:// or unix://")
    for name, low, high in (
        ("client_link_max_age", 60, 30 * 86400),
        ("host_link_max_age", 60, 86400),
        ("totp_max_failures", 1, 20),
        ("totp_lockout_seconds", 60, 86400),
        ("host_idle_timeout", 60, 86400),
        ("session_max_age", 300, 7 * 86400),
        ("reconnect_grace", 0, 3600),
        ("host_away_grace", 0, 600),
        ("turn_ttl", 300, 86400),
        ("media_max_sessions", 0, 100_000),
        ("media_poll_interval_us", 0, 50_000),
        ("shutdown_drain", 0, 60),
        ("audit_retention_days", 0, 36500),
        ("recording_retention_days", 0, 36500),
        ("appointment_retention_days", 0, 36500),
        ("appointment_max_days", 0, 36500),
        ("retention_interval", 60, 86400),
    ):
        value = values.get(name)
        if value is not None and not low <= value <= high:
            problems.append(f"{ENV_PREFIX}{name.upper()}: must be {low} to {high}")
    if values.get("totp_digits", 6) not in (6, 8):
        problems.append(f"{ENV_PREFIX}TOTP_DIGITS: must be 6 or 8")
    problems.extend(_check_turn(values.get("turn_secrets", ()), values.get("turn_urls", ())))
    problems.extend(_check_media(values))
    problems.extend(_check_operations(values))
    return problems


def _check_operations(values: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if values.get("log_format", "text") not in ("text", "json"):
        problems.append(f"{ENV_PREFIX}LOG_FORMAT: must be text or json")
    if str(values.get("log_level", "INFO")).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"{ENV_PREFIX}LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")
    token = values.get("metrics_token", "")
    # Never the token itself in a message: these are printed and logged.
    if token and len(token) < MIN_SECRET_LENGTH:
        problems.append(
            f"{ENV_PREFIX}METRICS_TOKEN: shorter than {MIN_SECRET_LENGTH} characters "
            "(make one with: quietroom keys new)"
        )
    elif token and (not (token.isascii() and token.isprintable()) or " " in token):
        problems.append(f"{ENV_PREFIX}METRICS_TOKEN: has spaces or non-ASCII characters")
    return problems


def _check_media(values: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    allow_loopback = bool(values.get("media_allow_loopback", False))
    for text in values.get("media_addresses", ()):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            problems.append(f"{ENV_PREFIX}MEDIA_ADDRESSES: {text!r} is not an IP address")
            continue
        if address.is_loopback and not allow_loopback:
            problems.append(
                f"{ENV_PREFIX}MEDIA_ADDRESSES: {text} is loopback "
                f"(only with {ENV_PREFIX}MEDIA_ALLOW_LOOPBACK)"
            )
        elif address.is_unspecified or address.is_multicast or address.is_link_local:
            problems.append(
                f"{ENV_PREFIX}MEDIA_ADDRESSES: {text} is unspecified, multicast or link-local"
            )
    for text in values.get("media_denied_ranges", ()):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            problems.append(f"{ENV_PREFIX}MEDIA_DENIED_RANGES: {text!r} is not a CIDR range")
    return problems


def _check_turn(turn_secrets: tuple[str, ...], turn_urls: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    for index, secret in enumerate(turn_secrets, start=1):
        # Never the secret itself in a message: these are printed and logged.
        if len(secret) < MIN_SECRET_LENGTH:
            problems.append(
                f"{ENV_PREFIX}TURN_SECRETS: secret #{index} is shorter than "
                f"{MIN_SECRET_LENGTH} characters"
            )
        elif not (secret.isascii() and secret.isprintable()) or " " in secret:
            # It goes into coturn's config file as one static-auth-secret line.
            problems.append(
                f"{ENV_PREFIX}TURN_SECRETS: secret #{index} has spaces or non-ASCII characters"
            )
    has_turn = False
    for url in turn_urls:
        try:
            has_turn |= parse_ice_url(url).is_turn
        except ValueError as exc:
            problems.append(f"{ENV_PREFIX}TURN_URLS: {url!r}: {exc}")
    if turn_secrets and not has_turn:
        problems.append(f"{ENV_PREFIX}TURN_URLS: needs a turn: or turns: URL when secrets are set")
    if has_turn and not turn_secrets:
        problems.append(
            f"{ENV_PREFIX}TURN_SECRETS is required for turn: and turns: URLs "
            "(make one with: quietroom keys new)"
        )
    return problems
