"""A throwaway GTID replication topology: one primary and two replicas (MariaDB).

Each server is a :class:`tests.support.mariadb.MariaDB` (own datadir, port, socket) with
``server_id``, a binary log and ``log_slave_updates``, so any replica can be promoted and
the others can follow it. Replicas replicate with ``MASTER_USE_GTID=slave_pos`` and run
``read_only`` (the test accounts lack READ_ONLY ADMIN: their writes fail there, as an
application's would).

Every server also has the ``monitor`` account (:data:`MONITOR_USER`), with the privileges
the proxy's replication monitor needs (``SLAVE MONITOR`` for ``SHOW ALL SLAVES STATUS``).
Accounts are created with ``sql_log_bin=0`` on each server: replication never replays them.

Datadir set-up (``mariadb-install-db``) takes about a second per server on a quiet machine;
copying a template datadir instead saves less than that (the datadir is over 100 MB), so
each server is installed on its own.

    with Topology() as topo:
        topo.primary.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
        topo.sync()                      # every replica has it (MASTER_GTID_WAIT)
        topo.switchover(topo.replicas[0])
        topo.restore()                   # back to servers[0] as primary, all replicating
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from tests.support.certs import TLSCerts
from tests.support.mariadb import MariaDB, MariaDBError

MONITOR_USER = "monitor"
MONITOR_PASSWORD = "monitor_pw"
#: What the proxy's monitor needs: @@read_only is readable by anyone; SHOW ALL SLAVES
#: STATUS needs SLAVE MONITOR (MariaDB 10.5.9+; REPLICATION CLIENT before, and on MySQL).
MONITOR_GRANT = "GRANT SLAVE MONITOR, REPLICATION CLIENT ON *.* TO 'monitor'@'%'"

#: Server options of every member (besides server_id and log_bin).
REPLICATION_ARGS = ("--log-slave-updates=1", "--gtid-domain-id=0", "--slave-net-timeout=10")


class Topology:
    """Three servers: ``servers[0]`` starts as the primary, the others replicate from it.

    ``primary`` and ``replicas`` follow :meth:`switchover`; ``servers`` keeps the start
    order (what the proxy's backend list was given).
    """

    def __init__(self, *, certs: TLSCerts | None = None, replicas: int = 2,
                 name: str = "repl") -> None:
        self.servers = [
            MariaDB(name=f"{name}{i}", server_id=i + 1, log_bin=True, read_only=i > 0,
                    certs=certs, extra_args=REPLICATION_ARGS)
            for i in range(replicas + 1)
        ]
        self.primary = self.servers[0]

    @property
    def replicas(self) -> list[MariaDB]:
        return [s for s in self.servers if s is not self.primary]

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> Self:
        try:
            for server in self.servers:
                server.start()
                add_monitor_account(server)
            for replica in self.replicas:
                replica.replicate_from(self.primary)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- waiting -----------------------------------------------------------------------

    def sync(self, timeout: float = 30.0, replicas: Sequence[MariaDB] | None = None) -> None:
        """Block until every replica (or those given) has applied all the primary binlogged."""
        for replica in self.replicas if replicas is None else replicas:
            replica.wait_for_replica(self.primary, timeout=timeout)

    # -- changing roles ----------------------------------------------------------------

    def switchover(self, new: MariaDB, timeout: float = 30.0) -> None:
        """A planned switchover to ``new``: the old primary goes read-only, ``new`` catches
        up and is promoted (STOP SLAVE, RESET SLAVE ALL, read_only=0), the other servers
        (the old primary included) then replicate from it."""
        old = self.primary
        if new is old:
            return
        old.sql("SET GLOBAL read_only=1")
        new.wait_for_replica(old, timeout=timeout)
        self.promote(new)
        self.repoint(old, timeout)

    def repoint(self, old: MariaDB, timeout: float = 30.0) -> None:
        """After :meth:`promote`: every other server (``old``, the former primary,
        included) replicates from the new primary."""
        new = self.primary
        for server in self.replicas:
            server.sql("STOP SLAVE")
            if server is old:
                # Its position is in its binlog: make it its replication position too
                # (MASTER_GTID_WAIT looks at gtid_slave_pos).
                server.sql("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            follow(server, new)
        self.sync(timeout)

    def promote(self, new: MariaDB) -> None:
        """Only the promotion half of a switchover: ``new`` stops replicating and takes
        writes; nothing replicates from it yet (the caller re-points the others)."""
        new.sql("STOP SLAVE")
        new.sql("RESET SLAVE ALL")
        new.sql("SET GLOBAL read_only=0")
        self.primary = new

    def restore(self, timeout: float = 30.0) -> None:
        """Back to the start: ``servers[0]`` primary, every replica running and caught up."""
        first = self.servers[0]
        for server in self.servers:
            if server is not self.primary:
                server.sql("START SLAVE")  # a test may have stopped a thread
        if self.primary is not first:
            self.switchover(first, timeout)
        first.sql("SET GLOBAL read_only=0")
        self.sync(timeout)


def add_monitor_account(server: MariaDB) -> None:
    """The ``monitor`` account on ``server`` only (not binlogged)."""
    conn = server.connect("root")
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin=0")
            cur.execute(f"CREATE USER IF NOT EXISTS '{MONITOR_USER}'@'%'"
                        f" IDENTIFIED BY '{MONITOR_PASSWORD}'")
            cur.execute(MONITOR_GRANT)
    finally:
        conn.close()


def follow(server: MariaDB, primary: MariaDB, timeout: float = 30.0) -> None:
    """Point ``server`` at ``primary`` (GTID) and wait until both threads run."""
    server.sql(
        "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER='root',"
        " MASTER_PASSWORD='', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos",
        (primary.host, primary.port),
    )
    server.sql("START SLAVE")
    wait_running(server, timeout)


def wait_running(server: MariaDB, timeout: float = 30.0) -> dict[str, Any]:
    """Block until both replication threads of ``server`` run; its slave status."""
    deadline = time.monotonic() + timeout
    while True:
        status = server.replica_status()
        if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
            return status
        if time.monotonic() > deadline:
            raise MariaDBError(
                f"{server.name} is not replicating after {timeout}s:"
                f" IO {status.get('Slave_IO_Running')!r} {status.get('Last_IO_Error')!r},"
                f" SQL {status.get('Slave_SQL_Running')!r} {status.get('Last_SQL_Error')!r}"
            )
        time.sleep(0.05)

