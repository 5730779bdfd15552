"""``--lua-runtime`` through a real chassis: a MySQL Proxy 0.8.5 script that only PUC Lua
5.1 loads runs by default, and ``--lua-runtime=luajit`` refuses it at start-up, saying why."""

from __future__ import annotations

import pytest
from chassis_proxy.lua.runtime import available_runtimes

from tests.lua_e2e.conftest import LuaProxyFactory

pytestmark = pytest.mark.timeout(60)

#: Exit code of a failed start (chassis.errors.StartupError.exit_code).
STARTUP_FAILED = 3

# the pattern of MySQL Proxy's lib/proxy/auto-config.lua style: "\." in a Lua string
SCRIPT = r"""
function read_query(packet)
    local major, minor = string.match(packet:sub(2), "^SELECT '(%d+)\.(%d+)'")
    if major then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "major" }, { name = "minor" } }, rows = { { major, minor } } } }
        return proxy.PROXY_SEND_RESULT
    end
end
"""


def test_a_lua_5_1_escape_loads_and_works_by_default(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPT)
    assert proxy.rows("SELECT '10.11'") == [("10", "11")]


@pytest.mark.skipif("luajit21" not in available_runtimes(), reason="no LuaJIT in this lupa")
def test_luajit_refuses_the_script_at_start_up_and_says_why(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPT, "--lua-runtime=luajit", wait_ready=False)
    assert proxy.process.wait(timeout=30) == STARTUP_FAILED, proxy.process.output()
    out = proxy.process.output()
    assert (f'--proxy-lua-script: Lua script failed to load: [string "{proxy.script}"]:2: '
            "invalid escape sequence") in out, out
    assert "--lua-runtime=lua5.1 loads it" in out, out


@pytest.mark.skipif("luajit21" not in available_runtimes(), reason="no LuaJIT in this lupa")
def test_luajit_runs_scripts_it_can_load(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPT.replace(r"\.", "%."), "--lua-runtime=luajit")
    assert proxy.rows("SELECT '10.11'") == [("10", "11")]
    assert proxy.rows("SELECT 1") == [(1,)]
