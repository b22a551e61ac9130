"""What a parent that starts a server process hands it: a socket already listening, and a
pipe on which the process says "ready".

The local pipeline binds each service's port itself (port 0: the kernel picks a free one,
and no other process can take it before the service listens), then hands the socket down.
The service writes one line on the ready pipe once it serves; the parent waits on that
event rather than asking a port over and over, and a process that dies first closes the
pipe, which the parent sees at once. Started by hand or in a cluster, a service has
neither and binds its own port.
"""

from __future__ import annotations

import contextlib
import os
import socket

READY = b"ready\n"


def listening_socket(fd: int | None) -> socket.socket | None:
    """The listening socket behind `fd` (handed down by the parent), or None."""
    return None if fd is None else socket.socket(fileno=fd)


def announce_ready(fd: int | None) -> None:
    """Tell the parent, if one waits, that this process serves now."""
    if fd is not None:
        with contextlib.suppress(OSError):  # a parent that stopped waiting is no error of ours
            os.write(fd, READY)
        with contextlib.suppress(OSError):
            os.close(fd)


def listen_on_free_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket listening on a port the kernel chose: it is ours from this moment.

    SO_REUSEADDR, as servers set it (asyncio's included): the connections it accepts inherit
    it, so once they are closed, their lingering TIME_WAIT does not keep the port from
    being bound again."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen(512)
    return server
