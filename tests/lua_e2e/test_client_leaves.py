"""A client that sends its query and quits at once: every injection queued for that command
still runs and reaches read_query_result before disconnect_client, as in MySQL Proxy (the
tutorial-inject pattern of `mysql -e`)."""

from __future__ import annotations

import pymysql
import pytest

from tests.lua_e2e.conftest import LuaProxyFactory
from tests.proxy.rawclient import RawClient, login_packet

INJECTING_LUA = """
    local chassis = require("chassis")
    function read_query(packet)
        if packet:sub(2) == "SELECT 'three'" then
            for i = 1, 3 do
                proxy.queries:append(i, string.char(proxy.COM_QUERY) .. "SELECT SLEEP(0.1), " .. i,
                                     { resultset_is_needed = true })
            end
            return proxy.PROXY_SEND_QUERY
        end
    end
    function read_query_result(inj)
        chassis.log("message", "result of injection " .. inj.id)
        if inj.id > 1 then return proxy.PROXY_IGNORE_RESULT end
    end
    function disconnect_client()
        chassis.log("message", "disconnect_client")
    end
"""


def test_a_client_that_quits_at_once_still_has_every_injection_run(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(INJECTING_LUA)
    with RawClient(proxy.host, proxy.port) as raw:
        raw.read_packet()
        raw.send_packet(login_packet("root"), 1)
        assert raw.read_packet()[1][:1] == b"\x00"
        raw.send_packet(b"\x03SELECT 'three'", 0)
        raw.send_packet(b"\x01", 0)  # COM_QUIT, and gone before any answer
    log = proxy.wait_log("disconnect_client", timeout=15)
    order = [line[line.index(word):] for line in log.splitlines() if "(message)" in line
             for word in ("result of injection", "disconnect_client") if word in line]
    assert order == ["result of injection 1", "result of injection 2", "result of injection 3",
                     "disconnect_client"], order


ERROR_RESULT_LUA = """
    local chassis = require("chassis")
    function read_query(packet)
        proxy.queries:append(1, packet, { resultset_is_needed = true })
        return proxy.PROXY_SEND_QUERY
    end
    function read_query_result(inj)
        local res = inj.resultset
        chassis.log("message", string.format("status %s affected %s insert_id %s",
            tostring(res.query_status), tostring(res.affected_rows), tostring(res.insert_id)))
    end
"""


def test_an_error_result_has_numbers_for_affected_rows_and_insert_id(lua_proxy: LuaProxyFactory) -> None:
    """As in MySQL Proxy 0.8.5: 0, not nil, so scripts doing arithmetic on them keep working."""
    proxy = lua_proxy(ERROR_RESULT_LUA)
    with proxy.connect() as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as info:  # the server's ERR reaches the client
            cur.execute("SELECT * FROM no_such_db.no_such_table")
        assert info.value.args[0] in (1049, 1146)
    proxy.wait_log("status 255 affected 0 insert_id 0")
