"""Several unbuffered injections queued for one command (issue 10, item 4).

MySQL Proxy 0.8.5 sent the client each unbuffered result, two results for one command
(its ``lib/ro-balance.lua`` queues ``SHOW SLAVE STATUS`` before the client's query, both
without ``resultset_is_needed``). chassis streams an unbuffered injection only as the last
of the queue; one with others behind it is buffered, so ``read_query_result`` sees its rows
and decides, and the client never gets another statement's result without the script's say.
"""

from __future__ import annotations

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory, query

pytestmark = pytest.mark.timeout(60)

SCRIPT = """
-- in the style of ro-balance.lua: a check query, then the client's own, neither buffered
function read_query(packet)
    if packet:sub(2) == "SELECT checks" then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "checks", type = proxy.MYSQL_TYPE_STRING } },
            rows = { { proxy.global.checks or "" } } } }
        return proxy.PROXY_SEND_RESULT
    end
    if packet:byte() ~= proxy.COM_QUERY or not packet:find("FROM test.seq") then return end
    local check = packet:find("CHECK") and "SELECT 'check' AS c, 42 AS n" or "SELECT 'other' AS c, 7 AS n"
    proxy.queries:append(2, string.char(proxy.COM_QUERY) .. check)
    proxy.queries:append(1, packet)
    return proxy.PROXY_SEND_QUERY
end

function read_query_result(inj)
    if inj.id ~= 2 then return end
    local seen = {}
    for row in inj.resultset.rows do seen[#seen + 1] = row[1] .. "=" .. row[2] end
    proxy.global.checks = (proxy.global.checks or "") .. table.concat(seen, ",") .. ";"
    if inj.query:find("'check'") then return proxy.PROXY_IGNORE_RESULT end
    -- the other one is let through: the client gets it, as the script said
end
"""


def test_an_unbuffered_check_before_the_clients_query_is_buffered_for_the_script(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPT)
    with proxy.connect() as conn:
        # the check's result is read and ignored by the script; the client gets its own
        assert query(conn, "SELECT seq /* CHECK */ FROM test.seq_1_to_3") == [(1,), (2,), (3,)]
        assert query(conn, "SELECT seq /* CHECK */ FROM test.seq_5_to_6") == [(5,), (6,)]
        assert query(conn, "SELECT checks") == [("check=42;check=42;",)]
        assert query(conn, "SELECT 1") == [(1,)]  # in step: nothing left over on the wire
    assert proxy.critical_lines() == []


def test_a_result_the_script_lets_through_is_the_one_the_client_gets_and_the_rest_is_logged(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(SCRIPT)
    with proxy.connect() as conn:
        # the script forwards the first result: the client gets it, the second is dropped
        assert query(conn, "SELECT seq FROM test.seq_1_to_3") == [("other", 7)]
        assert query(conn, "SELECT 2") == [(2,)]  # in step
    lines = proxy.critical_lines()
    assert len(lines) == 1, lines
    assert ("injected query 1 has no resultset_is_needed = true but the client already got a result "
            "for this command; its result is dropped") in lines[0]
