"""Chunk names and tracebacks as MySQL Proxy 0.8.5 printed them (issue 10, item 4).

0.8.5 named a script's chunk by its plain path, so errors and ``debug.traceback()`` read
``[string "/path/x.lua"]:48:``, and called hooks straight from C, so a traceback taken in
``read_query`` showed the script's frames only. chassis calls hooks through its Lua bridge
(Python, ``raw_pcall``, ``limits.lua``): none of those frames may reach a script or the log.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory, query, write_script

pytestmark = pytest.mark.timeout(60)

#: Frames and chunk names of the bridge that must never show.
BRIDGE = ("raw_pcall", "limits.lua", "bridge.lua", "<python>", "guarded", "objects.lua")

TRACEBACKS = """
local proto = require("mysql.proto")

local function deeper() return 1, debug.traceback("inner") end

function read_query(packet)
    local q = packet:sub(2)
    local text
    if q == "SELECT 'plain'" then
        text = debug.traceback()
    elseif q == "SELECT 'pcall'" then
        local _, _, t = pcall(deeper)
        text = t
    elseif q == "SELECT 'xpcall'" then
        local _, t = xpcall(function() proto.to_err_packet(42) end, debug.traceback)
        text = t
    elseif q == "SELECT 'fail'" then
        local t = nil
        return t.field
    else
        return
    end
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
        fields = { { name = "backtrace", type = proxy.MYSQL_TYPE_STRING } }, rows = { { text } } } }
    return proxy.PROXY_SEND_RESULT
end
"""


def _script(tmp_path: Path) -> Path:
    # a path of 60+ characters: Lua shortens the chunk name, the log names the whole file
    where = tmp_path / ("a-directory-with-a-long-name-" * 2)
    where.mkdir()
    return write_script(where / "tracebacks.lua", TRACEBACKS)


@pytest.fixture
def short_script() -> Iterator[Path]:
    """The script at a path short enough for Lua to show it whole (under 43 characters)."""
    where = Path(tempfile.mkdtemp(prefix="ctb", dir="/tmp"))
    try:
        yield write_script(where / "tracebacks.lua", TRACEBACKS)
    finally:
        shutil.rmtree(where)


@pytest.mark.parametrize("runtime", ["lua5.1", "luajit"])
def test_tracebacks_show_the_script_frames_as_0_8_5_did(
    lua_proxy: LuaProxyFactory, short_script: Path, runtime: str
) -> None:
    proxy = lua_proxy(short_script, f"--lua-runtime={runtime}")
    short = f'[string "{short_script}"]'
    with proxy.connect() as conn:
        (plain,) = query(conn, "SELECT 'plain'")[0]
        (in_pcall,) = query(conn, "SELECT 'pcall'")[0]
        (in_xpcall,) = query(conn, "SELECT 'xpcall'")[0]
    assert plain == f"stack traceback:\n\t{short}:9: in function <{short}:5>"
    assert in_pcall == (
        f"inner\nstack traceback:\n\t{short}:3: in function <{short}:3>\n"
        f"\t[C]: in function 'pcall'\n"
        f"\t{short}:11: in function <{short}:5>"
    )
    lines = in_xpcall.split("\n")
    assert lines[0] == f"{short}:14: bad argument #1 to 'to_err_packet' (table expected, got number)"
    assert lines[1:] == [
        "stack traceback:",
        "\t[C]: in function 'to_err_packet'",
        f"\t{short}:14: in function <{short}:14>",
        "\t[C]: in function 'xpcall'",
        f"\t{short}:14: in function <{short}:5>",
    ]
    for text in (plain, in_pcall, in_xpcall):
        assert not any(frame in text for frame in BRIDGE), text


def test_a_hook_error_is_logged_with_the_whole_path_and_no_bridge_frames(
    lua_proxy: LuaProxyFactory, tmp_path: Path
) -> None:
    script = _script(tmp_path)
    proxy = lua_proxy(script)
    with proxy.connect() as conn:
        # forward (the default): the failed hook counts as no decision, the server answers
        assert query(conn, "SELECT 'fail'") == [("fail",)]
    (line,) = proxy.critical_lines()
    assert re.search(r"conn \d+: \(read_query\) " + re.escape(f'[string "{script}"]:18: ')
                     + r"attempt to index local 't' \(a nil value\)$", line), line
    assert not any(frame in line for frame in BRIDGE), line
