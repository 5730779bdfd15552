"""``print()`` of binary strings is not lossy (issue 10, item 4).

Before ``require("chassis")``, ``print`` writes the script's bytes to the worker's standard
output as they are (MySQL Proxy 0.8.5 wrote them with C stdio); once chassis is loaded it
logs them, keeping UTF-8 text and writing other bytes as ``\\xNN``, so the log stays text
and nothing is lost.
"""

from __future__ import annotations

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory, query
from tests.support.chassis_proc import wait_for

pytestmark = pytest.mark.timeout(60)

PRINTER = """
function read_query(packet)
    local q = packet:sub(2)
    if q == "SELECT 'raw'" then
        print("raw:\\255\\000\\128é|", 7)
    elseif q == "SELECT 'logged'" then
        require("chassis")
        print("logged:\\255\\000\\128é|", 7)
    end
end
"""


def test_print_writes_binary_bytes_to_stdout_as_they_are(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(PRINTER)
    with proxy.connect() as conn:
        assert query(conn, "SELECT 'raw'") == [("raw",)]
    stdout = proxy.process.stderr_path  # the worker's stdout and stderr share this file
    wait_for(lambda: b"raw:" in stdout.read_bytes(), message="the printed line")
    assert b"raw:\xff\x00\x80\xc3\xa9|\t7\n" in stdout.read_bytes()


def test_print_after_chassis_is_loaded_logs_every_byte(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(PRINTER)
    with proxy.connect() as conn:
        assert query(conn, "SELECT 'logged'") == [("logged",)]
    log = proxy.process.wait_for_log("logged:")
    (line,) = [line for line in log.splitlines() if "logged:" in line]
    # valid UTF-8 (the NUL and é included) as it is, the other bytes as \xNN
    assert line.endswith("logged:\\xff\x00\\x80é|\t7"), repr(line)
