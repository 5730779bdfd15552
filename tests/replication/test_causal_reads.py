"""Read-your-writes through ``rw-splitting.lua`` (``rwsplit.causal_reads``, issue 14 item 4)
against real GTID replication.

One PyMySQL client (autocommit on, as docs/lualib.md asks) inserts a row and reads it
back at once, 10,000 times. The read joins ``test.whoami`` (each server's own name, not
replicated), so each answer says which server served it. The proxy has the primary and
one replica (``servers[1]``):

* with the replica's SQL thread stopped, every ``MASTER_GTID_WAIT`` there times out (a
  1 ms ``causal_reads_timeout`` keeps the run short) and every read goes to the primary,
  and sees its row;
* with the replica applying as usual (it lags by the milliseconds replication takes),
  the waits succeed and the reads are served by the replica, and see their rows.

A read that does not see its row fails the test at once. Each run of 10,000 pairs takes
about 100 s on this 2-core machine shared by other test runs (load average 6 to 10):
more than the minute hoped for, but the full count is kept, as the issue asks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import MySQLdb
import pymysql
import pytest

from tests.pool.conftest import rows
from tests.replication.conftest import ReplProxy, whoami
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import ACCOUNTS
from tests.support.replication import Topology

PAIRS = 10_000
USER = "native"
READ = "SELECT t.v, w.name FROM test.causal t JOIN test.whoami w WHERE t.id = %s"


def mysqldb(proxy: ReplProxy) -> Any:
    return MySQLdb.connect(host=proxy.host, port=proxy.port, user=USER,
                           password=ACCOUNTS[USER].password, autocommit=True)


def causal_proxy(topo: Topology, repl_proxy: Callable[..., ReplProxy], timeout: float,
                 client: Callable[[ReplProxy], Any] | None = None) -> ReplProxy:
    """rw-splitting.lua before the primary and servers[1], causal reads on; the pools
    warmed so that the next client logs in through the replica and finds an idle
    connection of its user on each backend."""
    whoami(topo)
    topo.primary.sql("DROP TABLE IF EXISTS test.causal")
    topo.primary.sql("CREATE TABLE test.causal (id INT PRIMARY KEY, v INT)")
    topo.sync()
    proxy = repl_proxy(["--proxy-lua-script=rw-splitting.lua"], ro=[topo.servers[1]], monitor=False)
    # the pooled connection must be of the same client library as the one under test
    helper = client(proxy) if client else proxy.connect(USER)
    try:
        rows(helper, "PROXY SET GLOBAL rwsplit.min_idle_connections = 1")
        rows(helper, "PROXY SET GLOBAL rwsplit.causal_reads = true")
        rows(helper, f"PROXY SET GLOBAL rwsplit.causal_reads_timeout = {timeout}")
    finally:
        helper.close()
    wait_for(lambda: [int(r[-1]) for r in proxy.admin_rows("SELECT * FROM backend_stats")] == [1, 0],
             10, "the helper's connection in the pool")
    return proxy


def write_read_pairs(conn: Any, start: int, count: int) -> Counter[str]:
    """INSERT a row, SELECT it at once; which server served each read."""
    served: Counter[str] = Counter()
    cur = conn.cursor()
    for i in range(start, start + count):
        cur.execute("INSERT INTO test.causal VALUES (%s, %s)", (i, i * 7))
        cur.execute(READ, (i,))
        got = cur.fetchall()
        assert got and got[0][0] == i * 7, f"read {i - start + 1} did not see its write: {got}"
        served[got[0][1]] += 1
    return served


@pytest.mark.timeout(600)
def test_reads_after_writes_see_them_when_the_replica_is_stopped(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    proxy = causal_proxy(topo, repl_proxy, timeout=0.001)
    replica = topo.servers[1]
    replica.sql("STOP SLAVE SQL_THREAD")
    with proxy.connect(USER) as conn:
        started = time.monotonic()
        served = write_read_pairs(conn, 1, PAIRS)
        took = time.monotonic() - started
    print(f"causal reads, replica stopped: {PAIRS} pairs in {took:.1f} s, served by {dict(served)}")
    assert served == Counter({topo.primary.name: PAIRS})


@pytest.mark.timeout(600)
def test_reads_after_writes_wait_on_a_replica_that_applies(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    proxy = causal_proxy(topo, repl_proxy, timeout=5)
    with proxy.connect(USER) as conn:
        started = time.monotonic()
        served = write_read_pairs(conn, 1, PAIRS)
        took = time.monotonic() - started
    print(f"causal reads, replica applying: {PAIRS} pairs in {took:.1f} s, served by {dict(served)}")
    assert sum(served.values()) == PAIRS
    assert served[topo.servers[1].name] == PAIRS


def test_without_causal_reads_a_stopped_replica_serves_stale_reads(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """The control: the same client without causal reads reads on the replica, which
    does not have the row."""
    proxy = causal_proxy(topo, repl_proxy, timeout=1)
    topo.servers[1].sql("STOP SLAVE SQL_THREAD")
    with proxy.connect(USER) as conn:
        rows(conn, "PROXY SET GLOBAL rwsplit.causal_reads = false")
        rows(conn, "INSERT INTO test.causal VALUES (1, 7)")
        assert rows(conn, READ, (1,)) == []
        assert rows(conn, "SELECT name FROM test.whoami") == [(topo.servers[1].name,)]


def test_a_client_tracking_last_gtid_needs_no_extra_query_on_the_primary(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """A client that negotiated session tracking (libmariadb: MySQLdb, sysbench, the
    mariadb CLI) gets the write's GTID in its OK packet when the primary tracks
    ``last_gtid``: the read waits on the replica without asking the primary for it."""
    proxy = causal_proxy(topo, repl_proxy, timeout=5, client=mysqldb)
    conn = mysqldb(proxy)
    try:
        cur = conn.cursor()
        cur.execute("SET SESSION session_track_system_variables = 'last_gtid'")
        for i in range(1, 21):
            cur.execute("INSERT INTO test.causal VALUES (%s, %s)", (i, i))
            cur.execute(READ, (i,))
            ((v, name),) = cur.fetchall()
            assert (v, name) == (i, topo.servers[1].name)
    finally:
        conn.close()
    asked = proxy.admin_rows("SELECT count FROM query_digest WHERE digest_text LIKE '%last_gtid%'"
                             " AND digest_text NOT LIKE '%session_track%'")
    assert sum(int(r[0]) for r in asked) == 0, asked
    waits = proxy.admin_rows("SELECT count FROM query_digest WHERE digest_text LIKE '%MASTER_GTID_WAIT%'")
    assert sum(int(r[0]) for r in waits) == 20, waits


def test_pymysql_defaults_to_autocommit_off_which_pins(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """PyMySQL's default (autocommit=0) keeps every statement in a transaction: the
    client stays on the primary (docs/lualib.md says to connect with autocommit=True)."""
    proxy = causal_proxy(topo, repl_proxy, timeout=1)
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user=USER,
                           password=ACCOUNTS[USER].password)
    try:
        assert rows(conn, "SELECT name FROM test.whoami") == [(topo.primary.name,)]
        conn.autocommit(True)
        assert rows(conn, "SELECT name FROM test.whoami") == [(topo.servers[1].name,)]
    finally:
        conn.close()
