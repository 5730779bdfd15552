"""The admin plugin through real clients: login, built-in tables over every worker, backend states."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.support.chassis_proc import CHASSIS, ChassisProcess, free_port, start_chassis
from tests.support.mariadb import MariaDB

PASSWORD = "s3cret admin"


def admin_args(tmp_path: Path, mariadb: MariaDB, *extra: str) -> tuple[list[str], int, int]:
    pw = tmp_path / "admin.pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    proxy_port, admin_port = free_port(), free_port()
    args = [
        "--plugins=proxy,admin", f"--log-file={tmp_path / 'chassis.log'}", "--log-level=message",
        f"--proxy-address=127.0.0.1:{proxy_port}", f"--proxy-backend-addresses=127.0.0.1:{mariadb.port}",
        "--proxy-backend-addresses=127.0.0.1:1",  # a second backend nobody listens on
        f"--admin-address=127.0.0.1:{admin_port}", "--admin-username=admin",
        f"--admin-password-file={pw}", *extra,
    ]
    return args, proxy_port, admin_port


@pytest.fixture
def two_workers(tmp_path: Path, mariadb: MariaDB) -> Iterator[tuple[ChassisProcess, int, int]]:
    args, proxy_port, admin_port = admin_args(tmp_path, mariadb, "--event-threads=2")
    with start_chassis(args) as chassis:
        yield chassis, proxy_port, admin_port


def admin(port: int, password: str = PASSWORD, user: str = "admin") -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                           connect_timeout=5, ssl_disabled=True)


def query(port: int, sql: str) -> tuple[list[str], list[tuple[object, ...]]]:
    with admin(port) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [d[0] for d in cur.description or ()], list(cur.fetchall())


def test_wrong_password_or_user_is_refused_with_1045(two_workers: tuple[ChassisProcess, int, int]) -> None:
    chassis, _, admin_port = two_workers
    for user, password in (("admin", "wrong"), ("root", PASSWORD)):
        with pytest.raises(pymysql.err.OperationalError) as info:
            admin(admin_port, password, user)
        assert info.value.args[0] == 1045
    assert PASSWORD not in chassis.log_text() and "wrong" not in chassis.log_text()


def test_help_lists_the_statements(two_workers: tuple[ChassisProcess, int, int]) -> None:
    columns, rows = query(two_workers[2], "SELECT * FROM help")
    assert columns == ["command", "description"]
    assert rows[1][0] == "SELECT * FROM backends"


def test_backends_table_has_mysql_proxy_columns(two_workers: tuple[ChassisProcess, int, int]) -> None:
    columns, rows = query(two_workers[2], "select * from backends")
    # MySQL Proxy's six, then the replication monitor's (off here: no --proxy-monitor-user)
    assert columns == ["backend_ndx", "address", "state", "type", "uuid", "connected_clients",
                       "replication", "lag", "stale"]
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][3] == "rw" and rows[1][1] == "127.0.0.1:1"
    assert rows[0][6:] == ("unmonitored", None, "no")


def test_connected_clients_are_summed_over_every_worker(
        two_workers: tuple[ChassisProcess, int, int], mariadb: MariaDB) -> None:
    _, proxy_port, admin_port = two_workers
    clients = [pymysql.connect(host="127.0.0.1", port=proxy_port, user="root", ssl_disabled=True)
               for _ in range(6)]
    try:
        pids = set()
        for c in clients:
            with c.cursor() as cur:
                cur.execute("SELECT 1")
        # whichever worker answers the admin connection, all six clients are counted
        for _ in range(4):
            _, rows = query(admin_port, "SELECT * FROM backends")
            assert rows[0][5] == 6
            assert rows[0][2] == "up"
            _, stats = query(admin_port, "SELECT * FROM stats")
            pids |= {r[1] for r in stats if r[0] != "total"}
        assert len(pids) == 2, "stats come from both workers"
    finally:
        for c in clients:
            c.close()


def test_offline_backend_gets_no_new_clients_but_existing_ones_finish(
        two_workers: tuple[ChassisProcess, int, int], mariadb: MariaDB) -> None:
    _, proxy_port, admin_port = two_workers
    existing = pymysql.connect(host="127.0.0.1", port=proxy_port, user="root", ssl_disabled=True)
    try:
        with admin(admin_port) as conn, conn.cursor() as cur:
            assert cur.execute("UPDATE backends SET state='offline' WHERE backend_ndx=1") == 1
        _, rows = query(admin_port, "SELECT * FROM backends")
        assert rows[0][2] == "offline"
        with existing.cursor() as cur:
            cur.execute("SELECT 42")
            assert cur.fetchone() == (42,)
        with pytest.raises(pymysql.err.OperationalError):
            pymysql.connect(host="127.0.0.1", port=proxy_port, user="root", ssl_disabled=True,
                            connect_timeout=5)
        with admin(admin_port) as conn, conn.cursor() as cur:
            cur.execute("UPDATE backends SET state='up' WHERE backend_ndx=1")
        with pymysql.connect(host="127.0.0.1", port=proxy_port, user="root", ssl_disabled=True) as c, \
                c.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        existing.close()


def test_unknown_statement_keeps_the_connection(two_workers: tuple[ChassisProcess, int, int]) -> None:
    with admin(two_workers[2]) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.ProgrammingError, match="SELECT \\* FROM help") as info:
            cur.execute("DROP TABLE x")
        assert info.value.args[0] == 1064  # ER_PARSE_ERROR: a statement the console does not take
        cur.execute("SELECT * FROM help")
        assert cur.fetchall()


def test_mariadb_cli_can_use_the_console(two_workers: tuple[ChassisProcess, int, int]) -> None:
    result = subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{two_workers[2]}", "-uadmin", f"-p{PASSWORD}", "--skip-ssl",
         "-e", "SELECT * FROM backends"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "backend_ndx" in result.stdout and "127.0.0.1:1" in result.stdout


@pytest.mark.parametrize(("extra", "message"), [
    ([], "needs --admin-username"),
    (["--admin-username=a"], "needs a password"),
    (["--admin-username=a", "--admin-password="], "needs a password"),
])
def test_missing_credentials_stop_start_up(tmp_path: Path, extra: list[str], message: str) -> None:
    result = subprocess.run(
        [str(CHASSIS), "--plugins=admin",
         f"--admin-address=127.0.0.1:{free_port()}", *extra],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert message in result.stderr


def test_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    pw.chmod(0o644)
    result = subprocess.run(
        [str(CHASSIS), "--plugins=admin",
         f"--admin-address=127.0.0.1:{free_port()}", "--admin-username=a", f"--admin-password-file={pw}"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "chmod 0600" in result.stderr


def test_admin_alone_starts_and_says_the_proxy_is_missing(tmp_path: Path) -> None:
    port = free_port()
    with start_chassis(["--plugins=admin", f"--admin-address=127.0.0.1:{port}", "--admin-username=admin",
                        f"--admin-password={PASSWORD}"]):
        with admin(port) as conn, conn.cursor() as cur, \
                pytest.raises(pymysql.err.OperationalError, match="proxy plugin is not loaded"):
            cur.execute("SELECT * FROM backends")


ADMIN_SCRIPT = """
-- an admin script in MySQL Proxy 0.8's style: every query is answered from Lua
local states = { [0] = "unknown", "up", "down" }
function read_query(packet)
    if packet:byte() ~= proxy.COM_QUERY then
        proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "only COM_QUERY" }
        return proxy.PROXY_SEND_RESULT
    end
    local query = packet:sub(2):lower()
    if query == "select * from backends" then
        local rows = {}
        for i = 1, #proxy.global.backends do
            local b = proxy.global.backends[i]
            rows[#rows + 1] = { i, b.dst.name, states[b.state] or tostring(b.state) }
        end
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "backend_ndx", type = proxy.MYSQL_TYPE_LONG },
                       { name = "address", type = proxy.MYSQL_TYPE_STRING },
                       { name = "state", type = proxy.MYSQL_TYPE_STRING } },
            rows = rows } }
        return proxy.PROXY_SEND_RESULT
    elseif query == "forget to answer" then
        return
    end
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "unknown: " .. query }
    return proxy.PROXY_SEND_RESULT
