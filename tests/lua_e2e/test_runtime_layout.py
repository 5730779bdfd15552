"""MySQL Proxy's installed layout (issue 10 #5): ``--lua-path`` pointed at an
installation's ``lib/mysql-proxy/lua/?.lua`` gets its ``proxy/*.lua`` and ``admin.lua``
instead of chassis' own library, and a bundled example named as its usage line says
(``--proxy-lua-script=query-logger.lua``) is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory

pytestmark = pytest.mark.timeout(60)

SCRIPT = """
local commands = require("proxy.commands")
local tokenizer = require("proxy.tokenizer")   -- not in the installation: chassis' own
function read_query(packet)
    if packet:sub(2) ~= "SELECT 'which'" then return end
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
        fields = { { name = "commands" }, { name = "admin" }, { name = "tokenizer" } },
        rows = { { commands.WHOSE or "chassis", require("admin").WHOSE or "chassis",
                   type(tokenizer.tokenize) } } } }
    return proxy.PROXY_SEND_RESULT
end
"""


def installed_layout(root: Path) -> Path:
    """A MySQL Proxy installation's Lua directory, its modules marking themselves."""
    lua_dir = root / "lib" / "mysql-proxy" / "lua"
    (lua_dir / "proxy").mkdir(parents=True)
    (lua_dir / "proxy" / "commands.lua").write_text('module("proxy.commands", package.seeall)\nWHOSE = "installed"\n')
    (lua_dir / "admin.lua").write_text('return { WHOSE = "installed admin" }\n')
    return lua_dir


@pytest.mark.parametrize("tail", ["", ";;"])
def test_the_installed_library_on_lua_path_wins_over_ours(
        lua_proxy: LuaProxyFactory, tmp_path: Path, tail: str) -> None:
    lua_dir = installed_layout(tmp_path / "mysql-proxy")
    proxy = lua_proxy(SCRIPT, f"--lua-path={lua_dir}/?.lua{tail}")
    assert proxy.rows("SELECT 'which'") == [("installed", "installed admin", "function")]


def test_without_it_our_library_serves(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPT.replace('require("admin").WHOSE', "nil"))
    assert proxy.rows("SELECT 'which'") == [("chassis", "chassis", "function")]


def test_a_bundled_example_is_found_by_the_name_its_usage_line_gives(lua_proxy: LuaProxyFactory) -> None:
    example = Path(__file__).resolve().parents[2] / "plugins/chassis_proxy/lua/examples/query-logger.lua"
    assert "--proxy-lua-script=query-logger.lua" in example.read_text()
    proxy = lua_proxy(Path("query-logger.lua"))
    assert proxy.rows("SELECT 1") == [(1,)]
    assert f"proxy Lua script: {example}" in proxy.log_text()
