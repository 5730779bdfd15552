"""The admin console's MySQL server side: login with mysql_native_password, then SQL.

Statements (see :mod:`chassis_admin.sql`) are answered by :mod:`chassis_admin.console`
from every worker of the chassis through the control channel, so the console shows the
whole proxy whichever worker accepted it. Framing, the challenge, the scramble check and
the error numbers come from the codec (:mod:`chassis_mysql`); with ``--admin-lua-script``
the other statements go to the script (:mod:`chassis_admin.scripted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import socket
from pathlib import Path

from chassis_mysql.auth import check_native_password, native_password_hash, new_challenge
from chassis_mysql.constants import Capability, Command, ErrorCode
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import PacketReader, frame, frame_next_seq
from chassis_mysql.handshake import (
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
)
from chassis_mysql.packets import err_packet, ok_packet

from chassis.logs import MESSAGE
from chassis.runtime import Runtime
from chassis.tls import ListenerTLS
from chassis_admin import scripted, sql, tls
from chassis_admin.console import Console

log = logging.getLogger("chassis.admin")

SERVER_VERSION = "5.7.99-chassis-admin"
NATIVE = "mysql_native_password"
CAPABILITIES = (
    Capability.LONG_PASSWORD | Capability.LONG_FLAG | Capability.PROTOCOL_41
    | Capability.TRANSACTIONS | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
    | Capability.MULTI_RESULTS
)
#: Admin commands are short: anything larger is refused.
MAX_COMMAND = 1024 * 1024
#: The login packets (handshake response, auth switch response) are shorter still.
MAX_LOGIN_PACKET = 64 * 1024
_ids = itertools.count(1)


class AdminServer:
    tls: ListenerTLS = tls.NO_TLS  # --admin-ssl-*, set by the plugin

    def __init__(self, runtime: Runtime, username: str, password: str, script: Path | None,
                 login_timeout: float = 10.0):
        self.runtime = runtime
        #: Seconds a client may take to log in (0: no limit): an unauthenticated
        #: connection must not hold a slot forever.
        self.login_timeout = login_timeout
        self.username = username.encode()
        #: SHA1(SHA1(password)), what the login checks against (the password is not kept).
        self.password_hash = native_password_hash(password.encode())
        self.script = script
        self.script_host: scripted.ScriptHost | None = None
        if script is not None:
            self.script_host = scripted.create_host(runtime, script)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket, backlog: int) -> None:
        # backlog: asyncio listens again with its own default (100) unless told
        self._server = await asyncio.start_server(self._accept, sock=sock, backlog=backlog)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.script_host is not None:
            self.script_host.close()
            self.script_host = None
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = AdminConnection(self, reader, writer, next(_ids))
        try:
            await conn.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except ProtocolError as e:
            log.warning("admin connection %d: bad packet from the client: %s", conn.id, e)
        finally:
            self._tasks.discard(task)
            writer.close()


class AdminConnection:
    def __init__(self, server: AdminServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, conn_id: int):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.id = conn_id
        self.seq = 0
        self.packets = PacketReader(max_payload=MAX_COMMAND)
        self.hooks: scripted.ScriptHooks | None = None
        self.console = Console(server.runtime, conn_id)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")

    async def read_packet(self, limit: int = MAX_COMMAND) -> bytes:
        """The client's next payload; a bigger one than ``limit`` is a ProtocolError."""
        packets = self.packets
        packets.max_payload = limit
        while (packet := packets.next_packet()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise asyncio.IncompleteReadError(packets.drain(), None)
            packets.feed(data)
        self.seq = (packet.seq + 1) & 0xFF
        return packet.payload

    def buffered(self) -> bytes:
        """Bytes read from the client but not yet returned as a packet (taken away)."""
        return self.packets.drain()

    async def send(self, *payloads: bytes) -> None:
        for payload in payloads:
            self.writer.write(frame(payload, self.seq))
            self.seq = frame_next_seq(len(payload), self.seq)
        await self.writer.drain()

    async def run(self) -> None:
        if not await self.login_in_time():
            return
        while True:
            packet = await self.read_packet()
            if not packet:
                raise ProtocolError("empty command packet")
            command = packet[0]
            if command == Command.QUIT:
                if self.hooks is not None:
                    self.hooks.disconnect_client()
                return
            if command == Command.PING:
                await self.send(ok_packet())
            elif command == Command.QUERY:
                await self.query(packet[1:].decode("utf-8", "replace"))
            elif self.hooks is not None:
                await self.send(*scripted.run_query(self.hooks, packet))
            else:
                await self.send(err_packet(ErrorCode.UNKNOWN_ERROR,
                                           "[admin] we only handle text-based queries (COM_QUERY)"))

    async def login_in_time(self) -> bool:
        """The login, cut after ``--admin-login-timeout`` with an ERR and a log line."""
        limit = self.server.login_timeout
        if limit <= 0:
            return await self.login()
        try:
            async with asyncio.timeout(limit):
                return await self.login()
        except TimeoutError:
            log.warning("admin connection %d from %s: no login within %g s "
                        "(--admin-login-timeout); closing it", self.id, self.peer, limit)
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(self.send(err_packet(
                    ErrorCode.NET_READ_INTERRUPTED,
                    "Got timeout reading communication packets (--admin-login-timeout)",
                    "08S01")), 1.0)
            return False

    async def login(self) -> bool:
        challenge = new_challenge()
        hello = HandshakeV10(
            server_version=SERVER_VERSION, connection_id=self.id, auth_plugin_data=challenge,
            capabilities=CAPABILITIES | tls.capabilities(self.server.tls), charset=33, auth_plugin_name=NATIVE,
        )
        self.seq = 0
        await self.send(hello.encode())
        payload = await tls.login_packet(self, self.server.tls, await self.read_packet(MAX_LOGIN_PACKET),
                                         MAX_LOGIN_PACKET)
        if payload is None:
            return False
        response = HandshakeResponse41.parse(payload)
        auth = response.auth_response
        if response.auth_plugin_name not in (None, "", NATIVE):
            await self.send(AuthSwitchRequest(NATIVE, challenge + b"\x00").encode())
            auth = await self.read_packet(MAX_LOGIN_PACKET)
        # Both checks run (constant time), so a wrong user name takes as long as a wrong password.
        user_ok = hmac.compare_digest(response.username, self.server.username)
        password_ok = check_native_password(auth, challenge, self.server.password_hash)
        if user_ok and password_ok:
            log.log(MESSAGE, "admin connection %d: %s logged in from %s", self.id,
                    self.server.username.decode(), self.peer)
            await self.send(ok_packet())
            if self.server.script_host is not None:
                self.hooks = scripted.open_script(
                    self.server.script_host, username=self.server.username.decode(),
                    connection_id=self.id, capabilities=response.capabilities)
            return True
        log.warning("admin connection %d: login refused for user %r from %s", self.id,
                    response.username.decode("utf-8", "replace"), self.peer)
        user = response.username.decode("utf-8", "replace")
        await self.send(err_packet(ErrorCode.ACCESS_DENIED_ERROR,
                                   f"Access denied for user '{user}' (admin)", "28000"))
        return False

    async def query(self, text: str) -> None:
        statement = sql.parse(text)
        # What client libraries send on connect is answered here even with a script,
        # so PyMySQL and connector/python can log in to a MySQL Proxy admin script.
        if self.hooks is not None and not isinstance(statement, sql.SessionSet | sql.VersionComment):
            await self.send(*scripted.run_query(self.hooks, bytes([Command.QUERY]) + text.encode()))
            return
        await self.send(*await self.console.answer(statement))
