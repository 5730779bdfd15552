"""How a script lives in a running chassis (reference 3.1): what connections share, what
is theirs alone, and reloading the file for new connections."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.lua_e2e.conftest import (
    LuaProxyFactory,
    expect_error,
    query,
    write_script,
)

pytestmark = pytest.mark.timeout(60)

EXEC_FAILED = "MySQL Proxy Lua script failed to execute. Check the error log."

ANSWER_LUA = """
local function answer(...)
    local row, fields = { ... }, {}
    for i = 1, select("#", ...) do fields[i] = { name = "c" .. i, type = proxy.MYSQL_TYPE_STRING } end
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = { row } } }
    return proxy.PROXY_SEND_RESULT
end
"""


def test_proxy_global_is_shared_and_new_proxy_keys_are_per_connection(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        -- the top level runs once per client connection
        proxy.global.connections = (proxy.global.connections or 0) + 1
        proxy.my_number = proxy.global.connections   -- a new key on proxy: this connection's
        counter = 0                                   -- a plain global: this connection's
        print("top level run for connection", proxy.global.connections)  -- to stdout
        function read_query(packet)
            if packet:byte() ~= proxy.COM_QUERY then return end
            counter = counter + 1
            proxy.global.queries = (proxy.global.queries or 0) + 1
            if packet:sub(2) == "REDEFINE" then
                -- hooks are looked up at every call: this connection's read_query changes
                local previous = read_query
                function read_query(p)
                    if p:sub(2) == "SELECT 'redefined'" then return answer("yes", counter) end
                    return previous(p)
                end
                return answer("redefined")
            end
            if packet:sub(2) == "SELECT 'state'" then
                return answer(proxy.global.connections, proxy.my_number, counter,
                              proxy.global.queries, tostring(rawget(_G, "counter")))
            end
        end
    """)
    with proxy.connect() as first:
        # PyMySQL's SET NAMES is every connection's first query
        assert query(first, "SELECT 'state'") == [("1", "1", "2", "2", "nil")]
        with proxy.connect() as second:
            assert query(second, "SELECT 'state'") == [("2", "2", "2", "4", "nil")]
            assert query(first, "SELECT 'state'") == [("2", "1", "3", "5", "nil")]
            assert query(second, "SELECT 'state'") == [("2", "2", "3", "6", "nil")]
            assert query(second, "REDEFINE") == [("redefined",)]
            assert query(second, "SELECT 'redefined'") == [("yes", "4")]
            assert query(second, "SELECT 'state'") == [("2", "2", "5", "8", "nil")]
            assert query(first, "SELECT 'redefined'") == [("redefined",)]  # from the server
    stdout = proxy.process.stderr_text()  # the chassis' stdout and stderr go to one file
    assert "top level run for connection\t1\n" in stdout
    assert "top level run for connection\t2\n" in stdout


def test_a_required_module_is_loaded_once_and_shared(lua_proxy: LuaProxyFactory,
                                                     tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    libdir.mkdir()
    write_script(libdir / "e2e_counter.lua", """
        -- file-level locals of a module are shared by every connection of the process
        local calls = 0
        _G.e2e_counter_loads = (_G.e2e_counter_loads or 0) + 1
        function e2e_global_helper() return "from the module" end  -- lands in _G
        return { bump = function() calls = calls + 1; return calls end }
    """)
    proxy = lua_proxy(ANSWER_LUA + """
        local counter = require("e2e_counter")
        function read_query(packet)
            if packet:sub(2) == "SELECT 'bump'" then
                return answer(counter.bump(), e2e_counter_loads, e2e_global_helper())
            end
        end
    """, f"--lua-path={libdir}/?.lua;;")
    with proxy.connect() as first, proxy.connect() as second:
        assert query(first, "SELECT 'bump'") == [("1", "1", "from the module")]
        assert query(second, "SELECT 'bump'") == [("2", "1", "from the module")]
        assert query(first, "SELECT 'bump'") == [("3", "1", "from the module")]


def _write_version(path: Path, version: str, mtime_ns: int) -> None:
    write_script(path, ANSWER_LUA + f"""
        local seen = proxy.global.versions or {{}}
        proxy.global.versions = seen
        if seen[#seen] ~= "{version}" then seen[#seen + 1] = "{version}" end
        function read_query(packet)
            if packet:sub(2) == "SELECT 'version'" then
                return answer("{version}", table.concat(proxy.global.versions, " "))
            end
        end
    """)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_changed_script_is_used_by_new_connections_even_within_the_same_second(
        lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    script = tmp_path / "versioned.lua"
    second = time.time_ns() // 1_000_000_000 * 1_000_000_000
    _write_version(script, "v1", second + 100_000_000)
    size = script.stat().st_size
    proxy = lua_proxy(script)
    with proxy.connect() as old:
        assert query(old, "SELECT 'version'") == [("v1", "v1")]
        # same size, same second, 1 ms later: MySQL Proxy 0.8.5 missed this change
        _write_version(script, "v2", second + 101_000_000)
        assert script.stat().st_size == size
        with proxy.connect() as new:
            # proxy.global survives the reload
            assert query(new, "SELECT 'version'") == [("v2", "v1 v2")]
            # the connection already open keeps the copy it started with
            assert query(old, "SELECT 'version'") == [("v1", "v1 v2")]
        _write_version(script, "v3", second + 102_000_000)
        assert proxy.rows("SELECT 'version'") == [("v3", "v1 v2 v3")]
        assert query(old, "SELECT 'version'") == [("v1", "v1 v2 v3")]


def test_a_top_level_runtime_error_refuses_new_clients(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy("""
        proxy.global.tries = (proxy.global.tries or 0) + 1
        if proxy.global.tries > 1 then
            local settings = nil
            print(settings.port)   -- line 4
        end
        function read_query(packet) end
    """)
    with proxy.connect() as first:  # the first run of the top level succeeds
        assert query(first, "SELECT 1") == [(1,)]
        assert expect_error(proxy.connect) == (1105, EXEC_FAILED)
        assert re.search(r'\(critical\) .*conn \d+: \(script\) .*script1\.lua"\]:4: attempt to index',
                         proxy.log_text()), proxy.log_text()
        assert query(first, "SELECT 2") == [(2,)]
