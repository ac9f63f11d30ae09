"""The coturn configuration: production hardening, the test variant, the CLI."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.settings import new_data_key, new_secret_key
from turn import coturn_config, denied_peer_ip_ranges

SECRETS = (new_secret_key(), new_secret_key())

# The ranges the relay must never reach, written out here independently of the module.
MUST_DENY = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64",
    "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
]  # fmt: skip

PRODUCTION_VARIANTS: list[dict[str, Any]] = [
    {},
    {"listening_ips": ["203.0.113.7"], "relay_ips": ["203.0.113.7"]},
    {"external_ips": ["198.51.100.9/10.0.0.9"], "allowed_peer_ips": ["10.0.0.5"]},
    {"tls_cert": "/etc/coturn/fullchain.pem", "tls_key": "/etc/coturn/privkey.pem"},
    {"allowed_peer_ips": ["127.0.0.1"]},
]


def lines(config: str) -> list[str]:
    return [line for line in config.splitlines() if line and not line.startswith("#")]


def values(config: str, option: str) -> list[str]:
    return [line.partition("=")[2] for line in lines(config) if line.partition("=")[0] == option]


def parsed_denied(config: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
    ranges = []
    for text in values(config, "denied-peer-ip"):
        first, _, last = text.partition("-")
        ranges.append((ipaddress.ip_address(first), ipaddress.ip_address(last)))
    return ranges


def is_denied(config: str, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(
        first.version == ip.version and int(first) <= int(ip) <= int(last)
        for first, last in parsed_denied(config)
    )


@pytest.mark.parametrize("options", PRODUCTION_VARIANTS)
def test_production_config_never_allows_loopback_peers(options: dict[str, Any]) -> None:
    config = coturn_config(SECRETS, realm="turn.example.org", **options)
    assert "allow-loopback-peers" not in config
    assert "127.0.0.1" not in values(config, "listening-ip")


def test_production_config_has_the_hardening() -> None:
    config = coturn_config(
        SECRETS,
        realm="turn.example.org",
        listening_ips=["203.0.113.7"],
        relay_ips=["203.0.113.8"],
        external_ips=["198.51.100.9/10.0.0.9"],
        allowed_peer_ips=["10.0.0.5", "10.0.1.0-10.0.1.255"],
        min_port=50000,
        max_port=50999,
    )
    present = set(lines(config))
    for flag in (
        "use-auth-secret",
        "fingerprint",
        "no-cli",
        "no-multicast-peers",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-tcp-relay",
        "no-software-attribute",
        "stale-nonce=600",
        "user-quota=12",
        "realm=turn.example.org",
        "min-port=50000",
        "max-port=50999",
    ):
        assert flag in present, flag
    assert "lt-cred-mech" not in config
    assert values(config, "static-auth-secret") == list(SECRETS)
    assert values(config, "listening-ip") == ["203.0.113.7"]
    assert values(config, "relay-ip") == ["203.0.113.8"]
    assert values(config, "external-ip") == ["198.51.100.9/10.0.0.9"]
    assert values(config, "allowed-peer-ip") == ["10.0.0.5", "10.0.1.0-10.0.1.255"]


@pytest.mark.parametrize("cidr", MUST_DENY)
def test_every_reserved_range_is_denied_end_to_end(cidr: str) -> None:
    config = coturn_config(SECRETS, realm="turn.example.org")
    network = ipaddress.ip_network(cidr)
    for address in {network[0], network[1] if network.num_addresses > 1 else network[0],
                    network[-1], network[network.num_addresses // 2]}:  # fmt: skip
        if address.is_unspecified:
            continue  # coturn refuses 0.0.0.0 and :: itself; see the next test
        assert is_denied(config, str(address)), address
    # And nothing just outside the range, when that is an ordinary unicast address.
    for outside in (int(network[0]) - 1, int(network[-1]) + 1):
        if 0 <= outside < 2**network.max_prefixlen:
            address = ipaddress.ip_address(outside)
            if address.is_global and not address.is_multicast:
                assert not is_denied(config, str(address)), address


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "169.254.169.254", "::1",
     "fd00:ec2::254", "10.1.2.3", "100.64.0.1", "172.31.255.255", "192.168.1.1",
     "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "fe80::1", "ff02::1",
     "64:ff9b::808:808", "2001:db8::1", "100::1", "198.18.0.1"],
)  # fmt: skip
def test_dangerous_peers_are_denied(address: str) -> None:
    assert is_denied(coturn_config(SECRETS, realm="turn.example.org"), address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "11.0.0.1", "172.32.0.1", "100.128.0.1", "192.169.0.1",
     "2606:4700:4700::1111", "2a00:1450:4001::1"],
)  # fmt: skip
def test_public_peers_are_not_denied(address: str) -> None:
    assert not is_denied(coturn_config(SECRETS, realm="turn.example.org"), address)


def test_no_denied_range_has_an_all_zero_bound() -> None:
    # coturn reads an all-zero bound as unbounded: "::-::" would deny every peer.
    for text in denied_peer_ip_ranges():
        first, dash, last = text.partition("-")
        assert dash
        low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
        assert low.version == high.version
        assert int(low) <= int(high)
        assert not low.is_unspecified
        assert not high.is_unspecified


def test_test_variant_allows_loopback_and_listens_on_loopback_only() -> None:
    config = coturn_config(SECRETS, realm="quietroom.test", listening_port=40000, for_tests=True)
    assert "allow-loopback-peers" in lines(config)
    assert values(config, "listening-ip") == ["127.0.0.1"]
    assert values(config, "relay-ip") == ["127.0.0.1"]
    assert values(config, "allowed-peer-ip") == ["127.0.0.1"]
    assert values(config, "listening-port") == ["40000"]
    assert "no-tls" in lines(config)
    # The rest of the hardening stays: only 127.0.0.1 is opened up.
    assert is_denied(config, "127.0.0.2")
    assert is_denied(config, "169.254.169.254")
    with pytest.raises(ConfigError):
        coturn_config(SECRETS, realm="quietroom.test", listening_ips=["0.0.0.0"], for_tests=True)


def test_tls_needs_a_certificate_and_a_key() -> None:
    config = coturn_config(
        SECRETS,
        realm="turn.example.org",
        tls_listening_port=443,
        tls_cert="/etc/coturn/fullchain.pem",
        tls_key="/etc/coturn/privkey.pem",
    )
    present = lines(config)
    assert "tls-listening-port=443" in present
    assert "cert=/etc/coturn/fullchain.pem" in present
    assert "pkey=/etc/coturn/privkey.pem" in present
    assert "no-tls" not in present
    assert "no-dtls" in present
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        coturn_config(SECRETS, realm="turn.example.org", tls_cert="/etc/coturn/fullchain.pem")


def test_bad_parameters_are_all_reported_and_cannot_inject_lines() -> None:
    with pytest.raises(ConfigError) as info:
        coturn_config(
            (SECRETS[0], "secret with spaces\nallow-loopback-peers"),
            realm="turn.example.org\nallow-loopback-peers",
            listening_ips=["203.0.113.7\nallow-loopback-peers"],
            relay_ips=["relay.example.org"],
            external_ips=["198.51.100.9/not-an-ip"],
            allowed_peer_ips=["0.0.0.0", "::", "10.0.0.9-10.0.0.1", "10.0.0.1-::1"],
            min_port=60000,
            max_port=50000,
            user_quota=0,
        )
    message = str(info.value)
    for expected in (
        "TURN secret #2",
        "realm",
        "listening IP",
        "relay IP",
        "external IP",
        "'0.0.0.0'",
        "'::'",
        "'10.0.0.9-10.0.0.1'",
        "'10.0.0.1-::1'",
        "relay ports 60000-50000",
        "user quota",
    ):
        assert expected in message
    assert "secret with spaces" not in message
    with pytest.raises(ConfigError, match="at least one TURN secret"):
        coturn_config((), realm="turn.example.org")


# --- quietroom turn config ---------------------------------------------------------------


@pytest.fixture
def turn_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUIETROOM_CONFIG", raising=False)
    monkeypatch.setenv("QUIETROOM_SECRET_KEYS", new_secret_key())
    monkeypatch.setenv("QUIETROOM_DATA_KEYS", new_data_key())
    monkeypatch.setenv("QUIETROOM_TURN_SECRETS", ",".join(SECRETS))
    monkeypatch.setenv(
        "QUIETROOM_TURN_URLS",
        "stun:stun.example.org,turn:turn.example.org:3478,turns:turn.example.org:443",
    )


@pytest.mark.usefixtures("turn_env")
def test_cli_prints_the_production_config(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["turn", "config", "--listen-ip", "203.0.113.7", "--relay-ip", "203.0.113.7"]
    argv += ["--external-ip", "198.51.100.9", "--allow-peer", "10.0.0.5", "10.0.0.6"]
    argv += ["--min-port", "50000", "--max-port", "50100", "--tls-port", "443"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed == coturn_config(
        SECRETS,
        realm="turn.example.org",  # the first TURN URL's host
        tls_listening_port=443,
        listening_ips=["203.0.113.7"],
        relay_ips=["203.0.113.7"],
        external_ips=["198.51.100.9"],
        allowed_peer_ips=["10.0.0.5", "10.0.0.6"],
        min_port=50000,
        max_port=50100,
    )
    assert "allow-loopback-peers" not in printed


@pytest.mark.usefixtures("turn_env")
def test_cli_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["turn", "config", "--min-port", "50000"]) == 2
    assert "--min-port and --max-port together" in capsys.readouterr().err
    assert main(["turn", "config", "--allow-peer", "0.0.0.0", "--realm", "r.example"]) == 2
    error = capsys.readouterr().err
    assert "allowed peer '0.0.0.0'" in error
    for secret in SECRETS:
        assert secret not in error


def test_cli_needs_turn_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QUIETROOM_CONFIG", raising=False)
    monkeypatch.delenv("QUIETROOM_TURN_SECRETS", raising=False)
    monkeypatch.delenv("QUIETROOM_TURN_URLS", raising=False)
    monkeypatch.setenv("QUIETROOM_SECRET_KEYS", new_secret_key())
    monkeypatch.setenv("QUIETROOM_DATA_KEYS", new_data_key())
    assert main(["turn", "config", "--realm", "turn.example.org"]) == 2
    assert "QUIETROOM_TURN_SECRETS is empty" in capsys.readouterr().err
