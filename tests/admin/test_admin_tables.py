"""The admin tables built from given worker answers, and SQLite's answers over them:
merging over workers, column types, read-only enforcement, limits, error numbers."""

from __future__ import annotations

from typing import Any

import pytest
from chassis_admin import snapshot, sql, tables, variables
from chassis_admin.console import tables_named
from chassis_mysql.constants import ErrorCode, FieldType

DIGEST = {"digest": "d1", "digest_text": "SELECT * FROM t WHERE id = ?", "user": "app", "schema": "shop",
          "backend": "127.0.0.1:3306", "count": 3, "sum_time": 0.3, "min_time": 0.05, "max_time": 0.2,
          "rows_sent": 3, "rows_affected": 0, "errors": 0, "first_seen": 100.0, "last_seen": 200.0}


def _answers(**ops: list[dict[str, Any]]) -> tables.Source:
    return tables.Source({k.replace("__", "."): v for k, v in ops.items()}, {}, {})


def _run(query: str, src: tables.Source) -> snapshot.Result:
    built = {name: tables.TABLES[name].build(src) for name in tables_named(query)}
    return snapshot.run(query, built)


def test_query_digest_merges_workers_and_sorts_by_time() -> None:
    other = {**DIGEST, "count": 2, "sum_time": 1.5, "min_time": 0.01, "max_time": 1.4,
             "first_seen": 50.0, "last_seen": 150.0, "errors": 1}
    slow = {**DIGEST, "digest": "d2", "digest_text": "UPDATE t SET a = ?", "count": 1, "sum_time": 0.9}
    src = _answers(proxy__digests=[{"worker": 0, "digests": [DIGEST, slow]},
                                   {"worker": 1, "digests": [other]}])
    result = _run("SELECT digest_text, count, sum_time, min_time, max_time, errors, first_seen, last_seen "
                  "FROM query_digest ORDER BY sum_time DESC LIMIT 10", src)
    assert result.rows[0] == ("SELECT * FROM t WHERE id = ?", 5, pytest.approx(1.8), 0.01, 1.4, 1, 50.0, 200.0)
    assert result.rows[1][:2] == ("UPDATE t SET a = ?", 1)
    assert [t for _, t in result.columns][:3] == [FieldType.VAR_STRING, FieldType.LONGLONG, FieldType.DOUBLE]


def test_query_digest_without_digests_is_an_empty_table() -> None:
    result = _run("SELECT digest_text, count FROM query_digest", _answers())
    assert result.rows == []
    assert result.columns == [("digest_text", FieldType.VAR_STRING), ("count", FieldType.LONGLONG)]


BACKENDS = [
    {"worker": 0, "backends": [
        {"ndx": 1, "address": "a:1", "state": "up", "type": "rw", "uuid": None, "connected_clients": 2,
         "connections": 5, "queries": 10, "errors": 0, "bytes_in": 1, "bytes_out": 2, "pool_idle": 1},
        {"ndx": 2, "address": "b:2", "state": "down", "type": "ro", "uuid": None, "connected_clients": 0,
         "connections": 0, "queries": 0, "errors": 3, "bytes_in": 0, "bytes_out": 0, "pool_idle": 0}]},
    {"worker": 1, "backends": [
        {"ndx": 1, "address": "a:1", "state": "unknown", "type": "rw", "uuid": None, "connected_clients": 1,
         "connections": 1, "queries": 4, "errors": 0, "bytes_in": 1, "bytes_out": 2, "pool_idle": 0},
        {"ndx": 2, "address": "b:2", "state": "offline", "type": "ro", "uuid": None, "connected_clients": 0,
         "connections": 0, "queries": 0, "errors": 1, "bytes_in": 0, "bytes_out": 0, "pool_idle": 0}]},
]


