"""
A TCP proxy on loopback for the tests: it relays to ``target_port`` until
``hang()``; from then on it still accepts connections but relays nothing,
either way, on new or open ones, as a hung server behind a load balancer.
"""

from __future__ import annotations

import socket
import threading

from tests.s3server import free_port


class HangingProxy:
    """``HangingProxy(target_port).start()``; ``endpoint`` is its URL; ``hang()``; ``stop()``."""

    def __init__(self, target_port: int | None = None) -> None:
        self.target_port = target_port
        self.hung = threading.Event()
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HangingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def hang(self) -> None:
        self.hung.set()

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._keep(client)
            if self.hung.is_set() or self.target_port is None:
                continue  # accepted, never answered
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._keep(server)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                if not self.hung.is_set():
                    try:
                        sink.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if self.hung.is_set():
                continue  # read and dropped: the other side waits for ever
            try:
                sink.sendall(data)
            except OSError:
                return
