"""Requests between the worker processes of one chassis (``--event-threads=N``).

Each worker answers on an abstract unix socket named after its group (the angel's pid)
and its worker id. A plugin that must see or change every worker (an admin console that
landed on worker 2 asking for statistics of all of them) calls
:meth:`ControlChannel.broadcast`; each worker answers through its plugins'
``chassis_control`` hook. Only processes of the same user (or root) may connect:
the peer's credentials are checked with ``SO_PEERCRED``.

The wire format is one JSON object per line, both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger("chassis.control")

Handler = Callable[[dict[str, Any]], list[Any]]

#: Most bytes of one request or reply line.
MAX_LINE = 16 * 1024 * 1024


def socket_name(group_id: int, worker_id: int) -> str:
    """Abstract socket name (leading NUL) of one worker of one chassis."""
    return f"\0chassis-control-{group_id}-{worker_id}"


class ControlChannel:
    """One worker's end: serves requests to it and sends requests to all workers."""

    def __init__(self, group_id: int, worker_id: int, worker_count: int, handler: Handler):
        self.group_id = group_id
        self.worker_id = worker_id
        self.worker_count = worker_count
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(socket_name(self.group_id, self.worker_id))
        except OSError as e:
            sock.close()
            log.warning("control channel of worker %d not available: %s", self.worker_id, e)
            return
        sock.listen(16)
        sock.setblocking(False)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return False
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.geteuid())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._peer_allowed(writer):
                log.warning("control channel: refused a connection from another user")
                return
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    reply: dict[str, Any] = {"worker": self.worker_id, "pid": os.getpid(),
                                             "results": self._handler(request)}
                except Exception as e:  # one bad request must not take the worker down
                    reply = {"worker": self.worker_id, "pid": os.getpid(), "error": str(e)}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def ask(self, worker_id: int, request: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        """Send one request to one worker; a worker that does not answer gives an ``error`` entry."""
        if worker_id == self.worker_id:
            try:
                return {"worker": worker_id, "pid": os.getpid(), "results": self._handler(request)}
            except Exception as e:
                return {"worker": worker_id, "pid": os.getpid(), "error": str(e)}
        try:
            async with asyncio.timeout(timeout):
                # uvloop refuses abstract names in open_unix_connection: connect the socket first
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, socket_name(self.group_id, worker_id))
                except BaseException:
                    sock.close()
                    raise
                reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
                try:
                    writer.write(json.dumps(request).encode() + b"\n")
                    line = await reader.readline()
                finally:
                    writer.close()
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("malformed reply")
            return reply
        except (OSError, TimeoutError, ValueError) as e:
            return {"worker": worker_id, "error": f"worker {worker_id} did not answer: {e or type(e).__name__}"}

    async def broadcast(self, request: dict[str, Any], timeout: float = 2.0) -> list[dict[str, Any]]:
        """Ask every worker, this one included; replies in worker order."""
        return list(await asyncio.gather(
            *(self.ask(i, request, timeout) for i in range(self.worker_count))
        ))
