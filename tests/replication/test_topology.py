"""The replication fixture itself: three servers, GTID replication, a switchover and back."""

from __future__ import annotations

import pymysql
import pytest

from tests.support.replication import MONITOR_PASSWORD, MONITOR_USER, Topology


def test_replicas_follow_the_primary_with_gtid(topo: Topology) -> None:
    primary, (r1, r2) = topo.primary, topo.replicas
    primary.sql("CREATE TABLE IF NOT EXISTS test.topo (id INT PRIMARY KEY)")
    primary.sql("REPLACE INTO test.topo VALUES (1)")
    topo.sync()
    for replica in (r1, r2):
        assert replica.sql("SELECT id FROM test.topo") == [(1,)]
        status = replica.replica_status()
        assert status["Using_Gtid"] == "Slave_Pos"
        assert replica.sql("SELECT @@read_only") == [(1,)]
    # the test accounts cannot write on a read-only replica
    with pytest.raises(pymysql.err.OperationalError) as info:
        r1.sql("INSERT INTO test.topo VALUES (2)", user="native")
    assert info.value.args[0] == 1290


def test_monitor_account_may_read_replication_state(topo: Topology) -> None:
    replica = topo.replicas[0]
    conn = replica.connect(MONITOR_USER, password=MONITOR_PASSWORD)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW ALL SLAVES STATUS")
            assert len(cur.fetchall()) == 1
    finally:
        conn.close()


def test_switchover_and_restore(topo: Topology) -> None:
    old, new = topo.servers[0], topo.servers[1]
    topo.switchover(new)
    assert topo.primary is new
    assert new.sql("SELECT @@read_only") == [(0,)]
    assert new.replica_status() == {}
    new.sql("CREATE TABLE IF NOT EXISTS test.after_switch (id INT PRIMARY KEY)")
    new.sql("REPLACE INTO test.after_switch VALUES (7)")
    topo.sync()
    assert old.sql("SELECT id FROM test.after_switch") == [(7,)]
    assert topo.servers[2].sql("SELECT id FROM test.after_switch") == [(7,)]
    topo.restore()
    assert topo.primary is old
    assert old.sql("SELECT @@read_only") == [(0,)]
    old.sql("REPLACE INTO test.after_switch VALUES (8)")
    topo.sync()
    assert new.sql("SELECT COUNT(*) FROM test.after_switch") == [(2,)]
