"""rw-splitting.lua's pins are released by rule (issue 14 item 6, docs/lualib.md "When
pins are released"), through the proxy with PyMySQL against real replication: after the
statement that ends a pin, the client's reads go to the replica again (``test.whoami``
names the server that answered)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.pool.conftest import rows
from tests.replication.conftest import ReplProxy, served_by, whoami
from tests.support.chassis_proc import wait_for
from tests.support.replication import Topology

USER = "native"


@pytest.fixture
def rw(topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> Callable[[], Any]:
    """A PyMySQL client (autocommit on) of rw-splitting.lua before the primary and
    servers[1], logged in through the replica with an idle connection on each backend."""
    whoami(topo)
    topo.primary.sql("DROP TABLE IF EXISTS test.pins")
    topo.primary.sql("CREATE TABLE test.pins (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    topo.sync()
    proxy = repl_proxy(["--proxy-lua-script=rw-splitting.lua"], ro=[topo.servers[1]], monitor=False)
    with proxy.connect(USER) as helper:
        rows(helper, "PROXY SET GLOBAL rwsplit.min_idle_connections = 1")
    wait_for(lambda: [int(r[-1]) for r in proxy.admin_rows("SELECT * FROM backend_stats")] == [1, 0],
             10, "the helper's connection in the pool")
    return lambda: proxy.connect(USER)


def test_an_auto_increment_insert_pins_only_until_a_statement_that_does_not_read_its_id(
        topo: Topology, rw: Callable[[], Any]) -> None:
    replica = topo.servers[1].name
    with rw() as c:
        assert served_by(c) == replica
        for n in range(3):  # a long session of inserts and reads stays mostly on replicas
            rows(c, "INSERT INTO test.pins (v) VALUES (%s)", (n,))
            ((new_id,),) = rows(c, "SELECT LAST_INSERT_ID()")
            assert rows(c, "SELECT @@identity") == [(new_id,)]
            assert topo.primary.sql("SELECT v FROM test.pins WHERE id = %s", (new_id,)) == [(n,)]
            assert served_by(c) == replica
        rows(c, "INSERT INTO test.pins (v) VALUES (7)")
        assert served_by(c) == replica  # no LAST_INSERT_ID() read: free at once


def test_temporary_tables_pin_until_dropped(topo: Topology, rw: Callable[[], Any]) -> None:
    primary, replica = topo.primary.name, topo.servers[1].name
    with rw() as c:
        rows(c, "CREATE TEMPORARY TABLE test.scratch (x INT)")
        rows(c, "INSERT INTO test.scratch VALUES (1), (2)")
        assert served_by(c) == primary
        assert rows(c, "SELECT COUNT(*) FROM test.scratch") == [(2,)]
        rows(c, "DROP TEMPORARY TABLE test.scratch")
        assert served_by(c) == replica


def test_sql_prepared_statements_pin_until_deallocated(topo: Topology, rw: Callable[[], Any]) -> None:
    primary, replica = topo.primary.name, topo.servers[1].name
    with rw() as c:
        rows(c, "PREPARE s FROM 'SELECT name FROM test.whoami'")
        assert rows(c, "EXECUTE s") == [(primary,)]
        assert served_by(c) == primary
        rows(c, "DEALLOCATE PREPARE s")
        assert served_by(c) == replica


def test_autocommit_off_pins_until_it_is_on_again(topo: Topology, rw: Callable[[], Any]) -> None:
    primary, replica = topo.primary.name, topo.servers[1].name
    with rw() as c:
        c.autocommit(False)  # PyMySQL's default: SET AUTOCOMMIT = 0
        rows(c, "INSERT INTO test.pins (v) VALUES (1)")
        c.commit()
        assert served_by(c) == primary  # between transactions too
        c.commit()
        c.autocommit(True)
        assert served_by(c) == replica


def test_user_variables_set_to_constants_follow_the_client(topo: Topology, rw: Callable[[], Any]) -> None:
    primary, replica = topo.primary.name, topo.servers[1].name
    with rw() as c:
        rows(c, "SET @greeting = 'hello'")
        assert rows(c, "SELECT @greeting, name FROM test.whoami") == [("hello", replica)]
        rows(c, "INSERT INTO test.pins (v) VALUES (LENGTH(@greeting))")
        assert topo.primary.sql("SELECT COUNT(*) FROM test.pins WHERE v = 5") == [(1,)]
        assert rows(c, "SELECT @greeting, name FROM test.whoami") == [("hello", replica)]
        rows(c, "SELECT @counter := 1")  # an assignment elsewhere pins for the session
        assert served_by(c) == primary
        assert rows(c, "SELECT @counter") == [(1,)]
