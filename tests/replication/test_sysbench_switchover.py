"""A switchover while sysbench ``oltp_read_write`` runs through ``rw-splitting.lua`` with
``--proxy-backend-roles=auto`` (issue 14's "done means", the switchover part).

sysbench runs with its defaults (its DELETE/INSERT pairs included: an INSERT's insert id
now pins a client only until a statement that does not read LAST_INSERT_ID(), issue 14
item 6) but two: ``--db-ps-mode=disable``, and the errors it is told to ignore. Its
prepared statements stay open for the whole run, so they pin each client to the old
primary (rw-splitting.lua cannot move a prepared statement to another server); at the
switch each client then gets the proxy's "backend ... is read-only now ... reconnect"
(1105) and is disconnected, and sysbench 1.0.20 hangs in its reconnection (it logs
"Reconnecting" and never opens a connection). ``--mysql-ignore-errors`` lists 1290 (a
write refused by the old primary's read_only), 1105 (the proxy's "no read-write
backend" while no server takes writes) and sysbench's own load errors; sysbench rolls
the transaction back and starts another. The test checks:

* writes resume on the new primary within the monitor interval plus one second of its
  promotion (its ``Com_commit`` grows: replication no longer writes there);
* sysbench's errors are only those of the switch: its per-second reports show errors
  only between ``read_only=1`` on the old primary and the first commit on the new one
  (the count is printed; with a 0.5 s monitor interval, a few dozen transactions);
* every acknowledged write is on the new primary afterwards: the tables keep their
  size (each DELETE has its INSERT in one transaction) and, once every server
  replicates from the new primary, all three have the same checksums.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import MySQLdb
import pytest

from tests.replication.conftest import MONITOR_INTERVAL, ReplProxy
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import ACCOUNTS, MariaDB
from tests.support.replication import Topology

THREADS = 4
TABLES = 2
TABLE_SIZE = 2000
USER = "native"  # read_only stops its writes: a write on a read-only server fails
#: The switch's errors, then sysbench's own defaults (deadlocks, lock waits: its load alone
#: can cause them, on any primary).
SWITCH_ERRORS = {1290, 1105}
LOAD_ERRORS = {1213, 1205, 1020}
IGNORED = ",".join(str(code) for code in sorted(SWITCH_ERRORS | LOAD_ERRORS))


def sysbench_args(host: str, port: int, user: str, password: str, *extra: str) -> list[str]:
    return ["sysbench", "oltp_read_write", "--db-driver=mysql", f"--mysql-host={host}",
            f"--mysql-port={port}", f"--mysql-user={user}", f"--mysql-password={password}",
            "--mysql-db=sbtest", f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *extra]


def commits(db: MariaDB) -> int:
    ((_, value),) = db.sql("SHOW GLOBAL STATUS LIKE 'Com_commit'")
    return int(value)


def counter(text: str, name: str) -> int:
    found = re.search(rf"^\s*{name}:\s+(\d+)", text, re.MULTILINE)
    assert found, f"no {name!r} in the sysbench report:\n{text}"
    return int(found.group(1))


def checksums(db: MariaDB) -> list[tuple[Any, ...]]:
    return db.sql(", ".join(f"CHECKSUM TABLE sbtest.sbtest{i}" for i in range(1, TABLES + 1))
                  .replace(", CHECKSUM TABLE", ","))


def warm_pools(proxy: ReplProxy) -> None:
    """Idle connections of ``native`` on every backend, made by libmariadb clients (as
    sysbench's: a client only takes a pooled connection whose login asked for the same
    capabilities): whichever backend becomes the primary, each sysbench thread finds one."""
    password = ACCOUNTS[USER].password
    first = MySQLdb.connect(host=proxy.host, port=proxy.port, user=USER, password=password)
    first.cursor().execute(f"PROXY SET GLOBAL rwsplit.min_idle_connections = {THREADS}")
    first.close()
    # rw-splitting's rule: new clients log in where a pool is below the minimum, the
    # primary's first; a batch of clients that connect together and leave fills one.
    for _ in range(8):
        if min(pool_idle(proxy)) >= THREADS:
            return
        helpers = [MySQLdb.connect(host=proxy.host, port=proxy.port, user=USER,
                                   password=password, autocommit=True) for _ in range(THREADS)]
        for helper in helpers:
            helper.close()
        wait_for(lambda: sum(pool_idle(proxy)) >= THREADS, 10, "the helpers pooled")
    raise AssertionError(f"pools still below {THREADS} idle connections: {pool_idle(proxy)}")


def ignored_errors(report: str) -> Counter[int]:
    """sysbench's ignored errors by code, from its --verbosity=5 lines ("DEBUG: Ignoring
    error 1290 ...", then "(last message repeated N times)")."""
    found: Counter[int] = Counter()
    last = None
    for line in report.splitlines():
        if m := re.match(r"DEBUG: Ignoring error (\d+)", line):
            last = int(m.group(1))
            found[last] += 1
        elif (m := re.match(r"\(last message repeated (\d+) times\)", line)) and last is not None:
            found[last] += int(m.group(1))
    return found


