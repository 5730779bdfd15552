"""Roles follow the servers (``--proxy-backend-roles=auto``): a switchover moves writes to
the new primary within one monitor interval (plus a second), with and without a script,
and the admin console and ``proxy.global.backends[i].type`` show the live role."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tests.replication.conftest import MONITOR_INTERVAL, ReplProxy, served_by, whoami
from tests.support.chassis_proc import wait_for
from tests.support.replication import Topology


def write_lands_on(proxy: ReplProxy, value: int) -> str | None:
    """A new client writes ``value`` through the proxy; the server that took it, or None
    when the write was refused (no read/write backend yet, or a read-only one)."""
    try:
        conn = proxy.connect("native", database="test")
    except pymysql.err.OperationalError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO test.sw VALUES (%s)", (value,))
        return served_by_primary(conn)
    except pymysql.err.MySQLError:
        return None
    finally:
        conn.close()


def served_by_primary(conn: pymysql.Connection[Any]) -> str:
    """The server a write statement reaches (a locking read goes where writes go)."""
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM test.whoami FOR UPDATE")
        ((name,),) = cur.fetchall()
        return str(name)


def fresh_tables(topo: Topology) -> None:
    whoami(topo)
    topo.primary.sql("DROP TABLE IF EXISTS test.sw")
    topo.primary.sql("CREATE TABLE test.sw (id INT PRIMARY KEY)")
    topo.sync()


def switch_and_time(topo: Topology, until: Callable[[], object],
                    between: Callable[[], None] = lambda: None) -> float:
    """Switch over to servers[1] as an operator would and return the seconds from the
    promotion (read_only=0 on the new primary) until ``until()`` holds; ``between`` runs
    while no server takes writes."""
    old, new = topo.servers[0], topo.servers[1]
    old.sql("SET GLOBAL read_only=1")
    between()
    new.wait_for_replica(old)
    topo.promote(new)
    promoted = time.monotonic()
    wait_for(until, MONITOR_INTERVAL + 5, "writes to reach the new primary")
    took = time.monotonic() - promoted
    topo.repoint(old)
    return took


def test_switchover_moves_writes_without_a_script(topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    fresh_tables(topo)
    proxy = repl_proxy(["--proxy-backend-roles=auto"], event_threads=2)
    wait_for(lambda: proxy.replication()[0][0] == "none", 10, "the monitor's first report")
    assert proxy.roles() == ["rw", "ro", "ro"]
    assert write_lands_on(proxy, 1) == "repl0"

    def no_primary_for_a_moment() -> None:
        wait_for(lambda: proxy.roles() == ["ro", "ro", "ro"], MONITOR_INTERVAL + 3,
                 "the old primary to be read-only")
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect("native")
        assert "every server has read_only=ON" in info.value.args[1]

    ids = iter(range(100, 10_000))
    took = switch_and_time(topo, lambda: write_lands_on(proxy, next(ids)) == "repl1",
                           no_primary_for_a_moment)
    assert took <= MONITOR_INTERVAL + 1, f"writes reached the new primary after {took:.2f} s"
    assert proxy.roles() == ["ro", "rw", "ro"]
    # one line per change, though two workers apply it
    log = proxy.wait_log("role ro -> rw")
    assert log.count("role ro -> rw") == 1 and log.count("role rw -> ro") == 1, log
    assert MONITOR_PASSWORD_TEXT not in log


MONITOR_PASSWORD_TEXT = "monitor_pw"


def test_switchover_moves_writes_through_rw_splitting(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    fresh_tables(topo)
    proxy = repl_proxy(["--proxy-backend-roles=auto", "--proxy-lua-script=rw-splitting.lua"])
    wait_for(lambda: proxy.replication()[0][0] == "none", 10, "the monitor's first report")
    steady = proxy.connect("native", database="test")
    pinned = proxy.connect("native", database="test")
    try:
        with steady.cursor() as cur:
            cur.execute("INSERT INTO test.sw VALUES (1)")
        assert served_by_primary(steady) == "repl0"
        with pinned.cursor() as cur:
            cur.execute("SET @mine = NOW()")  # session state (not a constant): pinned to repl0
            cur.execute("INSERT INTO test.sw VALUES (3)")

        ids = iter(range(100, 10_000))
        took = switch_and_time(topo, lambda: write_lands_on(proxy, next(ids)) == "repl1")
        assert took <= MONITOR_INTERVAL + 1, f"writes reached the new primary after {took:.2f} s"
        # the client that was there before the switch writes on the new primary too
        with steady.cursor() as cur:
            cur.execute("INSERT INTO test.sw VALUES (2)")
        assert served_by_primary(steady) == "repl1"
        assert topo.servers[1].sql("SELECT COUNT(*) FROM test.sw WHERE id = 2") == [(1,)]
        # reads still go to a replica: never the new primary's own table
        assert served_by(steady) in ("repl0", "repl2")
        # a pinned client cannot follow (its state is on repl0): told so, and disconnected
        with pytest.raises(pymysql.err.MySQLError) as info, pinned.cursor() as cur:
            cur.execute("INSERT INTO test.sw VALUES (4)")
        assert "is read-only now and this session's state (SET @mine) is there: reconnect" in str(info.value)
        with pytest.raises(pymysql.err.OperationalError) as info, pinned.cursor() as cur:
            cur.execute("SELECT 1")
        assert info.value.args[0] in (2006, 2013)  # gone
    finally:
        steady.close()
        pinned.close()
    # what the script saw: proxy.global.backends[i].type is the live role
    assert proxy.roles() == ["ro", "rw", "ro"]
