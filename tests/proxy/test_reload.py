"""Reload on SIGHUP, through real processes: the defaults-file changes, a real SIGHUP is
sent, and PyMySQL clients connected before and after show what changed and what stayed.

Which backend a client is on is read from the server itself: MariaDB's processlist
shows ``localhost`` for a unix-socket connection and ``host:port`` for a TCP one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.chassis_proc import ChassisProcess, free_port, start_chassis
from tests.support.control import ask_all
from tests.support.mariadb import ACCOUNTS, MariaDB

SCRIPT = """
function read_query(packet)
    if packet:sub(2) == "SELECT 'which script'" then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "script", type = proxy.MYSQL_TYPE_STRING } },
            rows = { { "%s" } } } }
        return proxy.PROXY_SEND_RESULT
    end
end
"""

APPLIED = "reload: applied in worker"


class Reloadable:
    """A chassis whose options live in a defaults-file the test rewrites."""

    def __init__(self, dir: Path, port: int, extra: Sequence[str] = ()) -> None:
        self.dir = dir
        self.port = port
        self.file = dir / "chassis.cnf"
        self.log = dir / "chassis.log"
        self.extra = list(extra)
        self.process: ChassisProcess | None = None
        self.reloads = 0

    def write(self, **options: Any) -> None:
        lines = ["[mysql-proxy]"]
        for key, value in options.items():
            values = value if isinstance(value, list | tuple) else [value]
            lines.append(f"{key.replace('_', '-')}={','.join(str(v) for v in values)}")
        self.file.write_text("\n".join(lines) + "\n")
        self.file.chmod(0o600)

    def start(self) -> ChassisProcess:
        self.process = start_chassis(["--plugins=proxy", f"--defaults-file={self.file}",
                                      f"--log-file={self.log}", "--log-level=debug", *self.extra])
        return self.process

    def reload(self, workers: int = 1) -> str:
        """SIGHUP, then the log once every worker applied the new configuration."""
        assert self.process is not None
        self.reloads += 1
        self.process.signal(signal.SIGHUP)
        return self.process.wait_for_log(APPLIED, timeout=20, count=self.reloads * workers)

    def refused(self, count: int) -> str:
        assert self.process is not None
        self.process.signal(signal.SIGHUP)
        return self.process.wait_for_log("reload refused, the running configuration stays", timeout=20,
                                         count=count)

    def connect(self, port: int | None = None, **kwargs: Any) -> pymysql.Connection[Any]:
        kwargs.setdefault("connect_timeout", 10)
        return pymysql.connect(host="127.0.0.1", port=port or self.port, user="native",
                               password=ACCOUNTS["native"].password, read_timeout=30,
                               autocommit=True, **kwargs)


@pytest.fixture
def reloadable(tmp_path: Path) -> Iterator[Reloadable]:
    r = Reloadable(tmp_path, free_port())
    yield r
    if r.process is not None:
        r.process.stop(timeout=10)


def leg(conn: pymysql.Connection[Any]) -> str:
    """``unix`` or ``tcp``: how this client's server connection reached MariaDB."""
    with conn.cursor() as cur:
        cur.execute("SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()")
        (host,) = cur.fetchone()
    return "tcp" if ":" in host else "unix"


def one(conn: pymysql.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_new_backend_gets_new_clients_and_connected_clients_stay(
        reloadable: Reloadable, mariadb: MariaDB) -> None:
    r = reloadable
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address)
    r.start()
    before = r.connect()
    assert leg(before) == "tcp"
    thread = before.thread_id()

    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.socket_path)
    log = r.reload()
    assert f"backend {mariadb.address} removed" in log
    assert f"backend {mariadb.socket_path} added as #1" in log

    after = r.connect()
    assert leg(after) == "unix"
    # the client connected before keeps its server connection on the removed backend
    assert leg(before) == "tcp"
    assert before.thread_id() == thread
    assert one(before, "SELECT 41 + 1") == 42
    before.close()
    after.close()


