"""Lag limits (``--proxy-max-replication-lag``): a replica whose SQL thread is stopped, or
that is further behind than the limit, gets no reads (from rw-splitting.lua and from the
default backend choice) until it has caught up; the admin console and the metrics show
why."""

from __future__ import annotations

from collections.abc import Callable

from tests.metrics.test_prometheus import scrape
from tests.replication.conftest import MONITOR_INTERVAL, ReplProxy, served_by, whoami
from tests.support.chassis_proc import free_port, wait_for
from tests.support.replication import Topology, wait_running

#: Fail fast enough, but leave a loaded 2-core machine room.
NOTICE = MONITOR_INTERVAL + 3


def read_from(proxy: ReplProxy) -> str:
    """A new client's read through the proxy: the server that answered it."""
    conn = proxy.connect("native", database="test")
    try:
        return served_by(conn)
    finally:
        conn.close()


def fill_pools(proxy: ReplProxy) -> None:
    """rw-splitting with one idle connection of ``native`` per backend: the helper's on
    the primary, then one login on each replica (their pools are below the minimum)."""
    with proxy.connect("native") as helper, helper.cursor() as cur:
        cur.execute("PROXY SET GLOBAL rwsplit.min_idle_connections = 1")
    for _ in range(2):
        proxy.connect("native").close()
    wait_for(lambda: pool_idle(proxy) == [1, 1, 1], 10, "one idle connection per backend")


def pool_idle(proxy: ReplProxy) -> list[int]:
    return [int(row[-1]) for row in proxy.admin_rows("SELECT * FROM backend_stats")]


def stale(proxy: ReplProxy) -> list[str]:
    return [s for _, _, s in proxy.replication()]


def test_stopped_sql_thread_gets_no_reads_until_it_catches_up(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    whoami(topo)
    primary, r1 = topo.servers[0], topo.servers[1]
    primary.sql("DROP TABLE IF EXISTS test.lagt")
    primary.sql("CREATE TABLE test.lagt (id INT PRIMARY KEY)")
    topo.sync()
    proxy = repl_proxy(["--proxy-max-replication-lag=5", "--proxy-lua-script=rw-splitting.lua"])
    wait_for(lambda: [r for r, _, _ in proxy.replication()] == ["none", "running", "running"],
             10, "the monitor's first report")
    fill_pools(proxy)
    assert read_from(proxy) == "repl1"  # the first of two idle replicas

    r1.sql("STOP SLAVE SQL_THREAD")
    for i in range(5):
        primary.sql("INSERT INTO test.lagt VALUES (%s)", (i,))
    topo.sync(replicas=[topo.servers[2]])
    wait_for(lambda: stale(proxy) == ["no", "yes", "no"], NOTICE, "repl1 to be stale")
    assert proxy.replication()[1][:2] == ("stopped", None)  # no Seconds_Behind_Master
    # every read now goes elsewhere, and sees every write
    for _ in range(10):
        assert read_from(proxy) != "repl1"
        with proxy.connect("native", database="test") as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM test.lagt")
            assert cur.fetchall() == ((5,),)
    log = proxy.wait_log("replication running -> stopped")
    assert "no reads until it catches up" in log

    r1.sql("START SLAVE SQL_THREAD")
    wait_for(lambda: stale(proxy) == ["no", "no", "no"], NOTICE, "repl1 to catch up")
    wait_for(lambda: read_from(proxy) == "repl1", 10, "reads to reach repl1 again")
    assert r1.sql("SELECT COUNT(*) FROM test.lagt") == [(5,)]
    assert "takes reads again" in proxy.wait_log("replication stopped -> running")


def test_default_choice_skips_a_stale_backend(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """Without a script a client gets the first read/write backend that is not stale: a
    replica listed first (-b) loses its clients while its SQL thread is stopped."""
    whoami(topo)
    r1 = topo.servers[1]
    proxy = repl_proxy(["--proxy-max-replication-lag=5"], rw=[r1, topo.servers[0]], ro=[])
    wait_for(lambda: stale(proxy) == ["no", "no"], 10, "the monitor's first report")
    assert read_from(proxy) == "repl1"
    r1.sql("STOP SLAVE SQL_THREAD")
    wait_for(lambda: stale(proxy) == ["yes", "no"], NOTICE, "repl1 to be stale")
    assert {read_from(proxy) for _ in range(5)} == {"repl0"}
    r1.sql("START SLAVE SQL_THREAD")
    wait_for(lambda: read_from(proxy) == "repl1", NOTICE, "clients to reach repl1 again")


def test_lag_beyond_the_limit_is_measured_and_shown(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """A replica running MASTER_DELAY=3 behind a limit of 1 s: its lag is read from
    Seconds_Behind_Master, it is ``lagging`` (no reads) while behind, and the metric
    chassis_proxy_backend_replication_lag_seconds shows the lag."""
    primary, r2 = topo.servers[0], topo.servers[2]
    metrics = f"127.0.0.1:{free_port()}"
    proxy = repl_proxy(["--proxy-max-replication-lag=1", f"--metrics-address={metrics}"])
    wait_for(lambda: stale(proxy) == ["no", "no", "no"], 10, "the monitor's first report")
    r2.sql("STOP SLAVE")
    r2.sql("CHANGE MASTER TO MASTER_DELAY=3")
    r2.sql("START SLAVE")
    try:
        wait_running(r2)
        primary.sql("CREATE TABLE IF NOT EXISTS test.delayed (id INT)")
        primary.sql("INSERT INTO test.delayed VALUES (1)")
        _, lag, is_stale = wait_for(
            lambda: (row := proxy.replication()[2])[0] == "lagging" and row,
            NOTICE + 3, "repl2 to be lagging")
        assert lag is not None and lag > 1 and is_stale == "yes"
        key = ("chassis_proxy_backend_replication_lag_seconds",
               (("backend", topo.servers[2].address),))
        wait_for(lambda: scrape(metrics).get(key, 0) > 1, 5, "the lag metric above 1 s")
        # once the delayed event is applied, it is fresh again
        wait_for(lambda: stale(proxy) == ["no", "no", "no"], 10, "repl2 to catch up")
    finally:
        r2.sql("STOP SLAVE")
        r2.sql("CHANGE MASTER TO MASTER_DELAY=0")
        r2.sql("START SLAVE")

