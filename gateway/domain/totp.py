"""TOTP (RFC 6238) enrolment, code checks and the guessing throttle's rules.

The store keeps the two pieces of state that must change atomically: the last time
step a participant used (a code works once) and the attempt counter (guessing is
throttled across every socket and address). This module decides; it never stores.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

import pyotp
import segno

from gateway.errors import ConfigError, TotpInvalidFormat

__all__ = [
    "AttemptGrant",
    "Enrolment",
    "TotpPolicy",
    "enrol",
    "matching_step",
    "new_secret",
    "normalise_code",
]


@dataclass(frozen=True, slots=True)
class TotpPolicy:
    """How codes are checked and how guessing is throttled."""

    digits: int = 6
    step_seconds: int = 30
    #: How many steps back a code may lag (clock drift, slow typing). Never forward.
    skew_steps_back: int = 1
    #: Failed attempts allowed before the lockout.
    max_failures: int = 5
    #: Lockout cool-down, counted from the last attempt.
    lockout_seconds: int = 900
    issuer: str = "Quietroom"

    def __post_init__(self) -> None:
        if self.digits not in (6, 8):
            raise ConfigError("TOTP codes have 6 or 8 digits")
        if not 15 <= self.step_seconds <= 120:
            raise ConfigError("TOTP step must be 15 to 120 seconds")
        if not 0 <= self.skew_steps_back <= 2:
            raise ConfigError("TOTP skew must be 0 to 2 steps")
        if not 1 <= self.max_failures <= 20:
            raise ConfigError("TOTP failure limit must be 1 to 20")
        if self.lockout_seconds < 60:
            raise ConfigError("TOTP lockout must last at least 60 seconds")
        # Key URI format: the issuer prefixes the label, separated by a colon.
        if not self.issuer or ":" in self.issuer:
            raise ConfigError("TOTP issuer must be non-empty and without a colon")

    def step_at(self, at: float) -> int:
        return int(at) // self.step_seconds


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What a participant sees once, to add the secret to an authenticator app."""

    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True, slots=True)
class AttemptGrant:
    """The store's answer to "may this participant try a code now?"."""

    allowed: bool
    #: Attempts on record in the current window, this one included when allowed.
    attempts: int
    #: When the lockout ends, if locked; else 0.
    locked_until: float


def new_secret() -> str:
    """A fresh base32 secret of 160 bits (RFC 4226's recommended length)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def enrol(secret: str, *, account_label: str, policy: TotpPolicy) -> Enrolment:
    """The otpauth URI and its QR code for ``secret``.

    ``account_label`` is shown in the authenticator app: give a neutral label (the
    practice's or the product's name), never the participant's name.
    """
    if not account_label or ":" in account_label or not account_label.isprintable():
        raise ConfigError("a TOTP account label is printable text without a colon")
    totp = pyotp.TOTP(secret, digits=policy.digits, interval=policy.step_seconds)
    uri = totp.provisioning_uri(name=account_label, issuer_name=policy.issuer)
    qr = segno.make(uri, error="m")
    # segno escapes the title itself; it is read aloud by screen readers, so plain text.
    svg: str = qr.svg_inline(scale=4, title=f"{policy.issuer} sign-in code")
    return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=svg)


def normalise_code(code: object, policy: TotpPolicy) -> str:
    """The code as typed, if it is exactly ``digits`` ASCII digits (spaces allowed)."""
    if not isinstance(code, str) or len(code) > 32:
        raise TotpInvalidFormat("a code is a short string of digits")
    compact = code.replace(" ", "")
    if len(compact) != policy.digits or not (compact.isascii() and compact.isdigit()):
        raise TotpInvalidFormat(f"a code is exactly {policy.digits} digits")
    return compact


def matching_step(secret: str, code: str, *, at: float, policy: TotpPolicy) -> int | None:
    """The time step ``code`` belongs to, within the allowed window, or None."""
    totp = pyotp.TOTP(secret, digits=policy.digits, interval=policy.step_seconds)
    current = policy.step_at(at)
    found: int | None = None
    # Check every candidate step so timing does not tell which one matched.
    for step in range(current - policy.skew_steps_back, current + 1):
        expected = totp.generate_otp(step)
        # Bytes: compare_digest raises TypeError on non-ASCII str, e.g. "٠١٢٣٤٥".
        if hmac.compare_digest(expected.encode(), code.encode()) and found is None:
            found = step
    return found
