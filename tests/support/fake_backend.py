"""A TCP listener standing in for a backend: it greets each connection with a given packet,
or hangs up at once (``payload=None``), and counts the connections it served."""

from __future__ import annotations

import socket
import threading

from chassis_mysql.framing import frame


class Greeter:
    """A listener on ``port`` (0: any) that greets each connection like a MySQL server (or
    with an ERR), or, with ``payload=None``, closes each one before any greeting."""

    def __init__(self, port: int, payload: bytes | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        self.payload = payload
        self.greeted = 0  # connections served (greeted or hung up on)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.payload is not None:
                    conn.sendall(frame(self.payload, 0))
                self.greeted += 1

    def close(self) -> None:
        self.sock.close()
