"""API key rules: strict parsing first, then the format, hashing, scopes and revocation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.apikeys import (
    MAX_PRESENTED_LENGTH,
    Scope,
    clean_key_name,
    clean_scopes,
    hash_secret,
    new_api_key,
    parse_presented,
    require_scope,
    revoke,
    secret_matches,
)
from gateway.domain.ids import is_valid_id
from gateway.errors import InvalidInput, ScopeMissing, Unauthenticated

T0 = 1_800_000_000.0
KEY_ID = "key_AAAAAAAAAAAAAAAAAAAAAA"
SECRET = "B" * 43


@pytest.mark.parametrize(
    "presented",
    [
        None,
        42,
        b"qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + b"B" * 43,
        "",
        "qrk_",
        f"qrk_{KEY_ID}",
        f"qrk_{KEY_ID}_",
        f"qrk_{KEY_ID}_{SECRET[:-1]}",
        f"qrk_{KEY_ID}_{SECRET}B",
        f"qrk_{KEY_ID}_{SECRET[:-1]}=",
        f"qrk_{KEY_ID}_{SECRET[:-1]}\n",
        f" qrk_{KEY_ID}_{SECRET}",
        f"QRK_{KEY_ID}_{SECRET}",
        f"qrk_hst_AAAAAAAAAAAAAAAAAAAAAA_{SECRET}",
        f"qrk_key_AAAAAAAAAAAAAAAAAAAAA_{SECRET}B",
        f"qrk_{KEY_ID}_{SECRET[:-1]}\u0411",
        "x" * (MAX_PRESENTED_LENGTH + 1),
        "qrk_" * 1000,
    ],
)
def test_malformed_keys_are_unauthenticated(presented: object) -> None:
    with pytest.raises(Unauthenticated):
        parse_presented(presented)


@given(st.text(max_size=200))
def test_parsing_never_raises_anything_else(presented: str) -> None:
    try:
        key_id, secret = parse_presented(presented)
    except Unauthenticated:
        return
    assert is_valid_id(key_id)
    assert len(secret) == 43


def test_a_new_key_parses_back_to_its_id_and_matches_its_hash() -> None:
    key, plaintext = new_api_key(
        platform_id="plt_x", name="billing-sync", scopes=["hosts:write"], at=T0
    )
    assert plaintext.startswith(f"qrk_{key.id}_")
    assert len(plaintext) <= MAX_PRESENTED_LENGTH
    key_id, secret = parse_presented(plaintext)
    assert key_id == key.id
    assert key.secret_hash == hash_secret(secret)
    assert secret not in repr(key)
    assert secret not in str(key.to_dict())
    assert secret_matches(key, secret)
    assert not secret_matches(key, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not secret_matches(None, secret)


def test_secrets_carry_256_bits_and_never_repeat() -> None:
    secrets = {
        parse_presented(new_api_key(platform_id="p", name="n", scopes=["audit:read"], at=T0)[1])[1]
        for _ in range(200)
    }
    assert len(secrets) == 200
    assert all(len(s) == 43 for s in secrets)  # 32 bytes, URL-safe base64


@pytest.mark.parametrize(
    "name", ["", " ", "a b", "-lead", "x" * 65, "naïve", "a/b", "<b>", None, 3]
)
def test_bad_key_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInput):
        clean_key_name(name)


@pytest.mark.parametrize("scopes", [[], ["*"], ["hosts:admin"], ["HOSTS:WRITE"], [None], [1]])
def test_bad_scopes_are_refused(scopes: list[object]) -> None:
    with pytest.raises(InvalidInput):
        clean_scopes(scopes)


def test_scopes_are_a_set_of_known_values() -> None:
    assert clean_scopes(["audit:read", "audit:read", Scope.HOSTS_READ]) == {
        Scope.AUDIT_READ,
        Scope.HOSTS_READ,
    }


def test_no_scope_implies_another() -> None:
    key, _ = new_api_key(platform_id="p", name="n", scopes=["hosts:write"], at=T0)
    require_scope(key, Scope.HOSTS_WRITE)
    for scope in set(Scope) - {Scope.HOSTS_WRITE}:
        with pytest.raises(ScopeMissing) as caught:
            require_scope(key, scope)
        assert caught.value.scope == scope.value


def test_revoking_twice_keeps_the_first_time() -> None:
    key, _ = new_api_key(platform_id="p", name="n", scopes=["hosts:write"], at=T0)
    assert key.live
    once = revoke(key, at=T0 + 1)
    assert not once.live
    assert revoke(once, at=T0 + 2).revoked_at == T0 + 1