def test_backends_join_backend_stats_over_workers() -> None:
    src = _answers(proxy__backends=BACKENDS)
    result = _run("SELECT b.backend_ndx, b.state, b.connected_clients, s.queries, s.errors "
                  "FROM backends b JOIN backend_stats s USING (backend_ndx) ORDER BY b.backend_ndx", src)
    # the most hopeful state wins, offline (an operator's word) above all
    assert result.rows == [(1, "up", 3, 14, 0), (2, "offline", 0, 0, 4)]
    columns, rows = tables.TABLES["backends"].build(src)
    # MySQL Proxy's six columns, then the replication monitor's (no monitor in this answer)
    assert [c for c, _ in columns][6:] == ["replication", "lag", "stale"]
    assert rows[0][6:] == ("unmonitored", None, "no")


def test_connections_group_by_state_and_worker_numbers() -> None:
    src = _answers(proxy__connections=[
        {"worker": 0, "connections": [
            {"id": 1, "user": "app", "client": "127.0.0.1:5000", "backend": "a:1", "state": "idle",
             "statement": None, "time": 1.5},
            {"id": 3, "user": "app", "client": "127.0.0.1:5001", "backend": "a:1", "state": "query",
             "statement": "SELECT SLEEP(5)", "time": 2.0}]},
        {"worker": 1, "connections": [
            {"id": 2, "user": None, "client": "127.0.0.1:5002", "backend": None, "state": "login",
             "statement": None, "time": None}]},
    ])
    result = _run("SELECT state, count(*) FROM connections GROUP BY state ORDER BY state", src)
    assert result.rows == [("idle", 1), ("login", 1), ("query", 1)]
    result = _run("SELECT id, worker, statement FROM connections WHERE state = 'query'", src)
    assert result.rows == [(3, 1, "SELECT SLEEP(5)")]
    processlist = sql.parse("SHOW FULL PROCESSLIST")
    assert isinstance(processlist, sql.Query)
    result = _run(processlist.sql, src)
    assert [c for c, _ in result.columns] == ["Id", "User", "Host", "Backend", "State", "Time", "Info"]
    assert [r[0] for r in result.rows] == [1, 2, 3] and result.rows[2][6] == "SELECT SLEEP(5)"
    assert [c for c, _ in tables.TABLES["connections"].build(src)[0]][:7] == [
        "id", "user", "client", "backend", "state", "statement", "time"]


def test_stats_workers_pool_and_lua_tables() -> None:
    src = _answers(
        proxy__stats=[{"worker": 0, "pid": 10, "stats": {"queries": 4, "connections_current": 2}},
                      {"worker": 1, "pid": 11, "stats": {"queries": 6, "connections_current": 1}}],
        admin__worker=[{"worker": 0, "pid": 10, "uptime": 5.0, "rss_bytes": 1000},
                       {"worker": 1, "pid": 11, "uptime": 5.5, "rss_bytes": 2000}],
        proxy__pool=[{"worker": 0, "pool": [{"ndx": 1, "address": "a:1", "idle": 2, "taken": 1}]}],
        proxy__lua=[{"worker": 0, "lua": {"script": "/x.lua", "memory_used": 12345}},
                    {"worker": 1, "lua": {"script": "/x.lua", "memory_used": 2, "hook_calls": 7, "hooks": [
                        {"hook": "read_query", "calls": 5, "seconds": 0.5, "errors": 1, "timeouts": 0},
                        {"hook": "connect_server", "calls": 2, "seconds": 0.1, "errors": 0, "timeouts": 1}]}},
                    {"worker": 2, "lua": None}],
    )
    assert _run("SELECT worker, queries FROM stats", src).rows == [("1", 4), ("2", 6), ("total", 10)]
    assert _run("SELECT worker, pid, client_connections FROM workers ORDER BY worker", src).rows == [
        (1, 10, 2), (2, 11, 1)]
    assert _run("SELECT sum(idle), sum(taken) FROM pool", src).rows == [(2, 1)]
    assert _run("SELECT worker, script, memory_used, hook_calls FROM lua", src).rows == [
        (1, "/x.lua", 12345, None), (2, "/x.lua", 2, 7)]
    assert _run("SELECT hook, calls, errors + timeouts FROM lua_hooks WHERE worker = 2 ORDER BY seconds DESC",
                src).rows == [("read_query", 5, 1), ("connect_server", 2, 1)]


