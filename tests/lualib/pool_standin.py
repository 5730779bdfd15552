"""A stand-in for the connection pool of reference section 7.5, to test rw-splitting.lua
before the real pool exists.

It does what 7.5 says a script can observe: each backend keeps, per username, a FIFO of
idle authenticated server connections; ``backend_ndx = 0`` parks the attached
connection; ``backend_ndx = N`` takes the first idle connection of the client's user
from backend N (or one from another user's queue that holds more than
``min_idle_connections``), parking the attached one, and otherwise only remembers N;
``users[""]`` counts every idle connection. A :class:`Session` drives the hooks as the
proxy does (connect, login, then per command the queued injections one after another),
and the "servers" answer from a few rules: ``BEGIN``/``START`` open a transaction,
``COMMIT``/``ROLLBACK`` close it, ``INSERT ... AUTO`` gets an insert id, a query with
``FAIL`` fails, COM_INIT_DB fails for databases the backend does not have,
COM_STMT_PREPARE gets a statement id, and a query that starts with one of
``World.answers``' prefixes gets that one-column result (a backend's own answer first). Every
command that reaches a server is recorded with the backend and the connection's thread id.

This is not the thing under test (the script is); the real pool replaces it in the
end-to-end tests of issue 6.
"""

from __future__ import annotations

import itertools
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chassis_mysql.constants import ServerStatus
from chassis_mysql.packets import err_packet, ok_packet
from chassis_mysql.resultset import text_column, text_resultset
from chassis_proxy.hooks import (
    BackendState,
    BackendType,
    Decision,
    Injection,
    InjectionQueue,
    InjectionResult,
    Outcome,
    PeerInfo,
)
from chassis_proxy.lua import LuaConnectionHooks, LuaScriptHost

from tests.lualib.harness import tcp


@dataclass
class ServerConn:
    """One authenticated server connection."""

    backend: int
    peer: PeerInfo
    in_trans: bool = False


@dataclass
class StandinPool:
    min_idle_connections: int = 0
    max_idle_connections: int = 0
    idle: dict[str, deque[ServerConn]] = field(default_factory=dict)

    def cur_idle_connections(self, username: str) -> int:
        if username == "":
            return sum(len(q) for q in self.idle.values())
        return len(self.idle.get(username, ()))

    def park(self, conn: ServerConn) -> None:
        self.idle.setdefault(conn.peer.username, deque()).append(conn)

    def take(self, username: str) -> ServerConn | None:
        queue = self.idle.get(username)
        if queue:
            return queue.popleft()
        for q in self.idle.values():
            if len(q) > self.min_idle_connections:
                return q.popleft()
        return None


@dataclass
class StandinBackend:
    address: Any
    type: BackendType
    state: BackendState = BackendState.UP
    uuid: str | None = None
    connected_clients: int = 0
    pool: StandinPool = field(default_factory=StandinPool)
    databases: set[str] = field(default_factory=lambda: {"shop", "other"})

    @property
    def name(self) -> str:
        return str(self.address.name)


@dataclass(frozen=True)
class Executed:
    """A command a server ran: which backend, which connection, which injection."""

    backend: str
    thread_id: int
    inj_id: int
    packet: bytes

    @property
    def sql(self) -> str:
        return self.packet[1:].decode("latin-1") if self.packet[:1] == b"\x03" else repr(self.packet)


class World:
    """The backends (a primary and replicas) and every command their servers ran."""

    def __init__(self, *kinds: BackendType) -> None:
        self.backends = [StandinBackend(tcp("10.0.0.1", 3306 + i), kind) for i, kind in enumerate(kinds)]
        self.executed: list[Executed] = []
        self._threads = itertools.count(100)
        self._insert_ids = itertools.count(1)
        self._statement_ids = itertools.count(1)
        #: query prefix (upper case) -> its one-value answer, per backend index (0: any)
        self.answers: dict[tuple[int, str], str] = {}

    def name(self, ndx: int) -> str:
        return self.backends[ndx - 1].name

    def new_server(self, ndx: int, username: str, db: str) -> ServerConn:
        b = self.backends[ndx - 1]
        peer = PeerInfo(
            src=tcp("10.0.0.9", 40000 + len(self.executed)),
            dst=b.address,
            username=username,
            default_db=db,
            thread_id=next(self._threads),
        )
        return ServerConn(ndx, peer)

    def add_idle(self, ndx: int, username: str = "app", db: str = "shop", count: int = 1) -> None:
        for _ in range(count):
            self.backends[ndx - 1].pool.park(self.new_server(ndx, username, db))

    def idle(self, ndx: int, username: str = "app") -> int:
        return self.backends[ndx - 1].pool.cur_idle_connections(username)

    def execute(self, server: ServerConn, inj: Injection) -> InjectionResult:
        packet = inj.packet
        self.executed.append(Executed(self.backends[server.backend - 1].name, server.peer.thread_id, inj.id, packet))
        ok, insert_id = True, 0
        if packet[:1] == b"\x02":
            db = packet[1:].decode()
            ok = db in self.backends[server.backend - 1].databases
            if ok:
                server.peer.default_db = db
        elif packet[:1] == b"\x03":
            sql = packet[1:].decode("latin-1").upper()
            if "FAIL" in sql:
                ok = False
            elif sql.startswith(("BEGIN", "START")):
                server.in_trans = True
            elif sql.startswith(("COMMIT", "ROLLBACK")):
                server.in_trans = False
            elif sql.startswith("INSERT") and "AUTO" in sql:
                insert_id = next(self._insert_ids)
        status = ServerStatus.AUTOCOMMIT | (ServerStatus.IN_TRANS if server.in_trans else 0)
        payload = ok_packet(1, insert_id, status) if ok else err_packet(1049, "Unknown database", "42000")
        packets = [payload]
        if packet[:1] == b"\x16":
            payload = b"\x00" + struct.pack("<IHHBH", next(self._statement_ids), 0, 0, 0, 0)
            packets = [payload]
        elif packet[:1] == b"\x03":
            sql = packet[1:].decode("latin-1").upper()
            for ndx in (server.backend, 0):
                answer = next((v for (n, prefix), v in self.answers.items()
                               if n == ndx and sql.startswith(prefix)), None)
                if answer is not None:
                    packets = text_resultset([text_column("v")], [[answer]], status=status)
                    payload = packets[0]
                    break
        return InjectionResult(
            injection=inj,
            packets=packets if inj.resultset_is_needed else None,
            first_packet=payload,
            query_status=0 if ok else 255,
            affected_rows=1 if ok else None,
            insert_id=insert_id if ok else None,
            warning_count=0,
            server_status=int(status),
            row_count=0,
            bytes=0,
            query_time_us=10,
            response_time_us=20,
            binary=False,
        )


