"""``--proxy-lua-script`` is checked at start-up, and a running proxy survives a script
that breaks later (issue 11, item 10).

A missing, unreadable or uncompilable script stops the start with the file, line and
reason (exit 3) instead of starting and refusing every client; once running, a script
that becomes unreadable or gets a syntax error leaves new clients on the last version
that compiled, and the log says why, once per change of the file.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.lua_e2e.conftest import LuaProxy, LuaProxyFactory, query, write_script

pytestmark = pytest.mark.timeout(60)

#: Exit code of a failed start (chassis.errors.StartupError.exit_code).
STARTUP_FAILED = 3

ANSWER_LUA = """
function read_query(packet)
    if packet:sub(2) == "SELECT 'version'" then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "v", type = proxy.MYSQL_TYPE_STRING } }, rows = { { "%s" } } } }
        return proxy.PROXY_SEND_RESULT
    end
end
"""


def without_file_access_override() -> Sequence[str]:
    """A command prefix under which mode 000 keeps a file from us: root reads any file
    (CAP_DAC_OVERRIDE), so a chassis run by root loses that capability."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run chassis as root without CAP_DAC_OVERRIDE")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def failed_start(lua_proxy: LuaProxyFactory, script: Path, **kwargs: object) -> str:
    """Start chassis with ``script``: it must exit with 3; returns its stderr and log."""
    proxy = lua_proxy(script, wait_ready=False, **kwargs)
    assert proxy.process.wait(timeout=30) == STARTUP_FAILED, proxy.process.output()
    return proxy.process.output()


def test_a_missing_script_stops_the_start(lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    script = tmp_path / "nowhere.lua"
    out = failed_start(lua_proxy, script)
    assert f"--proxy-lua-script: Lua script {script} cannot be read: No such file or directory" \
        in out, out


def test_an_unreadable_script_stops_the_start(lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    script = write_script(tmp_path / "secret.lua", "function read_query(packet) end\n")
    script.chmod(0)
    out = failed_start(lua_proxy, script, prefix=without_file_access_override())
    assert f"--proxy-lua-script: Lua script {script} cannot be read: Permission denied" in out, out


def test_a_script_with_a_syntax_error_stops_the_start_naming_file_and_line(
        lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    script = write_script(tmp_path / "typo.lua", """
        function read_query(packet)
            if packet:byte() == proxy.COM_QUERY
                return
            end
        end
    """)
    out = failed_start(lua_proxy, script, )
    assert re.search(r'--proxy-lua-script: Lua script failed to load: \[string "\S*typo\.lua"\]:3: '
                     r"'then' expected near 'return'", out), out


def _version(proxy: LuaProxy) -> str:
    (row,) = proxy.rows("SELECT 'version'")
    return str(row[0])


def test_an_unreadable_script_keeps_the_last_good_version_and_says_why_once(
        lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    script = write_script(tmp_path / "served.lua", ANSWER_LUA % "v1")
    proxy = lua_proxy(script, prefix=without_file_access_override())
    assert _version(proxy) == "v1"
    script.chmod(0)
    for _ in range(3):
        assert _version(proxy) == "v1"
    reason = f"Lua script {script} cannot be read: Permission denied"
    log = proxy.wait_log(reason)
    assert log.count(reason) == 1, log
    assert "new connections keep using the last version that loaded" in log

    script.chmod(0o644)  # readable again, then unreadable again: a change, logged again
    assert _version(proxy) == "v1"
    script.chmod(0)
    assert _version(proxy) == "v1"
    proxy.process.wait_for_log(reason, count=2)


def test_a_syntax_error_keeps_the_last_good_version_until_fixed(
        lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    script = write_script(tmp_path / "fragile.lua", ANSWER_LUA % "v1")
    proxy = lua_proxy(script)
    with proxy.connect() as old:
        assert query(old, "SELECT 'version'") == [("v1",)]
        script.write_text("function read_query(packet)\n  if then\nend\n")
        for _ in range(3):
            assert _version(proxy) == "v1"
        log = proxy.wait_log("unexpected symbol near 'then'")
        (line,) = [line for line in log.splitlines() if "near 'then'" in line]
        assert re.search(r'\(critical\) .*Lua script failed to load: \[string "\S*fragile\.lua"\]:2: '
                         r"unexpected symbol near 'then'; new connections keep using the last "
                         r"version that loaded", line), line
        assert query(old, "SELECT 'version'") == [("v1",)]  # the connection already in goes on

        write_script(script, ANSWER_LUA % "v2")
        assert _version(proxy) == "v2"
        script.unlink()  # a missing file: the last good version, v2, goes on
        assert _version(proxy) == "v2"
        proxy.wait_log("cannot be read: No such file or directory")
