"""Against a real coturn: the credentials it accepts and refuses, relaying, peer rules.

Everything stays on 127.0.0.1. Permissions towards other addresses are only asked for
(a ChannelBind), never used to send anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aioice import Candidate, Connection, TransportPolicy, stun
from aioice.turn import TurnClientUdpProtocol, TurnTransport, create_turn_endpoint

from gateway.clock import FrozenClock, SystemClock
from gateway.domain.ids import new_id
from tests.fixtures.servers import CoturnServer
from turn import TurnCredential, TurnCredentials, ice_servers, parse_ice_url

pytestmark = pytest.mark.integration

WAIT = 5.0
#: An allocation is two transactions (401 challenge, then the signed request); on a busy
#: CI machine aioice's retransmissions can need more than WAIT.
ALLOCATE_WAIT = 15.0
LOOPBACK = "127.0.0.1"


class Endpoint(asyncio.DatagramProtocol):
    """A datagram endpoint that queues what it receives and notices when it closes."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.closed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def credential(
    server: CoturnServer, *, secret: int = 0, expires_in: float = 3600
) -> TurnCredential:
    """A credential from the gateway's own issuer, signed with one of the server's secrets."""
    ttl = 3600
    clock = FrozenClock(time.time() - ttl + expires_in)
    return TurnCredentials([server.secrets[secret]], clock=clock, ttl=ttl).issue(new_id("ptc"))


@contextlib.asynccontextmanager
async def relayed(
    server: CoturnServer, cred: TurnCredential
) -> AsyncIterator[tuple[TurnTransport, Endpoint]]:
    """A TURN allocation (aioice's client), deleted on the way out."""
    try:
        transport, endpoint = await asyncio.wait_for(
            create_turn_endpoint(Endpoint, server.address, cred.username, cred.password),
            ALLOCATE_WAIT,
        )
    except TimeoutError:
        raise AssertionError(f"no TURN allocation; coturn's log:\n{server.log_tail()}") from None
    try:
        yield transport, endpoint
    finally:
        transport.close()
        await asyncio.wait_for(endpoint.closed.wait(), WAIT)


@contextlib.asynccontextmanager
async def turn_client(
    server: CoturnServer, cred: TurnCredential
) -> AsyncIterator[TurnClientUdpProtocol]:
    """aioice's TURN client protocol itself, to ask for permissions without sending."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: TurnClientUdpProtocol(
            server.address,
            username=cred.username,
            password=cred.password,
            lifetime=600,
            channel_refresh_time=500,
        ),
        remote_addr=server.address,
    )
    try:
        await asyncio.wait_for(protocol.connect(), WAIT)
        yield protocol
    finally:
        if not transport.is_closing():
            await asyncio.wait_for(protocol.delete(), WAIT)
        transport.close()


@contextlib.asynccontextmanager
async def udp_peer() -> AsyncIterator[tuple[asyncio.DatagramTransport, Endpoint]]:
    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(Endpoint, local_addr=(LOOPBACK, 0))
    try:
        yield transport, endpoint
    finally:
        transport.close()


async def refused_with(server: CoturnServer, cred: TurnCredential) -> int | None:
    with pytest.raises(stun.TransactionFailed) as info:
        await asyncio.wait_for(
            create_turn_endpoint(Endpoint, server.address, cred.username, cred.password), WAIT
        )
    return info.value.response.error_code


async def test_valid_credentials_get_a_relay_allocation(coturn_server: CoturnServer) -> None:
    async with relayed(coturn_server, credential(coturn_server)) as (transport, _):
        relay_host, relay_port = transport.get_extra_info("sockname")
        assert relay_host == LOOPBACK
        assert relay_port > 0


async def test_credentials_from_a_still_listed_older_secret_are_accepted(
    coturn_server: CoturnServer,
) -> None:
    # The fixture's coturn has two static-auth-secret lines, newest first.
    async with relayed(coturn_server, credential(coturn_server, secret=1)) as (transport, _):
        assert transport.get_extra_info("sockname") is not None


async def test_a_wrong_password_is_refused(coturn_server: CoturnServer) -> None:
    genuine = credential(coturn_server)
    forged = TurnCredential(
        username=genuine.username,
        password=TurnCredentials(["not-the-servers-secret-" * 2], clock=SystemClock())
        .issue(genuine.username.partition(":")[2])
        .password,
        expires_at=genuine.expires_at,
    )
    assert await refused_with(coturn_server, forged) == 401


async def test_an_altered_username_is_refused(coturn_server: CoturnServer) -> None:
    genuine = credential(coturn_server)
    later = f"{genuine.expires_at + 86400}:{genuine.username.partition(':')[2]}"
    altered = TurnCredential(username=later, password=genuine.password, expires_at=0)
    assert await refused_with(coturn_server, altered) == 401


async def test_an_expired_username_is_refused(coturn_server: CoturnServer) -> None:
    assert await refused_with(coturn_server, credential(coturn_server, expires_in=-5)) == 401


async def test_coturn_never_logs_the_password_or_the_secret(coturn_server: CoturnServer) -> None:
    cred = credential(coturn_server)
    async with relayed(coturn_server, cred):
        pass
    await refused_with(coturn_server, credential(coturn_server, expires_in=-5))
    log = coturn_server.log_text()
    assert log  # coturn does log to its file
    assert cred.password not in log
    for secret in coturn_server.secrets:
        assert secret not in log


async def test_a_datagram_crosses_the_relay_both_ways(coturn_server: CoturnServer) -> None:
    async with (
        relayed(coturn_server, credential(coturn_server)) as (relay, client),
        udp_peer() as (peer_transport, peer),
    ):
        peer_address = peer_transport.get_extra_info("sockname")
        relay.sendto(b"from the client", peer_address)
        data, seen_from = await asyncio.wait_for(peer.received.get(), WAIT)
        assert data == b"from the client"
        # The peer only ever sees the relayed address, not the client's own.
        assert seen_from == relay.get_extra_info("sockname")
        peer_transport.sendto(b"from the peer", seen_from)
        data, seen_from = await asyncio.wait_for(client.received.get(), WAIT)
        assert (data, seen_from) == (b"from the peer", peer_address)


async def test_two_relay_only_ice_agents_connect_through_coturn(
    coturn_server: CoturnServer,
) -> None:
    """Two aioice agents with the browser's relay-only policy, fed by ice_servers()."""
    turn_url = f"turn:{LOOPBACK}:{coturn_server.port}?transport=udp"
    issuer = TurnCredentials(coturn_server.secrets, clock=SystemClock())
    agents = []
    for controlling in (True, False):
        config = ice_servers([turn_url], issuer, participant_id=new_id("ptc"), relay_only=True)
        assert config["ice_transport_policy"] == "relay"
        (server,) = config["ice_servers"]
        url = parse_ice_url(server["urls"][0])
        assert url.port is not None
        agents.append(
            Connection(
                ice_controlling=controlling,
                turn_server=(url.host, url.port),
                turn_username=server["username"],
                turn_password=server["credential"],
                use_ipv6=False,
                transport_policy=TransportPolicy.RELAY,
            )
        )
    first, second = agents
    try:
        await asyncio.wait_for(
            asyncio.gather(first.gather_candidates(), second.gather_candidates()), WAIT
        )
        for local, remote in ((first, second), (second, first)):
            candidates: list[Candidate] = remote.local_candidates
            assert [candidate.type for candidate in candidates] == ["relay"]
            assert candidates[0].host == LOOPBACK
            local.remote_username = remote.local_username
            local.remote_password = remote.local_password
            for candidate in candidates:
                await local.add_remote_candidate(candidate)
            await local.add_remote_candidate(None)
        await asyncio.wait_for(asyncio.gather(first.connect(), second.connect()), 2 * WAIT)
        await first.send(b"through two relays")
        assert await asyncio.wait_for(second.recv(), WAIT) == b"through two relays"
        await second.send(b"and back")
        assert await asyncio.wait_for(first.recv(), WAIT) == b"and back"
    finally:
        for agent in agents:
            await asyncio.wait_for(agent.close(), WAIT)


