"""Upgrade on SIGUSR2 through real processes, real MariaDB and PyMySQL clients: a client
connected before the upgrade keeps its server connection (``CONNECTION_ID()`` and its
session variables unchanged) and is served by the new chassis; a client in a
transaction finishes it in the old chassis, then moves; what cannot move drains.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.chassis_proc import ChassisProcess, free_port, is_alive, start_chassis, wait_for
from tests.support.mariadb import ACCOUNTS, MariaDB

READY = "upgrade: new chassis pid"


class Upgradable:
    """A chassis whose options live in a defaults-file, with a pid file to follow."""

    def __init__(self, dir: Path, port: int, mariadb: MariaDB) -> None:
        self.dir = dir
        self.port = port
        self.mariadb = mariadb
        self.file = dir / "chassis.cnf"
        self.log = dir / "chassis.log"
        self.pidfile = dir / "chassis.pid"
        self.process: ChassisProcess | None = None
        self.address = f"127.0.0.1:{port}"

    def write(self, *lines: str) -> None:
        self.file.write_text("\n".join(["[mysql-proxy]", f"proxy-address={self.address}",
                                        f"proxy-backend-addresses={self.mariadb.address}",
                                        *lines]) + "\n")
        self.file.chmod(0o600)

    def start(self, *lines: str, env: dict[str, str] | None = None) -> ChassisProcess:
        self.write(*lines)
        self.process = start_chassis(["--plugins=proxy", f"--defaults-file={self.file}",
                                      f"--log-file={self.log}", "--log-level=debug",
                                      f"--pid-file={self.pidfile}"], env=env)
        return self.process

    def pid(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def upgrade(self) -> tuple[int, int]:
        """SIGUSR2; (old pid, new pid) once the new chassis is ready and wrote the pid file."""
        old = self.pid()
        assert old is not None
        os.kill(old, signal.SIGUSR2)
        new = wait_for(lambda: (p := self.pid()) and p != old and p, 60, "the new pid file")
        wait_for(lambda: READY in self.log_text(), 30, "the hand-over log line")
        return old, new

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connect(self, **kwargs: Any) -> pymysql.Connection[Any]:
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("autocommit", True)
        return pymysql.connect(host="127.0.0.1", port=self.port, user="native",
                               password=ACCOUNTS["native"].password, read_timeout=30,
                               database="test", **kwargs)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None and is_alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not is_alive(pid), 30, "the chassis to stop")
        if self.process is not None:
            self.process.stop(timeout=10)


@pytest.fixture
def upgradable(tmp_path: Path, mariadb: MariaDB) -> Iterator[Upgradable]:
    u = Upgradable(tmp_path, free_port(), mariadb)
    yield u
    u.stop()


def one(conn: pymysql.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row[0] if row is not None and len(row) == 1 else row


def handed_over(log: str) -> tuple[int, int]:
    """Sum of "handing over K connections, draining M" over the old workers' lines."""
    moving = staying = 0
    for line in log.splitlines():
        if "handing over" in line and READY in line:
            words = line.split("handing over ")[1].split()
            moving += int(words[0])
            staying += int(line.rsplit("draining ", 1)[1])
    return moving, staying


