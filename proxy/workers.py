"""`orchgate serve --workers N`: uvicorn's supervisor, with a listening socket of its own for
each worker.

With one socket shared by every worker, the worker that wakes to a burst of new connections
accepts all it finds, and a client with a few long-lived (keep-alive) connections can have them
all on one worker while the others idle (docs/performance.md, scaling notes). Here each worker
listens on a socket of its own bound to the same port with `SO_REUSEPORT`, and the kernel
spreads new connections over the listening sockets by their addresses.

A socket lives exactly as long as its worker: the supervisor binds it, hands it to the worker
it starts and closes its own copy at once. A worker that dies takes its socket with it, so the
kernel stops sending it connections (a socket still open in the supervisor after its worker
died would take its share of new connections and never answer them); on SIGTERM each worker
closes its socket as it starts draining, and new connections are refused.
"""

from __future__ import annotations

import socket

from uvicorn import Config
from uvicorn.supervisors import Multiprocess


def bound(host: str, port: int, *, share: bool) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening (the worker listens on it).
    `share`: with SO_REUSEPORT, so every worker can bind one to the same port; without, a
    bind fails if anything listens there (the check at start)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor(Multiprocess):
    """uvicorn's `Multiprocess` (start, health checks, restarts, SIGHUP/TTIN/TTOU, SIGTERM)
    with one socket per worker. uvicorn reads `sockets` once for each worker it starts and
    starts it at once; each read binds a new socket, and the supervisor's copies are closed as
    soon as the call that started workers returns."""

    def __init__(self, config: Config) -> None:
        # Fails now, with uvicorn's message, if the address is taken — also by another
        # orchgate: sharing sockets bind only next to sockets that share.
        check = config.bind_socket()
        config.port = check.getsockname()[1]  # port 0: the one the system chose
        check.close()
        self._handed: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        sock = bound(self.config.host, self.config.port, share=True)
        self._handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, _: list[socket.socket]) -> None:
        pass  # uvicorn's constructor sets the shared list; there is none

    def _close_handed(self) -> None:
        # The worker has its own copy from the moment it was started (the spawn passes the
        # descriptor to the new process).
        while self._handed:
            self._handed.pop().close()

    # Every place uvicorn starts workers: the first start, a dead worker's replacement
    # (keep_subprocess_alive), SIGHUP's restart and SIGTTIN (both in handle_signals).
    def init_processes(self) -> None:
        try:
            super().init_processes()
        finally:
            self._close_handed()

    def keep_subprocess_alive(self) -> None:
        try:
            super().keep_subprocess_alive()
        finally:
            self._close_handed()

    def handle_signals(self) -> None:
        try:
            super().handle_signals()
        finally:
            self._close_handed()
