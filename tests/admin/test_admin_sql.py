"""The admin console answers real SQL, through PyMySQL and the mariadb CLI, on a real
chassis with two workers in front of a real MariaDB: WHERE, GROUP BY, joins, KILL,
SHOW VARIABLES, typed columns, SQLite's errors as MySQL's."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.admin.test_admin import PASSWORD, admin, admin_args, query
from tests.support.chassis_proc import CHASSIS, ChassisProcess, start_chassis, wait_for
from tests.support.mariadb import MariaDB

Chassis = tuple[ChassisProcess, int, int]


@pytest.fixture
def two_workers(tmp_path: Path, mariadb: MariaDB) -> Iterator[Chassis]:
    args, proxy_port, admin_port = admin_args(tmp_path, mariadb, "--event-threads=2", "--log-level=info")
    with start_chassis(args) as chassis:
        yield chassis, proxy_port, admin_port


def client(port: int) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=5,
                           ssl_disabled=True, autocommit=True)


def cli(admin_port: int, sql: str) -> str:
    result = subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{admin_port}", "-uadmin", f"-p{PASSWORD}", "--skip-ssl",
         "--batch", "-e", sql], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def clients_on_both_workers(proxy_port: int, admin_port: int) -> list[pymysql.Connection]:
    """Clients until both workers hold some (the kernel spreads them over the workers)."""
    clients: list[pymysql.Connection] = []
    for _ in range(40):
        clients.append(client(proxy_port))
        if len(clients) >= 4:
            _, rows = query(admin_port, "SELECT DISTINCT worker FROM connections")
            if {r[0] for r in rows} == {1, 2}:
                return clients
    raise AssertionError("40 clients all landed on one worker")


def test_connections_show_every_client_of_both_workers(two_workers: Chassis, mariadb: MariaDB) -> None:
    _, proxy_port, admin_port = two_workers
    clients = clients_on_both_workers(proxy_port, admin_port)
    sleeper = clients[0]
    done = threading.Event()

    def sleep() -> None:
        with sleeper.cursor() as cur:
            cur.execute("SELECT SLEEP(3)")
        done.set()

    thread = threading.Thread(target=sleep)
    try:
        thread.start()  # SLEEP(3): the query shows for 3 s
        wait_for(lambda: query(admin_port, "SELECT count(*) FROM connections WHERE state = 'query'")[1]
                 == [(1,)], 10, "the sleeping client shows as running a query")
        columns, rows = query(admin_port, "SELECT state, count(*) AS n FROM connections GROUP BY state "
                                          "ORDER BY state")
        assert columns == ["state", "n"]
        assert dict(rows) == {"idle": len(clients) - 1, "query": 1}
        _, rows = query(admin_port, "SELECT id, user, client, backend, statement FROM connections "
                                    "WHERE state = 'query'")
        conn_id, user, address, backend, statement = rows[0]
        assert statement == "SELECT SLEEP(3)" and user == "root"
        assert address == f"127.0.0.1:{sleeper._sock.getsockname()[1]}"  # type: ignore[union-attr]
        assert backend == f"127.0.0.1:{mariadb.port}"
        assert isinstance(conn_id, int)
        wait_for(lambda: query(admin_port, f"SELECT time FROM connections WHERE id = {conn_id}")[1][0][0]
                 >= 1.0, 10, "the running query's time grows (relay: the kernel's TCP_INFO)")
        # the ids are unique over the workers
        _, ids = query(admin_port, "SELECT count(DISTINCT id), count(*) FROM connections")
        assert ids[0][0] == ids[0][1] == len(clients)
        out = cli(admin_port, "SELECT worker, count(*) FROM connections GROUP BY worker ORDER BY worker")
        assert out.splitlines()[0] == "worker\tcount(*)" and len(out.splitlines()) == 3
        assert done.wait(10)
    finally:
        thread.join(10)
        for c in clients:
            c.close()


def test_kill_closes_a_live_client_wherever_it_is(two_workers: Chassis) -> None:
    chassis, proxy_port, admin_port = two_workers
    clients = clients_on_both_workers(proxy_port, admin_port)
    try:
        for victim in clients[:2]:  # one per worker, at least once
            with victim.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
            port = victim._sock.getsockname()[1]  # type: ignore[union-attr]
            _, rows = query(admin_port, f"SELECT id FROM connections WHERE client = '127.0.0.1:{port}'")
            (conn_id,), = rows
            with admin(admin_port) as conn, conn.cursor() as cur:
                assert cur.execute(f"KILL {conn_id}") == 1
            with pytest.raises(pymysql.err.OperationalError) as info, victim.cursor() as cur:
                cur.execute("SELECT 1")
            assert info.value.args[0] in (2013, 2006), info.value
            chassis.wait_for_log(f"conn {conn_id}: client 127.0.0.1:{port} (user 'root') killed from the admin console")
            assert chassis.log_text().count(f"conn {conn_id}: client 127.0.0.1:{port} (user 'root') killed") == 1
        with clients[2].cursor() as cur:  # the others are served
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
        with admin(admin_port) as conn, conn.cursor() as cur, \
                pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("KILL 999999")
        assert info.value.args[0] == 1094
    finally:
        for c in clients:
            c.close()


def test_numbers_are_typed_and_joins_work(two_workers: Chassis) -> None:
    _, proxy_port, admin_port = two_workers
    with client(proxy_port) as c, c.cursor() as cur:
        cur.execute("SELECT 1")
        with admin(admin_port) as conn, conn.cursor() as acur:
            acur.execute("SELECT b.backend_ndx, b.address, b.connected_clients, s.queries, "
                         "avg(s.bytes_in) AS avg_in FROM backends b JOIN backend_stats s "
                         "ON s.backend_ndx = b.backend_ndx WHERE b.state = 'up' GROUP BY b.backend_ndx")
            rows = acur.fetchall()
            types = [d[1] for d in acur.description]
    assert types == [pymysql.constants.FIELD_TYPE.LONGLONG, pymysql.constants.FIELD_TYPE.VAR_STRING,
                     pymysql.constants.FIELD_TYPE.LONGLONG, pymysql.constants.FIELD_TYPE.LONGLONG,
                     pymysql.constants.FIELD_TYPE.DOUBLE]
    assert rows[0][0] == 1 and rows[0][2] == 1 and rows[0][3] >= 1 and isinstance(rows[0][4], float)


def test_workers_pool_and_stats_come_from_both_workers(two_workers: Chassis) -> None:
    chassis, _, admin_port = two_workers
    _, rows = query(admin_port, "SELECT worker, pid, uptime > 0, rss_bytes > 1000000 FROM workers ORDER BY worker")
    assert [r[0] for r in rows] == [1, 2]
    assert sorted(r[1] for r in rows) == sorted(chassis.workers())
    assert all(r[2] == 1 and r[3] == 1 for r in rows)
    _, rows = query(admin_port, "SELECT worker, backend_ndx, address, idle, taken FROM pool ORDER BY worker, "
                                "backend_ndx")
    assert [(r[0], r[1]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    _, rows = query(admin_port, "SELECT worker FROM stats")
    assert [r[0] for r in rows] == ["1", "2", "total"]


def test_sql_errors_are_mysql_errors_and_no_noise_in_the_log(two_workers: Chassis) -> None:
    chassis, _, admin_port = two_workers
    with admin(admin_port) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.ProgrammingError) as info:
            cur.execute("SELECT * FROM nosuch")
        assert info.value.args[0] == 1146 and "SHOW TABLES" in info.value.args[1]
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SELECT nosuch FROM backends")
        assert info.value.args[0] == 1054
        with pytest.raises(pymysql.err.ProgrammingError) as info:
            cur.execute("SELEC 1")
        assert info.value.args[0] == 1064
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("WITH x AS (SELECT 1) DELETE FROM backends")
        assert info.value.args[0] == 1227
        cur.execute("SELECT count(*) FROM backends")  # still usable, nothing changed
        assert cur.fetchone() == (2,)
    assert "nosuch" not in chassis.log_text()  # a typo is not a server problem (debug level)


def test_show_tables_and_variables_mask_the_password(tmp_path: Path, mariadb: MariaDB) -> None:
    args, _, admin_port = admin_args(tmp_path, mariadb)
    args = [a for a in args if not a.startswith("--admin-password-file")] + [f"--admin-password={PASSWORD}"]
    with start_chassis(args):
        out = cli(admin_port, "SHOW TABLES")
        assert out.splitlines()[0] == "Tables_in_admin"
        assert {"backends", "backend_stats", "stats", "query_digest", "connections", "pool", "lua",
                "workers"} <= set(out.splitlines()[1:])
        out = cli(admin_port, "SHOW VARIABLES LIKE 'admin%'")
        assert "admin-password\t********" in out.splitlines()
        assert "admin-username\tadmin" in out.splitlines()
        assert PASSWORD not in out
        out = cli(admin_port, "SELECT variable_name, value, source FROM variables WHERE value LIKE '%"
                              + PASSWORD.split()[0] + "%'")
        assert out == ""  # no variable shows the password, whatever its name
        _, rows = query(admin_port, "SHOW VARIABLES LIKE 'proxy-backend-addresses'")
        assert rows == [("proxy-backend-addresses", f"127.0.0.1:{mariadb.port},127.0.0.1:1")]


LUA = """
function read_query(packet)
    if packet:byte() == proxy.COM_QUERY then
        proxy.queries:append(1, packet, { resultset_is_needed = false })
        return proxy.PROXY_SEND_QUERY
    end
