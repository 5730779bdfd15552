"""The connection pool through real clients: a script pools every server connection in
``disconnect_client`` and hands it to the next client in ``connect_server``.

Each test proves the hand-over happened (the second client sees the first one's
``CONNECTION_ID()``) before it checks that nothing of the first client's session
survived it.
"""

from __future__ import annotations

from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.pool.conftest import (
    POOL_ON_DISCONNECT,
    PoolProxyFactory,
    rows,
    thread_alive,
    wait_thread_gone,
)
from tests.proxy.rawclient import RawClient, login_packet
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB


def conn_id(conn: Any) -> int:
    return int(rows(conn, "SELECT CONNECTION_ID()")[0][0])


def leave(proxy: Any, mariadb: MariaDB, setup: list[str], user: str = "root",
          check_alive: bool = True, **kwargs: Any) -> int:
    """A client runs ``setup`` and leaves; returns its server connection, once pooled."""
    conn = proxy.connect(user, **kwargs)
    tid = conn_id(conn)
    for sql in setup:
        rows(conn, sql)
    conn.close()
    # pooled, not closed: the server still has it a while after the client left
    wait_for(lambda: "pooled the server connection" in proxy.log_text(), 10, "the pool to take it")
    if check_alive:
        assert thread_alive(mariadb, tid)
    return tid


def test_the_next_client_gets_the_pooled_connection(pool_proxy: PoolProxyFactory,
                                                    mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, [])
    with proxy.connect("native") as b:
        assert conn_id(b) == tid
        assert rows(b, "SELECT CURRENT_USER()") == [("native@%",)]  # COM_CHANGE_USER
        assert rows(b, "SELECT 1") == [(1,)]


def test_a_wrong_password_is_refused_by_the_server_on_a_pooled_connection(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, [])
    with pytest.raises(pymysql.err.OperationalError) as err:
        proxy.connect("native", password="wrong")
    assert err.value.args[0] == 1045
    wait_thread_gone(mariadb, tid)  # a failed COM_CHANGE_USER leaves nothing to pool
    with proxy.connect("native") as ok:  # a new server connection
        assert conn_id(ok) != tid


def test_user_variables_do_not_leak(pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, ["SET @secret = 42", "SET SESSION sql_mode = 'ANSI_QUOTES'"])
    with proxy.connect() as b:
        assert conn_id(b) == tid
        assert rows(b, "SELECT @secret") == [(None,)]
        assert rows(b, "SELECT @@SESSION.sql_mode = @@GLOBAL.sql_mode") == [(1,)]


def test_temporary_tables_do_not_leak(pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, ["CREATE TEMPORARY TABLE test.pool_tmp (x INT)",
                                 "INSERT INTO test.pool_tmp VALUES (1)"])
    with proxy.connect() as b:
        assert conn_id(b) == tid
        with pytest.raises(pymysql.err.ProgrammingError) as err:
            rows(b, "SELECT * FROM test.pool_tmp")
        assert err.value.args[0] == 1146  # no such table


def test_open_transactions_do_not_leak(pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    mariadb.sql("CREATE TABLE IF NOT EXISTS test.pool_trx (id INT PRIMARY KEY)")
    mariadb.sql("DELETE FROM test.pool_trx")
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, ["BEGIN", "INSERT INTO test.pool_trx VALUES (1)"],
                autocommit=False)
    with proxy.connect() as b:
        assert conn_id(b) == tid
        assert rows(b, "SELECT @@in_transaction") == [(0,)]
        assert rows(b, "SELECT COUNT(*) FROM test.pool_trx") == [(0,)]
        rows(b, "COMMIT")  # commits nothing of the first client's
    assert mariadb.sql("SELECT COUNT(*) FROM test.pool_trx") == [(0,)]


def test_locks_do_not_leak(pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, ["SELECT GET_LOCK('pool_lock', 0)"])
    with proxy.connect() as b:
        assert conn_id(b) == tid
        assert rows(b, "SELECT IS_FREE_LOCK('pool_lock')") == [(1,)]


def test_sql_prepared_statements_do_not_leak(pool_proxy: PoolProxyFactory,
                                             mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, ["PREPARE pool_stmt FROM 'SELECT 1'"])
    with proxy.connect() as b:
        assert conn_id(b) == tid
        with pytest.raises(pymysql.err.MySQLError) as err:
            rows(b, "EXECUTE pool_stmt")
        assert err.value.args[0] == 1243  # unknown prepared statement handler


