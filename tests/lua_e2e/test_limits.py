"""Where chassis does better than MySQL Proxy 0.8.5 (docs/lua.md, sections 2 and 6): hook
errors with the script's file and line, ``--proxy-lua-on-error``, the hook time and
memory limits, and the ``proxy.response`` mistakes that crashed 0.8.5 — in every case
the client gets an answer and the other clients go on."""

from __future__ import annotations

import re
import threading
import time
from functools import partial
from typing import Any

import pymysql
import pytest

from tests.lua_e2e.conftest import (
    RESPONSE_FAILED,
    LuaProxy,
    LuaProxyFactory,
    expect_error,
    query,
)

pytestmark = pytest.mark.timeout(60)

REJECTED = ("(lua) read_query() failed and --proxy-lua-on-error=reject is set; "
            "check the proxy's error log")

FAILING_LUA = """
function read_query(packet)
    local sql = packet:sub(2)
    if sql == "SELECT 'boom'" then
        local settings = nil
        return settings.mode               -- line 5
    elseif sql == "SELECT 'spin'" then
        while true do end
    elseif sql == "SELECT 'hog'" then
        local hoard = {}
        for i = 1, 1e9 do hoard[i] = string.rep("x", 100000) .. i end
    elseif sql == "SELECT 'error object'" then
        error({ code = 42 })
    end
end
"""