MODES: dict[str, Sequence[str]] = {
    "single": (),
    "keepalive": ("keepalive=true",),
    "keepalive-2-workers": ("keepalive=true", "event-threads=2"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_an_idle_client_moves_to_the_new_chassis_with_its_server_connection(
        upgradable: Upgradable, mode: str) -> None:
    u = upgradable
    u.start(*MODES[mode])
    clients = [u.connect() for _ in range(3)]
    for i, conn in enumerate(clients):
        one(conn, f"SET @mine = {i}")
    threads = [conn.thread_id() for conn in clients]
    assert [one(c, "SELECT CONNECTION_ID()") for c in clients] == threads

    old, new = u.upgrade()
    wait_for(lambda: not is_alive(old), 30, f"the old chassis (pid {old}) to exit")
    assert is_alive(new) and u.pid() == new
    log = u.log_text()
    assert handed_over(log) == (3, 0), log
    for i, conn in enumerate(clients):
        assert one(conn, "SELECT CONNECTION_ID()") == threads[i]
        assert one(conn, "SELECT @mine") == i
    # the new chassis serves them, and new clients too
    assert "handed over by the old chassis" in u.log_text()
    fresh = u.connect()
    assert one(fresh, "SELECT 41 + 1") == 42
    for conn in [*clients, fresh]:
        conn.close()


def test_a_client_in_a_transaction_finishes_it_in_the_old_chassis_then_moves(
        upgradable: Upgradable) -> None:
    u = upgradable
    u.start()
    conn = u.connect(autocommit=False)
    thread = conn.thread_id()
    one(conn, "CREATE TEMPORARY TABLE upgrade_tx (i INT)")
    one(conn, "INSERT INTO upgrade_tx VALUES (1)")  # the transaction is open
    idle = u.connect()
    idle_thread = idle.thread_id()

    old, new = u.upgrade()
    assert handed_over(u.log_text()) == (2, 0)
    # the idle one moved at once; the one in a transaction keeps the old chassis alive
    assert one(idle, "SELECT CONNECTION_ID()") == idle_thread
    moved = "moved to the new chassis with its server connection"
    wait_for(lambda: u.log_text().count(moved) == 1, 10, "the idle client to move")
    assert is_alive(old)
    one(conn, "INSERT INTO upgrade_tx VALUES (2)")  # served by the old chassis
    assert is_alive(old)
    assert u.log_text().count(moved) == 1
    conn.commit()
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit once the transaction ended")
    assert u.log_text().count(moved) == 2
    assert one(conn, "SELECT COUNT(*) FROM upgrade_tx") == 2
    assert one(conn, "SELECT CONNECTION_ID()") == thread
    conn.close()
    idle.close()
    assert u.pid() == new


def test_a_transaction_still_open_at_the_deadline_is_closed(upgradable: Upgradable) -> None:
    u = upgradable
    u.start("shutdown-timeout=1")
    conn = u.connect(autocommit=False)
    one(conn, "CREATE TEMPORARY TABLE upgrade_tx (i INT)")
    one(conn, "INSERT INTO upgrade_tx VALUES (1)")
    old, _ = u.upgrade()
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit at its deadline")
    with pytest.raises(pymysql.err.OperationalError):
        one(conn, "SELECT COUNT(*) FROM upgrade_tx")
    conn.close()


def test_a_client_with_a_script_drains_in_the_old_chassis(upgradable: Upgradable) -> None:
    u = upgradable
    script = u.dir / "pass.lua"
    script.write_text("function read_query(packet) end\n")
    u.start(f"proxy-lua-script={script}")
    scripted = u.connect()
    assert one(scripted, "SELECT 1") == 1
    old, _ = u.upgrade()
    assert handed_over(u.log_text()) == (0, 1)
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    with pytest.raises(pymysql.err.OperationalError):
        one(scripted, "SELECT 1")  # closed at rest, as on SIGTERM: it reconnects
    again = u.connect()
    assert one(again, "SELECT 1") == 1
    again.close()


def test_a_failed_upgrade_keeps_the_clients_where_they_are(upgradable: Upgradable) -> None:
    u = upgradable
    u.start()
    conn = u.connect()
    thread = conn.thread_id()
    old = u.pid()
    u.file.write_text("[mysql-proxy]\nproxy-connect-timeout=soon\n")
    assert old is not None
    os.kill(old, signal.SIGUSR2)
    wait_for(lambda: "upgrade failed, the running chassis stays" in u.log_text(), 30,
             "the failure line")
    assert "soon" in u.log_text().split("upgrade failed")[1].splitlines()[0]
    wait_for(lambda: u.pid() == old, 30, "the pid file to be back")
    assert one(conn, "SELECT CONNECTION_ID()") == thread
    assert one(u.connect(), "SELECT 2") == 2


def test_a_balancers_client_keeps_its_real_address_in_the_new_chassis(
        upgradable: Upgradable) -> None:
    """The address a PROXY header named travels with the connection, upgrade after upgrade."""
    u = upgradable
    u.start("proxy-protocol-networks=127.0.0.1/32")
    sock = socket.create_connection(("127.0.0.1", u.port), timeout=10)
    sock.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 3306\r\n")
    conn = pymysql.connect(host="127.0.0.1", port=u.port, user="native",
                           password=ACCOUNTS["native"].password, autocommit=True,
                           defer_connect=True, read_timeout=30)
    conn.connect(sock=sock)
    thread = conn.thread_id()
    for _ in range(2):
        old, _ = u.upgrade()
        wait_for(lambda old=old: not is_alive(old), 30, "the old chassis to exit")
        assert one(conn, "SELECT CONNECTION_ID()") == thread
    moved = [line for line in u.log_text().splitlines() if "handed over by the old chassis" in line]
    assert len(moved) == 2, moved
    assert all("client 192.0.2.7:51234 " in line for line in moved), moved
    conn.close()


def test_a_unix_socket_listener_is_inherited_and_its_file_stays(upgradable: Upgradable) -> None:
    """The old chassis does not remove the socket file the new one listens on; unix-socket
    clients are not handed over (they drain, then reconnect)."""
    u = upgradable
    path = u.dir / "proxy.sock"
    u.address = str(path)
    u.start()
    before = pymysql.connect(unix_socket=str(path), user="native",
                             password=ACCOUNTS["native"].password, autocommit=True)
    assert one(before, "SELECT 1") == 1
    inode = path.stat().st_ino
    old, new = u.upgrade()
    assert handed_over(u.log_text()) == (0, 1)
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    assert path.stat().st_ino == inode  # the same socket, not bound again
    after = pymysql.connect(unix_socket=str(path), user="native",
                            password=ACCOUNTS["native"].password, autocommit=True)
    assert one(after, "SELECT 2") == 2
    after.close()
    before.close()
    assert u.pid() == new


def test_an_idle_clients_session_is_untouched_by_the_move(upgradable: Upgradable) -> None:
    """The proxy's COM_PING (to learn the status of a connection idle since before the
    upgrade) leaves the session as it was: warnings, LAST_INSERT_ID(), prepared
    statements, temporary tables."""
    u = upgradable
    u.start()
    conn = u.connect()
    one(conn, "CREATE TEMPORARY TABLE upgrade_ids (id INT AUTO_INCREMENT PRIMARY KEY)")
    one(conn, "INSERT INTO upgrade_ids VALUES (NULL), (NULL)")
    one(conn, "PREPARE twice FROM 'SELECT ? * 2'")
    one(conn, "SELECT CAST('12abc' AS INT)")  # leaves a warning
    old, _ = u.upgrade()
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    with conn.cursor() as cur:
        cur.execute("SHOW WARNINGS")
        warnings = cur.fetchall()
    assert len(warnings) == 1 and "12abc" in warnings[0][2], warnings
    assert one(conn, "SELECT LAST_INSERT_ID()") == 1
    one(conn, "SET @n = 21")
    assert one(conn, "EXECUTE twice USING @n") == 42
    assert one(conn, "SELECT COUNT(*) FROM upgrade_ids") == 2
    conn.close()


def test_a_moved_client_stays_on_its_backend_when_the_new_configuration_drops_it(
        upgradable: Upgradable) -> None:
    """The new chassis reads the defaults-file again: new clients get the new backend
    (the server's unix socket), a moved client keeps its TCP server connection."""
    u = upgradable
    u.start()
    conn = u.connect()
    thread = conn.thread_id()
    u.file.write_text("\n".join(["[mysql-proxy]", f"proxy-address={u.address}",
                                 f"proxy-backend-addresses={u.mariadb.socket_path}"]) + "\n")
    old, _ = u.upgrade()
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    host = "SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()"
    assert ":" in one(conn, host)  # still TCP
    assert one(conn, "SELECT CONNECTION_ID()") == thread
    fresh = u.connect()
    assert one(fresh, host) == "localhost"  # the new backend, over the unix socket
    fresh.close()
    conn.close()


def test_a_hundred_idle_clients_all_move(upgradable: Upgradable) -> None:
    u = upgradable
    u.start("keepalive=true", "event-threads=2")
    clients = [u.connect() for _ in range(100)]
    threads = [c.thread_id() for c in clients]
    old, _ = u.upgrade()
    wait_for(lambda: not is_alive(old), 60, "the old chassis to exit")
    assert handed_over(u.log_text()) == (100, 0)
    assert [one(c, "SELECT CONNECTION_ID()") for c in clients] == threads
    for c in clients:
        c.close()
