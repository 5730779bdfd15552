"""What ``proxy.connection``, its sockets, ``proxy.queries`` and ``proxy.global.backends``
read and write on the Python side (``objects.lua`` is the Lua half), and the few facts
the rest of the bridge reads off a ConnectionView (its log prefix, its capabilities).

objects.lua builds those objects as Lua userdata whose metamethods call the functions of
:class:`ObjectAccess` with a connection id; values are looked up in the
:class:`~chassis_proxy.hooks.ConnectionView` at the moment a script reads them, so they
stay current (``server.default_db`` after a COM_INIT_DB) and a kept reference never
points at a closed connection. Every function returns Lua-ready values (bytes, numbers,
None) and never raises: an exception here would surface in the script as a Python
object instead of a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chassis_mysql.constants import Capability

from chassis_proxy.hooks import (
    UNMONITORED,
    AddressInfo,
    BackendState,
    ConnectionView,
    Injection,
    PeerInfo,
)

_PEER_FIELDS = (
    "username",
    "scrambled_password",
    "default_db",
    "auth_plugin_name",
    "mysqld_version",
    "thread_id",
    "scramble_buffer",
)

_PROTOCOL_41 = int(Capability.PROTOCOL_41)

#: proxy.global.backends[i] keys filled by the replication monitor (ours).
_REPLICATION_KEYS = frozenset({b"lag", b"replication", b"stale"})

# What scripts see of a backend state: OFFLINE (ours: draining) shows as DOWN.
_LUA_STATE = {
    BackendState.UNKNOWN: 0,
    BackendState.UP: 1,
    BackendState.DOWN: 2,
    BackendState.OFFLINE: 2,
}


def lua_text(value: object) -> Any:
    """str -> UTF-8 bytes (Lua strings are bytes); other values unchanged."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def lua_number(value: int) -> int | float:
    """Lua 5.1 numbers are doubles: integers beyond 2**53 lose precision, as in MySQL Proxy."""
    if -(1 << 53) <= value <= 1 << 53:
        return value
    return float(value)


def python_text(value: Any) -> str:
    """A Lua string (bytes) or any other value as text for a log line or a message."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def log_prefix(conn: ConnectionView | None) -> str:
    """Log lines about a connection start with its id."""
    if conn is None:
        return ""
    return f"conn {conn.connection_id}: "


def negotiated_capabilities(conn: ConnectionView) -> int:
    """The capabilities the client and server agreed on, which decide how result sets end
    (EOF or, with CLIENT_DEPRECATE_EOF, OK) and how column definitions look.

    ConnectionView does not carry them; the proxy's connection has ``client_capabilities``
    and ``server_handshake``, so they are read when present. Without them: PROTOCOL_41.
    """
    caps = getattr(conn, "client_capabilities", None)
    if not isinstance(caps, int):
        return _PROTOCOL_41
    handshake = getattr(conn, "server_handshake", None)
    server = getattr(handshake, "capabilities", None)
    if server is not None:
        caps &= int(server)
    return caps | _PROTOCOL_41


def address_values(addr: AddressInfo | None) -> tuple[Any, ...] | None:
    """(name, address, port, type) for objects.lua's address tables, or None."""
    if addr is None:
        return None
    return (lua_text(addr.name), lua_text(addr.address), addr.port, addr.family)


