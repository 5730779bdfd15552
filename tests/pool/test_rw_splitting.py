"""rw-splitting.lua (``--proxy-lua-script=rw-splitting.lua``, the bundled script found by
its bare name) against a real primary and a real read-only replica.

Where a statement ran is read from the data: ``test.whoami`` holds ``primary`` on the
primary and ``replica`` on the replica (written on each with the binlog off). Clients log
in as ``native``, which the replica's read_only stops: a write that reached the replica
would fail.

Each test starts its own chassis: a helper client sets ``rwsplit.min_idle_connections``
to 1 (``PROXY SET GLOBAL``) and leaves, so its connection waits idle on the primary; the
client under test then logs in through the replica (whose pool is below the minimum)
and finds an idle connection of its user on each backend.
"""

from __future__ import annotations

from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.pool.conftest import PoolProxy, PoolProxyFactory, rows
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB

SCRIPT = "rw-splitting.lua"
WHERE = "SELECT name FROM test.whoami"


@pytest.fixture(scope="module")
def servers(primary: MariaDB, replica: MariaDB) -> tuple[MariaDB, MariaDB]:
    """The primary and the replica, with test.whoami on each and test.items replicated."""
    for db, name in ((primary, "primary"), (replica, "replica")):
        conn = db.connect("root")
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute("CREATE TABLE test.whoami (name VARCHAR(16))")
                cur.execute("INSERT INTO test.whoami VALUES (%s)", (name,))
        finally:
            conn.close()
    primary.sql("CREATE TABLE test.items (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    primary.sql("INSERT INTO test.items (v) VALUES (1), (2), (3)")
    primary.sql("CREATE TABLE sbtest.rw_db (x INT)")
    replica.wait_for_replica()
    return primary, replica


class RwSplit:
    """A chassis running rw-splitting.lua in front of the primary and the replica."""

    def __init__(self, proxy: PoolProxy, primary: MariaDB, replica: MariaDB) -> None:
        self.proxy = proxy
        self.primary = primary
        self.replica = replica
        with proxy.connect("native") as helper:
            rows(helper, "PROXY SET GLOBAL rwsplit.min_idle_connections = 1")
        wait_for(lambda: proxy.pool_idle() == [1, 0], 10, "the helper's connection in the pool")

    def client(self, **kwargs: Any) -> pymysql.Connection[Any]:
        kwargs.setdefault("database", "test")
        return self.proxy.connect("native", **kwargs)


@pytest.fixture
def rw(pool_proxy: PoolProxyFactory, servers: tuple[MariaDB, MariaDB]) -> RwSplit:
    primary, replica = servers
    proxy = pool_proxy(SCRIPT, [f"--proxy-read-only-backend-addresses={replica.address}"],
                       backends=[primary.address], admin=True)
    return RwSplit(proxy, primary, replica)


def where(conn: Any) -> str:
    return str(rows(conn, WHERE)[0][0])


def test_reads_go_to_the_replica_and_writes_to_the_primary(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, "UPDATE items SET v = v + 10 WHERE id = 1")  # a write: the primary
        assert rw.primary.sql("SELECT v FROM test.items WHERE id = 1") == [(11,)]
        assert where(c) == "replica"  # and back
        rows(c, "UPDATE items SET v = v - 10 WHERE id = 1")
        assert where(c) == "replica"
    assert "pinned" not in rw.proxy.log_text()


def test_a_transaction_stays_on_the_primary(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, "BEGIN")
        assert where(c) == "primary"
        rows(c, "UPDATE items SET v = v WHERE id = 2")
        assert where(c) == "primary"
        rows(c, "COMMIT")
        assert where(c) == "replica"
        # autocommit off: every statement is in a transaction
        c.autocommit(False)
        assert where(c) == "primary"
        c.commit()


def test_user_variables_pin_the_client_to_the_primary(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, "SET @greeting = 'hello'")  # a constant: it follows the client instead
        assert rows(c, "SELECT @greeting, name FROM test.whoami") == [("hello", "replica")]
        rows(c, "SELECT @greeting := CONCAT(@greeting, '!')")
        assert rows(c, "SELECT @greeting") == [("hello!",)]
        assert where(c) == "primary"


def test_temporary_tables_pin_the_client_to_the_primary(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, "CREATE TEMPORARY TABLE tmp_rw (x INT)")
        rows(c, "INSERT INTO tmp_rw VALUES (1), (2)")
        assert rows(c, "SELECT COUNT(*) FROM tmp_rw") == [(2,)]
        assert where(c) == "primary"


def test_last_insert_id_comes_from_the_primary_connection(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, "INSERT INTO items (v) VALUES (100)")
        (new_id,), = rows(c, "SELECT LAST_INSERT_ID()")
        assert new_id > 3
        assert rw.primary.sql("SELECT v FROM test.items WHERE id = %s", (new_id,)) == [(100,)]
        # the insert id pinned the client only until a statement that does not read it
        assert where(c) == "replica"
        rows(c, "DELETE FROM items WHERE id = %s", (new_id,))


def test_found_rows_runs_where_its_select_ran(rw: RwSplit) -> None:
    rw.replica.wait_for_replica()
    (total,), = rw.primary.sql("SELECT COUNT(*) FROM test.items")
    with rw.client() as c:
        assert where(c) == "replica"
        assert len(rows(c, "SELECT SQL_CALC_FOUND_ROWS id FROM items LIMIT 1")) == 1
        assert rows(c, "SELECT FOUND_ROWS()") == [(total,)]


def test_sql_prepared_statements_run_on_the_primary(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, f"PREPARE where_stmt FROM '{WHERE}'")
        assert rows(c, "EXECUTE where_stmt") == [("primary",)]
        assert rows(c, "EXECUTE where_stmt") == [("primary",)]


def test_binary_prepared_statements_run_on_the_primary(rw: RwSplit) -> None:
    conn = mysql.connector.connect(host=rw.proxy.host, port=rw.proxy.port, user="native",
                                   password="native_pw", database="test", use_pure=True)
    try:
        cur = conn.cursor(prepared=True)
        for _ in range(2):
            cur.execute(f"{WHERE} WHERE 1 = ?", (1,))
            assert [tuple(r) for r in cur.fetchall()] == [("primary",)]
        cur.close()
    finally:
        conn.close()


def test_get_lock_runs_on_the_primary(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        assert rows(c, "SELECT GET_LOCK('rw_lock', 0)") == [(1,)]
        (holder,), = rw.primary.sql("SELECT IS_USED_LOCK('rw_lock')")
        assert holder is not None
        assert rw.replica.sql("SELECT IS_FREE_LOCK('rw_lock')") == [(1,)]
        assert rows(c, "SELECT RELEASE_LOCK('rw_lock')") == [(1,)]


def test_the_default_database_follows_the_client(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        rows(c, "USE sbtest")
        assert rows(c, "SELECT DATABASE()") == [("sbtest",)]  # on the replica
        rows(c, "INSERT INTO rw_db VALUES (1)")  # unqualified, on the primary
        assert rw.primary.sql("SELECT COUNT(*) FROM sbtest.rw_db WHERE x = 1") == [(1,)]
        rw.replica.wait_for_replica()
        assert rows(c, "SELECT COUNT(*) FROM rw_db WHERE x = 1") == [(1,)]  # replica again
        c.select_db("test")  # COM_INIT_DB from the client
        assert where(c) == "replica"
        rows(c, "UPDATE items SET v = v WHERE id = 3")  # primary: items is in test
    rw.primary.sql("DELETE FROM sbtest.rw_db")


def test_writes_never_reach_the_replica(rw: RwSplit) -> None:
    with rw.client() as c:
        assert where(c) == "replica"
        for sql in ("INSERT INTO items (v) VALUES (5)", "DELETE FROM items WHERE v = 5",
                    "SELECT * FROM items WHERE id = 1 FOR UPDATE"):
            rows(c, sql)  # native cannot write on the read-only replica: no error here
    assert "read-only" not in rw.proxy.log_text()
