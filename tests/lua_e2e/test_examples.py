"""The example scripts shipped with the package (plugins/chassis_proxy/lua/examples/), run
the way docs/lua.md tells users to: a real chassis and the mariadb CLI."""

from __future__ import annotations

import re
from pathlib import Path

import chassis_proxy.lua
import pytest

from tests.lua_e2e.conftest import LuaProxyFactory, run_cli
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(chassis_proxy.lua.__file__).parent / "examples"


def test_proxy_version_example(lua_proxy: LuaProxyFactory, mariadb_cli: str) -> None:
    proxy = lua_proxy(EXAMPLES / "proxy-version.lua")
    result = run_cli(mariadb_cli, proxy, "select proxy_version(); SELECT 1 + 1 AS two")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"proxy_version\(\)\tlua\n0\.8\.5\t(LuaJIT 2\.1\S*|Lua 5\.1)\ntwo\n2\n",
                        result.stdout), result.stdout


def test_shortcuts_example(lua_proxy: LuaProxyFactory, mariadb_cli: str, mariadb: MariaDB,
                           cleanup_tables: list[str]) -> None:
    mariadb.sql("CREATE TABLE test.lua_listed (a INT)")
    cleanup_tables.append("test.lua_listed")
    proxy = lua_proxy(EXAMPLES / "shortcuts.lua")
    result = run_cli(mariadb_cli, proxy, "whoami; cd test; SELECT DATABASE(); ls", "-N")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["root@localhost", "test"]
    assert "lua_listed" in lines[2:]  # SHOW TABLES of the database "cd" switched to


def test_query_logger_example(lua_proxy: LuaProxyFactory, mariadb_cli: str) -> None:
    proxy = lua_proxy(EXAMPLES / "query-logger.lua")
    result = run_cli(mariadb_cli, proxy, "SELECT 'logged'; SELECT * FROM test.nowhere")
    assert result.returncode == 1 and "ERROR 1146" in result.stderr
    assert result.stdout == "logged\nlogged\n"
    # the result streams to the client before read_query_result logs it: wait for the line
    log = proxy.process.wait_for_log("ms  ERR  SELECT * FROM test.nowhere")
    assert re.search(r"\(message\) .*conn \d+: \([^)]*query-logger\.lua:\d+\) [\d.]+ ms  ok  "
                     r"SELECT 'logged'", log), log
    assert re.search(r"[\d.]+ ms  ERR  SELECT \* FROM test\.nowhere", log), log