def test_binary_prepared_statements_do_not_leak(pool_proxy: PoolProxyFactory,
                                                mariadb: MariaDB) -> None:
    """COM_STMT_PREPARE by one client; the next one executes its statement id."""
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    a: Any = mysql.connector.connect(host=proxy.host, port=proxy.port, user="root",
                                     password="", use_pure=True)
    a.cmd_query("SELECT CONNECTION_ID()")
    tid = int(a.get_rows()[0][0][0])
    prepared = a.cmd_stmt_prepare(b"SELECT 'first client'")
    stmt_id = int(prepared["statement_id"])
    assert stmt_id > 0
    a.close()  # without COM_STMT_CLOSE
    wait_for(lambda: "pooled the server connection" in proxy.log_text(), 10, "the pool")
    b: Any = mysql.connector.connect(host=proxy.host, port=proxy.port, user="root",
                                     password="", use_pure=True)
    try:
        b.cmd_query("SELECT CONNECTION_ID()")
        assert int(b.get_rows()[0][0][0]) == tid
        with pytest.raises(mysql.connector.Error) as err:
            b.cmd_stmt_execute(stmt_id)
        assert err.value.errno == 1243
    finally:
        b.close()


def test_another_user_logs_in_on_a_pooled_connection_with_change_user(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT)
    tid = leave(proxy, mariadb, ["SET @root_was_here = 1"], user="native")
    with proxy.connect("root", database="test") as b:
        assert conn_id(b) == tid
        assert rows(b, "SELECT CURRENT_USER(), DATABASE(), @root_was_here") == [
            ("root@localhost", "test", None)]


# -- --proxy-pool-no-change-user --------------------------------------------------------


def test_no_change_user_lets_the_same_login_in_and_resets_the_session(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, ["--proxy-pool-no-change-user"])
    tid = leave(proxy, mariadb, ["SET @secret = 1", "CREATE TEMPORARY TABLE test.nc (x INT)"],
                user="native")
    with proxy.connect("native", database="test") as b:
        assert conn_id(b) == tid
        assert rows(b, "SELECT CURRENT_USER(), DATABASE(), @secret") == [("native@%", "test", None)]
        with pytest.raises(pymysql.err.ProgrammingError):
            rows(b, "SELECT * FROM test.nc")
    assert "COM_CHANGE_USER" not in proxy.log_text()


@pytest.mark.parametrize("user, password", [("native", "wrong"), ("root", "")])
def test_no_change_user_refuses_another_login_on_a_pooled_connection(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB, user: str, password: str) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, ["--proxy-pool-no-change-user"])
    tid = leave(proxy, mariadb, [], user="native")
    with pytest.raises(pymysql.err.OperationalError) as err:
        proxy.connect(user, password=password)
    assert err.value.args == (1045, "(proxy-pool) login failed")
    # the pooled connection was not touched: the right login still gets it
    with proxy.connect("native") as b:
        assert conn_id(b) == tid


# -- size, age, health ------------------------------------------------------------------


def test_the_pool_keeps_at_most_max_idle_connections(pool_proxy: PoolProxyFactory,
                                                     mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, ["--proxy-pool-max-idle=2"], admin=True)
    clients = [proxy.connect() for _ in range(4)]
    tids = [conn_id(c) for c in clients]
    for c in clients:
        c.close()
    wait_for(lambda: sum(not thread_alive(mariadb, t) for t in tids) == 2, 10,
             "two of the four connections to be closed")
    assert proxy.pool_idle() == [2]
    # the oldest were dropped to make room: the last two are kept
    assert [thread_alive(mariadb, t) for t in tids] == [False, False, True, True]


def test_idle_connections_are_closed_after_max_idle_age(pool_proxy: PoolProxyFactory,
                                                        mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, ["--proxy-pool-max-idle-age=0.5"], admin=True)
    # the age may run out before a loaded machine gets to look: pooled is shown by the log
    tid = leave(proxy, mariadb, [], check_alive=False)
    wait_thread_gone(mariadb, tid, timeout=5)
    assert proxy.pool_idle() == [0]
    proxy.wait_log("--proxy-pool-max-idle-age")


