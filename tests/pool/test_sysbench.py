"""End to end: sysbench through chassis running rw-splitting.lua in front of a primary and
a read-only replica (issue 6, item 6).

``oltp_read_write`` (8 threads, 10 s, server-side prepared statements) must finish with
no error, and every write it reports must have reached the primary: the primary's
``Com_update + Com_delete + Com_insert`` grow by exactly sysbench's write count and
``Com_commit`` by its transaction count, the tables keep their size, and the replica
catches up to the primary's checksums (a write sent to the replica would have failed:
its read_only stops the ``native`` account, and sysbench would count an error). Its
statements all run in transactions, so they all belong on the primary; a short
``oltp_read_only --skip_trx`` run afterwards shows reads going to the replica under load.

sysbench comes from the Debian package (scripts/lib/setup.sh installs it); the test
tries ``apt-get install -y sysbench`` once and skips, saying why, only if that fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import MySQLdb
import pytest

from tests.pool.conftest import PoolProxy, PoolProxyFactory, rows
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import ACCOUNTS, MariaDB

THREADS = 8
TABLES = 4
TABLE_SIZE = 10000
USER = "native"  # cannot write on the read-only replica: a misrouted write would fail


def sysbench_binary() -> str:
    found = shutil.which("sysbench")
    if found is None:
        done = subprocess.run(["apt-get", "install", "-y", "sysbench"], capture_output=True,
                              text=True, timeout=300, check=False)
        found = shutil.which("sysbench")
        if found is None:
            pytest.skip("sysbench is not installed and `apt-get install -y sysbench` failed: "
                        f"{(done.stderr or done.stdout).strip()[-300:]}")
    return found


@pytest.fixture(scope="module")
def sysbench() -> str:
    return sysbench_binary()


@pytest.fixture
def proxy(pool_proxy: PoolProxyFactory, primary: MariaDB, replica: MariaDB) -> Iterator[PoolProxy]:
    """rw-splitting.lua with min_idle_connections = THREADS: a client logs in through the
    replica only while the primary has that many idle connections, so every sysbench
    thread finds a primary connection for its transactions."""
    proxy = pool_proxy("rw-splitting.lua",
                       [f"--proxy-read-only-backend-addresses={replica.address}"],
                       backends=[primary.address], admin=True)
    with proxy.connect(USER) as helper:
        rows(helper, f"PROXY SET GLOBAL rwsplit.min_idle_connections = {THREADS}")
    yield proxy


def run(binary: str, proxy: PoolProxy, test: str, command: str, *args: str) -> str:
    cmd = [binary, test, "--db-driver=mysql", f"--mysql-host={proxy.host}",
           f"--mysql-port={proxy.port}", f"--mysql-user={USER}",
           f"--mysql-password={ACCOUNTS[USER].password}", "--mysql-db=sbtest",
           f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *args, command]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"sysbench {test} {command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def counter(text: str, name: str) -> int:
    found = re.search(rf"^\s*{name}:\s+(\d+)", text, re.MULTILINE)
    assert found, f"no {name!r} in the sysbench report:\n{text}"
    return int(found.group(1))


def status(db: MariaDB, *names: str) -> dict[str, int]:
    placeholders = ", ".join(["%s"] * len(names))
    found = db.sql(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({placeholders})", names)
    return {name: int(value) for name, value in found}


def checksums(db: MariaDB) -> list[tuple[Any, ...]]:
    tables = ", ".join(f"sbtest.sbtest{i}" for i in range(1, TABLES + 1))
    return db.sql(f"CHECKSUM TABLE {tables}")


@pytest.mark.timeout(300)
def test_sysbench_oltp_read_write_through_rw_splitting(
        sysbench: str, proxy: PoolProxy, primary: MariaDB, replica: MariaDB) -> None:
    run(sysbench, proxy, "oltp_read_write", "prepare")  # through the proxy, too
    replica.wait_for_replica(timeout=60)
    writes = ("Com_update", "Com_delete", "Com_insert", "Com_commit", "Innodb_deadlocks")
    primary_before = status(primary, *writes)

    report = run(sysbench, proxy, "oltp_read_write", "run", f"--threads={THREADS}", "--time=10")

    # sysbench ignores (and retries) a transaction the server chose as a deadlock's victim:
    # concurrent transactions on the same rows can deadlock on any server, more often on a
    # loaded machine. Each ignored error must be such a deadlock on the primary; any other
    # error fails the run. The victim's failed write counts on the primary, not in sysbench.
    ignored = counter(report, "ignored errors")
    assert counter(report, "reconnects") == 0
    primary_after = status(primary, *writes)
    grown = {k: primary_after[k] - primary_before[k] for k in writes}
    assert ignored == grown["Innodb_deadlocks"], (grown, report)
    transactions = counter(report, "transactions")
    assert transactions > 0
    written = grown["Com_update"] + grown["Com_delete"] + grown["Com_insert"]
    assert counter(report, "write") <= written <= counter(report, "write") + ignored, (grown, report)
    assert grown["Com_commit"] == transactions, (grown, report)
    # DELETE and INSERT of the same id come in pairs: the tables keep their size
    for i in range(1, TABLES + 1):
        assert primary.sql(f"SELECT COUNT(*) FROM sbtest.sbtest{i}") == [(TABLE_SIZE,)]
    replica.wait_for_replica(timeout=60)
    assert checksums(replica) == checksums(primary)
    log = proxy.log_text()
    assert "(rw-splitting)" not in log and "(critical)" not in log and "(error)" not in log

    # Reads outside transactions go to the replica, under load too. The sysbench threads'
    # connections were closed (prepared statements pinned them); THREADS clients that
    # connect at once and leave give the primary as many idle ones, so half of the next
    # logins go through the replica (min_idle_connections = THREADS / 2). The helpers use
    # libmariadb, as sysbench does: a logged-in client only takes another client's
    # connection whose login asked for the same capabilities.
    helpers = [MySQLdb.connect(host=proxy.host, port=proxy.port, user=USER,
                               password=ACCOUNTS[USER].password, autocommit=True)
               for _ in range(THREADS)]
    rows(helpers[0], f"PROXY SET GLOBAL rwsplit.min_idle_connections = {THREADS // 2}")
    for helper in helpers:
        helper.close()
    wait_for(lambda: proxy.pool_idle()[0] >= THREADS, 10, "the helpers' connections pooled")
    selects = status(replica, "Com_select")["Com_select"]
    report = run(sysbench, proxy, "oltp_read_only", "run", f"--threads={THREADS}", "--time=3",
                 "--skip_trx=on", "--db-ps-mode=disable")
    assert counter(report, "ignored errors") == 0
    assert status(replica, "Com_select")["Com_select"] - selects > counter(report, "read") // 4
