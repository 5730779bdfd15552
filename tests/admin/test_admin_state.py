"""An operator's backend state holds: health checks never undo an admin's DOWN, and every
backend transition is one log line at the default level ``message``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.support.chassis_proc import free_port, start_chassis, wait_for
from tests.support.fake_backend import Greeter
from tests.support.mariadb import MariaDB

PASSWORD = "state admin"


@pytest.fixture
def hangup() -> Iterator[Greeter]:
    """A "backend" that accepts and closes at once, counting the attempts (probes)."""
    server = Greeter(0, None)
    yield server
    server.close()


def _args(tmp_path: Path, mariadb: MariaDB, log_level: str, first: str = "127.0.0.1:1"
          ) -> tuple[list[str], int, int]:
    pw = tmp_path / "admin.pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    proxy_port, admin_port = free_port(), free_port()
    return [
        "--plugins=proxy,admin", f"--log-file={tmp_path / 'chassis.log'}", f"--log-level={log_level}",
        f"--proxy-address=127.0.0.1:{proxy_port}",
        f"--proxy-backend-addresses={first}",  # no MySQL server: once down, probed every round
        f"--proxy-backend-addresses=127.0.0.1:{mariadb.port}",
        "--proxy-health-check-interval=0.1",
        f"--admin-address=127.0.0.1:{admin_port}", "--admin-username=admin",
        f"--admin-password-file={pw}",
    ], proxy_port, admin_port


def _admin(port: int, sql: str) -> list[tuple[object, ...]]:
    with pymysql.connect(host="127.0.0.1", port=port, user="admin", password=PASSWORD,
                         connect_timeout=5, ssl_disabled=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def _client(port: int) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=5,
                           ssl_disabled=True)


def test_admin_down_is_not_undone_by_health_checks(tmp_path: Path, mariadb: MariaDB,
                                                   hangup: Greeter) -> None:
    args, proxy_port, admin_port = _args(tmp_path, mariadb, "info", f"127.0.0.1:{hangup.port}")
    with start_chassis(args) as chassis:
        with _client(proxy_port) as conn, conn.cursor() as cur:  # 1 fails: down; 2 is used
            cur.execute("SELECT 1")
        _admin(admin_port, "UPDATE backends SET state='down' WHERE backend_ndx=2")
        # Two more rounds of the health check (it probes the dead backend 1 each round).
        seen = hangup.greeted
        wait_for(lambda: hangup.greeted >= seen + 2, 10, "two more health check rounds")
        rows = _admin(admin_port, "SELECT * FROM backends")
        assert rows[1][2] == "down", rows
        assert "health check: the server greets again" not in chassis.log_text()
        with pytest.raises(pymysql.err.OperationalError, match="all backends are down"):
            _client(proxy_port)
        _admin(admin_port, "UPDATE backends SET state='up' WHERE backend_ndx=2")
        with _client(proxy_port) as conn, conn.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)


def test_backend_transitions_are_logged_at_the_default_level(tmp_path: Path, mariadb: MariaDB) -> None:
    args, proxy_port, admin_port = _args(tmp_path, mariadb, "message")
    with start_chassis(args) as chassis:
        with _client(proxy_port) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        chassis.wait_for_log(f"backend 127.0.0.1:{mariadb.port}: UNKNOWN -> UP (connected)")
        _admin(admin_port, "UPDATE backends SET state='offline' WHERE backend_ndx=2")
        chassis.wait_for_log(f"backend 127.0.0.1:{mariadb.port}: UP -> OFFLINE (set from the admin console)")