end
"""


def test_admin_lua_script_answers_queries(tmp_path: Path, mariadb: MariaDB) -> None:
    script = tmp_path / "admin.lua"
    script.write_text(ADMIN_SCRIPT)
    args, _, admin_port = admin_args(tmp_path, mariadb, f"--admin-lua-script={script}")
    with start_chassis(args):
        with admin(admin_port) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM backends")
            assert [d[0] for d in cur.description] == ["backend_ndx", "address", "state"]
            rows = cur.fetchall()
            assert rows[1] == (2, "127.0.0.1:1", "unknown")
            with pytest.raises(pymysql.err.OperationalError, match="unknown: drop table x"):
                cur.execute("DROP TABLE x")
            with pytest.raises(pymysql.err.OperationalError, match="PROXY_SEND_RESULT"):
                cur.execute("forget to answer")
            cur.execute("SELECT * FROM backends")  # the connection is still usable
            assert len(cur.fetchall()) == 2


def test_admin_lua_script_without_the_proxy_plugin_says_to_load_it(tmp_path: Path) -> None:
    """The script runs on the proxy plugin's Lua bridge, which the proxy offers through the
    chassis (the admin plugin does not import it): without the proxy, start-up says so."""
    script = tmp_path / "admin.lua"
    script.write_text(ADMIN_SCRIPT)
    result = subprocess.run(
        [str(CHASSIS), "--plugins=admin", f"--admin-address=127.0.0.1:{free_port()}",
         "--admin-username=admin", f"--admin-password={PASSWORD}", f"--admin-lua-script={script}"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "--plugins=proxy,admin" in result.stderr