class ObjectAccess:
    """The ``py.*`` callbacks of objects.lua that reach connections and backends.

    ``lookup(cid)`` returns the ConnectionView of a live script instance (None once it
    disconnected); ``current()`` the one whose hook is running, whose backend list
    ``proxy.global.backends`` shows.
    """

    def __init__(
        self,
        lookup: Callable[[int], ConnectionView | None],
        current: Callable[[], ConnectionView | None],
        log: logging.Logger,
    ) -> None:
        self._lookup = lookup
        self._current = current
        self._log = log
        # pool settings a script wrote for backends that do not keep their own
        self._pool_settings: dict[tuple[int, str], int] = {}

    def callbacks(self) -> dict[str, Callable[..., Any]]:
        """The functions for objects.lua, each guarded so that a failing ConnectionView
        becomes one log line and a nil for the script, not a Python exception in Lua."""
        return {name: self._safe(name, fn) for name, fn in self._functions().items()}

    def _safe(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        log = self._log

        def call(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception:
                log.exception("the Lua bridge's %s() failed", name)
                return None

        call.__name__ = name
        return call

    def _functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "conn_get": self.conn_get,
            "conn_set": self.conn_set,
            "peer_exists": self.peer_exists,
            "peer_get": self.peer_get,
            "peer_addr": self.peer_addr,
            "queue_add": self.queue_add,
            "queue_reset": self.queue_reset,
            "queue_len": self.queue_len,
            "backend_count": self.backend_count,
            "backend_get": self.backend_get,
            "backend_set": self.backend_set,
            "backend_addr": self.backend_addr,
            "pool_get": self.pool_get,
            "pool_set": self.pool_set,
            "pool_idle": self.pool_idle,
            "server_capabilities": self.server_capabilities,
        }

    def server_capabilities(self) -> int | None:
        """The capabilities of the server attached to the connection whose hook runs (its
        greeting's), or None: the default of ``mysql.proto.to_response_packet``."""
        conn = self._current()
        caps = getattr(getattr(conn, "server_handshake", None), "capabilities", None)
        return int(caps) if caps is not None else None

    # -- proxy.connection ------------------------------------------------------------------

    def conn_get(self, cid: int, key: bytes) -> Any:
        conn = self._lookup(cid)
        if conn is None:
            return None
        if key == b"backend_ndx":
            return int(conn.backend_ndx)
        if key == b"connection_close":
            return bool(conn.connection_close)
        return None

    def conn_set(self, cid: int, key: bytes, value: Any) -> bytes | None:
        """Returns an error message for the script, or None."""
        conn = self._lookup(cid)
        if conn is None:
            return b"proxy.connection is closed"
        if key == b"backend_ndx":
            n = int(value)
            count = len(conn.backends)
            if n < 0 or n > count:
                return (
                    f"proxy.connection.backend_ndx = {n}: there are {count} backend(s); "
                    f"use 1..{count}, or 0 to give the server connection back"
                ).encode()
            conn.backend_ndx = n
            return None
        if key == b"connection_close":
            conn.connection_close = bool(value)
            return None
        return b"proxy.connection." + key + b" is not writable"

    # -- proxy.connection.client / .server ---------------------------------------------

    def _peer(self, cid: int, side: bytes) -> PeerInfo | None:
        conn = self._lookup(cid)
        if conn is None:
            return None
        return conn.client if side == b"client" else conn.server

    def peer_exists(self, cid: int, side: bytes) -> bool:
        return self._peer(cid, side) is not None

    def peer_get(self, cid: int, side: bytes, key: bytes) -> tuple[Any, bool]:
        """(value, known); unknown keys give (None, False) and a log line from objects.lua."""
        name = key.decode("latin-1")
        if name not in _PEER_FIELDS:
            return None, False
        peer = self._peer(cid, side)
        if peer is None:
            return None, True
        value = getattr(peer, name)
        if isinstance(value, int):
            return lua_number(value), True
        return lua_text(value), True

    def peer_addr(self, cid: int, side: bytes, which: bytes) -> tuple[Any, ...] | None:
        peer = self._peer(cid, side)
        if peer is None:
            return None
        return address_values(peer.src if which == b"src" else peer.dst)

    # -- proxy.queries ----------------------------------------------------------------------

    def queue_add(self, cid: int, where: bytes, inj_id: float, packet: bytes, needed: bool) -> None:
        conn = self._lookup(cid)
        if conn is None:
            return
        inj = Injection(int(inj_id), bytes(packet), bool(needed))
        if where == b"prepend":
            conn.queries.prepend(inj)
        else:
            conn.queries.append(inj)

    def queue_reset(self, cid: int) -> None:
        conn = self._lookup(cid)
        if conn is not None:
            conn.queries.reset()

    def queue_len(self, cid: int) -> int:
        conn = self._lookup(cid)
        return 0 if conn is None else len(conn.queries)

    # -- proxy.global.backends ---------------------------------------------------------------

    def _backends(self) -> list[Any]:
        conn = self._current()
        if conn is None:
            return []
        try:
            return list(conn.backends)
        except Exception:  # a view that cannot list its backends shows none
            self._log.exception("cannot list the backends for proxy.global.backends")
            return []

    def _backend(self, i: int) -> Any:
        backends = self._backends()
        if 1 <= i <= len(backends):
            return backends[i - 1]
        return None

    def backend_count(self) -> int:
        return len(self._backends())

    def backend_get(self, i: int, key: bytes) -> Any:
        b = self._backend(int(i))
        if b is None:
            return None
        if key == b"connected_clients":
            return int(b.connected_clients)
        if key == b"state":
            return _LUA_STATE.get(BackendState(int(b.state)), 0)
        if key == b"type":
            return int(b.type)
        if key == b"uuid":
            return lua_text(b.uuid)
        if key in _REPLICATION_KEYS:  # the replication monitor's view (docs/lua.md)
            info = getattr(b, "replication", UNMONITORED)
            if key == b"stale":
                return bool(info.stale)
            if key == b"lag":
                return info.lag
            return lua_text(info.state)
        return None

    def backend_set(self, i: int, key: bytes, value: Any) -> bytes | None:
        b = self._backend(int(i))
        if b is None:
            return f"proxy.global.backends[{int(i)}] does not exist".encode()
        if key == b"state":
            n = int(value)
            if n not in (0, 1, 2):
                return (
                    f"proxy.global.backends[{int(i)}].state = {n}: use proxy.BACKEND_STATE_UNKNOWN, "
                    "_UP or _DOWN"
                ).encode()
            b.state = BackendState(n)
            return None
        if key == b"uuid":
            b.uuid = None if value is None else bytes(value).decode("utf-8", "surrogateescape")
            return None
        return f"proxy.global.backends[{int(i)}].{key.decode('latin-1')} is not writable".encode()

    def backend_addr(self, i: int) -> tuple[Any, ...] | None:
        b = self._backend(int(i))
        return None if b is None else address_values(b.address)

    # A backend may carry a ``pool`` object (min_idle_connections, max_idle_connections,
    # cur_idle_connections(username)) once connection pooling exists; until then the
    # settings a script writes are kept here and no connection is idle.

    def pool_get(self, i: int, key: bytes) -> int:
        name = key.decode("latin-1")
        b = self._backend(int(i))
        pool = getattr(b, "pool", None)
        if pool is not None and hasattr(pool, name):
            return int(getattr(pool, name))
        return self._pool_settings.get((int(i), name), 0)

    def pool_set(self, i: int, key: bytes, value: float) -> None:
        name = key.decode("latin-1")
        b = self._backend(int(i))
        pool = getattr(b, "pool", None)
        if pool is not None and hasattr(pool, name):
            setattr(pool, name, int(value))
        else:
            self._pool_settings[(int(i), name)] = int(value)

    def pool_idle(self, i: int, username: bytes) -> int:
        b = self._backend(int(i))
        pool = getattr(b, "pool", None)
        counter = getattr(pool, "cur_idle_connections", None)
        if callable(counter):
            try:
                return int(counter(username.decode("utf-8", "surrogateescape")))
            except Exception:
                self._log.exception("pool.cur_idle_connections() failed")
        return 0
