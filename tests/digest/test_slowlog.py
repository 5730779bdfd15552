"""--proxy-slow-query-log under real load: sysbench through 2 workers, read back by the
real pt-query-digest and mariadb-dumpslow; --proxy-long-query-time; SIGHUP reopens it."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

from chassis_mysql.digest import digest_of, fingerprint

from tests.digest.test_digests import digests
from tests.proxy.conftest import StartProxy
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB

DB = "sbslow"
TABLES = 2
TABLE_SIZE = 1000


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: scripts/lib/setup.sh installs it"
    return found


def _sysbench(port: int, test: str, command: str, *args: str) -> str:
    cmd = [_tool("sysbench"), test, "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={port}", "--mysql-user=root", "--mysql-password=", f"--mysql-db={DB}",
           f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *args, command]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"sysbench {test} {command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _total_queries(report: str) -> int:
    found = re.search(r"^\s*total:\s+(\d+)", report, re.MULTILINE)
    assert found, report
    return int(found.group(1))


def _entries(log: Path) -> int:
    return log.read_bytes().count(b"# Time: ")


def test_pt_query_digest_reads_the_log_written_under_sysbench(
        start_proxy: StartProxy, mariadb: MariaDB, tmp_path: Path) -> None:
    mariadb.sql(f"DROP DATABASE IF EXISTS {DB}")
    mariadb.sql(f"CREATE DATABASE {DB}")
    _sysbench(mariadb.port, "oltp_read_only", "prepare")
    log = tmp_path / "slow.log"
    proxy = start_proxy([mariadb.address], ["--event-threads=2", f"--proxy-slow-query-log={log}",
                                            "--proxy-long-query-time=0"])
    # prepared statements (sysbench's default) in transactions, then plain text queries
    read_only = _sysbench(proxy.port, "oltp_read_only", "run", "--threads=8", "--time=3")
    point = _sysbench(proxy.port, "oltp_point_select", "run", "--threads=4", "--time=2",
                      "--db-ps-mode=disable")
    sent = _total_queries(read_only) + _total_queries(point)
    # Every query is in the log, whole: 2 workers append to it at once
    written = wait_for(lambda: (n := _entries(log)) >= sent and n, message="the slow log")
    assert written == sent, (written, sent)

    # --preserve-embedded-numbers: digits in names stay (sbtest1), as in our digests
    done = subprocess.run([_tool("pt-query-digest"), "--output=json", "--limit=100%:100",
                           "--preserve-embedded-numbers",
                           str(log)], capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert int(report["global"]["query_count"]) == written
    classes = {c["fingerprint"]: c for c in report["classes"]}
    point_text = "select c from sbtest1 where id=?"
    assert point_text in classes, sorted(classes)
    assert classes["begin"]["query_count"] == classes["commit"]["query_count"] > 0
    # pt-query-digest's Query ID is our digest id
    ours = digest_of(fingerprint(b"SELECT c FROM sbtest1 WHERE id=5"))
    assert "0x" + classes[point_text]["checksum"] == ours
    found = digests(proxy, 2)
    row = found[point_text, "root", DB]
    assert row["digest"] == ours
    assert classes[point_text]["query_count"] == row["count"]
    assert int(classes[point_text]["metrics"]["Rows_sent"]["sum"]) == row["rows_sent"]
    assert classes[point_text]["metrics"]["db"]["value"] == DB
    assert {h["value"] for h in [classes[point_text]["metrics"]["host"]]} == {"127.0.0.1"}

    dumpslow = subprocess.run([_tool("mariadb-dumpslow"), "-a", str(log)], capture_output=True,
                              text=True, timeout=120, check=True).stdout
    counts = [int(n) for n in re.findall(r"^Count: (\d+)", dumpslow, re.MULTILINE)]
    assert sum(counts) == written, dumpslow[:2000]
    assert "root[root]@127.0.0.1" in dumpslow


def test_long_query_time_and_sighup_reopen(start_proxy: StartProxy, mariadb: MariaDB,
                                           tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    proxy = start_proxy([mariadb.address], ["--event-threads=2", f"--proxy-slow-query-log={log}",
                                            "--proxy-long-query-time=0.2"])
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.execute("SELECT SLEEP(0.3), 'slow one'")
    text = wait_for(lambda: b"slow one" in (t := log.read_bytes()) and t, message="the slow entry")
    assert _entries(log) == 1 and b"SELECT 1;" not in text
    entry = text.decode()
    assert re.search(r"^# Query_time: 0\.[3-9]\d{5}  Lock_time: 0\.000000  Rows_sent: 1  "
                     r"Rows_examined: 0$", entry, re.MULTILINE), entry
    assert re.search(r"^# User@Host: root\[root\] @ 127\.0\.0\.1 \[127\.0\.0\.1\]$", entry, re.M)
    assert re.search(r"^SET timestamp=\d+;\nSELECT SLEEP\(0\.3\), 'slow one';\n\Z", entry, re.M)

    # logrotate: move the file away, SIGHUP, the next entries go to a new file
    rotated = tmp_path / "slow.log.1"
    log.rename(rotated)
    proxy.process.signal(signal.SIGHUP)
    wait_for(lambda: proxy.log_text().count("re-opened log file after SIGHUP") >= 3,
             message="the angel and both workers to reopen")
    wait_for(log.exists, message="the new slow log")
    for _ in range(4):  # both workers get some of the connections
        with proxy.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT SLEEP(0.25), 'after rotation'")
    assert wait_for(lambda: _entries(log) == 4, message="4 entries in the new file")
    assert _entries(rotated) == 1
