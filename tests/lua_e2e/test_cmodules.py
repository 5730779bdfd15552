"""C modules through ``--lua-cpath``, as MySQL Proxy loaded them: Debian's ``lua-lpeg``,
``lua-filesystem`` and ``lua-cjson`` load into a real chassis's Lua state and work, on
both runtimes; a module that cannot load says which and why."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from chassis_proxy.lua import EXEC_FAILED
from chassis_proxy.lua.runtime import available_runtimes

from tests.lua_e2e.conftest import LuaProxyFactory, expect_error

pytestmark = pytest.mark.timeout(60)

#: Where Debian installs Lua 5.1 C modules (lua-lpeg, lua-filesystem, lua-cjson).
DEBIAN_CPATH = Path("/usr/lib") / (sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu") / "lua" / "5.1"

USES_ALL_THREE = """
local lpeg = require("lpeg")
local lfs = require("lfs")
local cjson = require("cjson")

-- "SELECT 'k=v'" -> key and value, by an LPeg grammar
local word = lpeg.C((lpeg.R("az", "09") + lpeg.S("_-"))^1)
local pair = lpeg.P("SELECT '") * word * "=" * word * "'"

function read_query(packet)
    local k, v = pair:match(packet:sub(2))
    if not k then return end
    local here = lfs.attributes(HERE)
    local doc = cjson.decode(cjson.encode({ [k] = v, list = { 1, 2, 3 } }))
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
        fields = { { name = "k" }, { name = "v" }, { name = "mode" }, { name = "json" }, { name = "lfs" } },
        rows = { { k, doc[k], here.mode, cjson.encode(doc.list), lfs._VERSION } } } }
    return proxy.PROXY_SEND_RESULT
end
"""


@pytest.fixture(autouse=True)
def debian_modules() -> None:
    missing = [m for m in ("lpeg", "lfs", "cjson") if not (DEBIAN_CPATH / f"{m}.so").is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in {DEBIAN_CPATH}: apt-get install lua-lpeg "
                    "lua-filesystem lua-cjson (scripts/test installs them)")


@pytest.mark.parametrize("runtime", available_runtimes())
def test_lpeg_lfs_and_cjson_load_from_lua_cpath_and_work(
        lua_proxy: LuaProxyFactory, tmp_path: Path, runtime: str) -> None:
    option = {"lua51": "lua5.1", "luajit21": "luajit"}[runtime]
    proxy = lua_proxy(USES_ALL_THREE.replace("HERE", repr(str(tmp_path))), f"--lua-cpath={DEBIAN_CPATH}/?.so;;",
                      f"--lua-runtime={option}")
    ((k, v, mode, json, version),) = proxy.rows("SELECT 'user=alice'")
    assert (k, v, mode, json) == ("user", "alice", "directory", "[1,2,3]")
    # the real LuaFileSystem on the C path wins over chassis' subset
    assert version.startswith("LuaFileSystem") and "chassis" not in version
    assert proxy.rows("SELECT 1") == [(1,)]


def test_without_the_real_one_lfs_is_chassis_subset(lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    proxy = lua_proxy("""
        function read_query(packet)
            if packet:sub(2) ~= "SELECT 'lfs'" then return end
            proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
                fields = { { name = "v" } }, rows = { { require("lfs")._VERSION } } } }
            return proxy.PROXY_SEND_RESULT
        end
    """, f"--lua-cpath={tmp_path}/?.so")
    assert proxy.rows("SELECT 'lfs'") == [("LuaFileSystem 1.2 (chassis subset)",)]


def test_a_module_that_cannot_load_names_itself_and_the_reason(
        lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    (tmp_path / "broken.so").write_bytes(b"not a shared object\n")
    proxy = lua_proxy('local broken = require("broken")\n', f"--lua-cpath={tmp_path}/?.so")
    _code, message = expect_error(lambda: proxy.rows("SELECT 1"))
    assert message == EXEC_FAILED
    line = proxy.critical_lines()[0]
    assert f"error loading module 'broken' from file '{tmp_path}/broken.so'" in line, line
    assert "invalid ELF header" in line or "file too short" in line, line