@pytest.mark.parametrize("how", ["KILL", "wait_timeout"])
def test_a_dead_idle_connection_is_dropped_at_once(pool_proxy: PoolProxyFactory,
                                                   mariadb: MariaDB, how: str) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, admin=True)
    setup = ["SET SESSION wait_timeout = 1"] if how == "wait_timeout" else []
    tid = leave(proxy, mariadb, setup)
    if how == "KILL":
        mariadb.sql(f"KILL {tid}")
    wait_for(lambda: proxy.pool_idle() == [0], 10, "the dead connection to leave the pool")
    proxy.wait_log(f"idle connection (thread {tid}, user 'root') closed: the server")
    with proxy.connect() as b:  # a fresh connection, no error
        assert conn_id(b) != tid
        assert rows(b, "SELECT 1") == [(1,)]


def test_admin_stats_show_idle_pooled_connections(pool_proxy: PoolProxyFactory,
                                                  mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, admin=True)
    assert proxy.pool_idle() == [0]
    leave(proxy, mariadb, [])
    assert proxy.pool_idle() == [1]
    stats = dict(zip([d[0] for d in _columns(proxy, "SELECT * FROM stats")],
                     proxy.admin_rows("SELECT * FROM stats")[-1], strict=True))
    assert int(stats["pool_idle"]) == 1
    with proxy.connect():
        assert proxy.pool_idle() == [0]


def _columns(proxy: Any, sql: str) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host="127.0.0.1", port=proxy.admin_port, user="admin",
                           password="pool-admin-pw")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.description or ())
    finally:
        conn.close()


# -- backend_ndx after the login -------------------------------------------------------

SWITCHER = """
local function answer(row)
    local s = proxy.MYSQL_TYPE_STRING
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { rows = { row },
        fields = { { name = "ndx", type = s }, { name = "dst", type = s }, { name = "thread", type = s } } } }
    return proxy.PROXY_SEND_RESULT
end
function connect_server()
    proxy.connection.backend_ndx = proxy.global.login_backend or 1
end
function read_auth_result(auth)
    if auth.packet:byte() == proxy.MYSQLD_PACKET_OK then proxy.connection.backend_ndx = 0 end
end
-- /*login=N*/: where the next clients log in; /*ndx=N*/ [SQL]: switch, then run SQL
-- (without SQL, or without a server connection: answer where the client is)
function read_query(packet)
    if packet:byte() ~= proxy.COM_QUERY then return end
    local q = packet:sub(2)
    local login = q:match("^/%*login=(%d)%*/")
    if login then
        proxy.global.login_backend = tonumber(login)
        return answer({ "ok", "", "" })
    end
    local ndx = q:match("^/%*ndx=(%d)%*/")
    if ndx then proxy.connection.backend_ndx = tonumber(ndx) end
    local server = proxy.connection.server
    if not ndx and server == nil then  -- PyMySQL's own statements while parked
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
        return proxy.PROXY_SEND_RESULT
    end
    if server == nil or q:match("%*/%s*$") then
        return answer({ tostring(proxy.connection.backend_ndx), server and server.dst.name or "",
                        server and tostring(server.thread_id) or "" })
    end
end
"""


def test_backend_ndx_takes_the_clients_own_connection_back_and_resets_another_clients(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    socket_backend = str(mariadb.socket_path)
    proxy = pool_proxy(SWITCHER, backends=[mariadb.address, socket_backend], admin=True)
    a = proxy.connect()
    assert rows(a, "/*ndx=0*/") == [("0", "", "")]  # parked after the login
    (_, dst, a_thread), = rows(a, "/*ndx=1*/")
    assert dst == mariadb.address
    rows(a, "/*ndx=1*/ SET @a = 1")
    # no idle connection on backend 2: the client stays where it is
    assert rows(a, "/*ndx=2*/") == [("1", mariadb.address, a_thread)]

    assert rows(a, "/*login=2*/") == [("ok", "", "")]
    b = proxy.connect()
    (_, b_dst, b_thread), = rows(b, "/*ndx=2*/")
    assert b_dst == socket_backend
    rows(b, "/*ndx=2*/ SET @b = 2")
    rows(b, "/*ndx=0*/")
    assert proxy.pool_idle() == [0, 1]

    # A takes B's connection: it is reset first; A's own goes to the pool
    assert rows(a, "/*ndx=2*/ SELECT @b, CONNECTION_ID()") == [(None, int(b_thread))]
    assert proxy.pool_idle() == [1, 0]
    # and A's own comes back as it was (no reset for the client that used it)
    assert rows(a, "/*ndx=1*/ SELECT @a, CONNECTION_ID()") == [(1, int(a_thread))]
    a.close()
    b.close()


def test_a_connection_with_a_result_in_flight_is_not_pooled(pool_proxy: PoolProxyFactory,
                                                            mariadb: MariaDB) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, admin=True)
    with RawClient(proxy.host, proxy.port) as client:
        client.read_packet()  # handshake
        client.send_packet(login_packet("root"), 1)
        assert client.read_packet()[1][:1] == b"\x00"
        client.send_packet(b"\x03SELECT seq, REPEAT('x', 100) FROM test.seq_1_to_5000000", 0)
        client.read_packet()  # the column count: the result is on its way
        client.abort()  # the client vanishes with most of the result unread
    wait_for(lambda: "cannot be pooled, a command on it is not finished" in proxy.log_text(),
             10, "the proxy to refuse pooling")
    assert proxy.pool_idle() == [0]