def test_changed_lua_script_answers_new_connections_only(
        reloadable: Reloadable, mariadb: MariaDB) -> None:
    r = reloadable
    a, b = r.dir / "a.lua", r.dir / "b.lua"
    a.write_text(SCRIPT % "a")
    b.write_text(SCRIPT % "b")
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_lua_script=a)
    r.start()
    before = r.connect()
    assert one(before, "SELECT 'which script'") == "a"

    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_lua_script=b, lua_hook_timeout=2)
    r.reload()
    after = r.connect()
    assert one(after, "SELECT 'which script'") == "b"
    assert one(before, "SELECT 'which script'") == "a"  # its script instance stays
    assert one(before, "SELECT 6 * 7") == 42
    before.close()
    after.close()


def test_bad_configuration_is_refused_whole_and_the_running_one_stays(
        reloadable: Reloadable, mariadb: MariaDB) -> None:
    r = reloadable
    good, broken = r.dir / "good.lua", r.dir / "broken.lua"
    good.write_text(SCRIPT % "good")
    broken.write_text("function read_query(packet)\n  return = 1\nend\n")
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_lua_script=good)
    r.start()
    connected = r.connect()

    # a script that does not compile, with a backend change that must not happen either
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.socket_path,
            proxy_lua_script=broken)
    log = r.refused(1)
    refusal = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refusal) == 1 and "broken.lua\"]:2:" in refusal[0], refusal

    # an option value that does not parse
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_connect_timeout="soon")
    log = r.refused(2)
    assert "bad value 'soon' for key 'proxy-connect-timeout'" in log.splitlines()[-1]

    # a backend address that does not parse
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses="db:notaport")
    log = r.refused(3)
    assert "--proxy-backend-addresses" in log.splitlines()[-1]

    assert APPLIED not in log
    new = r.connect()
    assert one(new, "SELECT 'which script'") == "good"
    assert leg(new) == "tcp"
    assert one(connected, "SELECT 'which script'") == "good"
    new.close()
    connected.close()


def test_listen_address_change_needs_a_restart_and_the_old_address_keeps_serving(
        reloadable: Reloadable, mariadb: MariaDB) -> None:
    r = reloadable
    other = free_port()
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address)
    r.start()
    r.write(proxy_address=f"127.0.0.1:{other}", proxy_backend_addresses=mariadb.address,
            proxy_read_timeout=600)
    log = r.reload()
    restart = [line for line in log.splitlines() if "needs a restart" in line]
    assert len(restart) == 1 and "--proxy-address" in restart[0], restart
    assert "changing: --proxy-read-timeout" in log
    conn = r.connect()
    assert one(conn, "SELECT 1") == 1
    conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        r.connect(port=other, connect_timeout=2)


def test_reload_with_the_angel_and_two_workers(tmp_path: Path, mariadb: MariaDB) -> None:
    r = Reloadable(tmp_path, free_port())
    a, b = tmp_path / "a.lua", tmp_path / "b.lua"
    a.write_text(SCRIPT % "a")
    b.write_text(SCRIPT % "b")
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_lua_script=a, keepalive="true", event_threads=2)
    try:
        r.start()
        before = [r.connect() for _ in range(4)]
        assert {leg(c) for c in before} == {"tcp"}

        r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.socket_path,
                proxy_lua_script=b, keepalive="true", event_threads=3)
        log = r.reload(workers=2)
        assert "needs a restart, so keeping the running value of: --event-threads" in log
        after = [r.connect() for _ in range(6)]  # the kernel spreads them over both workers
        assert {leg(c) for c in after} == {"unix"}
        assert {one(c, "SELECT 'which script'") for c in after} == {"b"}
        for conn in before:
            assert leg(conn) == "tcp" and one(conn, "SELECT 'which script'") == "a"

        r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.socket_path,
                proxy_lua_script=b, keepalive="true", event_threads=2, proxy_pool_max_idle=-1)
        log = r.refused(1)
        # the refusal's line, not the last one: the other worker may log its SIGHUP after it
        refusals = [line for line in log.splitlines() if "reload refused" in line]
        assert refusals and all("proxy-pool-max-idle" in line for line in refusals), refusals
        assert log.count(APPLIED) == 2

        # a worker the angel restarts now starts with the reloaded configuration
        assert r.process is not None
        crashed = r.process.workers()[0]
        restarts = r.process.log_text().count(") ready")
        os.kill(crashed, signal.SIGKILL)
        r.process.wait_for_log(") ready", timeout=20, count=restarts + 1)  # the angel's line
        later = [r.connect() for _ in range(6)]
        assert {leg(c) for c in later} == {"unix"}
        assert {one(c, "SELECT 'which script'") for c in later} == {"b"}
        for conn in before + after + later:
            conn.close()
    finally:
        if r.process is not None:
            r.process.stop(timeout=10)