@pytest.mark.parametrize(
    "peer",
    ["127.0.0.2", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
     "0.0.0.0", "0.1.2.3", "198.18.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255"],
)  # fmt: skip
async def test_reserved_peers_are_refused_by_coturn(coturn_server: CoturnServer, peer: str) -> None:
    async with turn_client(coturn_server, credential(coturn_server)) as client:
        with pytest.raises(stun.TransactionFailed) as info:
            await asyncio.wait_for(client.channel_bind(0x4000, (peer, 9)), WAIT)
        assert info.value.response.error_code == 403


@pytest.mark.parametrize("peer", ["8.8.8.8", "93.184.215.14", "11.0.0.1", "172.32.0.1"])
async def test_public_peers_are_permitted_by_coturn(coturn_server: CoturnServer, peer: str) -> None:
    # Only the permission is asked for: nothing is sent to the address.
    async with turn_client(coturn_server, credential(coturn_server)) as client:
        await asyncio.wait_for(client.channel_bind(0x4000, (peer, 9)), WAIT)


async def test_an_allocation_outlives_its_credential(coturn_server: CoturnServer) -> None:
    """The TTL bounds when an allocation may start, not how long a session may last."""
    cred = credential(coturn_server, expires_in=1.5)
    async with (
        turn_client(coturn_server, cred) as client,
        udp_peer() as (peer_transport, peer),
    ):
        await asyncio.sleep(max(0.0, cred.expires_at + 1.2 - time.time()))
        assert await refused_with(coturn_server, cred) == 401  # no new allocation
        refresh = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
        refresh.attributes["LIFETIME"] = 600
        response, _ = await asyncio.wait_for(client.request_with_retry(refresh), WAIT)
        assert response.attributes["LIFETIME"] == 600
        await asyncio.wait_for(
            client.send_data(b"still here", peer_transport.get_extra_info("sockname")), WAIT
        )
        data, _ = await asyncio.wait_for(peer.received.get(), WAIT)
        assert data == b"still here"


# --- the production config, run by coturn ---------------------------------------------------


async def test_production_config_runs_and_refuses_loopback_peers(
    coturn_server_factory: Callable[..., CoturnServer],
) -> None:
    server = coturn_server_factory(production=True)
    assert "allow-loopback-peers" not in server.config
    log = server.log_text()
    assert "Bad configuration format" not in log
    assert "CONFIG ERROR" not in log
    async with turn_client(server, credential(server)) as client:
        assert client.relayed_address is not None
        for peer in ("127.0.0.1", "10.0.0.1", "169.254.169.254"):
            with pytest.raises(stun.TransactionFailed) as info:
                await asyncio.wait_for(client.channel_bind(0x4000, (peer, 9)), WAIT)
            assert info.value.response.error_code == 403
        await asyncio.wait_for(client.channel_bind(0x4001, ("8.8.8.8", 9)), WAIT)
    assert await refused_with(server, credential(server, expires_in=-5)) == 401
