"""The replication monitor's own MySQL client: log in as ``--proxy-monitor-user``, run a
statement, read its text rows. Every protocol fact comes from the codec; this module
only moves bytes and keeps one connection per backend alive between probes.

Logins: ``mysql_native_password`` (also after an auth switch) and
``caching_sha2_password``'s fast path (the account has logged in since the server
started). Anything else (ed25519, caching_sha2's full authentication, which needs TLS or
the server's RSA key) fails with a message saying to create the monitor account with
``mysql_native_password``. The monitor connects without TLS; the password never travels
in clear (only its scramble) and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib

from chassis_mysql.auth import scramble_caching_sha2, scramble_native_password
from chassis_mysql.commands import ComQuery, ComQuit
from chassis_mysql.constants import Capability
from chassis_mysql.framing import PacketReader, frame
from chassis_mysql.handshake import (
    AuthMoreData,
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    is_auth_more_data,
    is_auth_switch_request,
)
from chassis_mysql.login import CACHING_SHA2_PASSWORD
from chassis_mysql.packets import ERR, is_err, is_ok
from chassis_mysql.response import Event, ResponseTracker
from chassis_mysql.resultset import ColumnDefinition, parse_text_row

from chassis.listen import Address

NATIVE_PASSWORD = "mysql_native_password"

#: What the monitor asks for: 4.1 protocol, plugin auth, classic EOFs (simplest to read).
CLIENT_CAPABILITIES = (Capability.LONG_PASSWORD | Capability.PROTOCOL_41
                       | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
                       | Capability.TRANSACTIONS | Capability.MULTI_RESULTS)

Row = dict[str, str | None]


class MonitorError(Exception):
    """A probe failed; the text says why (never a password), for the log and the console."""


def _scramble(plugin: str, password: bytes, data: bytes) -> bytes:
    if plugin == NATIVE_PASSWORD:
        return scramble_native_password(password, data[:20])
    if plugin == CACHING_SHA2_PASSWORD:
        return scramble_caching_sha2(password, data[:20])
    raise MonitorError(
        f"the monitor account authenticates with {plugin}, which the monitor does not speak: "
        f"create it IDENTIFIED VIA {NATIVE_PASSWORD} (see docs/operations.md)"
    )


class MonitorSession:
    """One logged-in connection of the monitor to one backend."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handshake: HandshakeV10, capabilities: int) -> None:
        self._reader = reader
        self._writer = writer
        self._packets = PacketReader()
        self.handshake = handshake
        self.capabilities = capabilities

    @property
    def server_version(self) -> str:
        return self.handshake.server_version

    @property
    def is_mariadb(self) -> bool:
        return "mariadb" in self.server_version.lower()

    @classmethod
    async def open(cls, addr: Address, user: str, password: bytes) -> MonitorSession:
        """Connect and log in; the caller bounds the time (``asyncio.timeout``)."""
        if addr.path is not None:
            reader, writer = await asyncio.open_unix_connection(addr.path)
        else:
            reader, writer = await asyncio.open_connection(addr.host, addr.port)
        session: MonitorSession | None = None
        try:
            packets = PacketReader()
            seq, greeting = await _read(reader, packets)
            if is_err(greeting):
                err = ERR.parse(greeting)
                raise MonitorError(f"greeted with error {err.error_code}: {err.message}")
            handshake = HandshakeV10.parse(greeting)
            caps = int(CLIENT_CAPABILITIES & handshake.capabilities) | int(Capability.PROTOCOL_41)
            plugin = handshake.auth_plugin_name or NATIVE_PASSWORD
            if plugin not in (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD):
                plugin = NATIVE_PASSWORD  # the server switches us if the account wants another
            response = HandshakeResponse41(
                capabilities=Capability(caps), username=user.encode(),
                auth_response=_scramble(plugin, password, handshake.auth_plugin_data),
                charset=45, auth_plugin_name=plugin,
            )
            session = cls(reader, writer, handshake, caps)
            session._packets = packets
            await session._login(seq + 1, response.encode(), password)
            return session
        except BaseException:
            writer.close()
            raise

    async def _login(self, seq: int, response: bytes, password: bytes) -> None:
        self._writer.write(frame(response, seq))
        while True:
            seq, payload = await _read(self._reader, self._packets)
            if is_ok(payload):
                return
            if is_err(payload):
                err = ERR.parse(payload)
                raise MonitorError(f"login refused: error {err.error_code}: {err.message}")
            if is_auth_switch_request(payload):
                switch = AuthSwitchRequest.parse(payload)
                answer = _scramble(switch.plugin_name or "mysql_old_password", password,
                                   switch.scramble)
                self._writer.write(frame(answer, seq + 1))
            elif is_auth_more_data(payload):
                more = AuthMoreData.parse(payload)
                if more.data == AuthMoreData.FAST_AUTH_SUCCESS:
                    continue  # the OK follows
                raise MonitorError(
                    "caching_sha2_password asks for full authentication, which needs TLS: "
                    f"create the monitor account IDENTIFIED VIA {NATIVE_PASSWORD}"
                )
            else:
                raise MonitorError(f"unexpected packet during login (0x{payload[:1].hex()})")

    async def query(self, sql: str) -> list[Row]:
        """Run one statement; its rows as column name -> text (None for NULL).

        An ERR answer raises :class:`MonitorError` carrying the server's code and text.
        """
        payload = ComQuery(sql.encode()).encode()
        self._writer.write(frame(payload, 0))
        tracker = ResponseTracker.for_command(payload, self.capabilities)
        names: list[str] = []
        rows: list[Row] = []
        while not tracker.done:
            _seq, packet = await _read(self._reader, self._packets)
            event = tracker.feed(packet)
            if event == Event.COLUMN_DEF:
                names.append(ColumnDefinition.parse(packet, self.capabilities).name.decode(
                    "utf-8", "replace"))
            elif event == Event.ROW:
                cells = parse_text_row(packet, len(names))
                rows.append({n: None if c is None else c.decode("utf-8", "replace")
                             for n, c in zip(names, cells, strict=True)})
            elif event == Event.ERR:
                err = ERR.parse(packet)
                raise QueryError(err.error_code, err.message)
        return rows

    def close(self) -> None:
        """Say goodbye (COM_QUIT) and close; never waits."""
        with contextlib.suppress(Exception):
            self._writer.write(frame(ComQuit().encode(), 0))
        self._writer.close()


class QueryError(MonitorError):
    """The server answered a statement with an ERR."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code


async def _read(reader: asyncio.StreamReader, packets: PacketReader) -> tuple[int, bytes]:
    while (packet := packets.next_packet()) is None:
        data = await reader.read(65536)
        if not data:
            raise MonitorError("the server closed the connection")
        packets.feed(data)
    return packet.seq, packet.payload

