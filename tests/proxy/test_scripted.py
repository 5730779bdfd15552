"""The scripting mechanism of a connection (section 3.2 of the reference), with hooks
written in Python: what each hook sees, and what the client gets for each decision.

The proxy runs in-process (tests/proxy/inproc.py) against the test MariaDB; the clients
are real (PyMySQL, mysql-connector-python).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from chassis_mysql.handshake import HandshakeResponse41, HandshakeV10
from chassis_proxy.hooks import Decision, InjectionResult, Outcome
from pymysql.constants import CLIENT

from tests.proxy.inproc import (
    Hooks,
    InProcessProxy,
    PyScriptHost,
    answer_err,
    answer_ok,
    answer_rows,
)
from tests.proxy.rawclient import RawClient
from tests.support.chassis_proc import free_port, wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)

COM_QUERY = b"\x03"


def connect(proxy: InProcessProxy, user: str = "root", password: str = "",
            **kwargs: Any) -> pymysql.Connection[Any]:
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("read_timeout", 30)
    return pymysql.connect(host="127.0.0.1", port=proxy.port, user=user, password=password,
                           autocommit=True, **kwargs)


def rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


@pytest.fixture
def run_proxy(mariadb: MariaDB) -> Iterator[Any]:
    started: list[InProcessProxy] = []

    def start(hooks_class: type[Hooks], backends: list[str] | None = None,
              **settings: Any) -> tuple[InProcessProxy, PyScriptHost]:
        host = PyScriptHost(hooks_class)
        proxy = InProcessProxy(backends or [mariadb.address], host, **settings)
        proxy.__enter__()
        started.append(proxy)
        return proxy, host

    yield start
    for proxy in started:
        proxy.__exit__()


# -- pass-through with every hook present ------------------------------------------------


def test_hooks_are_called_in_order_and_everything_still_works(run_proxy: Any,
                                                              tmp_path: Path) -> None:
    proxy, host = run_proxy(Hooks)
    csv = tmp_path / "d.csv"
    csv.write_text("1\n2\n3\n")
    with connect(proxy, local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        assert rows(conn, "SELECT 1 + 1") == [(2,)]
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2")
            assert cur.fetchall() == ((1,),)
            assert cur.nextset() and cur.fetchall() == ((2,),)
            cur.execute("CREATE TEMPORARY TABLE test.t (a INT)")
            cur.execute(f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE test.t")
            assert cur.rowcount == 3
            cur.execute("SELECT SUM(a) FROM test.t")
            assert cur.fetchone() == (6,)
    wait_for(lambda: "disconnect_client" in host.calls, timeout=5)
    assert host.calls[:4] == ["connect_server", "read_handshake", "read_auth",
                              "read_auth_result"]
    assert host.calls.count("read_query") >= 6
    assert "read_query_result" not in host.calls  # only injected queries get it
    assert host.calls[-1] == "disconnect_client"


def test_prepared_statements_and_big_packets_in_scripted_mode(run_proxy: Any) -> None:
    seen: list[int] = []

    class Sizes(Hooks):
        def read_query(self, packet: bytes) -> Outcome:
            seen.append(len(packet))
            return super().read_query(packet)

    proxy, _ = run_proxy(Sizes)
    conn = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="root",
                                   use_pure=True, ssl_disabled=True, connection_timeout=10)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT ? * 2, ?", (21, "x"))
        assert cur.fetchall() == [(42, "x")]
        cur.close()
        blob = hashlib.sha256(b"x").digest() * (20 * 1024 * 1024 // 32)
        cur = conn.cursor()
        cur.execute("SELECT LENGTH(%s)", (blob,))
        assert cur.fetchall() == [(len(blob),)]
    finally:
        conn.close()
    assert max(seen) > len(blob) > 16 * 1024 * 1024  # one joined packet, not 16 MiB chunks


# -- read_query decisions -----------------------------------------------------------------


class Answering(Hooks):
    """Answers ``SELECT 'mock'`` itself; everything else goes to the server."""

    def read_query(self, packet: bytes) -> Outcome:
        super().read_query(packet)
        if packet == COM_QUERY + b"SELECT 'mock'":
            return answer_rows(["greeting", "n"], [["hello", 1], [None, 2]])
        if packet == COM_QUERY + b"DENY":
            return answer_err(1142, "denied by the script")
        if packet == COM_QUERY + b"OK":
            return answer_ok(affected=7)
        return Outcome()


def test_read_query_answers_itself(run_proxy: Any) -> None:
    proxy, _ = run_proxy(Answering)
    with connect(proxy) as conn:
        assert rows(conn, "SELECT 'mock'") == [("hello", "1"), (None, "2")]
        with pytest.raises(pymysql.err.OperationalError) as info:
            rows(conn, "DENY")
        assert info.value.args == (1142, "denied by the script")
        with conn.cursor() as cur:
            assert cur.execute("OK") == 7
        assert rows(conn, "SELECT 3") == [(3,)]


class Injecting(Hooks):
    """``SELECT 'both'`` becomes two injected queries; the results are handled per id."""

    results: list[InjectionResult]

    def read_query(self, packet: bytes) -> Outcome:
        super().read_query(packet)
        if packet == COM_QUERY + b"SELECT 'both'":
            self.inject(COM_QUERY + b"SELECT seq FROM test.seq_1_to_5", needed=True, ident=1)
            self.inject(COM_QUERY + b"SELECT 'second'", ident=2)
            return Outcome(Decision.SEND_QUERY)
        if packet == COM_QUERY + b"SELECT 'replace'":
            self.inject(COM_QUERY + b"SELECT 41", needed=True, ident=3)
            return Outcome(Decision.SEND_QUERY)
        if packet == COM_QUERY + b"SELECT 'ignore all'":
            self.inject(COM_QUERY + b"SELECT 1", needed=True, ident=4)
            return Outcome(Decision.SEND_QUERY)
        if packet == COM_QUERY + b"SELECT 'first wins'":
            self.inject(COM_QUERY + b"SELECT 'one'", needed=True, ident=5)
            self.inject(COM_QUERY + b"SELECT 'two'", needed=True, ident=6)
            return Outcome(Decision.SEND_QUERY)
        if packet == COM_QUERY + b"SELECT 'bad'":
            self.inject(COM_QUERY + b"SELECT * FROM test.no_such_table", needed=True, ident=9)
            return Outcome(Decision.SEND_QUERY)
        if packet == COM_QUERY + b"SELECT 'chain'":
            self.inject(COM_QUERY + b"SELECT 'a'", needed=True, ident=7)
            return Outcome(Decision.SEND_QUERY)
        return Outcome()

    def read_query_result(self, result: InjectionResult) -> Outcome:
        super().read_query_result(result)
        RESULTS.append(result)
        ident = result.injection.id
        if ident in (1, 4):
            return Outcome(Decision.IGNORE_RESULT)
        if ident == 3:
            return answer_rows(["answer"], [[42]])
        if ident == 7:
            self.inject(COM_QUERY + b"SELECT 'b'", needed=True, ident=8)
            return Outcome(Decision.IGNORE_RESULT)
        return Outcome()


RESULTS: list[InjectionResult] = []


def results(count: int) -> list[InjectionResult]:
    """The injection results, once the proxy's thread has called the hook ``count`` times
    (a streamed result reaches the client before its read_query_result runs)."""
    wait_for(lambda: len(RESULTS) >= count, timeout=5, message=f"{count} results")
    return list(RESULTS)


@pytest.fixture
def injecting(run_proxy: Any) -> InProcessProxy:
    RESULTS.clear()
    proxy, _ = run_proxy(Injecting)
    return proxy


def test_injected_queries_buffered_and_streamed(injecting: InProcessProxy) -> None:
    with connect(injecting) as conn:
        assert rows(conn, "SELECT 'both'") == [("second",)]
    first, second = results(2)
    assert first.injection.id == 1 and first.packets is not None
    assert first.row_count == 5
    assert first.bytes == 5 * (4 + 2)  # each row "n": 1 length byte + 1 digit, + header
    assert first.query_status == 0 and first.affected_rows is None
    assert first.first_packet == b"\x01"  # one column
    assert first.response_time_us >= first.query_time_us >= 0
    assert second.injection.id == 2 and second.packets is None  # streamed, not kept
    assert second.row_count == 1


def test_read_query_result_replaces_the_result(injecting: InProcessProxy) -> None:
    with connect(injecting) as conn:
        assert rows(conn, "SELECT 'replace'") == [("42",)]
    assert results(1)[0].packets is not None and len(RESULTS[0].packets or []) == 5


def test_only_the_first_result_reaches_the_client(injecting: InProcessProxy) -> None:
    with connect(injecting) as conn:
        assert rows(conn, "SELECT 'first wins'") == [("one",)]
        assert rows(conn, "SELECT 'after'") == [("after",)]  # and the connection is in sync
    assert [r.injection.id for r in results(2)] == [5, 6]


def test_read_query_result_may_queue_more(injecting: InProcessProxy) -> None:
    with connect(injecting) as conn:
        assert rows(conn, "SELECT 'chain'") == [("b",)]
    assert [r.injection.id for r in results(2)] == [7, 8]


def test_every_result_ignored_gives_an_error_not_a_hang(injecting: InProcessProxy) -> None:
    with connect(injecting) as conn:
        with pytest.raises(pymysql.err.OperationalError) as info:
            rows(conn, "SELECT 'ignore all'")
        assert "ignored every result" in info.value.args[1]
        assert rows(conn, "SELECT 5") == [(5,)]


def test_error_results_are_reported_to_the_script(injecting: InProcessProxy) -> None:
    with connect(injecting) as conn:
        with pytest.raises(pymysql.err.ProgrammingError) as info:
            rows(conn, "SELECT 'bad'")
        assert info.value.args[0] == 1146  # the server's error, passed on
        assert rows(conn, "SELECT 6") == [(6,)]
    (result,) = results(1)
    assert result.query_status == 255 and result.row_count == 0


# -- the login hooks ----------------------------------------------------------------------


def test_read_handshake_can_refuse(run_proxy: Any) -> None:
    class OnlyLocal(Hooks):
        def read_handshake(self) -> Outcome:
            super().read_handshake()
            assert self.conn.server is not None and self.conn.server.thread_id > 0
            assert self.conn.server.mysqld_version >= 50505
            assert len(self.conn.server.scramble_buffer) == 21
            return answer_err(1045, "only local connects allowed", "28000")

    proxy, _ = run_proxy(OnlyLocal)
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proxy)
    assert info.value.args == (1045, "only local connects allowed")


def test_read_auth_denies_a_user_without_asking_the_server(run_proxy: Any,
                                                           mariadb: MariaDB) -> None:
    class Deny(Hooks):
        def read_auth(self) -> Outcome:
            super().read_auth()
            if self.conn.client.username == "native":
                return answer_err(1045, "native is not welcome here", "28000")
            return Outcome()

    proxy, host = run_proxy(Deny)
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proxy, "native", "native_pw")
    assert info.value.args == (1045, "native is not welcome here")
    assert "read_auth_result" not in host.calls
    with connect(proxy) as conn:
        assert rows(conn, "SELECT CURRENT_USER()") == [("root@localhost",)]


def test_read_auth_replaces_the_login_packet(run_proxy: Any) -> None:
    class Rewrite(Hooks):
        def read_auth(self) -> Outcome:
            super().read_auth()
            assert self.conn.client.username == "alias"
            login = HandshakeResponse41(
                capabilities=0x000BA205, username=b"root", auth_response=b"",
                auth_plugin_name="mysql_native_password")
            self.inject(login.encode())
            return Outcome(Decision.SEND_QUERY)

        def read_auth_result(self, packet: bytes) -> Outcome:
            super().read_auth_result(packet)
            AUTH_PACKETS.append(packet)
            return Outcome()

    AUTH_PACKETS.clear()
    proxy, _ = run_proxy(Rewrite)
    with connect(proxy, "alias", "whatever") as conn:
        assert rows(conn, "SELECT CURRENT_USER()") == [("root@localhost",)]
    assert AUTH_PACKETS and AUTH_PACKETS[-1][:1] == b"\x00"


AUTH_PACKETS: list[bytes] = []


def test_connect_server_picks_a_backend(run_proxy: Any, mariadb: MariaDB) -> None:
    class Second(Hooks):
        def connect_server(self) -> Outcome:
            super().connect_server()
            assert [b.state for b in self.conn.backends] in ([0, 0], [1, 1], [0, 1], [1, 0])
            self.conn.backend_ndx = 2
            return Outcome()

    proxy, _ = run_proxy(Second, backends=[f"127.0.0.1:{free_port()}",
                                           str(mariadb.socket_path)])
    with connect(proxy) as conn:
        # Over the unix socket the server sees user root@localhost with no host port.
        assert rows(conn, "SELECT @@port") == [(mariadb.port,)]
        counts = proxy.call(lambda: [b.connected_clients for b in proxy.service.backends])
        assert counts == [0, 1]
    states = proxy.call(lambda: [b.state.name for b in proxy.service.backends])
    assert states == ["UNKNOWN", "UP"]  # the first was never tried


def test_mock_server_without_any_backend(run_proxy: Any, tmp_path: Path) -> None:
    class Mock(Hooks):
        def connect_server(self) -> Outcome:
            super().connect_server()
            greeting = HandshakeV10(server_version="5.5.5-10.11.0-mock", connection_id=7,
                                    auth_plugin_data=os.urandom(20).replace(b"\0", b"x"),
                                    capabilities=0x807FF7FF & ~0x820, charset=45)
            return Outcome(Decision.SEND_RESULT, [greeting.encode()])

        def read_query(self, packet: bytes) -> Outcome:
            super().read_query(packet)
            if packet == COM_QUERY + b"SELECT 1":
                return answer_rows(["1"], [[1]])
            if packet.startswith(COM_QUERY + b"SET "):  # PyMySQL's autocommit setting
                return answer_ok()
            if packet.startswith(COM_QUERY + b"LOAD DATA"):
                return Outcome(Decision.SEND_RESULT, [b"\xfb" + str(CSV).encode()])
            return Outcome()

    CSV = tmp_path / "x.csv"
    CSV.write_text("a\n" * 1000)
    proxy, _host = run_proxy(Mock, backends=[f"127.0.0.1:{free_port()}"])
    with connect(proxy, "anyone", "any password", local_infile=True) as conn:
        assert rows(conn, "SELECT 1") == [("1",)]
        with conn.cursor() as cur:
            cur.execute(f"LOAD DATA LOCAL INFILE '{CSV}' INTO TABLE t")
        with pytest.raises(pymysql.err.OperationalError) as info:
            rows(conn, "SELECT 2")
        assert "I have no server backend" in info.value.args[1]
    states = proxy.call(lambda: [b.state.name for b in proxy.service.backends])
    assert states == ["UNKNOWN"]  # never contacted


def test_connection_close_after_the_result(run_proxy: Any) -> None:
    class Bye(Hooks):
        def read_query(self, packet: bytes) -> Outcome:
            super().read_query(packet)
            if packet == COM_QUERY + b"SELECT 'bye'":
                self.conn.connection_close = True
            return Outcome()

    proxy, host = run_proxy(Bye)
    conn = connect(proxy)
    try:
        assert rows(conn, "SELECT 'bye'") == [("bye",)]
        # Closed right after the result, not when the client speaks next.
        wait_for(lambda: "disconnect_client" in host.calls, timeout=5)
        with pytest.raises(pymysql.err.OperationalError) as info:
            rows(conn, "SELECT 1")
        assert info.value.args[0] in (2006, 2013)
    finally:
        conn.close()
    wait_for(lambda: "disconnect_client" in host.calls, timeout=5)


def test_script_that_cannot_load_gives_the_client_its_error(mariadb: MariaDB) -> None:
    host = PyScriptHost(Hooks, fail="MySQL Proxy Lua script failed to load. Check the error log.")
    with InProcessProxy([mariadb.address], host) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy)
        assert info.value.args == (1105, "MySQL Proxy Lua script failed to load. "
                                         "Check the error log.")


def test_packet_over_the_limit_is_refused_in_scripted_mode(run_proxy: Any) -> None:
    proxy, _host = run_proxy(Hooks, max_allowed_packet=1024 * 1024)
    conn = connect(proxy)
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            rows(conn, "SELECT '" + "x" * (2 * 1024 * 1024) + "'")
        # ERR 1153, or, when our close races the rest of the upload, a lost connection.
        assert info.value.args[0] in (1153, 2006, 2013)
    finally:
        conn.close()
    with RawClient("127.0.0.1", proxy.port) as raw:
        raw.read_packet()
        from tests.proxy.rawclient import login_packet
        raw.send_packet(login_packet("root"), 1)
        assert raw.read_packet()[1][:1] == b"\x00"
        raw.send_raw(b"\xff\xff\xff\x00" + b"\x03" + b"x" * 100)  # announces >16 MiB
        _, payload = raw.read_packet()
        assert payload[:3] == b"\xff\x81\x04"  # 1153
        assert raw.read_until_closed() == b""


def test_server_closing_mid_result_in_scripted_mode(run_proxy: Any, mariadb: MariaDB) -> None:
    import MySQLdb
    import MySQLdb.cursors

    proxy, host = run_proxy(Hooks)
    conn = MySQLdb.connect(host="127.0.0.1", port=proxy.port, user="root", connect_timeout=10,
                           cursorclass=MySQLdb.cursors.SSCursor)
    try:
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        (thread_id,) = cur.fetchone()
        cur.execute("SELECT seq, REPEAT('x', 100) FROM test.seq_1_to_3000000")
        assert cur.fetchone() is not None
        mariadb.sql(f"KILL {thread_id}")
        with pytest.raises(MySQLdb.OperationalError) as info:
            while cur.fetchmany(10000):
                pass
        assert info.value.args[0] == 2013
    finally:
        conn.close()
    wait_for(lambda: "disconnect_client" in host.calls, timeout=5)


@pytest.mark.parametrize("scripted", [False, True], ids=["relay", "scripted"])
def test_counters_for_the_admin_plugin(mariadb: MariaDB, scripted: bool) -> None:
    host = PyScriptHost(Hooks) if scripted else None
    with InProcessProxy([mariadb.address], host) as proxy:
        with connect(proxy) as conn:
            for _ in range(3):
                assert rows(conn, "SELECT REPEAT('y', 1000)") == [("y" * 1000,)]
        assert proxy.service is not None
        service = proxy.service
        wait_for(lambda: proxy.call(lambda: not service.connections), timeout=5)
        totals = proxy.call(service.stats.as_dict)
        backend = proxy.call(service.backends.items[0].stats.as_dict)
    assert totals["connections"] == 1 and backend["connections"] == 1
    assert totals["queries"] >= 3  # PyMySQL's own SET autocommit counts too
    assert totals["bytes_out"] > 3000 and totals["bytes_in"] > 3 * len("SELECT REPEAT")
    assert backend["bytes_out"] == totals["bytes_out"]


def test_change_user_and_reset_in_scripted_mode(run_proxy: Any) -> None:
    proxy, _host = run_proxy(Hooks)
    conn = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="root",
                                   use_pure=True, ssl_disabled=True, connection_timeout=10)
    try:
        cur = conn.cursor()
        cur.execute("SET @keep = 1")
        cur.close()
        conn.cmd_change_user(username="native", password="native_pw", database="test")
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), DATABASE(), @keep")
        assert cur.fetchall() == [("native@%", "test", None)]
        cur.execute("SET @keep = 2")
        cur.close()
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @keep")
        assert cur.fetchall() == [(None,)]
    finally:
        conn.close()


def test_rows_over_16_mib_in_scripted_mode(run_proxy: Any) -> None:
    proxy, _ = run_proxy(Hooks)
    size = 20 * 1024 * 1024
    with connect(proxy, max_allowed_packet=64 * 1024 * 1024) as conn:
        (value,) = rows(conn, f"SELECT REPEAT('z', {size})")[0]
        assert len(value) == size and set(value) == {"z"}
        # The connection is in step afterwards: the next command and its result line up.
        assert rows(conn, "SELECT 'next'") == [("next",)]


def test_idle_client_times_out_in_scripted_mode(run_proxy: Any) -> None:
    proxy, host = run_proxy(Hooks, idle_timeout=0.3)
    conn = connect(proxy)
    try:
        wait_for(lambda: "disconnect_client" in host.calls, timeout=10,
                 message="the idle client to be closed")
        with pytest.raises(pymysql.err.OperationalError):
            rows(conn, "SELECT 1")
    finally:
        conn.close()


def test_client_vanishing_mid_result_in_scripted_mode(run_proxy: Any, mariadb: MariaDB) -> None:
    from tests.proxy.rawclient import login_packet

    proxy, host = run_proxy(Hooks)
    client = RawClient("127.0.0.1", proxy.port)
    client.read_packet()
    client.send_packet(login_packet("root"), 1)
    assert client.read_packet()[1][:1] == b"\x00"
    client.send_packet(b"\x03SELECT CONNECTION_ID()", 0)
    thread_id = int([client.read_packet()[1] for _ in range(5)][3][1:])
    client.send_packet(b"\x03SELECT seq, REPEAT('x', 100) FROM test.seq_1_to_3000000", 0)
    client.recv_exact(100_000)
    client.abort()

    def gone() -> bool:
        ids = {r[0] for r in mariadb.sql("SELECT id FROM information_schema.processlist")}
        return thread_id not in ids
    wait_for(gone, timeout=20, message="the server connection to be closed")
    wait_for(lambda: "disconnect_client" in host.calls, timeout=5)
