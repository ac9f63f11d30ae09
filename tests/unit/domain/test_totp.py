"""TOTP: code format, the step window, enrolment and the policy's limits."""

from __future__ import annotations

import base64
import dataclasses
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from gateway.clock import FrozenClock
from gateway.domain.totp import (
    AttemptGrant,
    TotpPolicy,
    enrol,
    matching_step,
    new_secret,
    normalise_code,
)
from gateway.errors import ConfigError, GatewayError, TotpError, TotpInvalidFormat

POLICY = TotpPolicy()
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def code_at(secret: str, at: float, policy: TotpPolicy = POLICY) -> str:
    """The code an authenticator app shows at ``at`` (computed by pyotp, not by us)."""
    return str(pyotp.TOTP(secret, digits=policy.digits, interval=policy.step_seconds).at(at))


# --- normalise_code: bad input first ----------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("٠١٢٣٤٥", id="arabic-indic"),
        pytest.param("۰۱۲۳۴۵", id="extended-arabic-indic"),
        pytest.param("\uff11\uff12\uff13\uff14\uff15\uff16", id="fullwidth"),
        pytest.param("१२३४५६", id="devanagari"),
        pytest.param("12345", id="five-digits"),
        pytest.param("1234567", id="seven-digits"),
        pytest.param("12345678", id="eight-digits-for-six"),
        pytest.param("", id="empty"),
        pytest.param("      ", id="spaces-only"),
        pytest.param("12a456", id="letter"),
        pytest.param("abcdef", id="letters"),
        pytest.param("-12345", id="sign"),
        pytest.param("+12345", id="plus"),
        pytest.param("12.456", id="dot"),
        pytest.param("123\t456", id="tab"),
        pytest.param("123\n456", id="newline"),
        pytest.param("123\u00a0456", id="nbsp"),
        pytest.param("12345\x00", id="nul"),
        pytest.param("¹²³⁴⁵⁶", id="superscript"),
        pytest.param("1" * 33, id="over-long"),
        pytest.param("1" * 10_000, id="huge"),
        pytest.param("123456" + " " * 27, id="over-long-with-spaces"),
    ],
)
def test_normalise_code_refuses_malformed_strings(code: str) -> None:
    with pytest.raises(TotpInvalidFormat):
        normalise_code(code, POLICY)


@pytest.mark.parametrize("code", [None, 123456, 123456.0, b"123456", ["123456"], {"c": 1}])
def test_normalise_code_refuses_non_strings(code: object) -> None:
    with pytest.raises(TotpInvalidFormat):
        normalise_code(code, POLICY)


def test_normalise_code_refuses_six_digits_for_an_eight_digit_policy() -> None:
    with pytest.raises(TotpInvalidFormat, match="8 digits"):
        normalise_code("123456", TotpPolicy(digits=8))


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("123456", "123456"),
        ("123 456", "123456"),
        (" 123456 ", "123456"),
        ("1 2 3 4 5 6", "123456"),
        ("000000", "000000"),
        ("123456" + " " * 26, "123456"),  # exactly 32 characters
    ],
)
def test_normalise_code_accepts_ascii_digits_and_spaces(typed: str, expected: str) -> None:
    assert normalise_code(typed, POLICY) == expected


def test_normalise_code_accepts_eight_digits_for_an_eight_digit_policy() -> None:
    assert normalise_code("1234 5678", TotpPolicy(digits=8)) == "12345678"


def test_format_error_is_a_totp_error() -> None:
    with pytest.raises(TotpError) as info:
        normalise_code("x", POLICY)
    assert isinstance(info.value, GatewayError)
    assert info.value.code == "totp_invalid_format"


# --- matching_step ---------------------------------------------------------------------------


def test_code_of_the_current_step_matches(clock: FrozenClock) -> None:
    at = clock.now()
    assert matching_step(SECRET, code_at(SECRET, at), at=at, policy=POLICY) == POLICY.step_at(at)


def test_code_of_one_step_back_matches_with_its_own_step(clock: FrozenClock) -> None:
    at = clock.now()
    previous = code_at(SECRET, at - POLICY.step_seconds)
    assert previous != code_at(SECRET, at)  # known for this secret and time
    assert matching_step(SECRET, previous, at=at, policy=POLICY) == POLICY.step_at(at) - 1