end
"""


def test_lua_table_and_scripted_connections(tmp_path: Path, mariadb: MariaDB) -> None:
    script = tmp_path / "x.lua"
    script.write_text(LUA)
    args, proxy_port, admin_port = admin_args(tmp_path, mariadb, f"--proxy-lua-script={script}")
    with start_chassis(args), admin(admin_port) as console, console.cursor() as acur:
        acur.execute("SELECT worker, script, memory_used FROM lua")
        rows = acur.fetchall()
        assert rows[0][:2] == (1, str(script)) and rows[0][2] > 10000

        def running() -> list[tuple[object, ...]]:
            acur.execute("SELECT statement, time FROM connections WHERE state = 'query'")
            return list(acur.fetchall())

        with client(proxy_port) as c:
            done = threading.Event()

            def sleep() -> None:
                with c.cursor() as cur:
                    cur.execute("SELECT SLEEP(3)")
                done.set()

            thread = threading.Thread(target=sleep)
            thread.start()
            try:
                rows = wait_for(running, 10, "the scripted client runs its query")
                assert rows[0][0] == "SELECT SLEEP(3)"
                wait_for(lambda: (running() or [(None, 0.0)])[0][1] >= 0.5, 10, "its time grows")
            finally:
                thread.join(10)
            assert done.is_set()
        acur.execute("SELECT hook_calls FROM lua")
        if acur.fetchone() != (None,):  # the bridge counts hook calls
            acur.execute("SELECT calls FROM lua_hooks WHERE hook = 'read_query'")
            assert acur.fetchone()[0] >= 2  # SET autocommit, SELECT SLEEP


def _has_digests() -> bool:
    """The proxy answers control op ``digests`` once it has --proxy-query-digest."""
    out = subprocess.run([str(CHASSIS), "--plugins=proxy", "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    return "--proxy-query-digest" in out


def test_query_digest_top_queries_and_truncate(two_workers: Chassis) -> None:
    if not _has_digests():
        pytest.skip("the proxy answers no control op 'digests' yet (no --proxy-query-digest)")
    _, proxy_port, admin_port = two_workers
    with client(proxy_port) as c, c.cursor() as cur:
        for i in range(5):
            cur.execute(f"SELECT {i} + 1")
        cur.execute("SELECT SLEEP(0.2)")
    _, rows = query(admin_port, "SELECT digest_text, count, sum_time FROM query_digest "
                                "ORDER BY sum_time DESC LIMIT 10")
    assert rows[0][0].lower().startswith("select sleep") and rows[0][2] >= 0.2
    assert any(count == 5 for _, count, _ in rows)
    with admin(admin_port) as conn, conn.cursor() as acur:
        acur.execute("TRUNCATE query_digest")
    assert query(admin_port, "SELECT count(*) FROM query_digest")[1] == [(0,)]
