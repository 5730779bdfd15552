"""The contract between a proxy connection and whatever scripts it (the Lua bridge).

The connection code knows nothing about Lua; the Lua bridge knows nothing about sockets.
A :class:`ScriptHost` (one per worker) opens one :class:`ConnectionHooks` per client
connection; the connection calls the hooks at the points MySQL Proxy 0.8 calls its Lua
hooks and acts on the :class:`Outcome`. Without a script the connection uses no hooks at
all and relays bytes.

Names mirror MySQL Proxy's Lua API (``proxy.queries``, ``PROXY_SEND_QUERY`` ...), so the
mapping stays obvious.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol


class Decision(IntEnum):
    """What a hook returned; the values are MySQL Proxy's ``proxy.PROXY_*`` constants."""

    NO_DECISION = 0
    SEND_QUERY = 1
    SEND_RESULT = 2
    IGNORE_RESULT = 4


class BackendState(IntEnum):
    UNKNOWN = 0
    UP = 1
    DOWN = 2
    OFFLINE = 3  # ours: draining, no new clients (admin); shown to Lua as DOWN


class BackendType(IntEnum):
    UNKNOWN = 0
    RW = 1
    RO = 2


@dataclass(frozen=True)
class AddressInfo:
    """``proxy.connection.client.src`` and friends."""

    name: str  # "ip:port", "[ip6]:port" or a unix path
    address: str  # ip text or path
    port: int | None  # None for unix sockets
    family: int  # socket.AF_INET (2), AF_INET6 (10), AF_UNIX (1)


@dataclass
class PeerInfo:
    """One side of a connection as scripts see it (``proxy.connection.client``/``server``)."""

    src: AddressInfo | None = None
    dst: AddressInfo | None = None
    username: str = ""
    scrambled_password: bytes = b""
    default_db: str = ""
    auth_plugin_name: str = ""
    mysqld_version: int = 0  # 50505 for "5.5.5-10.11.x-MariaDB"
    thread_id: int = 0
    scramble_buffer: bytes = b""


@dataclass
class Injection:
    """One entry of ``proxy.queries``: a command packet to send instead of the client's."""

    id: int
    packet: bytes  # command payload, first byte is the COM_ code
    resultset_is_needed: bool = False
    queued_ns: int = field(default_factory=time.monotonic_ns)


class InjectionQueue(deque[Injection]):
    """``proxy.queries``: ``append``, ``prepend``, ``reset``, ``len``; owned by the connection.

    A deque whose operations are its own C methods (``len()`` and ``reset()`` run for
    every client command of a scripted connection); ``pop`` takes the oldest, as the
    queue is sent in order.
    """

    prepend = deque.appendleft
    reset = deque.clear
    pop = deque.popleft


@dataclass
class InjectionResult:
    """What ``read_query_result(inj)`` sees about one injected command's response.

    ``packets`` holds every response payload when the injection asked for
    ``resultset_is_needed`` (buffered); otherwise the result was streamed to the client
    and only the summary fields are filled.
    """

    injection: Injection
    packets: list[bytes] | None  # buffered payloads, in order; None when streamed
    first_packet: bytes  # OK / ERR / column count / LOCAL INFILE request
    query_status: int | None  # 0 OK, 255 ERR, None for a LOCAL INFILE request
    affected_rows: int | None
    insert_id: int | None
    warning_count: int
    server_status: int
    row_count: int
    bytes: int  # row packets incl. their 4-byte headers
    query_time_us: int
    response_time_us: int
    binary: bool  # rows are in the binary protocol (COM_STMT_EXECUTE)


@dataclass
class Outcome:
    """A hook's decision.

    ``response`` holds the payloads to send to the client for ``SEND_RESULT`` (the bridge
    turns ``proxy.response`` into packets with :mod:`chassis_mysql`); the connection gives
    them consecutive sequence ids. Queued queries live in :attr:`ConnectionView.queries`.
    """

    decision: Decision = Decision.NO_DECISION
    response: list[bytes] | None = None


NO_DECISION = Outcome()


@dataclass(frozen=True)
class ReplicationInfo:
    """What the replication monitor last learnt of a backend (``--proxy-monitor-user``),
    as scripts see it: ``proxy.global.backends[i].replication``, ``.lag``, ``.stale``.

    ``state``: ``unmonitored`` (no monitor), ``unknown`` (the probe failed: ``error``
    says why; lag and ``stale`` stay as last seen), ``none`` (not a replica), ``running``, ``lagging`` (more than
    ``--proxy-max-replication-lag`` behind), ``connecting``, ``stopped``, ``broken``
    (a replication thread stopped on an error), and for Galera ``synced`` or
    ``desynced``. ``stale``: the proxy keeps reads away from the backend (only with
    ``--proxy-max-replication-lag``).
    """

    state: str = "unmonitored"
    lag: float | None = None  # Seconds_Behind_Master; None when unknown or not a replica
    stale: bool = False
    error: str = ""


UNMONITORED = ReplicationInfo()


class BackendView(Protocol):
    """``proxy.global.backends[i]``."""

    @property
    def address(self) -> AddressInfo: ...
    @property
    def type(self) -> BackendType: ...
    state: BackendState
    uuid: str | None
    @property
    def connected_clients(self) -> int: ...
    @property
    def replication(self) -> ReplicationInfo: ...


class ConnectionView(Protocol):
    """What the bridge may read and change of one client connection."""

    client: PeerInfo
    server: PeerInfo | None  # None while no backend connection is attached
    backend_ndx: int  # 1-based, 0 = none; scripts may set it
    connection_close: bool  # close the client after the current result
    queries: InjectionQueue
    connection_id: int  # for log lines

    @property
    def backends(self) -> list[BackendView]: ...


class ConnectionHooks(Protocol):
    """One client's script instance. Every method returns quickly: the bridge enforces
    time and memory limits and turns script errors into an Outcome (and one log line)."""

    def connect_server(self) -> Outcome: ...
    def read_handshake(self) -> Outcome: ...
    def read_auth(self) -> Outcome: ...
    def read_auth_result(self, packet: bytes) -> Outcome: ...
    def read_query(self, packet: bytes) -> Outcome: ...
    def read_query_result(self, result: InjectionResult) -> Outcome: ...
    def sees_results(self) -> bool:
        """Whether ``read_query_result`` may run now: False when the script surely defines
        none, so that the result it would be shown need not be built."""
        ...
    def disconnect_client(self) -> None: ...


class ScriptHost(Protocol):
    """One per worker: loads the script and opens an instance per client connection."""

    def open(self, conn: ConnectionView) -> ConnectionHooks:
        """Instantiate the script for a new client (reloading it if the file changed).

        Raises :class:`ScriptLoadError` whose message is what the client gets as ERR 1105.
        """
        ...

    def close(self) -> None: ...


class ScriptLoadError(Exception):
    """The script cannot be loaded or its top level failed; ``str(e)`` goes to the client."""
