"""The harder parts of the protocol through a script that looks at every command:
LOAD DATA LOCAL, prepared statements, COM_CHANGE_USER and a 20 MiB blob."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from tests.lua_e2e.conftest import LuaProxy, LuaProxyFactory, query
from tests.support.certs import TLSCerts
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)

#: Counts every command by its COM_ byte, keeps the largest packet and the text of every
#: prepared statement; answers "SHOW SEEN" itself.
INSPECTOR_LUA = """
local proto = require("mysql.proto")

function read_query(packet)
    local cmd = packet:byte()
    local g = proxy.global
    g.commands = g.commands or {}
    g.commands[cmd] = (g.commands[cmd] or 0) + 1
    g.largest = math.max(g.largest or 0, #packet)
    if cmd == proxy.COM_STMT_PREPARE then
        g.prepared = g.prepared or {}
        table.insert(g.prepared, proto.from_stmt_prepare_packet(packet).stmt_text)
    elseif cmd == proxy.COM_CHANGE_USER then
        g.changed_to = packet:sub(2):match("^([^%z]*)")
    elseif cmd == proxy.COM_QUERY and packet:sub(2) == "SHOW SEEN" then
        local rows = {}
        for c, n in pairs(g.commands) do rows[#rows + 1] = { "command " .. c, n } end
        rows[#rows + 1] = { "largest", g.largest }
        for i, text in ipairs(g.prepared or {}) do rows[#rows + 1] = { "prepared " .. i, text } end
        rows[#rows + 1] = { "changed to", g.changed_to }
        proxy.response = {
            type = proxy.MYSQLD_PACKET_OK,
            resultset = {
                fields = { { name = "what", type = proxy.MYSQL_TYPE_STRING },
                           { name = "value", type = proxy.MYSQL_TYPE_STRING } },
                rows = rows,
            },
        }
        return proxy.PROXY_SEND_RESULT
    end
end
"""

COM_QUERY, COM_STATISTICS, COM_PING, COM_CHANGE_USER = 3, 9, 14, 17
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE = 22, 23, 25

BLOB_SIZE = 20 * 1024 * 1024


def seen(proxy: LuaProxy) -> dict[str, Any]:
    return dict(proxy.rows("SHOW SEEN"))


@pytest.fixture
def inspector(lua_proxy: LuaProxyFactory) -> LuaProxy:
    return lua_proxy(INSPECTOR_LUA)


@pytest.fixture
def table(mariadb: MariaDB, cleanup_tables: list[str], request: pytest.FixtureRequest) -> str:
    name = f"test.lua_{request.node.name[5:25]}"
    mariadb.sql(f"CREATE TABLE {name} (id INT PRIMARY KEY, v LONGBLOB)")
    cleanup_tables.append(name)
    return name


def test_load_data_local_through_the_script(inspector: LuaProxy, table: str,
                                            tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("".join(f"{i}\tvalue {i}\n" for i in range(1, 1001)))
    with inspector.connect(local_infile=True) as conn, conn.cursor() as cur:
        assert cur.execute(f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE {table}") == 1000
        cur.execute(f"SELECT COUNT(*), MAX(v) FROM {table}")
        assert cur.fetchone() == (1000, b"value 999")
        cur.execute("SELECT 'after'")  # the connection is in step again
        assert cur.fetchone() == ("after",)
    assert int(seen(inspector)[f"command {COM_QUERY}"]) >= 4


def test_prepared_statements_through_the_script(inspector: LuaProxy, table: str) -> None:
    conn = mysql.connector.connect(host=inspector.host, port=inspector.port, user="root",
                                   use_pure=True, ssl_disabled=True, connection_timeout=10,
                                   autocommit=True)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT ? * 2, ?", (21, "x"))
        assert cur.fetchall() == [(42, "x")]
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", (1, b"\x00\xff binary"))
        cur.execute(f"SELECT v FROM {table} WHERE id = ?", (1,))
        assert cur.fetchall() == [(bytearray(b"\x00\xff binary"),)]
        cur.close()
    finally:
        conn.close()
    found = seen(inspector)
    assert int(found[f"command {COM_STMT_PREPARE}"]) == 3
    assert int(found[f"command {COM_STMT_EXECUTE}"]) == 3
    assert int(found[f"command {COM_STMT_CLOSE}"]) >= 2
    assert found["prepared 1"] == "SELECT ? * 2, ?"
    assert found["prepared 3"] == f"SELECT v FROM {table} WHERE id = ?"


def test_change_user_through_the_script(inspector: LuaProxy) -> None:
    conn = mysql.connector.connect(host=inspector.host, port=inspector.port, user="root",
                                   use_pure=True, ssl_disabled=True, connection_timeout=10)
    try:
        cur = conn.cursor()
        cur.execute("SET @kept = 1")
        conn.cmd_change_user(username="native", password="native_pw", database="test")
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), DATABASE(), @kept")
        assert cur.fetchall() == [("native@%", "test", None)]
        cur.close()
    finally:
        conn.close()
    found = seen(inspector)
    assert (found[f"command {COM_CHANGE_USER}"], found["changed to"]) == ("1", "native")


def test_a_20_mib_blob_through_the_script(inspector: LuaProxy, table: str) -> None:
    data = os.urandom(1024) * (BLOB_SIZE // 1024)
    with inspector.connect(max_allowed_packet=64 * 1024 * 1024) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, %s)", (data,))
        cur.execute(f"SELECT v, LENGTH(v) FROM {table} WHERE id = 1")
        value, length = cur.fetchone()
    assert length == BLOB_SIZE
    assert hashlib.sha256(value).digest() == hashlib.sha256(data).digest()
    # read_query saw the INSERT as one packet, more than 16 MiB: the parts were joined
    assert int(seen(inspector)["largest"]) > BLOB_SIZE


def test_mysqlclient_uses_the_inspected_proxy(inspector: LuaProxy) -> None:
    """libmariadb (through mysqlclient) as a third client library, with a query and ping."""
    import MySQLdb

    conn = MySQLdb.connect(host=inspector.host, port=inspector.port, user="root",
                           connect_timeout=10)
    try:
        assert query(conn, "SELECT 'libmariadb'") == [("libmariadb",)]
        conn.ping()
    finally:
        conn.close()


def test_mariadb_admin_status_and_ping_through_the_script(inspector: LuaProxy,
                                                          mariadb_cli: str) -> None:
    """COM_STATISTICS and COM_PING (mariadb-admin) go through read_query like queries."""
    admin = Path(mariadb_cli).with_name("mariadb-admin")
    if not admin.exists():
        pytest.skip("mariadb-admin is not installed next to the mariadb client")
    result = subprocess.run([str(admin), "-h", inspector.host, "-P", str(inspector.port), "-u",
                             "root", "--skip-ssl", "--connect-timeout=10", "status", "ping"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    status, ping = result.stdout.splitlines()
    assert status.startswith("Uptime: ") and "Questions: " in status, status
    assert ping == "mysqld is alive"
    found = seen(inspector)
    assert (found[f"command {COM_STATISTICS}"], found[f"command {COM_PING}"]) == ("1", "1")


def test_a_tls_client_through_a_script(lua_proxy: LuaProxyFactory, tls_certs: TLSCerts) -> None:
    """The script sees the login that came inside TLS, and answers over TLS."""
    proxy = lua_proxy(INSPECTOR_LUA.replace("function read_query(packet)", """
        function read_auth()
            proxy.global.tls_user = proxy.connection.client.username
        end
        function read_query(packet)
            if packet:sub(2) == "SELECT 'tls user'" then
                proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
                    fields = { { name = "user", type = proxy.MYSQL_TYPE_STRING } },
                    rows = { { proxy.global.tls_user } } } }
                return proxy.PROXY_SEND_RESULT
            end
            return inspect(packet)
        end
        function inspect(packet)"""), f"--proxy-ssl-cert={tls_certs.proxy_cert}",
        f"--proxy-ssl-key={tls_certs.proxy_key}", f"--proxy-backend-ssl-ca={tls_certs.ca_cert}")
    with proxy.connect(user="native", ssl={"ca": str(tls_certs.ca_cert)}) as conn:
        assert conn._sock.version().startswith("TLS")
        assert query(conn, "SELECT 'tls user'") == [("native",)]
        assert query(conn, "SELECT CURRENT_USER()") == [("native@%",)]
    assert int(seen(proxy)[f"command {COM_QUERY}"]) >= 2


BUFFERING_LUA = """
    -- Every command goes to the server as an injection whose result the script keeps,
    -- then reaches the client untouched (read_query_result decides nothing).
    function read_query(packet)
        proxy.queries:append(1, packet, { resultset_is_needed = true })
        return proxy.PROXY_SEND_QUERY
    end
    function read_query_result(inj)
        if inj.id == 1 then proxy.global.last_rows = inj.resultset.affected_rows end
    end
"""


def test_load_data_local_through_a_buffering_injection(lua_proxy: LuaProxyFactory, table: str,
                                                       tmp_path: Path) -> None:
    """The client's own LOAD DATA LOCAL, injected with resultset_is_needed: the client still
    gets the file request, its file reaches the server, the result comes back after it."""
    proxy = lua_proxy(BUFFERING_LUA)
    csv = tmp_path / "rows.csv"
    csv.write_text("".join(f"{i}\tvalue {i}\n" for i in range(1, 501)))
    with proxy.connect(local_infile=True) as conn, conn.cursor() as cur:
        assert cur.execute(f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE {table}") == 500
        assert cur.execute(f"LOAD DATA LOCAL INFILE '{csv}' IGNORE INTO TABLE {table}") == 0
        cur.execute(f"SELECT COUNT(*) FROM {table}")  # sequence ids in step again
        assert cur.fetchone() == (500,)
