"""A fleet: a real HAProxy in front of two chassis in front of one MariaDB, and sysbench.

    sysbench ─► HAProxy (leastconn, send-proxy-v2, httpchk GET /readyz on each chassis'
                 │       metrics port, redispatch)
                 ├─► chassis c0 ─┐  --proxy-protocol-networks=127.0.0.1/32
                 └─► chassis c1 ─┴► MariaDB (proxy_protocol_networks=127.0.0.1/32)
                                    --proxy-backend-proxy-protocol=v2

Each chassis keeps its options in a defaults-file the test rewrites before a SIGHUP.
The HAProxy configuration is the one docs/operations.md ("A fleet behind HAProxy")
recommends, with check intervals cut down for a test.

Which address MariaDB sees for a client is checked against the kernel's own account:
sysbench cannot bind a source address, so its connections come from 127.0.0.1 like the
proxies' own; but each of its sockets has a local port, read from /proc, and the
processlist must show exactly those ports (without the PROXY protocol on both legs it
would show the chassis' ports towards MariaDB instead).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest

from scripts.bench import parse_sysbench
from tests.support.chassis_proc import ChassisProcess, free_port, is_alive, start_chassis, wait_for
from tests.support.haproxy import HAProxy, Server
from tests.support.mariadb import MariaDB

USER, PASSWORD = "fleet", "fleet_pw"
TABLE_SIZE = 1000
#: A sysbench test whose threads count lost connections and connect again.
LOST_CONNECTIONS = Path(__file__).with_name("lost_connections.lua")

#: What docs/operations.md recommends, but checks every 100 ms instead of every second.
#: (A check of a chassis under sysbench may take over 100 ms: ``timeout check``.)
HAPROXY_BACKEND = (
    "option httpchk GET /readyz",
    "http-check expect status 200",
    "retries 3",
    "option redispatch 1",
    "timeout check 2s",
    "default-server inter 100ms fall 2 rise 1",
)


def sysbench_program() -> str:
    found = shutil.which("sysbench")
    if found is None:
        raise RuntimeError("sysbench is not installed: scripts/test installs it (apt-get install sysbench)")
    return found


def local_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of the established TCP sockets of ``pid`` towards ``remote_port``."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode in inodes and state == "01" and int(remote.split(":")[1], 16) == remote_port:
                ports.add(int(local.split(":")[1], 16))
    return ports


class Sysbench:
    """sysbench in the background, through ``port``, as ``fleet``: ``test`` is one of
    its own (``oltp_point_select``: any error ends the run, exit code 1) or a script
    such as :data:`LOST_CONNECTIONS`."""

    def __init__(self, directory: Path, port: int, *, threads: int, seconds: int,
                 test: str = "oltp_point_select") -> None:
        self.port = port
        self.threads = threads
        self.seconds = seconds
        self.out = directory / f"sysbench-{port}-{threads}.out"
        # line-buffered: what it said is on file even when it has to be killed
        self.cmd = ["stdbuf", "-oL", sysbench_program(), test, "--db-driver=mysql",
                    "--mysql-host=127.0.0.1", f"--mysql-port={port}", f"--mysql-user={USER}",
                    f"--mysql-password={PASSWORD}", "--mysql-db=sbtest",
                    f"--table-size={TABLE_SIZE}", f"--threads={threads}", f"--time={seconds}",
                    "--report-interval=0", "run"]
        if test == "oltp_point_select":
            self.cmd.insert(-1, "--tables=1")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sysbench:
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def ports(self) -> set[int]:
        """The local ports of its connections to HAProxy right now."""
        assert self.proc is not None
        return local_ports(self.proc.pid, self.port)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def finish(self) -> dict[str, float]:
        """Wait for the end; its figures (``errors``: errors a script caught)."""
        assert self.proc is not None
        code = self.proc.wait(self.seconds + 60)
        assert code == 0, f"sysbench exited with {code}:\n{self.output()}"
        return parse_sysbench(self.output())

    def lost_per_thread(self) -> dict[int, int]:
        """What :data:`LOST_CONNECTIONS` printed: lost connections by thread number."""
        found = re.findall(r"thread (\d+) lost its connection (\d+) time", self.output())
        return {int(tid): int(lost) for tid, lost in found}

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)


class Instance:
    """One chassis of the fleet, its options in a defaults-file."""

    def __init__(self, directory: Path, name: str, backends: Sequence[str]) -> None:
        directory.mkdir()
        self.name = name  # HAProxy's name for it
        self.port = free_port()
        self.metrics_port = free_port()
        self.file = directory / "chassis.cnf"
        self.log = directory / "chassis.log"
        self.pid_file = directory / "chassis.pid"
        self.process: ChassisProcess | None = None
        self.reloads = 0
        self.write(backends)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write(self, backends: Sequence[str]) -> None:
        self.file.write_text("\n".join([
            "[mysql-proxy]",
            f"proxy-address={self.address}",
            f"proxy-backend-addresses={','.join(backends)}",
            "proxy-protocol-networks=127.0.0.1/32",
            "proxy-backend-proxy-protocol=v2",
            f"metrics-address=127.0.0.1:{self.metrics_port}",
        ]) + "\n")
        self.file.chmod(0o600)

    def start(self) -> Instance:
        self.process = start_chassis(["--plugins=proxy", f"--defaults-file={self.file}",
                                      f"--log-file={self.log}", "--log-level=debug",
                                      f"--pid-file={self.pid_file}"])
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        assert self.process is not None
        return self.process.wait_for_log(text, timeout, count)

    def reload(self, backends: Sequence[str]) -> str:
        """Rewrite the backend list, SIGHUP, and the log once the worker applied it."""
        assert self.process is not None
        self.write(backends)
        self.reloads += 1
        self.process.signal(signal.SIGHUP)
        return self.wait_log("reload: applied in worker", timeout=20, count=self.reloads)

    def pid_in_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
        # an upgrade's successor is in the pid file (and may have left our process group)
        successor = self.pid_in_file()
        if successor is not None and is_alive(successor):
            with contextlib.suppress(ProcessLookupError):
                os.kill(successor, signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not is_alive(successor), 10, f"pid {successor} to exit")
            with contextlib.suppress(ProcessLookupError):
                os.kill(successor, signal.SIGKILL)


class Fleet:
    """Two chassis behind one HAProxy; ``lb.port`` is where clients connect."""

    def __init__(self, directory: Path, db: MariaDB) -> None:
        self.db = db
        self.instances = [Instance(directory / f"c{i}", f"c{i}", [db.address]) for i in range(2)]
        self.lb = HAProxy(directory, [Server(c.address, f"check port {c.metrics_port}")
                                      for c in self.instances],
                          server_options="send-proxy-v2", balance="leastconn",
                          extra=HAPROXY_BACKEND)

    def start(self) -> Fleet:
        for instance in self.instances:
            instance.start()
        self.lb.start()
        for instance in self.instances:
            self.lb.wait_status(instance.name, "UP")
        return self

    def stop(self) -> None:
        self.lb.stop()
        for instance in self.instances:
            instance.stop()

    def instance(self, name: str) -> Instance:
        return next(c for c in self.instances if c.name == name)

    def wait_sessions(self, total: int) -> dict[str, int]:
        """HAProxy's sessions per server, once they add up to ``total``."""
        def added_up() -> dict[str, int] | None:
            sessions = self.lb.sessions()
            return sessions if sum(sessions.values()) == total else None
        return wait_for(added_up, 15, f"{total} sessions through HAProxy")

    def connect(self, user: str = USER, password: str = PASSWORD, **kwargs: Any
                ) -> tuple[pymysql.Connection[Any], str]:
        """A new client through HAProxy, and the name of the chassis it landed on (the
        server whose session count grew; other clients must not come or go meanwhile)."""
        before = self.lb.sessions()
        conn = pymysql.connect(host=self.lb.host, port=self.lb.port, user=user, password=password,
                               connect_timeout=10, read_timeout=30, autocommit=True, **kwargs)
        after = self.wait_sessions(sum(before.values()) + 1)
        grew = [name for name in after if after[name] > before.get(name, 0)]
        assert len(grew) == 1, (before, after)
        return conn, grew[0]

    def clients_seen_by_server(self, bench: Sysbench) -> list[str]:
        """MariaDB's processlist hosts for sysbench's user, checked against the local ports
        of sysbench's own sockets (read before and after: threads may reconnect between)."""
        before = bench.ports()
        hosts = [h for (h,) in self.db.sql(
            "SELECT HOST FROM information_schema.PROCESSLIST WHERE USER = %s", (USER,))]
        after = bench.ports()
        # MariaDB names 127.0.0.1 "localhost" (it resolves client addresses)
        assert all(h.split(":")[0] in ("127.0.0.1", "localhost") for h in hosts), hosts
        ports = {int(h.rsplit(":", 1)[1]) for h in hosts}
        assert ports <= before | after, f"the server sees {sorted(ports)}, sysbench's sockets " \
                                        f"are {sorted(before | after)}"
        return hosts


