"""The kernel's per-socket drop counts, read from /proc for the sockets asked about."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from gateway.media.udp_drops import kernel_drops, socket_inode


@pytest.fixture
def udp() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def bound(made: list[socket.socket], *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    made.append(sock)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_a_full_sockets_drops_are_counted_and_no_one_elses(udp: list[socket.socket]) -> None:
    full = bound(udp, receive_buffer=4096)
    other = bound(udp, receive_buffer=4096)
    sender = bound(udp)
    full_inode, other_inode = socket_inode(full), socket_inode(other)
    assert full_inode is not None
    assert other_inode is not None
    assert kernel_drops({full_inode, other_inode}) == 0

    # Nobody reads: past its small buffer, the kernel drops what arrives.
    for _ in range(200):
        sender.sendto(b"\x80" * 1000, full.getsockname())
    dropped = kernel_drops({full_inode})
    assert 0 < dropped < 200
    assert kernel_drops([full_inode, other_inode]) == dropped
    assert kernel_drops({other_inode}) == 0
    assert kernel_drops(()) == 0

    # Reading what was kept drops nothing more; a closed socket has no row left.
    full.setblocking(False)
    kept = 0
    while True:
        try:
            full.recv(2048)
        except BlockingIOError:
            break
        kept += 1
    assert kept + dropped == 200
    assert kernel_drops({full_inode}) == dropped
    full.close()
    assert socket_inode(full) is None
    assert kernel_drops({full_inode}) == 0
