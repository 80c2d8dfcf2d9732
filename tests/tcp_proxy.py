"""A TCP proxy on 127.0.0.1 in front of a real server (the suite's PostgreSQL or Redis), for the tests
of what a process does when the network between it and that server misbehaves."""
from __future__ import annotations

import socket
import threading
from typing import Callable

Chunk = Callable[[bytes], bool]  # True: close the connection instead of passing the chunk on


def _passes(_data: bytes) -> bool:
    return False


class TcpProxy:
    """Each accepted connection is piped both ways to a new connection ``connect()`` opens.
    ``refuse``: the first so many connections are hung up on at once (a server not up yet).
    ``watch()``: per connection, two predicates (client → server, server → client) seeing each chunk;
    one that answers True ends the connection there, dropping the chunk (an answer lost, a reset)."""

    def __init__(self, connect: Callable[[], socket.socket], refuse: int = 0,
                 watch: Callable[[], tuple[Chunk, Chunk]] = lambda: (_passes, _passes)):
        self.connect, self.refuse, self.watch = connect, refuse, watch
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.refuse > 0:
                self.refuse -= 1
                client.close()
                continue
            server = self.connect()
            up, down = self.watch()
            threading.Thread(target=self._pump, args=(client, server, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, down), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, stop: Chunk) -> None:
        try:
            while (data := source.recv(65536)) and not stop(data):
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
