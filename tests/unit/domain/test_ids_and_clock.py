"""Opaque ids and the clocks domain code is given."""

from __future__ import annotations

import time

import pytest

from gateway.clock import Clock, FrozenClock, SystemClock
from gateway.domain.ids import ID_PATTERN, is_valid_id, new_id

# --- ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b"apt_AAAAAAAAAAAAAAAAAAAAAA", id="bytes"),
        pytest.param("", id="empty"),
        pytest.param("apt_", id="prefix-only"),
        pytest.param("apt_AAAAAAAAAAAAAAAAAAAAA", id="21-chars"),
        pytest.param("apt_AAAAAAAAAAAAAAAAAAAAAAA", id="23-chars"),
        pytest.param("a_AAAAAAAAAAAAAAAAAAAAAA", id="1-letter-prefix"),
        pytest.param("appts_AAAAAAAAAAAAAAAAAAAAAA", id="5-letter-prefix"),
        pytest.param("APT_AAAAAAAAAAAAAAAAAAAAAA", id="upper-prefix"),
        pytest.param("ap1_AAAAAAAAAAAAAAAAAAAAAA", id="digit-prefix"),
        pytest.param("aptAAAAAAAAAAAAAAAAAAAAAAA", id="no-underscore"),
        pytest.param("apt_AAAAAAAAAAAAAAAAAAAAAA\n", id="trailing-newline"),
        pytest.param(" apt_AAAAAAAAAAAAAAAAAAAAAA", id="leading-space"),
        pytest.param("apt_AAAAAAAAAA AAAAAAAAAAA", id="inner-space"),
        pytest.param("apt_AAAAAAAAAAAAAAAAAAAAA=", id="padding"),
        pytest.param("apt_AAAAAAAAAAAAAAAAAAAAA/", id="slash"),
        pytest.param("apt_AAAAAAAAAAAAAAAAAAAAAÄ", id="non-ascii"),
        pytest.param("Jane Doe", id="name"),
        pytest.param("jane@example.com", id="email"),
    ],
)
def test_is_valid_id_refuses(value: object) -> None:
    assert is_valid_id(value) is False


@pytest.mark.parametrize("prefix", ["ap", "apt", "room", "par", "host"])
def test_new_id_is_valid(prefix: str) -> None:
    value = new_id(prefix)
    assert is_valid_id(value) is True
    assert value.startswith(prefix + "_")
    assert ID_PATTERN.fullmatch(value)


def test_valid_ids_with_url_safe_symbols() -> None:
    assert is_valid_id("apt_-_AAAAAAAAAAAAAAAAAAAA")


def test_new_ids_differ() -> None:
    assert len({new_id("apt") for _ in range(1000)}) == 1000


# --- clocks ---------------------------------------------------------------------------------------


def test_frozen_clock_stands_still_until_told(clock: FrozenClock) -> None:
    assert clock.now() == 1_800_000_000.0
    assert clock.now() == clock.now()
    clock.advance(30.5)
    assert clock.now() == 1_800_000_030.5
    clock.advance(-60)
    assert clock.now() == 1_799_999_970.5
    clock.set(5.0)
    assert clock.now() == 5.0


def test_frozen_clock_start_is_configurable() -> None:
    assert FrozenClock(start=12.0).now() == 12.0


def test_system_clock_tells_the_real_time() -> None:
    before = time.time()
    now = SystemClock().now()
    after = time.time()
    assert before <= now <= after


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FrozenClock()]
    assert all(isinstance(c.now(), float) for c in clocks)


@pytest.mark.parametrize("prefix", ["x", "toolong", "AB", "a1", "é", ""])
def test_new_id_refuses_prefixes_it_would_not_accept_back(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefixes"):
        new_id(prefix)