def test_code_of_two_steps_back_is_refused(clock: FrozenClock) -> None:
    at = clock.now()
    old = code_at(SECRET, at - 2 * POLICY.step_seconds)
    assert old not in {code_at(SECRET, at), code_at(SECRET, at - POLICY.step_seconds)}
    assert matching_step(SECRET, old, at=at, policy=POLICY) is None


def test_code_of_the_next_step_is_refused(clock: FrozenClock) -> None:
    at = clock.now()
    ahead = code_at(SECRET, at + POLICY.step_seconds)
    assert ahead not in {code_at(SECRET, at), code_at(SECRET, at - POLICY.step_seconds)}
    assert matching_step(SECRET, ahead, at=at, policy=POLICY) is None


def test_window_follows_step_boundaries() -> None:
    step = 60_000_000
    start = step * POLICY.step_seconds  # first second of a step
    code = code_at(SECRET, start)
    # Valid through its own step and the next one, then no longer.
    assert matching_step(SECRET, code, at=start, policy=POLICY) == step
    assert matching_step(SECRET, code, at=start + 59.9, policy=POLICY) == step
    assert matching_step(SECRET, code, at=start + 60, policy=POLICY) is None
    assert matching_step(SECRET, code, at=start - 0.1, policy=POLICY) is None


def test_wrong_code_is_refused(clock: FrozenClock) -> None:
    at = clock.now()
    window = {code_at(SECRET, at - s * POLICY.step_seconds) for s in range(0, 2)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in window)
    assert matching_step(SECRET, wrong, at=at, policy=POLICY) is None


def test_code_of_another_secret_is_refused(clock: FrozenClock) -> None:
    at = clock.now()
    other = new_secret()
    code = code_at(other, at)
    if code in {code_at(SECRET, at), code_at(SECRET, at - 30)}:  # pragma: no cover
        pytest.skip("one-in-a-million collision")
    assert matching_step(SECRET, code, at=at, policy=POLICY) is None


def test_no_skew_accepts_only_the_current_step(clock: FrozenClock) -> None:
    policy = TotpPolicy(skew_steps_back=0)
    at = clock.now()
    assert matching_step(SECRET, code_at(SECRET, at), at=at, policy=policy) == policy.step_at(at)
    assert matching_step(SECRET, code_at(SECRET, at - 30), at=at, policy=policy) is None


def test_two_steps_of_skew_reach_two_back_but_not_three(clock: FrozenClock) -> None:
    policy = TotpPolicy(skew_steps_back=2)
    at = clock.now()
    assert matching_step(SECRET, code_at(SECRET, at - 60), at=at, policy=policy) == (
        policy.step_at(at) - 2
    )
    assert matching_step(SECRET, code_at(SECRET, at - 90), at=at, policy=policy) is None


def test_eight_digit_codes_and_other_step_lengths(clock: FrozenClock) -> None:
    policy = TotpPolicy(digits=8, step_seconds=60)
    at = clock.now()
    code = code_at(SECRET, at, policy)
    assert len(code) == 8
    assert matching_step(SECRET, code, at=at, policy=policy) == int(at) // 60
    # The six-digit code for the same moment is not accepted by the eight-digit policy.
    assert matching_step(SECRET, code_at(SECRET, at), at=at, policy=policy) is None


def test_non_ascii_code_is_refused_not_crashed(clock: FrozenClock) -> None:
    # A code that skipped normalise_code must still get a plain "no", not a TypeError.
    at = clock.now()
    assert matching_step(SECRET, "٠١٢٣٤٥", at=at, policy=POLICY) is None


def test_step_at_counts_whole_steps() -> None:
    assert POLICY.step_at(0) == 0
    assert POLICY.step_at(29.99) == 0
    assert POLICY.step_at(30) == 1
    assert TotpPolicy(step_seconds=60).step_at(1_800_000_000) == 30_000_000


# --- secrets and enrolment --------------------------------------------------------------------


def test_new_secret_is_at_least_160_bits_of_base32() -> None:
    secret = new_secret()
    raw = base64.b32decode(secret, casefold=False)
    assert len(raw) * 8 >= 160
    assert secret == secret.upper()
    assert secret.isascii()
    assert "=" not in secret  # authenticator apps dislike padding


