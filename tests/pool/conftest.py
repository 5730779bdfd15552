"""Fixtures for the connection pool and rw-splitting tests: real chassis processes, real
MariaDB servers, real clients.

``pool_proxy`` starts a chassis with a Lua script (text or a path) in front of the
session's MariaDB; ``primary`` and ``replica`` are two servers of this module's own with
GTID replication between them (the replica read-only, so the ``native`` account cannot
write there), for rw-splitting.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.conftest import Proxy, StartProxy, start_proxy  # noqa: F401  (fixture)
from tests.support.admin_console import admin_rows
from tests.support.chassis_proc import free_port, wait_for
from tests.support.mariadb import MariaDB

ADMIN_PASSWORD = "pool-admin-pw"

#: Every server connection is pooled when its client leaves, and a new client takes an
#: idle one (of any user: min_idle_connections is 0) when there is one.
POOL_ON_DISCONNECT = """
function connect_server()
    proxy.connection.backend_ndx = 1
    if proxy.connection.server then return proxy.PROXY_IGNORE_RESULT end
end
function disconnect_client()
    proxy.connection.backend_ndx = 0
end
"""


class PoolProxy(Proxy):
    """A scripted chassis; ``admin_port`` is set when the admin plugin runs too."""

    admin_port: int | None = None

    def admin_rows(self, sql: str) -> list[tuple[Any, ...]]:
        assert self.admin_port is not None, "started without admin=True"
        return admin_rows(self.admin_port, ADMIN_PASSWORD, sql)

    def pool_idle(self) -> list[int]:
        """Idle pooled connections per backend, from the admin console."""
        return [int(row[-1]) for row in self.admin_rows("SELECT * FROM backend_stats")]


PoolProxyFactory = Callable[..., PoolProxy]


@pytest.fixture
def pool_proxy(start_proxy: StartProxy, tmp_path: Path,  # noqa: F811
               mariadb: MariaDB) -> PoolProxyFactory:
    """``pool_proxy(script, extra=(), backends=None, admin=False)`` -> a ready chassis.

    ``script`` is Lua source, a path, or a bare bundled name (``rw-splitting.lua``).
    """
    def start(script: str | Path, extra: Sequence[str] = (), *,
              backends: Sequence[str] | None = None, admin: bool = False) -> PoolProxy:
        if isinstance(script, Path) or "\n" not in script:
            script_arg = str(script)
        else:
            path = tmp_path / f"script-{free_port()}.lua"
            path.write_text(textwrap.dedent(script))
            script_arg = str(path)
        args = [f"--proxy-lua-script={script_arg}", *extra]
        admin_port = None
        if admin:
            admin_port = free_port()
            pw = tmp_path / "admin.pw"
            pw.write_text(ADMIN_PASSWORD + "\n")
            pw.chmod(0o600)
            args += ["--plugins=admin", f"--admin-address=127.0.0.1:{admin_port}",
                     "--admin-username=admin", f"--admin-password-file={pw}"]
        base = start_proxy(list(backends or [mariadb.address]), args)
        proxy = PoolProxy(base.process, base.host, base.port, base.log_file)
        proxy.admin_port = admin_port
        return proxy

    return start


def rows(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """All rows of one statement on a DB-API connection (empty for none)."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []
    finally:
        cur.close()


def thread_alive(db: MariaDB, thread_id: int) -> bool:
    """Whether the server still has the connection ``thread_id``."""
    found = db.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s",
                   (thread_id,))
    return bool(found[0][0])


def wait_thread_gone(db: MariaDB, thread_id: int, timeout: float = 10.0) -> None:
    wait_for(lambda: not thread_alive(db, thread_id), timeout,
             f"server connection {thread_id} to be closed")


# -- a primary and a read-only replica (rw-splitting) ---------------------------------


@pytest.fixture(scope="module")
def primary() -> Iterator[MariaDB]:
    with MariaDB(server_id=1, log_bin=True, name="primary") as db:
        yield db


@pytest.fixture(scope="module")
def replica(primary: MariaDB) -> Iterator[MariaDB]:
    with MariaDB(server_id=2, read_only=True, name="replica") as db:
        db.replicate_from(primary)
        yield db