def test_a_hook_error_is_logged_with_file_and_line_and_the_query_still_runs(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(FAILING_LUA)
    with proxy.connect() as conn:
        assert query(conn, "SELECT 'boom'") == [("boom",)]  # fail-open: forwarded
        assert query(conn, "SELECT 'error object'") == [("error object",)]
        assert query(conn, "SELECT 1") == [(1,)]
    lines = proxy.critical_lines()
    assert len(lines) == 2, lines
    assert re.search(r'conn \d+: \(read_query\) .*script1\.lua"\]:5: attempt to index '
                     r"(local 'settings' )?\(?a nil value", lines[0]), lines[0]
    assert "(read_query)" in lines[1]


def test_on_error_reject_gives_the_client_an_err(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(FAILING_LUA, "--proxy-lua-on-error=reject")
    with proxy.connect() as conn:
        assert expect_error(lambda: query(conn, "SELECT 'boom'")) == (1105, REJECTED)
        assert query(conn, "SELECT 2") == [(2,)]  # the connection goes on


def _other_client(proxy: LuaProxy, results: list[Any], stop: threading.Event) -> None:
    """Queries in a loop until told to stop; appends each answer (or the exception)."""
    try:
        with proxy.connect() as conn:
            n = 0
            while not stop.is_set() or n < 5:
                n += 1
                results.append(query(conn, f"SELECT {n}")[0][0])
    except Exception as e:  # reported by the test's assertion
        results.append(e)


def _while_another_client_queries(proxy: LuaProxy, sql: str) -> tuple[tuple[int, str], float,
                                                                       list[Any]]:
    """Run ``sql`` (it must fail) while another connection queries; (error, seconds, answers)."""
    results: list[Any] = []
    stop = threading.Event()
    other = threading.Thread(target=_other_client, args=(proxy, results, stop))
    with proxy.connect() as conn:
        other.start()
        try:
            started = time.monotonic()
            error = expect_error(lambda: query(conn, sql))
            elapsed = time.monotonic() - started
            assert query(conn, "SELECT 'after'") == [("after",)]
        finally:
            stop.set()
            other.join(30)
    return error, elapsed, results


def test_an_endless_loop_is_interrupted_and_other_clients_go_on(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(FAILING_LUA, "--lua-hook-timeout=0.5", "--proxy-lua-on-error=reject")
    error, elapsed, others = _while_another_client_queries(proxy, "SELECT 'spin'")
    assert error == (1105, REJECTED)
    assert 0.5 <= elapsed < 5, elapsed
    assert len(others) >= 5 and others == list(range(1, len(others) + 1)), others
    assert re.search(r"conn \d+: \(read_query\) read_query\(\) ran longer than "
                     r"--lua-hook-timeout=0\.5s and was interrupted", proxy.log_text())


def test_an_endless_loop_with_the_default_forward_still_runs_the_query(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(FAILING_LUA, "--lua-hook-timeout=0.5")
    with proxy.connect() as conn:
        started = time.monotonic()
        assert query(conn, "SELECT 'spin'") == [("spin",)]
        assert time.monotonic() - started >= 0.5


def test_a_script_past_the_memory_limit_gets_a_memory_error_and_others_go_on(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(FAILING_LUA, "--lua-max-memory=64M", "--proxy-lua-on-error=reject")
    error, _, others = _while_another_client_queries(proxy, "SELECT 'hog'")
    assert error == (1105, REJECTED)
    assert len(others) >= 5 and others == list(range(1, len(others) + 1)), others
    assert re.search(r"conn \d+: \(read_query\) read_query\(\) ran out of memory "
                     r"\(--lua-max-memory=64M\) and was interrupted", proxy.log_text())
    with proxy.connect() as conn:  # the garbage is gone: the same hook works again
        assert query(conn, "SELECT 'fine'") == [("fine",)]
        assert expect_error(lambda: query(conn, "SELECT 'hog'")) == (1105, REJECTED)


#: proxy.response mistakes, each of which aborted MySQL Proxy 0.8.5 (reference 3.8) or
#: gave its "handling proxy.response failed" ERR.
BAD_RESPONSES = {
    "empty fields": "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = {}, rows = {} } }",
    "fields not a table": "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = 'a', rows = {} } }",
    "fields missing": "{ type = proxy.MYSQLD_PACKET_OK, resultset = { rows = { { 1 } } } }",
    "rows not a table": "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = F, rows = 7 } }",
    "a field not a table": "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = { 42 } } }",
    "a row not a table": "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = F, rows = { 42 } } }",
    "a packet not a string": "{ type = proxy.MYSQLD_PACKET_RAW, packets = { {} } }",
    "packets missing": "{ type = proxy.MYSQLD_PACKET_RAW }",
    "type missing": "{ errmsg = 'x' }",
    "type unknown": "{ type = 99 }",
    "type not a number": "{ type = 'ok' }",
    "response nil": "nil",
}


def test_every_proxy_response_that_crashed_0_8_5_gives_an_err(lua_proxy: LuaProxyFactory) -> None:
    cases = "\n".join(f'    ["{name}"] = function() return {lua} end,'
                      for name, lua in BAD_RESPONSES.items())
    proxy = lua_proxy(f"""
        local F = {{ {{ name = "a", type = proxy.MYSQL_TYPE_STRING }} }}
        local cases = {{
        {cases}
        }}
        function read_query(packet)
            local sql = packet:sub(2)
            if cases[sql] then
                proxy.response = cases[sql]()
                return proxy.PROXY_SEND_RESULT
            elseif sql == "RETURN 3" then
                return 3       -- MySQL Proxy's internal SEND_INJECTION, with an empty queue
            end
        end
    """)
    with proxy.connect() as conn:
        for name in BAD_RESPONSES:
            assert expect_error(partial(query, conn, name)) == (1105, RESPONSE_FAILED), name
        assert query(conn, "SELECT 'still here'") == [("still here",)]
        with conn.cursor() as cur:  # logged and forwarded: the server says what it thinks
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute("RETURN 3")
    lines = proxy.critical_lines()
    assert len(lines) == len(BAD_RESPONSES) + 1, lines
    assert all("(read_query)" in line for line in lines), lines
    assert proxy.process.workers() == [proxy.worker_pid()]  # never restarted
    assert proxy.rows("SELECT 'new client'") == [("new client",)]


def test_connection_close_ends_the_client_after_its_result(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy("""
        function read_query(packet)
            if packet:sub(2) == "SELECT 'last one'" then
                proxy.connection.connection_close = true
            end
        end
    """)
    with proxy.connect() as conn:
        assert query(conn, "SELECT 'last one'") == [("last one",)]
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(conn, "SELECT 'too late'")
        assert info.value.args[0] in (2006, 2013), info.value.args
    assert proxy.rows("SELECT 'next client'") == [("next client",)]


HOOK_FAILURES_LUA = """
local function fail_in(hook)
    if proxy.global.fail == hook then error("failing on purpose in " .. hook) end
end
function connect_server() fail_in("connect_server") end
function read_handshake() fail_in("read_handshake") end
function read_auth() fail_in("read_auth") end
function read_auth_result(auth) fail_in("read_auth_result") end
function read_query(packet)
    local hook = packet:sub(2):match("^FAIL IN (%S+)$")
    if hook then
        proxy.global.fail = hook
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
        return proxy.PROXY_SEND_RESULT
    elseif packet:sub(2) == "SELECT 'buffered'" then
        proxy.queries:append(1, packet, { resultset_is_needed = true })
        return proxy.PROXY_SEND_QUERY
    elseif packet:sub(2) == "SELECT 'streamed'" then
        proxy.queries:append(1, packet)
        return proxy.PROXY_SEND_QUERY
    end
end
function read_query_result(inj) fail_in("read_query_result") end
function disconnect_client() fail_in("disconnect_client") end
"""

LOGIN_HOOKS = ["connect_server", "read_handshake", "read_auth", "read_auth_result"]


@pytest.mark.parametrize("on_error", ["forward", "reject"])
def test_a_failing_hook_in_every_hook(lua_proxy: LuaProxyFactory, on_error: str) -> None:
    """forward: each failure is as if the hook returned nothing; reject: an ERR wherever the
    client can still be answered (not for a streamed result, nor at disconnect)."""
    proxy = lua_proxy(HOOK_FAILURES_LUA, f"--proxy-lua-on-error={on_error}")
    with proxy.connect() as control:
        for hook in [*LOGIN_HOOKS, "read_query_result", "disconnect_client"]:
            query(control, f"FAIL IN {hook}")
            rejected = (1105, f"(lua) {hook}() failed and --proxy-lua-on-error=reject is set; "
                              "check the proxy's error log")
            if hook in LOGIN_HOOKS and on_error == "reject":
                assert expect_error(proxy.connect) == rejected, hook
                continue
            with proxy.connect() as conn:
                if hook == "read_query_result" and on_error == "reject":
                    assert expect_error(partial(query, conn, "SELECT 'buffered'")) == rejected
                else:
                    assert query(conn, "SELECT 'buffered'") == [("buffered",)], hook
                assert query(conn, "SELECT 'streamed'") == [("streamed",)], hook
            if hook == "disconnect_client":
                # It runs after the client is gone: wait for its line before the next
                # FAIL IN, which would otherwise race with that client's close.
                proxy.process.wait_for_log("failing on purpose in disconnect_client")
        query(control, "FAIL IN nothing")
    lines = proxy.critical_lines()
    for hook in [*LOGIN_HOOKS, "read_query_result", "disconnect_client"]:
        assert any(re.search(rf'conn \d+: \({hook}\) \[string "\S*script1\.lua"\]:\d+: failing on purpose in '
                             rf"{hook}", line) for line in lines), (hook, lines)
    assert proxy.rows("SELECT 'all good'") == [("all good",)]


def test_a_top_level_that_runs_too_long_or_too_big_refuses_only_that_client(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy("""
        proxy.global.runs = (proxy.global.runs or 0) + 1
        if proxy.global.runs == 2 then
            while true do end
        elseif proxy.global.runs == 3 then
            local hoard = {}
            for i = 1, 1e9 do hoard[i] = string.rep("y", 100000) .. i end
        end
    """, "--lua-hook-timeout=0.5", "--lua-max-memory=64M")
    exec_failed = (1105, "MySQL Proxy Lua script failed to execute. Check the error log.")
    with proxy.connect() as first:
        assert expect_error(proxy.connect) == exec_failed
        assert expect_error(proxy.connect) == exec_failed
        assert query(first, "SELECT 'first'") == [("first",)]
        assert proxy.rows("SELECT 'fourth'") == [("fourth",)]
    log = proxy.log_text()
    assert "(script) the script's top level ran longer than --lua-hook-timeout=0.5s" in log
    assert "(script) the script's top level ran out of memory (--lua-max-memory=64M)" in log
