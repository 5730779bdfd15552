"""One client's oversized packet must never weaken the script for the others (issue 11,
item 4): a command that cannot be shown to ``read_query`` within ``--lua-max-memory``
gets ERR 1153 and is never shown, and the other clients' hooks keep their room."""

from __future__ import annotations

import re

import pytest
from chassis_mysql.constants import ErrorCode

from tests.lua_e2e.conftest import LuaProxyFactory, expect_error, query

pytestmark = pytest.mark.timeout(60)

#: A filter: the query that names 'forbidden' is answered by the script, never run.
FILTER_LUA = """
function read_query(packet)
    if packet:byte() == proxy.COM_QUERY and packet:find("forbidden", 1, true) then
        proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errcode = 1142,
                           errmsg = "blocked by the filter script" }
        return proxy.PROXY_SEND_RESULT
    end
end
"""

BLOCKED = (1142, "blocked by the filter script")
#: Bigger than --lua-max-memory=8M can hold, far below --proxy-max-allowed-packet.
HUGE = 12 * 1024 * 1024


def test_a_huge_query_gets_err_1153_and_the_filter_still_blocks_the_next_client(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(FILTER_LUA, "--lua-max-memory=8M")
    with proxy.connect(max_allowed_packet=64 * 1024 * 1024) as a, proxy.connect() as b:
        assert expect_error(lambda: query(b, "SELECT 'forbidden'")) == BLOCKED
        huge = "SELECT 'harmless' /*" + "x" * HUGE + "*/"
        code, message = expect_error(lambda: query(a, huge))
        assert code == ErrorCode.NET_PACKET_TOO_LARGE, (code, message)
        assert "--lua-max-memory=8M" in message, message
        # B's hooks keep their room: the filter answers, the server never sees the query
        for _ in range(3):
            assert expect_error(lambda: query(b, "SELECT 'forbidden'")) == BLOCKED
        assert query(b, "SELECT 'allowed'") == [("allowed",)]
        # nor can A's own blocked query get past the filter by being too big for it
        padded = "SELECT 'forbidden' /*" + "x" * HUGE + "*/"
        assert expect_error(lambda: query(a, padded))[0] == ErrorCode.NET_PACKET_TOO_LARGE
        assert query(a, "SELECT 'a goes on'") == [("a goes on",)]
    assert re.search(rf"conn \d+: \(read_query\) a command of {len(huge) + 1} bytes cannot be "
                     r"shown to the script within --lua-max-memory=8M", proxy.log_text()), \
        proxy.log_text()
    assert "ran out of memory" not in proxy.log_text()


def test_a_query_that_fits_is_still_shown_to_the_script(lua_proxy: LuaProxyFactory) -> None:
    """2 MiB, twice over, fits under 8M: it is filtered, not refused."""
    proxy = lua_proxy(FILTER_LUA, "--lua-max-memory=8M")
    big = "SELECT 'forbidden' /*" + "x" * (2 * 1024 * 1024) + "*/"
    with proxy.connect(max_allowed_packet=64 * 1024 * 1024) as conn:
        for _ in range(3):
            assert expect_error(lambda: query(conn, big)) == BLOCKED
        assert query(conn, "SELECT 'x' /*" + "y" * (2 * 1024 * 1024) + "*/") == [("x",)]


def test_a_command_over_the_default_64_mib_is_refused_before_the_script(
        lua_proxy: LuaProxyFactory) -> None:
    """--proxy-max-allowed-packet defaults to 64 MiB (it was 1 GiB), whatever Lua could hold."""
    proxy = lua_proxy(FILTER_LUA)
    over = "SELECT 'forbidden' /*" + "x" * (64 * 1024 * 1024) + "*/"
    with proxy.connect(max_allowed_packet=128 * 1024 * 1024) as conn:
        code, _message = expect_error(lambda: query(conn, over))
    # ERR 1153, or, when the proxy's close races the rest of the upload, a lost connection;
    # never the filter's answer (1142): the script was not shown the command
    assert code in (ErrorCode.NET_PACKET_TOO_LARGE, 2006, 2013), code
    proxy.wait_log("(--proxy-max-allowed-packet)")
    assert proxy.rows("SELECT 'next'") == [("next",)]