def test_a_pooled_connection_not_kept_by_connect_server_stays_in_the_pool(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    proxy = pool_proxy("""
        function connect_server()
            proxy.connection.backend_ndx = 1  -- takes the idle one, but does not keep it
        end
        function disconnect_client()
            proxy.connection.backend_ndx = 0
        end
    """, admin=True)
    tid = leave(proxy, mariadb, [])
    with proxy.connect() as b:
        assert conn_id(b) != tid  # a connection of its own
        assert proxy.pool_idle() == [1]
        assert thread_alive(mariadb, tid)


def test_a_bundled_script_is_found_by_its_bare_name_unless_basedir_has_one(
        pool_proxy: PoolProxyFactory, tmp_path: Any) -> None:
    proxy = pool_proxy("rw-splitting.lua")
    with proxy.connect() as c:  # the bundled script answers PROXY SHOW CONFIG itself
        assert ("rwsplit", "min_idle_connections", "4", "number") in rows(c, "PROXY SHOW CONFIG")
    (tmp_path / "rw-splitting.lua").write_text("""
        function read_query(packet)
            proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "the local one" }
            return proxy.PROXY_SEND_RESULT
        end
    """)
    local = pool_proxy("rw-splitting.lua", [f"--basedir={tmp_path}"])
    with pytest.raises(pymysql.err.MySQLError, match="the local one"):
        local.connect()  # PyMySQL's SET NAMES gets the local script's answer


#: MySQL Proxy's lib/ro-pooling.lua pattern: the server connection goes back to the pool
#: after every result outside a transaction, and the next statement takes one.
POOL_AFTER_EVERY_RESULT = """
function read_auth_result(auth)
    if auth.packet:byte() == proxy.MYSQLD_PACKET_OK then proxy.connection.backend_ndx = 0 end
end
function read_query(packet)
    if proxy.connection.backend_ndx == 0 then proxy.connection.backend_ndx = 1 end
    proxy.queries:append(1, packet)
    return proxy.PROXY_SEND_QUERY
end
function read_query_result(inj)
    if not inj.resultset.flags.in_trans then proxy.connection.backend_ndx = 0 end
end
"""


def test_pooling_after_every_result_keeps_transactions_and_own_sessions(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB) -> None:
    mariadb.sql("CREATE TABLE IF NOT EXISTS test.pool_every (id INT PRIMARY KEY)")
    mariadb.sql("DELETE FROM test.pool_every")
    proxy = pool_proxy(POOL_AFTER_EVERY_RESULT, admin=True)
    with proxy.connect(database="test") as a, proxy.connect(database="test") as b:
        wait_for(lambda: proxy.pool_idle() == [2], 10, "both logins pooled")
        a_id, b_id = conn_id(a), conn_id(b)
        assert a_id != b_id
        rows(a, "BEGIN")
        rows(a, "INSERT INTO pool_every VALUES (1)")
        assert proxy.pool_idle() == [1]  # A keeps its connection in the transaction
        assert rows(b, "SELECT COUNT(*) FROM pool_every") == [(0,)]
        assert rows(a, "SELECT COUNT(*) FROM pool_every") == [(1,)]
        rows(a, "COMMIT")
        assert proxy.pool_idle() == [2]
        assert rows(b, "SELECT COUNT(*) FROM pool_every") == [(1,)]
        rows(a, "SET @mine = 'a'")
        assert rows(a, "SELECT @mine, CONNECTION_ID()") == [("a", a_id)]  # its own, as left
        assert rows(b, "SELECT @mine, CONNECTION_ID()") == [(None, b_id)]
