"""Link tokens: every way a token can be wrong is refused as a LinkError, with its data."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from gateway.clock import Clock, FrozenClock
from gateway.domain.ids import is_valid_id, new_id
from gateway.domain.links import MAX_TOKEN_LENGTH, LinkClaims, LinkPurpose, LinkSigner
from gateway.errors import (
    ConfigError,
    GatewayError,
    LinkAlreadyUsed,
    LinkError,
    LinkExpired,
    LinkInvalid,
    LinkNotYetValid,
)

KEY = "k" * 32
OLD_KEY = "o" * 32
OTHER_KEY = "x" * 32
MAX_AGE = {LinkPurpose.CLIENT_JOIN: 3600, LinkPurpose.HOST_SIGN_IN: 600}
APT = new_id("apt")
PAR = new_id("par")


def make_signer(clock: Clock, keys: list[str] | None = None) -> LinkSigner:
    return LinkSigner(secret_keys=keys or [KEY], max_age=MAX_AGE, clock=clock)


def issue(signer: LinkSigner, purpose: LinkPurpose = LinkPurpose.CLIENT_JOIN) -> str:
    token, _ = signer.issue(purpose, appointment_id=APT, participant_id=PAR)
    return token


def raw_token(clock: Clock, payload: Any, *, purpose: LinkPurpose, key: str = KEY) -> str:
    """A token signed with the gateway's key and salt, but with any payload."""

    class _Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock.now())

    serializer = URLSafeTimedSerializer(key, salt=f"quietroom/{purpose.value}", signer=_Signer)
    return serializer.dumps(payload)


def decode_payload(token: str) -> Any:
    """The JSON a token carries, read without any key (as anyone holding it could)."""
    part = token.split(".")[0] if not token.startswith(".") else token.split(".")[1]
    data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if token.startswith("."):
        data = zlib.decompress(data)
    return json.loads(data)


def flip(char: str) -> str:
    return "B" if char == "A" else "A"


# --- malformed input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(12345, id="int"),
        pytest.param(b"abc.def.ghi", id="bytes"),
        pytest.param(["a.b.c"], id="list"),
        pytest.param("not-a-token", id="garbage"),
        pytest.param("a.b.c", id="three-dots"),
        pytest.param("...", id="only-dots"),
    ],
)
def test_malformed_token_is_invalid(clock: FrozenClock, token: object) -> None:
    with pytest.raises(LinkInvalid) as info:
        make_signer(clock).verify(LinkPurpose.CLIENT_JOIN, token)
    assert info.value.purpose == "client-join"


def test_non_ascii_token_is_invalid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    with pytest.raises(LinkInvalid) as info:
        signer.verify(LinkPurpose.CLIENT_JOIN, token[:-1] + "é")
    assert info.value.purpose == "client-join"


