"""Webhook rules without I/O: signatures, bodies, the retry schedule, endpoint URLs.

Bad cases first: a signature must fail for a changed body, another secret, an old or
future timestamp and any malformed header, and a body must never carry anything but ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from gateway.domain.ids import new_id
from gateway.domain.webhooks import (
    DEFAULT_RETRY_DELAYS,
    DEFAULT_TOLERANCE,
    MAX_SIGNATURE_HEADER,
    MAX_WEBHOOK_URL,
    RetrySchedule,
    WebhookType,
    build_body,
    clean_webhook_url,
    is_public_address,
    new_delivery,
    new_webhook_secret,
    sign,
    signature,
    verify,
)
from gateway.errors import (
    GatewayError,
    WebhookError,
    WebhookSignatureExpired,
    WebhookSignatureInvalid,
    WebhookSignatureNotYetValid,
)
from gateway.services.webhooks import PublicAddressResolver
from tests.factories import CLIENT_NAME

NOW = 1_800_000_000
SECRET = "whsec_" + "k" * 43
OTHER = "whsec_" + "o" * 43
BODY = b'{"id":"whd_AAAAAAAAAAAAAAAAAAAAAA","type":"participant.admitted"}'


def header_for(body: bytes = BODY, *, at: int = NOW, secret: str = SECRET) -> str:
    return sign(secret, body, timestamp=at)


# --- signatures: refusals ----------------------------------------------------------------------


def test_a_changed_body_is_refused() -> None:
    header = header_for()
    for changed in (BODY + b" ", BODY[:-1], BODY.replace(b"admitted", b"denied"), b""):
        with pytest.raises(WebhookSignatureInvalid) as caught:
            verify(SECRET, header, changed, NOW)
        assert type(caught.value) is WebhookSignatureInvalid


def test_another_secret_is_refused() -> None:
    with pytest.raises(WebhookSignatureInvalid):
        verify(OTHER, header_for(), BODY, NOW)
    with pytest.raises(WebhookSignatureInvalid):
        verify([OTHER, "whsec_third"], header_for(), BODY, NOW)


def test_a_stale_signature_is_refused_with_its_time() -> None:
    at = NOW - DEFAULT_TOLERANCE - 1
    with pytest.raises(WebhookSignatureExpired) as caught:
        verify(SECRET, header_for(at=at), BODY, NOW)
    assert caught.value.signed_at == at
    assert caught.value.tolerance == DEFAULT_TOLERANCE
    with pytest.raises(WebhookSignatureExpired):
        verify(SECRET, header_for(at=NOW - 61), BODY, NOW, tolerance=60)


def test_a_future_signature_is_refused_with_its_time() -> None:
    at = NOW + DEFAULT_TOLERANCE + 1
    with pytest.raises(WebhookSignatureNotYetValid) as caught:
        verify(SECRET, header_for(at=at), BODY, NOW)
    assert caught.value.signed_at == at


def test_a_replayed_signature_with_a_fresh_timestamp_is_refused() -> None:
    old = header_for(at=NOW - 3600)
    v1 = old.split(",")[1]
    with pytest.raises(WebhookSignatureInvalid) as caught:
        verify(SECRET, f"t={NOW},{v1}", BODY, NOW)
    assert type(caught.value) is WebhookSignatureInvalid


def test_timestamp_errors_need_a_matching_signature_first() -> None:
    # A forged header with an old time is "invalid", not "expired": no oracle.
    with pytest.raises(WebhookSignatureInvalid) as caught:
        verify(SECRET, header_for(at=NOW - 10_000, secret=OTHER), BODY, NOW)
    assert type(caught.value) is WebhookSignatureInvalid


MALFORMED = [
    "",
    "t=",
    "v1=",
    f"t={NOW}",
    "v1=" + "a" * 64,
    f"t={NOW},v1=",
    f"t={NOW},v1={'a' * 63}",
    f"t={NOW},v1={'a' * 65}",
    f"t={NOW},v1={'A' * 64}",
    f"t={NOW},v1={'g' * 64}",
    f"t=-{NOW},v1={'a' * 64}",
    f"t=+{NOW},v1={'a' * 64}",
    f"t={NOW}.5,v1={'a' * 64}",
    f"t=1{'0' * 12},v1={'a' * 64}",
    f"t={NOW},t={NOW},v1={'a' * 64}",
    f"t={NOW}, v1={'a' * 64}",
    f" t={NOW},v1={'a' * 64}",
    f"t={NOW},v1={'a' * 64},",
    f"t={NOW},,v1={'a' * 64}",
    f"t={NOW};v1={'a' * 64}",
    f"T={NOW},v1={'a' * 64}",
    f"t={NOW},V1={'a' * 64}",
    f"t={NOW},v0={'a' * 64}",
    f"t={NOW},v1={'a' * 64},x=1",
    f"t={NOW},v1={'a' * 64}=",
    f"t={NOW},v1",
    f"t=١٢٣,v1={'a' * 64}",
    "t=" + str(NOW) + ",v1=" + ",v1=".join(["a" * 64] * 9),
]


@pytest.mark.parametrize("header", MALFORMED)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        verify(SECRET, header, BODY, NOW)


@pytest.mark.parametrize("header", [None, 12, b"t=1,v1=00", ["t=1"]])
def test_headers_that_are_not_text_are_refused(header: object) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        verify(SECRET, header, BODY, NOW)


def test_an_overlong_header_is_refused_before_parsing() -> None:
    header = header_for() + ",v1=" + "a" * (MAX_SIGNATURE_HEADER + 1)
    with pytest.raises(WebhookSignatureInvalid):
        verify(SECRET, header, BODY, NOW)


def test_no_secret_at_all_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="secret"):
        verify([], header_for(), BODY, NOW)
    with pytest.raises(ValueError, match="secret"):
        verify("", header_for(), BODY, NOW)
    with pytest.raises(ValueError, match="secret"):
        sign([], BODY, timestamp=NOW)


def test_signature_errors_are_gateway_errors() -> None:
    assert issubclass(WebhookSignatureExpired, WebhookSignatureInvalid)
    assert issubclass(WebhookSignatureNotYetValid, WebhookSignatureInvalid)
    assert issubclass(WebhookSignatureInvalid, WebhookError)
    assert issubclass(WebhookError, GatewayError)


# --- signatures: acceptance -------------------------------------------------------------------


def test_round_trip_returns_the_timestamp() -> None:
    assert verify(SECRET, header_for(), BODY, NOW) == NOW
    assert verify(SECRET, header_for(), BODY, float(NOW) + 0.9) == NOW


def test_the_tolerance_edges_are_accepted() -> None:
    assert verify(SECRET, header_for(at=NOW - DEFAULT_TOLERANCE), BODY, NOW)
    assert verify(SECRET, header_for(at=NOW + DEFAULT_TOLERANCE), BODY, NOW)


def test_the_scheme_is_the_documented_hmac() -> None:
    """What a platform implements by hand from the README must agree with sign()."""
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, BODY, timestamp=NOW) == expected
    assert header_for() == f"t={NOW},v1={expected}"


def test_rotation_signs_with_every_secret_and_any_one_verifies() -> None:
    header = sign([OTHER, SECRET], BODY, timestamp=NOW)
    assert header.count("v1=") == 2
    assert verify(SECRET, header, BODY, NOW) == NOW
    assert verify(OTHER, header, BODY, NOW) == NOW
    # The receiver may hold several secrets too, old and new.
    assert verify(["whsec_unrelated", SECRET], header_for(), BODY, NOW) == NOW
    with pytest.raises(WebhookSignatureInvalid):
        verify("whsec_unrelated", header, BODY, NOW)


def test_signatures_are_not_reordered_or_mixed_between_bodies() -> None:
    other_body = BODY.replace(b"admitted", b"denied")
    mixed = f"t={NOW},v1={signature(SECRET, other_body, timestamp=NOW)}"
    with pytest.raises(WebhookSignatureInvalid):
        verify(SECRET, mixed, BODY, NOW)


def test_new_secrets_are_random_and_prefixed() -> None:
    made = {new_webhook_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(s.startswith("whsec_") and len(s) >= 48 for s in made)


# --- bodies ---------------------------------------------------------------------------------


def test_the_body_carries_ids_and_a_time_only() -> None:
    ids = {
        "delivery_id": new_id("whd"),
        "appointment_id": new_id("apt"),
        "room_id": new_id("rm"),
        "participant_id": new_id("ptc"),
    }
    body = build_body(kind=WebhookType.PARTICIPANT_ADMITTED, created_at=NOW + 0.25, **ids)
    assert json.loads(body) == {
        "id": ids["delivery_id"],
        "type": "participant.admitted",
        "created_at": NOW + 0.25,
        "data": {
            "appointment_id": ids["appointment_id"],
            "room_id": ids["room_id"],
            "participant_id": ids["participant_id"],
        },
    }
    assert body.isascii()


def test_a_session_body_names_no_participant() -> None:
    body = build_body(
        delivery_id=new_id("whd"),
        kind=WebhookType.SESSION_ENDED,
        created_at=NOW,
        appointment_id=new_id("apt"),
        room_id=new_id("rm"),
    )
    assert set(json.loads(body)["data"]) == {"appointment_id", "room_id"}


@pytest.mark.parametrize("field", ["delivery_id", "appointment_id", "room_id", "participant_id"])
@pytest.mark.parametrize("value", [CLIENT_NAME, "", "apt_short", "x" * 500, "apt_" + "é" * 22])
def test_anything_but_an_id_is_refused_in_a_body(field: str, value: str) -> None:
    ids = {
        "delivery_id": new_id("whd"),
        "appointment_id": new_id("apt"),
        "room_id": new_id("rm"),
        "participant_id": new_id("ptc"),
    }
    ids[field] = value
    with pytest.raises(ValueError, match=field):
        build_body(kind=WebhookType.PARTICIPANT_LEFT, created_at=NOW, **ids)


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="WebhookType"):
        build_body(
            delivery_id=new_id("whd"),
            kind="participant.knocking",  # type: ignore[arg-type]
            created_at=NOW,
            appointment_id=new_id("apt"),
            room_id=new_id("rm"),
        )


def test_a_new_delivery_is_due_now_untried_and_its_body_names_it() -> None:
    delivery = new_delivery(
        platform_id=new_id("plt"),
        kind=WebhookType.PARTICIPANT_WAITING,
        at=NOW - 1.5,
        appointment_id=new_id("apt"),
        room_id=new_id("rm"),
        participant_id=new_id("ptc"),
        now=NOW,
    )
    assert delivery.due_at == NOW
    assert delivery.attempts == 0
    body = json.loads(delivery.body)
    assert body["id"] == delivery.id
    assert body["created_at"] == NOW - 1.5
    assert body["type"] == delivery.kind.value


# --- retry schedule -------------------------------------------------------------------------


def test_the_default_schedule_backs_off_then_gives_up() -> None:
    schedule = RetrySchedule(jitter=0.0)
    assert schedule.max_attempts == 8
    delays = [schedule.delay_after(n, rand=0.5) for n in range(1, 9)]
    assert delays == [10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, None]
    assert list(DEFAULT_RETRY_DELAYS) == delays[:-1]
    assert schedule.delay_after(9, rand=0.5) is None
    assert schedule.gives_up_after(8)
    assert not schedule.gives_up_after(7)


def test_jitter_spreads_each_delay_within_its_bounds() -> None:
    schedule = RetrySchedule()
    for attempt, base in enumerate(DEFAULT_RETRY_DELAYS, start=1):
        low = schedule.delay_after(attempt, rand=0.0)
        mid = schedule.delay_after(attempt, rand=0.5)
        high = schedule.delay_after(attempt, rand=1.0)
        assert low == pytest.approx(base * 0.8)
        assert mid == pytest.approx(base)
        assert high == pytest.approx(base * 1.2)
    # Jittered, the schedule still grows: each lowest delay beats the one before's highest.
    for attempt in range(2, len(DEFAULT_RETRY_DELAYS) + 1):
        earlier = schedule.delay_after(attempt - 1, rand=1.0)
        assert earlier is not None
        assert schedule.delay_after(attempt, rand=0.0) > earlier  # type: ignore[operator]


def test_a_schedule_is_a_pure_function_of_its_inputs() -> None:
    schedule = RetrySchedule()
    assert schedule.delay_after(3, rand=0.3) == schedule.delay_after(3, rand=0.3)


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        RetrySchedule().delay_after(attempt, rand=0.5)


@pytest.mark.parametrize("rand", [-0.01, 1.01, float("nan")])
def test_rand_must_be_a_fraction(rand: float) -> None:
    with pytest.raises(ValueError, match="rand"):
        RetrySchedule().delay_after(1, rand=rand)


def test_a_bad_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="delays"):
        RetrySchedule(delays=(10.0, -1.0))
    with pytest.raises(ValueError, match="jitter"):
        RetrySchedule(jitter=1.0)
    with pytest.raises(ValueError, match="jitter"):
        RetrySchedule(jitter=-0.1)


def test_a_schedule_without_delays_tries_once() -> None:
    schedule = RetrySchedule(delays=())
    assert schedule.max_attempts == 1
    assert schedule.delay_after(1, rand=0.5) is None


# --- endpoint URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://platform.example/hooks/quietroom",
        "https://platform.example:8443/hooks?tenant=7",
        "HTTPS://platform.example/",
        "https://[2606:4700:4700::1111]/hook",
        "https://93.184.215.14/hook",
    ],
)
def test_acceptable_webhook_urls(url: str) -> None:
    assert clean_webhook_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://127.9.9.9/hook",
        "http://localhost:9000/hook",
        "http://[::1]:9000/hook",
    ],
)
def test_loopback_webhooks_only_where_private_addresses_are_allowed(url: str) -> None:
    assert clean_webhook_url(url, allow_private=True) == url
    with pytest.raises(ValueError, match="public address"):
        clean_webhook_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.8/hook",
        "https://192.168.1.1/hook",
        "https://172.16.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "https://[2001:db8::1]/hook",
        "https://LOCALHOST/hook",
    ],
)
def test_webhooks_to_private_or_reserved_addresses_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="public address"):
        clean_webhook_url(url)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("fe80::1%eth0", False),
        ("224.0.0.1", False),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_the_delivery_resolver_keeps_only_public_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = PublicAddressResolver()
    answers: list[dict[str, object]] = []

    async def resolve(host: str, port: int = 0, family: object = None) -> list[dict[str, object]]:
        return [dict(a) for a in answers]

    monkeypatch.setattr(resolver._inner, "resolve", resolve)
    answers[:] = [
        {"hostname": "hooks.test", "host": "127.0.0.1", "port": 443},
        {"hostname": "hooks.test", "host": "93.184.215.14", "port": 443},
    ]
    kept = await resolver.resolve("hooks.test", 443)
    assert [a["host"] for a in kept] == ["93.184.215.14"]
    # A name that resolves only inward (DNS rebinding, metadata) fails like a dead host.
    answers[:] = [{"hostname": "hooks.test", "host": "169.254.169.254", "port": 443}]
    with pytest.raises(OSError, match="no public address"):
        await resolver.resolve("hooks.test", 443)
    await resolver.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://platform.example/hook",
        "ftp://platform.example/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "platform.example/hook",
        "https://",
        "https:///hook",
        "https://user:pass@platform.example/hook",
        "https://user@platform.example/hook",
        "https://platform.example@evil.example/hook",
        "https://platform.example/hook#frag",
        "https://platform.example/hook#",
        "https://platform.example:99999/hook",
        "https://platform.example:port/hook",
        "https://platform.example/ho ok",
        "https://platform.example/hook\n",
        "https://platform.example/\x00",
        "https://plätform.example/hook",
        "",
        "https://platform.example/" + "a" * MAX_WEBHOOK_URL,
        "http://127.0.0.1.evil.example/hook",
        "http://localhost.evil.example/hook",
    ],
)
def test_refused_webhook_urls(url: str) -> None:
    with pytest.raises(ValueError, match="webhook URL"):
        clean_webhook_url(url)


@pytest.mark.parametrize("url", [None, 42, b"https://platform.example/"])
def test_a_webhook_url_is_text(url: object) -> None:
    with pytest.raises(ValueError, match="webhook URL"):
        clean_webhook_url(url)


def test_development_allows_plain_http_but_never_credentials() -> None:
    assert clean_webhook_url("http://platform.test/hook", allow_http=True)
    with pytest.raises(ValueError, match="webhook URL"):
        clean_webhook_url("http://u:p@platform.test/hook", allow_http=True)
    with pytest.raises(ValueError, match="webhook URL"):
        clean_webhook_url("gopher://platform.test/hook", allow_http=True)