def test_admin_state_of_a_backend_whose_address_stays_survives_a_reload(
        tmp_path: Path, mariadb: MariaDB) -> None:
    pw = tmp_path / "admin.pw"
    pw.write_text("reload admin\n")
    pw.chmod(0o600)
    admin_port = free_port()
    r = Reloadable(tmp_path, free_port(), [
        "--plugins=proxy,admin", f"--admin-address=127.0.0.1:{admin_port}",
        "--admin-username=admin", f"--admin-password-file={pw}"])

    def admin(sql: str) -> list[tuple[Any, ...]]:
        with pymysql.connect(host="127.0.0.1", port=admin_port, user="admin",
                             password="reload admin", connect_timeout=5,
                             ssl_disabled=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    r.write(proxy_address=f"127.0.0.1:{r.port}",
            proxy_backend_addresses=[mariadb.address, mariadb.socket_path])
    try:
        r.start()
        admin("UPDATE backends SET state='offline' WHERE backend_ndx=1")
        assert leg(r.connect()) == "unix"  # backend 1 is offline: clients go to 2
        # a backend inserted before it: its index changes, its admin state stays
        other = f"127.0.0.1:{free_port()}"
        r.write(proxy_address=f"127.0.0.1:{r.port}",
                proxy_backend_addresses=[other, mariadb.address, mariadb.socket_path])
        r.reload()
        rows = {row[1]: row for row in admin("SELECT * FROM backends")}
        assert rows[mariadb.address][0] == 2 and rows[mariadb.address][2] == "offline", rows
        assert rows[other][0] == 1
        assert leg(r.connect()) == "unix"  # 1 refuses (down), 2 is offline, 3 takes it
    finally:
        if r.process is not None:
            r.process.stop(timeout=10)


def test_query_digests_switched_off_and_on_by_a_reload(reloadable: Reloadable, mariadb: MariaDB) -> None:
    """Digests follow --proxy-query-digest at a reload: off frees them, on starts afresh."""
    r = reloadable
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address)
    process = r.start()

    def texts() -> set[str]:
        answers = ask_all(process.pid, 1, {"plugin": "proxy", "op": "digests"})
        return {row["digest_text"] for row in answers[0]["digests"]}

    with r.connect() as conn:
        one(conn, "SELECT 'kept' AS a")
    assert "select ? as a" in texts()  # (PyMySQL's SET NAMES is one too)
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_query_digest="off")
    assert "--proxy-query-digest" in r.reload()
    with r.connect() as conn:
        one(conn, "SELECT 'not kept' AS b")
    assert texts() == set()  # off: nothing is shown
    r.write(proxy_address=f"127.0.0.1:{r.port}", proxy_backend_addresses=mariadb.address,
            proxy_query_digest="on", proxy_query_digest_max=5)
    r.reload()
    with r.connect() as conn:
        one(conn, "SELECT 'again' AS c")
    assert "select ? as c" in texts() and not texts() & {"select ? as a", "select ? as b"}
