"""A byte relay in Python on uvloop that parses nothing: the floor for a Python proxy.

``scripts/bench --compare uvloop`` runs it beside chassis and HAProxy. HAProxy in TCP
mode is the physical reference for a relay in C; this is the same job done by the
cheapest Python program that can do it on the event loop chassis runs on (one
``asyncio.Protocol`` per direction, a backend connection per client, flow control, as
many worker processes as chassis has, sharing the port with ``SO_REUSEPORT``). Whatever
chassis spends beyond it is chassis' own work (the MySQL protocol, the script,
digests, metrics); what it spends itself is the price of Python and uvloop, which no
change to chassis' Python can take away::

    .venv/bin/python scripts/uvloop_relay.py --listen 127.0.0.1:4040 \\
        --backend 127.0.0.1:3306 [--workers 2]

SIGTERM or SIGINT stops the workers and the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import uvloop


class Leg(asyncio.Protocol):
    """One direction: writes what its transport reads to the other leg's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Leg | None = None
        self.early: list[bytes] = []  # the backend's greeting, before the client leg is paired

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class ClientLeg(Leg):
    """The client's side: connects to the backend before it reads anything."""

    backend: tuple[str, int] = ("127.0.0.1", 3306)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        assert self.transport is not None
        try:
            _, server = await asyncio.get_running_loop().create_connection(Leg, *self.backend)
        except OSError:
            self.transport.close()
            return
        server.peer, self.peer = self, server
        if self.transport.is_closing():
            assert server.transport is not None
            server.transport.close()
            return
        for data in server.early:
            self.transport.write(data)
        server.early = []
        self.transport.resume_reading()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def worker(listen: tuple[str, int]) -> None:
    """One process: accept on the shared port and relay until SIGTERM."""
    uvloop.install()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def on_signal() -> None:
            if not stop.done():
                stop.set_result(None)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(listen)
        server = await loop.create_server(ClientLeg, sock=sock, backlog=1024)
        await stop
        server.close()

    asyncio.run(serve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=address, required=True, help="HOST:PORT to accept on")
    parser.add_argument("--backend", type=address, required=True, help="HOST:PORT to relay to")
    parser.add_argument("--workers", type=int, default=2, help="worker processes [2]")
    args = parser.parse_args(argv)
    ClientLeg.backend = args.backend
    children = []
    for _ in range(max(1, args.workers)):
        pid = os.fork()
        if pid == 0:
            try:
                worker(args.listen)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
