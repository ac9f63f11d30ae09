"""TOTP verification through the store: once per step, guessing throttled everywhere."""

from __future__ import annotations

import asyncio

import pyotp
import pytest

from gateway.clock import FrozenClock
from gateway.errors import (
    TotpInvalidFormat,
    TotpLockedOut,
    TotpNotEnrolled,
    TotpRejected,
    TotpReplayed,
)
from gateway.services import Services
from gateway.storage import Store
from tests.factories import make_settings

PARTICIPANT = "ptc_AAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture
def services(any_store: Store, clock: FrozenClock) -> Services:
    return Services.build(settings=make_settings(), store=any_store, clock=clock)


async def enrolled(services: Services) -> pyotp.TOTP:
    enrolment = await services.identity.enrol(PARTICIPANT, actor="test")
    return pyotp.TOTP(enrolment.secret)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_code_works_once(services: Services, clock: FrozenClock) -> None:
    totp = await enrolled(services)
    code = totp.at(clock.now())
    verified = await services.identity.verify(PARTICIPANT, code)
    assert verified.step == int(clock.now()) // 30
    with pytest.raises(TotpReplayed):
        await services.identity.verify(PARTICIPANT, code)


async def test_an_older_step_is_refused_after_a_newer_one(
    services: Services, clock: FrozenClock
) -> None:
    totp = await enrolled(services)
    previous = totp.at(clock.now() - 30)
    await services.identity.verify(PARTICIPANT, totp.at(clock.now()))
    with pytest.raises(TotpReplayed):
        await services.identity.verify(PARTICIPANT, previous)


async def test_one_step_back_is_accepted_two_are_not(
    services: Services, clock: FrozenClock
) -> None:
    totp = await enrolled(services)
    with pytest.raises(TotpRejected):
        await services.identity.verify(PARTICIPANT, totp.at(clock.now() - 60))
    assert await services.identity.verify(PARTICIPANT, totp.at(clock.now() - 30))


async def test_not_enrolled(services: Services) -> None:
    with pytest.raises(TotpNotEnrolled):
        await services.identity.verify(PARTICIPANT, "123456")


@pytest.mark.parametrize(
    "code",
    [
        "12345",
        "1234567",
        "\u0661\u0662\u0663\u0664\u0665\u0666",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "12a456",
        "",
        None,
        123456,
    ],
)
async def test_malformed_codes_are_refused_and_not_counted(
    services: Services, clock: FrozenClock, code: object
) -> None:
    totp = await enrolled(services)
    for _ in range(10):
        with pytest.raises(TotpInvalidFormat):
            await services.identity.verify(PARTICIPANT, code)
    assert await services.identity.verify(PARTICIPANT, totp.at(clock.now()))


async def test_lockout_after_the_limit_then_cool_down(
    services: Services, clock: FrozenClock
) -> None:
    totp = await enrolled(services)
    bad = wrong(totp.at(clock.now()))
    for failures in range(1, 5):
        with pytest.raises(TotpRejected) as info:
            await services.identity.verify(PARTICIPANT, bad)
        assert (info.value.failures, info.value.remaining) == (failures, 5 - failures)
    with pytest.raises(TotpLockedOut) as locked:
        await services.identity.verify(PARTICIPANT, bad)
    assert locked.value.just_locked
    # While locked, even the right code is not looked at.
    with pytest.raises(TotpLockedOut) as still:
        await services.identity.verify(PARTICIPANT, totp.at(clock.now()))
    assert not still.value.just_locked
    clock.advance(901)
    assert await services.identity.verify(PARTICIPANT, totp.at(clock.now()))


async def test_success_resets_the_failure_count(services: Services, clock: FrozenClock) -> None:
    totp = await enrolled(services)
    for _ in range(4):
        with pytest.raises(TotpRejected):
            await services.identity.verify(PARTICIPANT, wrong(totp.at(clock.now())))
    await services.identity.verify(PARTICIPANT, totp.at(clock.now()))
    clock.advance(30)
    with pytest.raises(TotpRejected) as info:
        await services.identity.verify(PARTICIPANT, wrong(totp.at(clock.now())))
    assert info.value.failures == 1


async def test_concurrent_guessing_is_capped_at_the_limit(
    services: Services, clock: FrozenClock
) -> None:
    """Forty guesses at once, as if from forty sockets: only five are ever checked."""
    totp = await enrolled(services)
    current = totp.at(clock.now())
    guesses = [f"{n:06d}" for n in range(40) if f"{n:06d}" != current]

    results = await asyncio.gather(
        *(services.identity.verify(PARTICIPANT, g) for g in guesses), return_exceptions=True
    )
    rejected = [r for r in results if isinstance(r, TotpRejected)]
    just_locked = [r for r in results if isinstance(r, TotpLockedOut) and r.just_locked]
    refused_unchecked = [r for r in results if isinstance(r, TotpLockedOut) and not r.just_locked]
    assert len(rejected) == 4
    assert len(just_locked) == 1
    assert len(refused_unchecked) == len(guesses) - 5
    with pytest.raises(TotpLockedOut):
        await services.identity.verify(PARTICIPANT, current)


async def test_the_audit_log_never_holds_codes(services: Services, clock: FrozenClock) -> None:
    totp = await enrolled(services)
    code = totp.at(clock.now())
    with pytest.raises(TotpRejected):
        await services.identity.verify(PARTICIPANT, wrong(code))
    await services.identity.verify(PARTICIPANT, code)
    entries = await services.store.read_audit()
    outcomes = [e.outcome for e in entries if e.action == "totp.verify"]
    assert outcomes == ["rejected", "ok"]
    for entry in entries:
        assert code not in repr(entry.to_dict())
        assert totp.secret not in repr(entry.to_dict())


async def test_first_time_enrolment_is_shown_once(services: Services, clock: FrozenClock) -> None:
    from gateway.errors import NotAllowed

    enrolment = await services.identity.enrol_first_time(PARTICIPANT)
    assert enrolment.otpauth_uri.startswith("otpauth://totp/")
    with pytest.raises(NotAllowed):
        await services.identity.enrol_first_time(PARTICIPANT)
    code = pyotp.TOTP(enrolment.secret).at(clock.now())
    assert await services.identity.verify(PARTICIPANT, code)