def test_new_secrets_differ() -> None:
    assert len({new_secret() for _ in range(100)}) == 100


def test_new_secret_works_with_pyotp() -> None:
    secret = new_secret()
    assert matching_step(secret, code_at(secret, 1_000_000), at=1_000_000, policy=POLICY) == (
        1_000_000 // 30
    )


def parse_uri(uri: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    return unquote(parts.path.lstrip("/")), parse_qs(parts.query)


def test_enrol_gives_an_otpauth_uri_with_issuer_and_label() -> None:
    secret = new_secret()
    enrolment = enrol(secret, account_label="Quietroom client", policy=POLICY)
    label, query = parse_uri(enrolment.otpauth_uri)
    assert label == "Quietroom:Quietroom client"
    assert query["issuer"] == ["Quietroom"]
    assert query["secret"] == [secret]
    assert enrolment.secret == secret
    # pyotp reads the same parameters back.
    parsed = pyotp.parse_uri(enrolment.otpauth_uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.issuer == "Quietroom"
    assert parsed.name == "Quietroom client"
    assert parsed.digits == 6
    assert parsed.interval == 30


def test_enrol_carries_non_default_digits_and_step() -> None:
    policy = TotpPolicy(digits=8, step_seconds=60, issuer="Practice")
    enrolment = enrol(SECRET, account_label="sign-in", policy=policy)
    parsed = pyotp.parse_uri(enrolment.otpauth_uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.digits, parsed.interval, parsed.issuer) == (8, 60, "Practice")


def test_enrol_gives_a_valid_svg_qr_code() -> None:
    enrolment = enrol(SECRET, account_label="Quietroom client", policy=POLICY)
    root = ET.fromstring(enrolment.qr_svg)  # noqa: S314 - our own output
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    title = next(el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "title")
    assert title.text == "Quietroom sign-in code"
    assert any(el.tag.rsplit("}", 1)[-1] == "path" for el in root.iter())
    assert SECRET not in enrolment.qr_svg  # the secret is in the QR modules, not in text


def test_enrol_svg_title_reads_as_plain_text() -> None:
    # The title is what a screen reader says: no percent-encoding, markup escaped.
    policy = TotpPolicy(issuer="Riverside <Clinic> & Co")
    root = ET.fromstring(enrol(SECRET, account_label="x", policy=policy).qr_svg)  # noqa: S314
    title = next(el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "title")
    assert title.text == "Riverside <Clinic> & Co sign-in code"


# --- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"digits": 5},
        {"digits": 7},
        {"digits": 10},
        {"digits": 0},
        {"step_seconds": 14},
        {"step_seconds": 121},
        {"step_seconds": 0},
        {"step_seconds": -30},
        {"skew_steps_back": -1},
        {"skew_steps_back": 3},
        {"max_failures": 0},
        {"max_failures": 21},
        {"lockout_seconds": 59},
        {"lockout_seconds": 0},
        {"issuer": ""},
        {"issuer": "Quiet:room"},
    ],
)
def test_policy_refuses_unsafe_settings(change: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TotpPolicy(**change)


@pytest.mark.parametrize(
    "change",
    [
        {"digits": 8},
        {"step_seconds": 15},
        {"step_seconds": 120},
        {"skew_steps_back": 0},
        {"skew_steps_back": 2},
        {"max_failures": 1},
        {"max_failures": 20},
        {"lockout_seconds": 60},
        {"issuer": "Riverside Clinic"},
    ],
)
def test_policy_accepts_the_limits(change: dict[str, Any]) -> None:
    policy = TotpPolicy(**change)
    for name, value in change.items():
        assert getattr(policy, name) == value


def test_policy_defaults() -> None:
    assert dataclasses.astuple(POLICY) == (6, 30, 1, 5, 900, "Quietroom")


def test_policy_and_grant_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.digits = 8  # type: ignore[misc]
    grant = AttemptGrant(allowed=True, attempts=1, locked_until=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grant.allowed = False  # type: ignore[misc]


@pytest.mark.parametrize("label", ["", "Clinic:Room", "tab\there"])
def test_enrol_refuses_labels_that_break_the_otpauth_format(label: str) -> None:
    with pytest.raises(ConfigError):
        enrol(new_secret(), account_label=label, policy=TotpPolicy())