def test_workers_without_the_proxy_have_null_client_connections() -> None:
    src = _answers(admin__worker=[{"worker": 0, "pid": 10}])
    assert _run("SELECT worker, pid, client_connections FROM workers", src).rows == [(1, 10, None)]


@pytest.mark.parametrize(("query", "code"), [
    ("SELECT * FROM nosuch", ErrorCode.NO_SUCH_TABLE),
    ("SELECT nosuch FROM help", ErrorCode.BAD_FIELD_ERROR),
    ("SELECT * FROM help WHERE", ErrorCode.PARSE_ERROR),
    ("SELECT 1; SELECT 2", ErrorCode.PARSE_ERROR),
    ("WITH x AS (SELECT 1) DELETE FROM help", ErrorCode.SPECIFIC_ACCESS_DENIED_ERROR),
    ("SELECT * FROM pragma_database_list", ErrorCode.SPECIFIC_ACCESS_DENIED_ERROR),
])
def test_sqlite_errors_become_mysql_error_numbers(query: str, code: int) -> None:
    with pytest.raises(snapshot.QueryError) as info:
        _run(query, _answers())
    assert info.value.code == code, info.value


def test_a_runaway_query_is_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "TIME_LIMIT", 0.2)
    with pytest.raises(snapshot.QueryError) as info:
        _run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
             _answers())
    assert info.value.code == ErrorCode.QUERY_INTERRUPTED


def test_huge_values_and_results_are_refused() -> None:
    with pytest.raises(snapshot.QueryError, match="too big"):
        _run("SELECT zeroblob(100000000)", _answers())
    with pytest.raises(snapshot.QueryError, match="add a LIMIT"):
        _run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) SELECT x FROM c",
             _answers())


@pytest.mark.parametrize(("text", "expected"), [
    ("UPDATE backends SET state='down' WHERE backend_ndx=2", sql.SetState(2, "down")),
    ("kill 7;", sql.Kill(7)),
    ("KILL CONNECTION 7", sql.Kill(7)),
    ("KILL QUERY 7", None),  # MySQL's KILL QUERY keeps the connection: the console cannot
    ("truncate table query_digest", sql.TruncateDigests()),
    ("select @@version_comment limit 1", sql.VersionComment()),
    ("SET NAMES utf8mb4", sql.SessionSet()),
    ("SELECT * FROM backends", sql.Query("SELECT * FROM backends")),
    ("DROP TABLE help", None),
    ("INSERT INTO help VALUES (1, 2)", None),
])
def test_statements_are_told_apart(text: str, expected: sql.Statement | None) -> None:
    assert sql.parse(text) == expected


def test_show_forms_are_queries_over_the_tables() -> None:
    statement = sql.parse("SHOW VARIABLES LIKE 'admin%'")
    assert isinstance(statement, sql.Query)
    src = tables.Source({}, {"admin_password": "hunter2", "admin_password_file": "/etc/pw",
                             "admin_username": "root", "proxy_address": ":4040", "daemon": False},
                        {"admin_password": "command line"})
    result = _run(statement.sql, src)
    assert [c for c, _ in result.columns] == ["Variable_name", "Value"]
    assert result.rows == [("admin-password", variables.MASK), ("admin-password-file", "/etc/pw"),
                           ("admin-username", "root")]
    shown = sql.parse("SHOW TABLES")
    assert isinstance(shown, sql.Query)
    names = [r[0] for r in _run(shown.sql, src).rows]
    assert {"backends", "query_digest", "connections", "pool", "lua", "workers"} <= set(names)


@pytest.mark.parametrize(("option", "secret"), [
    ("admin-password", True), ("proxy-ssl-key-passphrase", True), ("some-api-token", True),
    ("admin-password-file", False), ("proxy-ssl-key", False), ("admin-username", False),
])
def test_which_options_are_masked(option: str, secret: bool) -> None:
    assert variables.is_secret(option) is secret
