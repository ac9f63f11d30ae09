"""Datagrams the kernel dropped on given UDP sockets (Linux).

When the event loop is busy, RTP waits in a socket's receive buffer; once the buffer is
full the kernel drops what comes next and counts it per socket, in the last column of
``/proc/self/net/udp`` and ``udp6`` (the ``drops`` field, next to the socket's inode).
That is where a media process that cannot keep up loses packets, so it is what
:meth:`gateway.media.rooms.MediaRooms.dropped_datagrams` counts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection

__all__ = ["kernel_drops", "socket_inode"]

log = logging.getLogger(__name__)

_TABLES = ("/proc/self/net/udp", "/proc/self/net/udp6")
# Columns of a row: sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
_INODE, _DROPS = 9, 12


def socket_inode(sock: socket.socket) -> int | None:
    """The socket's inode, the key of its row in the kernel's tables; None if closed."""
    try:
        return os.fstat(sock.fileno()).st_ino
    except (OSError, ValueError):
        return None


def kernel_drops(inodes: Collection[int]) -> int:
    """Datagrams dropped so far on the open sockets among ``inodes`` (0 where the kernel
    keeps no such table)."""
    if not inodes:
        return 0
    wanted = inodes if isinstance(inodes, (set, frozenset)) else set(inodes)
    total = 0
    for table in _TABLES:
        try:
            with open(table, encoding="ascii") as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) > _DROPS and int(fields[_INODE]) in wanted:
                        total += int(fields[_DROPS])
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.debug("%s unreadable: %s", table, exc)
    return total
