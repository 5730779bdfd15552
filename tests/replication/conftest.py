"""Fixtures for the replication-aware proxy tests: a real GTID topology (one primary, two
replicas, see :mod:`tests.support.replication`) shared by the session, and chassis
processes in front of it.

``topology`` starts the three servers once per session (per xdist worker); ``topo`` hands
it to one test after putting it back as it started (``servers[0]`` the primary, every
replica running and caught up), so a test may stop threads or switch over freely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.proxy.conftest import Proxy, StartProxy, start_proxy  # noqa: F401  (fixture)
from tests.support.admin_console import admin_rows
from tests.support.certs import TLSCerts
from tests.support.chassis_proc import free_port
from tests.support.mariadb import MariaDB
from tests.support.replication import MONITOR_PASSWORD, MONITOR_USER, Topology


@pytest.fixture(scope="session")
def topology(tls_certs: TLSCerts) -> Iterator[Topology]:
    with Topology(certs=tls_certs) as topo:
        yield topo


@pytest.fixture
def topo(topology: Topology) -> Topology:
    topology.restore()
    return topology


MONITOR_INTERVAL = 0.5  # seconds; short to keep the suite fast, the logic is the same


@dataclass
class ReplProxy:
    """A chassis with the replication monitor in front of ``topology`` (and its admin port)."""

    proxy: Proxy
    admin_port: int

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy, name)

    def admin_rows(self, sql: str = "SELECT * FROM backends") -> list[tuple[Any, ...]]:
        return admin_rows(self.admin_port, ADMIN_PASSWORD, sql)

    def roles(self) -> list[str]:
        """Each backend's type as the admin console shows it (rw / ro), in backend order."""
        return [row[3] for row in self.admin_rows()]

    def replication(self) -> list[tuple[str, Any, str]]:
        """(replication, lag, stale) per backend, from the admin console."""
        return [(row[6], row[7], row[8]) for row in self.admin_rows()]


ADMIN_PASSWORD = "repl-admin-pw"


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def repl_proxy(start_proxy: StartProxy, topology: Topology,  # noqa: F811
               tmp_path: Path) -> Callable[..., ReplProxy]:
    """``repl_proxy(extra_args, rw=[servers], ro=[servers], event_threads=1, env=...)``: a
    chassis with the monitor logged in as ``monitor`` every MONITOR_INTERVAL (unless
    ``monitor=False``), the admin plugin on a port of its own. By default ``servers[0]``
    is the read/write backend and the others read-only ones."""

    def start(extra: Sequence[str] = (), *, rw: Sequence[MariaDB] | None = None,
              ro: Sequence[MariaDB] | None = None, event_threads: int = 1,
              monitor: bool = True, **kwargs: Any) -> ReplProxy:
        rw = [topology.servers[0]] if rw is None else rw
        ro = topology.servers[1:] if ro is None else ro
        admin_port = free_port()
        args = [
            "--plugins=proxy,admin", f"--admin-address=127.0.0.1:{admin_port}",
            "--admin-username=admin",
            f"--admin-password-file={secret_file(tmp_path / 'admin.pw', ADMIN_PASSWORD)}",
            f"--event-threads={event_threads}",
            *(f"--proxy-read-only-backend-addresses={s.address}" for s in ro),
        ]
        if monitor:
            args += [
                f"--proxy-monitor-user={MONITOR_USER}",
                f"--proxy-monitor-password-file={secret_file(tmp_path / 'mon.pw', MONITOR_PASSWORD)}",
                f"--proxy-monitor-interval={MONITOR_INTERVAL}",
            ]
        proxy = start_proxy([s.address for s in rw], [*args, *extra], **kwargs)
        return ReplProxy(proxy, admin_port)

    return start


def whoami(topology: Topology) -> None:
    """``test.whoami`` on each server holds that server's name (not replicated), so a read
    through the proxy says which server answered it."""
    for server in topology.servers:
        conn = server.connect("root")
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin=0")
                cur.execute("CREATE TABLE IF NOT EXISTS test.whoami (name VARCHAR(32))")
                cur.execute("DELETE FROM test.whoami")
                cur.execute("INSERT INTO test.whoami VALUES (%s)", (server.name,))
        finally:
            conn.close()


def served_by(conn: pymysql.Connection[Any]) -> str:
    """Which server answered a plain read on ``conn`` (see :func:`whoami`)."""
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM test.whoami")
        ((name,),) = cur.fetchall()
        return str(name)