@pytest.fixture(scope="module")
def fleet_db(pp_mariadb: MariaDB) -> MariaDB:
    """The PROXY-protocol MariaDB with sysbench's account and a small prepared table."""
    db = pp_mariadb
    db.sql(f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
    db.sql(f"GRANT ALL ON sbtest.* TO '{USER}'@'127.0.0.1'")
    db.sql("DROP TABLE IF EXISTS sbtest.sbtest1")
    prepare = [sysbench_program(), "oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1",
               f"--mysql-port={db.port}", "--mysql-user=root", "--mysql-password=",
               "--mysql-db=sbtest", "--tables=1", f"--table-size={TABLE_SIZE}", "prepare"]
    done = subprocess.run(prepare, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"sysbench prepare failed:\n{done.stdout}{done.stderr}"
    return db


@pytest.fixture
def fleet(tmp_path: Path, fleet_db: MariaDB) -> Iterator[Fleet]:
    f = Fleet(tmp_path, fleet_db)
    try:
        yield f.start()
    finally:
        f.stop()


StartSysbench = Callable[..., Sysbench]


@pytest.fixture
def start_sysbench(tmp_path: Path, fleet: Fleet) -> Iterator[StartSysbench]:
    """``start_sysbench(threads=, seconds=, test=)`` -> a running
    :class:`Sysbench` through the fleet's HAProxy; killed at teardown if still running."""
    runs: list[Sysbench] = []

    def start(**kwargs: Any) -> Sysbench:
        run = Sysbench(tmp_path, fleet.lb.port, **kwargs).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
