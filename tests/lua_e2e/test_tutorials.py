"""Scripts in the style of MySQL Proxy's tutorials (ours, in ``scripts/``), each asserting
what the client receives."""

from __future__ import annotations

import datetime
import re

import pytest

from tests.lua_e2e.conftest import (
    SCRIPTS,
    LuaProxyFactory,
    expect_error,
    query,
    run_cli,
)
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)


def test_rewriting_a_renamed_table(lua_proxy: LuaProxyFactory, mariadb: MariaDB,
                                   cleanup_tables: list[str]) -> None:
    mariadb.sql("CREATE TABLE test.lua_orders (id INT PRIMARY KEY, item VARCHAR(40))")
    cleanup_tables.append("test.lua_orders")
    proxy = lua_proxy(SCRIPTS / "rewrite.lua")
    with proxy.connect(database="test") as conn:
        with conn.cursor() as cur:
            assert cur.execute("INSERT INTO old_orders VALUES (1, 'old_orders'), (2, 'it''s')") == 2
        # the string 'old_orders' is data, not a name: it stays as it is
        assert query(conn, "SELECT id, item FROM old_orders WHERE item <> 'x' ORDER BY id") == [
            (1, "old_orders"), (2, "it's")]
        assert query(conn, "SELECT COUNT(*) FROM lua_orders") == [(2,)]
        code, message = expect_error(lambda: query(conn, "SELECT nope FROM old_orders"))
        assert code == 1054 and message.startswith("Unknown column 'nope' in "), message
    assert mariadb.sql("SELECT item FROM test.lua_orders ORDER BY id") == [("old_orders",), ("it's",)]


def test_injecting_now_before_each_query_with_timing(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPTS / "inject_timing.lua")
    with proxy.connect() as conn:
        assert query(conn, "SELECT 'a' AS x") == [("a",)]  # NOW()'s result was ignored
        assert query(conn, "SELECT SLEEP(0.2)") == [(0,)]
        assert expect_error(lambda: query(conn, "SELECT * FROM test.nowhere"))[0] == 1146
        times = {row[0]: row[1:] for row in query(conn, "SHOW QUERY TIMES")}
    assert set(times) >= {"SELECT 'a' AS x", "SELECT SLEEP(0.2)", "SELECT * FROM test.nowhere"}
    for sql, (started, query_time, response_time) in times.items():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", started), (sql, started)
        assert abs(datetime.datetime.fromisoformat(started) - datetime.datetime.now()) \
            < datetime.timedelta(hours=14)
        assert 0 < query_time <= response_time, sql
    assert times["SELECT SLEEP(0.2)"][2] >= 200_000  # µs


def test_merging_two_result_sets_into_one(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPTS / "merge_results.lua")
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT BOTH")
        assert cur.fetchall() == ((1,), (2,), (3,), (10,), (20,))
        assert [d[0] for d in cur.description] == ["n"]
        cur.execute("SELECT BOTH")  # again: the per-connection state starts afresh
        assert len(cur.fetchall()) == 5
        cur.execute("SELECT 'plain'")
        assert cur.fetchall() == (("plain",),)


def test_answering_queries_locally(lua_proxy: LuaProxyFactory, mariadb: MariaDB,
                                   mariadb_cli: str) -> None:
    proxy = lua_proxy(SCRIPTS / "answer_locally.lua")
    with proxy.connect() as conn:
        assert query(conn, "select proxy_version()") == [("0.8.5",)]
        assert query(conn, "SHOW PROXY BACKENDS") == [
            ("1", mariadb.address, "up", "rw", "1", None)]
        with conn.cursor() as cur:
            assert cur.execute("PROXY SET UUID 'b-1'") == 1
        assert query(conn, "SELECT 6 * 7") == [(42,)]  # anything else goes to the server
    result = run_cli(mariadb_cli, proxy, "SHOW PROXY BACKENDS")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ndx\taddress\tstate\ttype\tclients\tuuid\n1\t{mariadb.address}\tup\trw\t1\tb-1\n"


def test_denying_users_in_read_auth(lua_proxy: LuaProxyFactory, mariadb_cli: str) -> None:
    proxy = lua_proxy(SCRIPTS / "deny_users.lua")
    code, message = expect_error(lambda: proxy.connect(user="native"))
    assert (code, message) == (1045, "user 'native' is not allowed through this proxy")
    result = run_cli(mariadb_cli, proxy, "SELECT 1", user="intruder", password="x")
    assert result.returncode == 1
    assert "ERROR 1045 (28000): user 'intruder' is not allowed through this proxy" in result.stderr
    with proxy.connect() as conn:
        assert query(conn, "SELECT CURRENT_USER()") == [("root@localhost",)]
    log = proxy.log_text()
    assert re.search(r"\(warning\) .*conn \d+: \([^)]*scripts/deny_users\.lua:9\) denied user native from "
                     r"127\.0\.0\.1", log), log
    assert "denied user intruder" in log
    # nothing of theirs reached the server: no login attempt for them there
    assert "login of 'native'" not in log


MAP_LOGIN = """
local password = require("mysql.password")
local proto = require("mysql.proto")

-- tutorial-scramble.lua's idea: a known user and password log in as another account
function read_auth()
    local c, s = proxy.connection.client, proxy.connection.server
    if c.username ~= "replace" or not password.check(s.scramble_buffer, c.scrambled_password,
            password.hash(password.hash("me"))) then
        return
    end
    -- no server_capabilities: the attached server's are taken (0.8.5 raised an error)
    proxy.queries:append(1, proto.to_response_packet({
        username = "native",
        response = password.scramble(s.scramble_buffer, password.hash("native_pw")),
        charset = 8,
        database = c.default_db,
        max_packet_size = 1024 * 1024,
    }))
    return proxy.PROXY_SEND_QUERY
end
"""


def test_a_login_rewritten_with_the_attached_servers_capabilities(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(MAP_LOGIN)
    with proxy.connect(user="replace", password="me") as conn:
        assert query(conn, "SELECT CURRENT_USER()") == [("native@%",)]
    assert proxy.critical_lines() == []
    # the wrong password is not mapped: the server refuses the unknown user
    code, _ = expect_error(lambda: proxy.connect(user="replace", password="not-me"))
    assert code == 1045