def pool_idle(proxy: ReplProxy) -> list[int]:
    return [int(row[-1]) for row in proxy.admin_rows("SELECT * FROM backend_stats")]


@pytest.mark.timeout(300)
def test_switchover_during_sysbench_oltp_read_write(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    old, new = topo.servers[0], topo.servers[1]
    old.sql("DROP DATABASE IF EXISTS sbtest")
    old.sql("CREATE DATABASE sbtest")
    prepare = subprocess.run(sysbench_args(old.host, old.port, "root", "", "prepare"),
                             capture_output=True, text=True, timeout=120, check=False)
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    topo.sync(timeout=60)
    proxy = repl_proxy(["--proxy-backend-roles=auto", "--proxy-lua-script=rw-splitting.lua"])
    wait_for(lambda: proxy.roles() == ["rw", "ro", "ro"]
             and proxy.replication()[1][0] == "running", 10, "the monitor's first report")
    warm_pools(proxy)

    started = time.monotonic()
    bench = subprocess.Popen(
        sysbench_args(proxy.host, proxy.port, USER, ACCOUNTS[USER].password,
                      f"--threads={THREADS}", "--time=12", "--db-ps-mode=disable",
                      f"--mysql-ignore-errors={IGNORED}",
                      "--report-interval=1", "--verbosity=5", "run"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        before = commits(old)
        wait_for(lambda: commits(old) > before + 20, 20, "sysbench to commit on the old primary")
        switch = time.monotonic()
        old.sql("SET GLOBAL read_only=1")
        new.wait_for_replica(old, timeout=60)
        topo.promote(new)
        promoted, at_promotion = time.monotonic(), commits(new)
        wait_for(lambda: commits(new) > at_promotion, MONITOR_INTERVAL + 5,
                 "a commit on the new primary")
        resumed = time.monotonic()
        took = resumed - promoted
        topo.repoint(old, timeout=60)
        report, _ = bench.communicate(timeout=120)
    except BaseException:
        if bench.poll() is None:
            bench.kill()
        print("SYSBENCH", bench.communicate()[0][-3000:])
        raise
    assert bench.returncode == 0, report
    assert took <= MONITOR_INTERVAL + 1, f"writes resumed {took:.2f} s after the promotion"
    errors = counter(report, "ignored errors")
    transactions = counter(report, "transactions")
    assert transactions > 100, report
    reconnects = counter(report, "reconnects")
    assert reconnects == 0, report
    # the switch's errors only while no server took writes: from read_only=1 on the old
    # primary to the first commit on the new one (sysbench's per-second reports, a
    # second's slack each side); outside it only the load's own (deadlocks), if any
    ignored = ignored_errors(report)
    assert set(ignored) <= SWITCH_ERRORS | LOAD_ERRORS, ignored
    load = sum(n for code, n in ignored.items() if code in LOAD_ERRORS)
    window = (switch - started - 1.5, resumed - started + 1.5)
    outside = sum(float(rate) for second, rate in
                  re.findall(r"^\[ (\d+)s \].*err/s: ([\d.]+)", report, re.MULTILINE)
                  if not window[0] <= int(second) <= window[1])
    assert outside <= load + 0.5, f"errors outside the switch {window}: {ignored}\n{report}"
    assert commits(new) - at_promotion > 20, "sysbench went on writing on the new primary"
    topo.sync(timeout=60)
    for i in range(1, TABLES + 1):
        assert new.sql(f"SELECT COUNT(*) FROM sbtest.sbtest{i}") == [(TABLE_SIZE,)]
    assert checksums(old) == checksums(new) == checksums(topo.servers[2])
    print(f"switchover under sysbench: writes resumed after {took:.2f} s; {errors} errors "
          f"over {transactions} transactions, by code: {dict(ignored)}; {reconnects} reconnects")