def test_overlong_token_is_invalid_before_parsing(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    padded = token + "A" * (MAX_TOKEN_LENGTH + 1 - len(token))
    assert len(padded) == MAX_TOKEN_LENGTH + 1
    with pytest.raises(LinkInvalid):
        signer.verify(LinkPurpose.CLIENT_JOIN, padded)


def test_overlong_token_is_refused_before_any_parsing(
    clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(URLSafeTimedSerializer, "loads", lambda *a, **k: calls.append(a))
    signer = make_signer(clock)
    with pytest.raises(LinkInvalid):
        signer.verify(LinkPurpose.CLIENT_JOIN, "A" * (MAX_TOKEN_LENGTH + 1))
    assert calls == []


def test_truncated_token_is_invalid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    for cut in (1, 5, len(token) // 2, len(token) - 1):
        with pytest.raises(LinkInvalid):
            signer.verify(LinkPurpose.CLIENT_JOIN, token[:cut])


def test_token_with_payload_char_flipped_is_invalid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    payload, timestamp, signature = token.split(".")
    for i in (0, len(payload) // 2, len(payload) - 1):
        tampered_payload = payload[:i] + flip(payload[i]) + payload[i + 1 :]
        tampered = f"{tampered_payload}.{timestamp}.{signature}"
        assert tampered != token
        with pytest.raises(LinkInvalid):
            signer.verify(LinkPurpose.CLIENT_JOIN, tampered)


def test_token_with_signature_char_flipped_is_invalid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    payload, timestamp, signature = token.split(".")
    # The last base64 character may carry padding bits only; flip the ones that matter.
    for i in (0, len(signature) // 2, len(signature) - 2):
        tampered_sig = signature[:i] + flip(signature[i]) + signature[i + 1 :]
        with pytest.raises(LinkInvalid):
            signer.verify(LinkPurpose.CLIENT_JOIN, f"{payload}.{timestamp}.{tampered_sig}")


def test_token_with_timestamp_changed_is_invalid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    payload, _, signature = token.split(".")
    later = base64.urlsafe_b64encode(int(clock.now() + 10).to_bytes(4, "big")).rstrip(b"=")
    with pytest.raises(LinkInvalid):
        signer.verify(LinkPurpose.CLIENT_JOIN, f"{payload}.{later.decode()}.{signature}")


def test_token_signed_with_unknown_key_is_invalid(clock: FrozenClock) -> None:
    token = issue(make_signer(clock, [OTHER_KEY]))
    with pytest.raises(LinkInvalid) as info:
        make_signer(clock, [KEY, OLD_KEY]).verify(LinkPurpose.CLIENT_JOIN, token)
    assert info.value.purpose == "client-join"


@pytest.mark.parametrize(
    ("issued_for", "checked_as"),
    [
        (LinkPurpose.CLIENT_JOIN, LinkPurpose.HOST_SIGN_IN),
        (LinkPurpose.HOST_SIGN_IN, LinkPurpose.CLIENT_JOIN),
    ],
)
def test_token_of_other_purpose_is_invalid(
    clock: FrozenClock, issued_for: LinkPurpose, checked_as: LinkPurpose
) -> None:
    signer = make_signer(clock)
    token = issue(signer, issued_for)
    with pytest.raises(LinkInvalid) as info:
        signer.verify(checked_as, token)
    assert info.value.purpose == checked_as.value


# --- time --------------------------------------------------------------------------------


def test_expired_token_reports_when_it_expired(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    issued_at = int(clock.now())
    token = issue(signer)
    clock.advance(MAX_AGE[LinkPurpose.CLIENT_JOIN] + 1)
    with pytest.raises(LinkExpired) as info:
        signer.verify(LinkPurpose.CLIENT_JOIN, token)
    assert info.value.expired_at == issued_at + MAX_AGE[LinkPurpose.CLIENT_JOIN]
    assert info.value.purpose == "client-join"


def test_expiry_uses_the_purposes_own_max_age(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    issued_at = int(clock.now())
    token = issue(signer, LinkPurpose.HOST_SIGN_IN)
    clock.advance(MAX_AGE[LinkPurpose.HOST_SIGN_IN] + 1)  # well inside CLIENT_JOIN's age
    with pytest.raises(LinkExpired) as info:
        signer.verify(LinkPurpose.HOST_SIGN_IN, token)
    assert info.value.expired_at == issued_at + MAX_AGE[LinkPurpose.HOST_SIGN_IN]
    assert info.value.purpose == "host-sign-in"


def test_token_is_valid_up_to_its_max_age(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token, issued = signer.issue(LinkPurpose.CLIENT_JOIN, appointment_id=APT, participant_id=PAR)
    clock.advance(MAX_AGE[LinkPurpose.CLIENT_JOIN])
    claims = signer.verify(LinkPurpose.CLIENT_JOIN, token)
    assert claims.expires_at == issued.expires_at == clock.now()


def test_future_dated_token_is_not_yet_valid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    start = clock.now()
    clock.advance(120)
    token = issue(signer)
    clock.set(start)
    with pytest.raises(LinkNotYetValid) as info:
        signer.verify(LinkPurpose.CLIENT_JOIN, token)
    assert info.value.issued_at == start + 120
    assert info.value.purpose == "client-join"


def test_token_dated_one_second_ahead_is_not_yet_valid(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    clock.set(1_800_000_001.0)
    token = issue(signer)
    clock.set(1_800_000_000.5)
    with pytest.raises(LinkNotYetValid) as info:
        signer.verify(LinkPurpose.CLIENT_JOIN, token)
    assert info.value.issued_at == 1_800_000_001.0


# --- payloads signed with the right key but of the wrong shape -----------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"a": APT, "p": PAR, "j": "j" * 22, "name": "Jane"}, id="extra-field"),
        pytest.param({"a": APT, "p": PAR}, id="missing-jti"),
        pytest.param({"a": APT, "j": "j" * 22}, id="missing-participant"),
        pytest.param({"p": PAR, "j": "j" * 22}, id="missing-appointment"),
        pytest.param({}, id="empty-dict"),
        pytest.param({"a": "Jane Doe", "p": PAR, "j": "j" * 22}, id="name-as-appointment"),
        pytest.param({"a": APT, "p": "jane@example.com", "j": "j" * 22}, id="email-as-participant"),
        pytest.param({"a": 42, "p": PAR, "j": "j" * 22}, id="int-appointment"),
        pytest.param({"a": APT, "p": None, "j": "j" * 22}, id="null-participant"),
        pytest.param({"a": APT, "p": PAR, "j": 1234567890123456789}, id="int-jti"),
        pytest.param({"a": APT, "p": PAR, "j": "short"}, id="short-jti"),
        pytest.param({"a": APT, "p": PAR, "j": "j" * 65}, id="long-jti"),
        pytest.param([APT, PAR, "j" * 22], id="list"),
        pytest.param("apt", id="string"),
        pytest.param(None, id="null"),
        pytest.param(7, id="number"),
    ],
)
def test_signed_payload_of_wrong_shape_is_invalid(clock: FrozenClock, payload: Any) -> None:
    token = raw_token(clock, payload, purpose=LinkPurpose.CLIENT_JOIN)
    with pytest.raises(LinkInvalid) as info:
        make_signer(clock).verify(LinkPurpose.CLIENT_JOIN, token)
    assert info.value.purpose == "client-join"


def test_raw_token_helper_builds_tokens_the_signer_accepts(clock: FrozenClock) -> None:
    # Guards the test above: a well-shaped raw token does verify, so the refusals are real.
    jti = "j" * 22
    token = raw_token(clock, {"a": APT, "p": PAR, "j": jti}, purpose=LinkPurpose.CLIENT_JOIN)
    claims = make_signer(clock).verify(LinkPurpose.CLIENT_JOIN, token)
    assert (claims.appointment_id, claims.participant_id, claims.jti) == (APT, PAR, jti)


def test_payload_that_is_not_json_is_invalid(clock: FrozenClock) -> None:
    class _Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock.now())

    # Sign a non-JSON body exactly as the serializer would (same key, salt and signer).
    serializer = URLSafeTimedSerializer(KEY, salt="quietroom/client-join", signer=_Signer)
    body = base64.urlsafe_b64encode(b"{not json").rstrip(b"=")
    token = serializer.make_signer().sign(body).decode()
    with pytest.raises(LinkInvalid):
        make_signer(clock).verify(LinkPurpose.CLIENT_JOIN, token)


# --- keys ---------------------------------------------------------------------------------


def test_token_signed_with_old_key_verifies_after_rotation(clock: FrozenClock) -> None:
    old_token = issue(make_signer(clock, [OLD_KEY]))
    rotated = make_signer(clock, [KEY, OLD_KEY])
    claims = rotated.verify(LinkPurpose.CLIENT_JOIN, old_token)
    assert (claims.appointment_id, claims.participant_id) == (APT, PAR)


def test_new_tokens_are_signed_with_the_first_key(clock: FrozenClock) -> None:
    new_token = issue(make_signer(clock, [KEY, OLD_KEY]))
    assert (
        make_signer(clock, [KEY]).verify(LinkPurpose.CLIENT_JOIN, new_token).participant_id == PAR
    )
    with pytest.raises(LinkInvalid):
        make_signer(clock, [OLD_KEY]).verify(LinkPurpose.CLIENT_JOIN, new_token)


def test_token_of_retired_key_is_invalid(clock: FrozenClock) -> None:
    old_token = issue(make_signer(clock, [OLD_KEY]))
    with pytest.raises(LinkInvalid):
        make_signer(clock, [KEY]).verify(LinkPurpose.CLIENT_JOIN, old_token)


def test_signer_needs_a_key(clock: FrozenClock) -> None:
    with pytest.raises(ConfigError):
        LinkSigner(secret_keys=[], max_age=MAX_AGE, clock=clock)


def test_signer_needs_a_max_age_for_every_purpose(clock: FrozenClock) -> None:
    with pytest.raises(ConfigError, match="host-sign-in"):
        LinkSigner(secret_keys=[KEY], max_age={LinkPurpose.CLIENT_JOIN: 60}, clock=clock)


# --- no PHI, fresh jti ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("appointment_id", "participant_id"),
    [
        ("Jane Doe", PAR),
        (APT, "jane@example.com"),
        (APT, ""),
        ("", PAR),
        (APT, PAR + "\n"),
        (APT, 42),
        (None, PAR),
        ("apt_short", PAR),
    ],
)
def test_issue_refuses_values_that_are_not_ids(
    clock: FrozenClock, appointment_id: Any, participant_id: Any
) -> None:
    with pytest.raises(LinkInvalid) as info:
        make_signer(clock).issue(
            LinkPurpose.CLIENT_JOIN, appointment_id=appointment_id, participant_id=participant_id
        )
    assert info.value.purpose == "client-join"


def test_token_carries_only_ids_and_jti(clock: FrozenClock) -> None:
    token, claims = make_signer(clock).issue(
        LinkPurpose.CLIENT_JOIN, appointment_id=APT, participant_id=PAR
    )
    assert decode_payload(token) == {"a": APT, "p": PAR, "j": claims.jti}
    assert token.isascii()
    assert len(token) <= MAX_TOKEN_LENGTH


def test_jti_differs_between_issues(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    issued = [
        signer.issue(LinkPurpose.CLIENT_JOIN, appointment_id=APT, participant_id=PAR)
        for _ in range(50)
    ]
    assert len({claims.jti for _, claims in issued}) == 50
    assert len({token for token, _ in issued}) == 50
    assert all(16 <= len(claims.jti) <= 64 for _, claims in issued)


def test_verify_returns_the_issued_claims(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    clock.set(1_800_000_000.7)  # fractional time: tokens carry whole seconds
    token, issued = signer.issue(LinkPurpose.HOST_SIGN_IN, appointment_id=APT, participant_id=PAR)
    clock.advance(30)
    verified = signer.verify(LinkPurpose.HOST_SIGN_IN, token)
    assert verified == issued
    assert verified == LinkClaims(
        purpose=LinkPurpose.HOST_SIGN_IN,
        appointment_id=APT,
        participant_id=PAR,
        jti=issued.jti,
        issued_at=1_800_000_000.0,
        expires_at=1_800_000_000.0 + MAX_AGE[LinkPurpose.HOST_SIGN_IN],
    )
    assert is_valid_id(verified.appointment_id)


def test_verify_is_repeatable(clock: FrozenClock) -> None:
    # Single use is the store's business; the signature itself verifies every time.
    signer = make_signer(clock)
    token = issue(signer)
    assert signer.verify(LinkPurpose.CLIENT_JOIN, token) == signer.verify(
        LinkPurpose.CLIENT_JOIN, token
    )


# --- one answer outside --------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        LinkInvalid("x", purpose="client-join"),
        LinkExpired(purpose="client-join", expired_at=1.0),
        LinkNotYetValid(purpose="client-join", issued_at=1.0),
        LinkAlreadyUsed(purpose="client-join"),
    ],
)
def test_every_link_error_is_a_link_error_with_one_code(error: LinkError) -> None:
    assert isinstance(error, LinkError)
    assert isinstance(error, GatewayError)
    assert error.code == LinkError.code == "link_refused"
    assert error.purpose == "client-join"


def test_link_errors_carry_no_token(clock: FrozenClock) -> None:
    signer = make_signer(clock)
    token = issue(signer)
    clock.advance(MAX_AGE[LinkPurpose.CLIENT_JOIN] + 1)
    with pytest.raises(LinkExpired) as info:
        signer.verify(LinkPurpose.CLIENT_JOIN, token)
    text = str(info.value) + repr(info.value.args)
    assert token not in text
    assert token.split(".")[0] not in text
