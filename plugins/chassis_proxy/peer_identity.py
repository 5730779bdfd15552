"""Would a backend log a client in as the proxy itself? The unix socket identity check.

Over a unix socket the server sees the proxy's OS user (``SO_PEERCRED``). MariaDB's
``unix_socket`` and MySQL's ``auth_socket`` plugins log an account in by that identity
alone, without a word on the wire: the client's password is never looked at. Debian's
``root@localhost`` is such an account. Relayed through the proxy, any client naming that
account would be logged in with the proxy's identity, whatever password it sent.

Nothing in the login tells the proxy which plugin the server used, so it asks the server:
before relaying a login to a unix socket backend, it logs the same account in on a
connection of its own with a random, wrong password. A server that accepts that answer
would accept anything from this proxy for the account, and the client is refused. The
probe follows the codec's :class:`~chassis_mysql.login.LoginTracker` and answers every
auth round with random bytes. It costs one extra connection per login to a unix socket
backend (TCP backends see the client's address, not the proxy's identity, and are not
probed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chassis_mysql.auth import new_challenge
from chassis_mysql.constants import Capability, Command, ErrorCode
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import PacketReader, frame
from chassis_mysql.handshake import HandshakeResponse41
from chassis_mysql.login import LoginEvent, LoginTracker

from chassis_proxy.errors import LoginFailed
from chassis_proxy.state import ConnectionState

log = logging.getLogger("chassis.proxy")

_CAPABILITIES = (Capability.LONG_PASSWORD | Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION
                 | Capability.PLUGIN_AUTH | Capability.TRANSACTIONS)

#: Auth rounds answered before the probe gives up (real plugins need one or two).
_MAX_ROUNDS = 8


async def refuse_proxy_identity(state: ConnectionState, username: bytes) -> None:
    """Refuse (ERR 1045, one log line, :class:`LoginFailed`) a login that the attached
    unix socket backend would accept by the proxy's own OS user. TCP backends pass."""
    backend = state.backend
    if backend is None or backend.addr.path is None:
        return
    why = await accepts_anything(backend.addr.path, username, state.settings.connect_timeout)
    user = username.decode("utf-8", "replace")
    if why is None:
        log.debug("conn %d: %s checks the password of %r (identity check passed)",
                  state.connection_id, backend.addr, user)
        return
    log.warning("conn %d: refused the login of %r from %s on backend %s: %s; give the "
                "account a password plugin, or reach the backend over TCP",
                state.connection_id, user, state.name, backend.addr, why)
    state.send_client_err(ErrorCode.ACCESS_DENIED_ERROR,
                          f"(proxy) login of '{user}' refused: backend {backend.addr} would "
                          "log this account in by the proxy's own OS user, not by your password",
                          "28000")
    raise LoginFailed


async def accepts_anything(path: str, username: bytes, timeout: float) -> str | None:
    """Why the server at unix socket ``path`` would log ``username`` in by the proxy's own
    identity (it accepted a wrong password), or None when it checks the client's proof.

    A probe that cannot finish says so too: the login is refused rather than risked.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _probe(path, username)
    except TimeoutError:
        return f"the identity check of the backend timed out after {timeout:g} s"
    except (OSError, ProtocolError) as e:
        return f"the identity check of the backend failed: {e}"


async def _probe(path: str, username: bytes) -> str | None:
    reader, writer = await asyncio.open_unix_connection(path)
    packets = PacketReader(1 << 20)
    tracker = LoginTracker()
    seq = 0

    async def next_payload() -> bytes:
        nonlocal seq
        while True:
            packet = packets.next_packet()
            if packet is not None:
                seq = (packet.seq + 1) & 0xFF
                return packet.payload
            data = await reader.read(65536)
            if not data:
                raise ProtocolError("the server closed the connection")
            packets.feed(data)

    def send(payload: bytes) -> None:
        nonlocal seq
        writer.write(frame(payload, seq))
        seq = (seq + 1) & 0xFF

    try:
        if tracker.server_packet(await next_payload()) == LoginEvent.ERR:
            return None  # it takes no connection now: the client's own login fails the same way
        hs = tracker.handshake
        assert hs is not None
        response = HandshakeResponse41(
            capabilities=_CAPABILITIES, username=username,
            auth_response=new_challenge(len(hs.auth_plugin_data[:20])),
            charset=hs.charset, auth_plugin_name=hs.auth_plugin_name,
        ).encode()
        tracker.client_packet(response)
        send(response)
        for _ in range(_MAX_ROUNDS):
            event = tracker.server_packet(await next_payload())
            if event == LoginEvent.OK:
                writer.write(frame(bytes((Command.QUIT,)), 0))
                return "it accepts a wrong password for this account (unix_socket or " \
                       "auth_socket authentication by the proxy's own OS user)"
            if event == LoginEvent.ERR:
                return None
            if tracker.expects == "client":
                answer = new_challenge(32) + b"\x00"
                tracker.client_packet(answer)
                send(answer)
        return f"the identity check gave up after {_MAX_ROUNDS} auth rounds"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