class Client:
    """A ConnectionView whose ``backend_ndx`` behaves as section 7.5 describes."""

    def __init__(self, world: World, connection_id: int, username: str, db: str) -> None:
        self.world = world
        self.client = PeerInfo(
            src=tcp("192.0.2.7", 50000 + connection_id), dst=tcp("127.0.0.1", 4040), username="", default_db=db
        )
        self.username = username
        self.attached: ServerConn | None = None
        self._ndx = 0
        self.connection_close = False
        self.queries = InjectionQueue()
        self.connection_id = connection_id

    @property
    def backends(self) -> list[Any]:
        return list(self.world.backends)

    @property
    def server(self) -> PeerInfo | None:
        return self.attached.peer if self.attached is not None else None

    @server.setter
    def server(self, value: PeerInfo | None) -> None:
        raise AssertionError("the bridge never sets proxy.connection.server")

    def _park(self) -> None:
        if self.attached is not None:
            self.world.backends[self.attached.backend - 1].pool.park(self.attached)
            self.attached = None

    @property
    def backend_ndx(self) -> int:
        return self._ndx

    @backend_ndx.setter
    def backend_ndx(self, n: int) -> None:
        if n == 0:
            self._park()
            self._ndx = 0
            return
        taken = self.world.backends[n - 1].pool.take(self.client.username)
        if taken is not None:
            self._park()
            self.attached = taken
        self._ndx = n


class Session:
    """One client through the proxy: the script's hooks driven as the proxy drives them."""

    def __init__(self, world: World, host: LuaScriptHost, connection_id: int, username: str = "app",
                 db: str = "shop") -> None:  # fmt: skip
        self.world = world
        self.conn = Client(world, connection_id, username, db)
        self.hooks: LuaConnectionHooks = host.open(self.conn)

    def login(self) -> Decision:
        """connect_server (a new connection unless a pooled one was kept), login, read_auth_result."""
        outcome = self.hooks.connect_server()
        if outcome.decision == Decision.IGNORE_RESULT:
            assert self.conn.attached is not None, "IGNORE_RESULT without a pooled connection"
        else:
            ndx = self.conn.backend_ndx
            assert ndx > 0, "connect_server chose no backend"
            self.conn.attached = self.world.new_server(ndx, self.conn.username, self.conn.client.default_db)
        self.conn.client.username = self.conn.username
        self.hooks.read_auth_result(b"\x00\x00\x00\x02\x00\x00\x00")
        return outcome.decision

    def send(self, payload: bytes) -> tuple[list[Executed], Outcome | None]:
        """One client command: what ran where, and the script's own answer (if any)."""
        start = len(self.world.executed)
        outcome = self.hooks.read_query(payload)
        if outcome.decision == Decision.SEND_RESULT:
            return self.world.executed[start:], outcome
        queue = self.conn.queries
        if outcome.decision == Decision.NO_DECISION:
            queue.reset()
            queue.append(Injection(0, payload))
        while len(queue):
            inj = queue.pop()
            assert self.conn.attached is not None, f"no server connection for {inj.packet!r}"
            result = self.world.execute(self.conn.attached, inj)
            answer = self.hooks.read_query_result(result)
            if answer.decision == Decision.SEND_RESULT:
                return self.world.executed[start:], answer
        return self.world.executed[start:], None

    def query(self, sql: str) -> list[Executed]:
        ran, answer = self.send(b"\x03" + sql.encode())
        assert answer is None, f"{sql!r} was answered by the script: {answer}"
        return ran

    def where(self, sql: str) -> tuple[str, int]:
        """(backend, thread id) the query ran on (the last command that ran for it)."""
        ran = self.query(sql)
        assert ran and ran[-1].inj_id == 1, ran
        return ran[-1].backend, ran[-1].thread_id

    def disconnect(self) -> None:
        self.hooks.disconnect_client()
