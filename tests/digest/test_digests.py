"""Query digests of a real chassis in front of a real MariaDB, read over the control channel.

Without a script (the flat relay, 2 workers) and with one (the scripted loop, injected
queries too); the cap and its overflow row; TRUNCATE; switched off.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from chassis_mysql.digest import digest_of, fingerprint

from tests.metrics.test_prometheus import scrape
from tests.proxy.conftest import Proxy, StartProxy
from tests.support.chassis_proc import free_port
from tests.support.control import ask_all
from tests.support.mariadb import MariaDB

DIGEST_FIELDS = {"digest", "digest_text", "user", "schema", "backend", "count", "sum_time",
                 "min_time", "max_time", "rows_sent", "rows_affected", "errors", "first_seen",
                 "last_seen"}


def digests(proxy: Proxy, workers: int) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every worker's digests, merged as the admin console merges them: by (text, user, schema)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for answer in ask_all(proxy.process.pid, workers, {"plugin": "proxy", "op": "digests"}):
        for row in answer["digests"]:
            assert set(row) == DIGEST_FIELDS, row
            key = (row["digest_text"], row["user"], row["schema"])
            have = merged.get(key)
            if have is None:
                merged[key] = dict(row)
                continue
            for name in ("count", "sum_time", "rows_sent", "rows_affected", "errors"):
                have[name] += row[name]
            have["min_time"] = min(have["min_time"], row["min_time"])
            have["max_time"] = max(have["max_time"], row["max_time"])
            have["first_seen"] = min(have["first_seen"], row["first_seen"])
            have["last_seen"] = max(have["last_seen"], row["last_seen"])
    return merged


def _setup_table(mariadb: MariaDB, db: str) -> None:
    mariadb.sql(f"DROP DATABASE IF EXISTS {db}")
    mariadb.sql(f"CREATE DATABASE {db}")
    mariadb.sql(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)")
    mariadb.sql(f"INSERT INTO {db}.t VALUES " + ", ".join(f"({i}, {i % 3})" for i in range(1, 31)))


def _workload(proxy: Proxy, db: str) -> float:
    """Queries of four shapes over three connections; returns the time before the first."""
    before = time.time()
    for _ in range(3):
        with proxy.connect(database=db) as conn, conn.cursor() as cur:
            for i in range(1, 6):
                cur.execute("SELECT id, v FROM t WHERE v = %s  -- by value", (i % 3,))
                assert len(cur.fetchall()) == 10
            cur.execute("UPDATE t SET v = v WHERE id IN (1, 2, 3)")
            cur.execute("UPDATE t SET v = v + 0 * %s WHERE id < 5", (7,))
            try:
                cur.execute("SELECT nope FROM t WHERE id = 1")
            except pymysql.err.OperationalError as e:
                assert e.args[0] == 1054
    return before


def _check_workload(found: dict[tuple[str, str, str], dict[str, Any]], db: str, backend: str,
                    before: float) -> None:
    select = found["select id, v from t where v = ?", "root", db]
    assert select["count"] == 15 and select["rows_sent"] == 150 and select["errors"] == 0
    assert select["backend"] == backend
    assert select["digest"] == digest_of(fingerprint(b"SELECT id, v FROM t WHERE v = 1"))
    assert 0 < select["min_time"] <= select["max_time"] <= select["sum_time"] < 15
    assert before <= select["first_seen"] <= select["last_seen"] <= time.time()
    # no row changes value: the OK says 0 affected (3 matched)
    in_list = found["update t set v = v where id in(?+)", "root", db]
    assert in_list["count"] == 3 and in_list["rows_affected"] == 0 and in_list["rows_sent"] == 0
    bad = found["select nope from t where id = ?", "root", db]
    assert bad["count"] == 3 and bad["errors"] == 3


def test_digests_without_a_script_over_two_workers(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    db = "digest_relay"
    _setup_table(mariadb, db)
    proxy = start_proxy([mariadb.address], ["--event-threads=2"])
    before = _workload(proxy, db)
    found = digests(proxy, 2)
    _check_workload(found, db, mariadb.address, before)
    # Rows the UPDATE changed: v + 0 * 7 = v changes nothing, a real change shows
    with proxy.connect(database=db) as conn, conn.cursor() as cur:
        cur.execute("UPDATE t SET v = v + 10 WHERE id <= 4")
        cur.execute("UPDATE t SET v = v - 10 WHERE id <= 4")
        cur.execute("USE mysql")
        cur.execute("SELECT COUNT(*) FROM user WHERE user = 'root'")
        conn.select_db(db)  # COM_INIT_DB
        cur.execute("SELECT COUNT(*) FROM t WHERE id > 1")
    found = digests(proxy, 2)
    assert found["update t set v = v + ? where id <= ?", "root", db]["rows_affected"] == 4
    assert found["select count(*) from user where user = ?", "root", "mysql"]["count"] == 1
    assert found["select count(*) from t where id > ?", "root", db]["rows_sent"] == 1


def test_digests_with_a_script_and_its_injected_queries(start_proxy: StartProxy, mariadb: MariaDB,
                                                        tmp_path: Path) -> None:
    db = "digest_lua"
    _setup_table(mariadb, db)
    script = tmp_path / "inject.lua"
    script.write_text(
        "function read_query(packet)\n"
        "  if packet:byte() == proxy.COM_QUERY and packet:sub(2, 12) == 'SELECT 4242' then\n"
        "    proxy.queries:append(1, string.char(proxy.COM_QUERY) .. 'SELECT 1 FROM t WHERE id = 7',"
        " {resultset_is_needed = true})\n"
        "    proxy.queries:append(2, packet)\n"
        "    return proxy.PROXY_SEND_QUERY\n"
        "  end\n"
        "end\n"
        "function read_query_result(inj)\n"
        "  if inj.id == 1 then return proxy.PROXY_IGNORE_RESULT end\n"
        "end\n")
    proxy = start_proxy([mariadb.address], [f"--proxy-lua-script={script}"])
    before = _workload(proxy, db)
    with proxy.connect(database=db) as conn, conn.cursor() as cur:
        for _ in range(2):
            cur.execute("SELECT 4242")
            assert cur.fetchall() == ((4242,),)
    found = digests(proxy, 1)
    _check_workload(found, db, mariadb.address, before)
    # both injected queries ran on the server: both are digests
    assert found["select ? from t where id = ?", "root", db]["count"] == 2
    assert found["select ?", "root", db]["count"] == 2


def test_the_cap_keeps_new_shapes_in_one_overflow_row(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--proxy-query-digest-max=3"])
    with proxy.connect() as conn, conn.cursor() as cur:
        for i in range(8):
            cur.execute(f"SELECT {i} AS c{i}")  # a new shape each time (the alias)
    rows = ask_all(proxy.process.pid, 1, {"plugin": "proxy", "op": "digests"})[0]["digests"]
    assert len(rows) == 4, rows
    overflow = [r for r in rows if r["digest"] == "overflow"]
    assert len(overflow) == 1 and overflow[0]["count"] >= 8 - 3
    assert sum(r["count"] for r in rows) >= 8


def test_truncate_and_off(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--event-threads=2"])
    for _ in range(2):
        with proxy.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert digests(proxy, 2)
    assert ask_all(proxy.process.pid, 2, {"plugin": "proxy", "op": "truncate_digests"}) == \
        [{"ok": True}, {"ok": True}]
    assert digests(proxy, 2) == {}
    off = start_proxy([mariadb.address], ["--proxy-query-digest=off"])
    with off.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert digests(off, 1) == {}


def test_relay_tracking_recovers_after_answers_it_cannot_summarise(
        start_proxy: StartProxy, mariadb: MariaDB, tmp_path: Path) -> None:
    """LOCAL INFILE, a 3 MiB row, multi-statements: bytes are relayed as ever, and the
    queries after them are recorded right."""
    db = "digest_odd"
    _setup_table(mariadb, db)
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{i}\t{i}\n" for i in range(100, 400)))
    proxy = start_proxy([mariadb.address])
    with proxy.connect(database=db, local_infile=True,
                       client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, \
            conn.cursor() as cur:
        cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t")
        assert cur.rowcount == 300
        cur.execute("SELECT REPEAT('x', 3 * 1024 * 1024) AS big")
        assert len(cur.fetchone()[0]) == 3 * 1024 * 1024
        cur.execute("SELECT 1; SELECT 2")
        cur.nextset()
        for _ in range(3):
            cur.execute("SELECT COUNT(*) FROM t WHERE id >= %s", (100,))
            assert cur.fetchone() == (300,)
    found = digests(proxy, 1)
    after = found["select count(*) from t where id >= ?", "root", db]
    assert after["count"] == 3 and after["rows_sent"] == 3 and after["errors"] == 0
    # a row of several MiB split across reads is not followed (relay.MAX_CARRY; documented)
    assert ("select repeat(?, ? * ? * ?) as big", "root", db) not in found
    multi = found["select ?; select ?", "root", db]
    assert multi["count"] == 1 and multi["rows_sent"] == 2


@pytest.mark.parametrize("script", [None, "read_query"])
def test_repeated_statements_are_recorded_exactly(start_proxy: StartProxy, mariadb: MariaDB,
                                                  tmp_path: Path, script: str | None) -> None:
    """A connection's repeated commands (a prepared statement's executions, one query text
    sent again) are recorded by the relay from what it learnt of their last answer
    (chassis_proxy.queries.Slot); the figures are the same as when each answer is read:
    same shape (point selects), rows that change in number or size, errors, affected rows.
    With a script whose read_query lets every command through, the scripted session
    records them the same way (StreamPump.on_recorded)."""
    db = "digest_slots"
    _setup_table(mariadb, db)
    address = f"127.0.0.1:{free_port()}"
    args = [f"--metrics-address={address}"]
    if script is not None:
        lua = tmp_path / "pass.lua"
        lua.write_text("function read_query(packet)\n  local _ = packet:byte()\nend\n")
        args.append(f"--proxy-lua-script={lua}")
    proxy = start_proxy([mariadb.address], args)
    conn = mysql.connector.connect(host=proxy.host, port=proxy.port, user="root", database=db,
                                   use_pure=True, ssl_disabled=True, autocommit=True)
    try:
        cur = conn.cursor(prepared=True)
        for i in range(1, 21):  # one row of one size each time
            cur.execute("SELECT id, v FROM t WHERE id = ?", (i,))
            assert cur.fetchall() == [(i, i % 3)]
        expected_rows = 0
        for v in (0, 1, 7, 2, 9, 1, 1):  # 10 rows or none
            cur.execute("SELECT id FROM t WHERE v = ?", (v,))
            expected_rows += len(cur.fetchall())
        for n in (3, 3, 40, 3, 0, 500):  # one row of changing size
            cur.execute("SELECT REPEAT('x', ?) AS r", (n,))
            assert cur.fetchall() == [("x" * n,)]
        errors = 0
        for i in (100, 1, 101, 2, 102):  # ids 1 and 2 exist: ERR 1062
            try:
                cur.execute("INSERT INTO t VALUES (?, 0)", (i,))
            except mysql.connector.errors.IntegrityError as e:
                assert e.errno == 1062
                errors += 1
        assert errors == 2
        plain = conn.cursor()
        for value in (None, None, None, 5, 123456789):  # a wider value: a new row size
            if value is not None:
                plain.execute(f"UPDATE t SET v = {value} WHERE id = 3")
            plain.execute("SELECT v FROM t WHERE id = 3")
            assert plain.fetchall() == [(value if value is not None else 0,)]
        cur.close()
    finally:
        conn.close()
    found = digests(proxy, 1)
    point = found["select id, v from t where id = ?", "root", db]
    assert (point["count"], point["rows_sent"], point["errors"]) == (20, 20, 0)
    assert 0 < point["min_time"] <= point["max_time"] <= point["sum_time"] < 20
    by_v = found["select id from t where v = ?", "root", db]
    assert (by_v["count"], by_v["rows_sent"], expected_rows) == (7, 50, 50)
    repeat = found["select repeat(?, ?) as r", "root", db]
    assert (repeat["count"], repeat["rows_sent"]) == (6, 6)
    insert = found["insert into t values(?+)", "root", db]
    assert (insert["count"], insert["rows_affected"], insert["errors"]) == (5, 3, 2)
    same_text = found["select v from t where id = ?", "root", db]
    assert (same_text["count"], same_text["rows_sent"]) == (5, 5)
    # the backend's histogram and commands count every answered command once
    m = scrape(address)
    backend = (("backend", mariadb.address),)
    by_command = {dict(labels)["command"]: n for (name, labels), n in m.items()
                  if name == "chassis_proxy_commands_total"}
    assert by_command["stmt_execute"] == 20 + 7 + 6 + 5
    answered = sum(n for command, n in by_command.items()
                   if command not in ("stmt_close", "stmt_send_long_data", "quit"))
    assert m["chassis_proxy_query_duration_seconds_count", backend] == answered
    assert m["chassis_proxy_server_errors_total", backend] == 2
