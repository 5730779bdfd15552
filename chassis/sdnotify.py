"""systemd's readiness protocol (sd_notify(3)): one datagram to ``$NOTIFY_SOCKET``.

Only the main process (the angel when there is one) talks to systemd: with
``Type=notify`` systemd's default ``NotifyAccess=main`` drops messages from any other
pid. Tests use the same socket to learn when a chassis is ready.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends ``READY=1``/``STOPPING=1``; does nothing when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        address = self.address
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(fields).encode())
        except OSError:
            pass  # systemd gone or socket not for us: nothing useful to do about it

    def ready(self, status: str = "") -> None:
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            fields.append(f"STATUS={status}")
        self.send(*fields)

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")
