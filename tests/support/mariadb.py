"""A throwaway MariaDB server: the machine's ``mariadbd`` on a temp datadir and a free port.

Tests and scripts must never touch the system service on 3306, and parallel test workers
must not share a server, so each :class:`MariaDB` gets its own datadir, port, unix socket
and TLS certificates, and removes all of it on :meth:`MariaDB.stop`. The recipe (and why
each flag is there) is in docs/testing-with-mariadb.md.

Run as a program it starts one server and keeps it until SIGTERM/SIGINT, which is how
``scripts/demo`` and ``scripts/bench`` get theirs::

    python -m tests.support.mariadb --env-file /tmp/db.env
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import functools
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pymysql

from tests.support.certs import TLSCerts, make_tls_certs

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
MAX_ALLOWED_PACKET = 64 * 1024 * 1024
#: How often to try a free port when another process grabs ours between bind and listen.
PORT_ATTEMPTS = 5


@dataclass(frozen=True)
class Account:
    """A login every test server has; tests pick the one for the auth path they check."""

    user: str
    password: str
    plugin: str
    require_ssl: bool = False


#: The accounts created on every server, by user name. ``root`` has every privilege; the
#: others have all but SUPER and READ_ONLY ADMIN, so ``read_only`` stops their writes.
ACCOUNTS: dict[str, Account] = {
    "root": Account("root", "", "mysql_native_password"),
    "native": Account("native", "native_pw", "mysql_native_password"),
    "ed": Account("ed", "ed_pw", "ed25519"),
    "tlsonly": Account("tlsonly", "tls_pw", "mysql_native_password", require_ssl=True),
}

DATABASES = ("sbtest", "test")

_CREATE_USER = {
    "native": "CREATE USER 'native'@'%' IDENTIFIED VIA mysql_native_password"
              " USING PASSWORD('native_pw')",
    "ed": "CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed_pw')",
    "tlsonly": "CREATE USER 'tlsonly'@'%' IDENTIFIED BY 'tls_pw' REQUIRE SSL",
}


class MariaDBError(RuntimeError):
    """The throwaway server could not be set up; the message says why and what to do."""


def find_program(name: str) -> str:
    """Path of a MariaDB program, looking in /usr/sbin too (not on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MariaDBError(
            f"{name} not found: install the Debian package mariadb-server"
            " (scripts/test does it: it sources scripts/lib/setup.sh and calls"
            " ensure_debian_packages)"
        )
    return found


_handed_out: set[int] = set()


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the kernel picks it; it may be taken later),
    and one this test process was not given before: the kernel may hand out one port
    twice in a row, and a test that asks for two would get the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _child_setup(die_with_parent: bool) -> None:
    """Runs in the child before exec: unblock every signal (the CLI blocks its stop
    signals, and exec would pass that on), and if asked SIGKILL the child when its parent
    dies, so a killed test run leaves no server behind (Linux's PR_SET_PDEATHSIG)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if die_with_parent:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class MariaDB:
    """One throwaway server. ``with MariaDB() as db:`` or ``db = MariaDB().start()``.

    ``db.port``, ``db.socket_path`` and ``db.certs`` tell clients where and how to connect;
    ``db.sql(query)`` runs SQL directly (never through a proxy). The server always has the
    :data:`ACCOUNTS`, the :data:`DATABASES`, LOCAL INFILE on, max_allowed_packet 64M and
    TLS with certificates from :func:`make_tls_certs` (its own unless *certs* is given).
    """

    host = HOST

    def __init__(
        self,
        *,
        certs: TLSCerts | None = None,
        server_id: int | None = None,
        log_bin: bool = False,
        read_only: bool = False,
        buffer_pool: str = "64M",
        extra_args: Sequence[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
        name: str = "mariadb",
    ) -> None:
        self._certs_given = certs
        self.server_id = server_id
        self.log_bin = log_bin
        self.read_only = read_only
        self.buffer_pool = buffer_pool
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.name = name
        self._base: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._certs: TLSCerts | None = None
        self._primary: MariaDB | None = None

    # -- where it is -------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise MariaDBError(f"{self.name} is not started: call start() first")
        return self._base

    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_path(self) -> Path:
        return self.base_dir / "mariadb.sock"

    @property
    def tmpdir(self) -> Path:
        return self.base_dir / "tmp"

    @property
    def error_log(self) -> Path:
        return self.base_dir / "error.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise MariaDBError(f"{self.name} is not started: call start() first")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as chassis' --proxy-backend-addresses wants it."""
        return f"{self.host}:{self.port}"

    @property
    def certs(self) -> TLSCerts:
        if self._certs is None:
            raise MariaDBError(f"{self.name} is not started: call start() first")
        return self._certs

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise MariaDBError(f"{self.name} is not started: call start() first")
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Make the datadir, start the server, wait until it answers, create the accounts.

        Raises :class:`MariaDBError` with the end of the server's error log on failure;
        nothing is left running or on disk then.
        """
        if self._proc is not None:
            raise MariaDBError(f"{self.name} is already started")
        mariadbd = find_program("mariadbd")
        install_db = find_program("mariadb-install-db")
        self._base = Path(tempfile.mkdtemp(prefix=f"chassis-{self.name}-"))
        atexit.register(self.stop)
        try:
            self._certs = self._certs_given or make_tls_certs(self._base / "tls")
            self._install(install_db)
            self._spawn_until_listening(mariadbd)
            self._create_accounts()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the server (SIGTERM, then SIGKILL after a while) and remove its directory.

        Safe to call twice, and on a server that never started.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc)
        base, self._base = self._base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
        self._port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"<MariaDB {self.name} {where}>"

    def _install(self, install_db: str) -> None:
        cmd = [
            install_db, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
            "--auth-root-authentication-method=normal", "--skip-test-db",
            # Passed on to the bootstrap mariadbd: its temp tables are named by pid and
            # thread, and two bootstraps sharing /tmp were seen to delete each other's.
            f"--tmpdir={self.tmpdir}",
        ]
        self.tmpdir.mkdir()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=self.startup_timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise MariaDBError(f"mariadb-install-db took over {self.startup_timeout}s") from exc
        if done.returncode != 0:
            raise MariaDBError(
                f"mariadb-install-db failed (exit {done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    def _server_command(self, mariadbd: str, port: int) -> list[str]:
        certs = self.certs
        cmd = [
            mariadbd, "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={port}",
            f"--socket={self.socket_path}",
            f"--bind-address={self.host}",
            "--user=root",
            f"--pid-file={self.base_dir / 'mariadb.pid'}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.tmpdir}",
            "--local-infile=1",
            f"--max-allowed-packet={MAX_ALLOWED_PACKET}",
            f"--ssl-ca={certs.ca_cert}",
            f"--ssl-cert={certs.server_cert}",
            f"--ssl-key={certs.server_key}",
            f"--innodb-buffer-pool-size={self.buffer_pool}",
            # The datadir is thrown away: no need to make shutdown or commits durable.
            "--innodb-fast-shutdown=2",
            "--innodb-buffer-pool-dump-at-shutdown=0",
            "--innodb-buffer-pool-load-at-startup=0",
            "--innodb-flush-log-at-trx-commit=2",
            "--performance-schema=0",
            # A listen queue for bursts: the default (~110) drops the SYNs of a burst of
            # connects (tests/proxy/test_backlog.py), which come back 1 s, 3 s, 7 s later.
            "--back-log=1024",
        ]
        if self.server_id is not None:
            cmd.append(f"--server-id={self.server_id}")
        if self.log_bin:
            cmd += [f"--log-bin={self.base_dir / 'binlog'}", "--binlog-format=ROW"]
        if self.read_only:
            cmd.append("--read-only=1")
        return cmd + self.extra_args

    def _spawn_until_listening(self, mariadbd: str) -> None:
        """Start on a free port; if someone took that port meanwhile, try another."""
        for _attempt in range(PORT_ATTEMPTS):
            port = free_port()
            self.error_log.unlink(missing_ok=True)
            in_main_thread = threading.current_thread() is threading.main_thread()
            self._proc = subprocess.Popen(
                self._server_command(mariadbd, port),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                # PDEATHSIG fires when the *thread* that forked exits: only from the main one.
                preexec_fn=functools.partial(_child_setup, in_main_thread),
            )
            self._port = port
            if self._wait_ready():
                return
            log = self._log_tail()
            _terminate(self._proc)
            self._proc = None
            self._port = None
            if "Address already in use" not in log:
                raise MariaDBError(f"mariadbd did not start; end of its error log:\n{log}")
        raise MariaDBError(f"mariadbd could not get a free port in {PORT_ATTEMPTS} tries")

    def _wait_ready(self) -> bool:
        """Poll a real login until it works (True) or the server exits (False)."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                # read_timeout: the port may belong to a squatter that never answers.
                pymysql.connect(host=self.host, port=self.port, user="root", password="",
                                connect_timeout=2, read_timeout=2).close()
                return True
            except pymysql.err.OperationalError:
                time.sleep(0.05)
        raise MariaDBError(
            f"mariadbd did not answer on {self.host}:{self._port} within"
            f" {self.startup_timeout}s; end of its error log:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return "(no error log)"
        return "\n".join(text.splitlines()[-lines:])

    def _create_accounts(self) -> None:
        with self._root() as cur:
            # Not binlogged: a replica creates the same accounts itself and would otherwise
            # stop on "user already exists" when it replays the primary's binlog.
            cur.execute("SET SESSION sql_log_bin=0")
            # Anonymous ''@'localhost' would match before 'u'@'%' over 127.0.0.1.
            cur.execute("SELECT user, host FROM mysql.user WHERE user=''")
            for user, host in cur.fetchall():
                cur.execute("DROP USER %s@%s", (user, host))
            cur.execute("SELECT 1 FROM information_schema.plugins WHERE plugin_name='ed25519'")
            if not cur.fetchall():
                cur.execute("INSTALL SONAME 'auth_ed25519'")
            for user, create in _CREATE_USER.items():
                cur.execute(create)
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'")
                cur.execute(f"REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM '{user}'@'%'")
            for db in DATABASES:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
            cur.execute(f"SET GLOBAL max_allowed_packet={MAX_ALLOWED_PACKET}")
            cur.execute("SET GLOBAL local_infile=1")

    # -- talking to it directly --------------------------------------------------------

    def connect(self, user: str = "root", **kwargs: Any) -> pymysql.Connection[Any]:
        """A PyMySQL connection straight to the server, as *user* (password from ACCOUNTS).

        ``tlsonly`` gets TLS verified against the test CA unless ``ssl`` is given.
        """
        account = ACCOUNTS.get(user)
        kwargs.setdefault("password", account.password if account else "")
        tls_given = {"ssl", "ssl_ca", "ssl_disabled"} & kwargs.keys()
        if account is not None and account.require_ssl and not tls_given:
            kwargs["ssl_ca"] = str(self.certs.ca_cert)
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("autocommit", True)
        return pymysql.connect(host=self.host, port=self.port, user=user, **kwargs)

    @contextlib.contextmanager
    def _root(self) -> Iterator[Any]:
        conn = self.connect("root")
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def sql(
        self,
        query: str,
        args: Sequence[Any] | None = None,
        *,
        user: str = "root",
        database: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement directly on the server and return its rows (empty if none)."""
        conn = self.connect(user, database=database)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def client_command(self, user: str = "root", *, tcp: bool = True) -> list[str]:
        """argv for the ``mariadb`` CLI logged in as *user* on this server."""
        account = ACCOUNTS.get(user)
        cmd = [find_program("mariadb"), "--no-defaults", f"--user={user}"]
        if account is not None and account.password:
            cmd.append(f"--password={account.password}")
        if tcp:
            cmd += [f"--host={self.host}", f"--port={self.port}", "--protocol=TCP"]
        else:
            cmd += [f"--socket={self.socket_path}", "--protocol=SOCKET"]
        return cmd

    # -- replication -------------------------------------------------------------------

    def replicate_from(self, primary: MariaDB, timeout: float = 30.0) -> None:
        """Make this server a replica of *primary* (GTID, slave_pos) and wait until it has
        caught up. *primary* needs ``log_bin=True``; both need distinct ``server_id``s."""
        if not primary.log_bin:
            raise MariaDBError(f"{primary.name} has no binary log: start it with log_bin=True")
        if (self.server_id or 1) == (primary.server_id or 1):
            raise MariaDBError(
                f"{self.name} and {primary.name} have the same server_id: give each its own"
            )
        self.sql(
            "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER='root',"
            " MASTER_PASSWORD='', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos",
            (primary.host, primary.port),
        )
        self.sql("START SLAVE")
        self._primary = primary
        deadline = time.monotonic() + timeout
        while True:
            status = self.replica_status()
            if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
                break
            if time.monotonic() > deadline:
                raise MariaDBError(
                    f"{self.name} did not start replicating from {primary.name} in {timeout}s:"
                    f" IO error {status.get('Last_IO_Error')!r},"
                    f" SQL error {status.get('Last_SQL_Error')!r}"
                )
            time.sleep(0.05)
        self.wait_for_replica(timeout=timeout)

    def replica_status(self) -> dict[str, Any]:
        """SHOW SLAVE STATUS as a dict (empty if this server is no replica)."""
        conn = self.connect("root", cursorclass=pymysql.cursors.DictCursor)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
                return dict(row) if row else {}
        finally:
            conn.close()

    def wait_for_replica(self, primary: MariaDB | None = None, timeout: float = 30.0) -> None:
        """Block until this replica has applied everything *primary* has binlogged so far."""
        primary = primary or self._primary
        if primary is None:
            raise MariaDBError(f"{self.name} is not a replica: call replicate_from() first")
        (pos,), = primary.sql("SELECT @@gtid_binlog_pos")
        if not pos:
            return
        (result,), = self.sql("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
        if result != 0:
            status = self.replica_status()
            raise MariaDBError(
                f"{self.name} did not reach {primary.name}'s GTID {pos} in {timeout}s:"
                f" IO error {status.get('Last_IO_Error')!r},"
                f" SQL error {status.get('Last_SQL_Error')!r}"
            )


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


# -- command line: one server for the shell scripts ------------------------------------

def _write_env(path: Path, db: MariaDB) -> None:
    """Shell-sourceable facts about *db*, written atomically (the reader polls for it)."""
    lines = {
        "DBHOST": db.host,
        "DBPORT": str(db.port),
        "DBSOCKET": str(db.socket_path),
        "DBPID": str(db.pid),
        "DBCA": str(db.certs.ca_cert),
        "DBDIR": str(db.base_dir),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.mariadb",
        description="Start a throwaway MariaDB and keep it until SIGTERM/SIGINT/SIGHUP;"
                    " then stop it and remove its datadir.",
    )
    parser.add_argument("--env-file", type=Path,
                        help="write DBHOST/DBPORT/DBSOCKET/DBPID/DBCA/DBDIR here once ready")
    parser.add_argument("--server-id", type=int)
    parser.add_argument("--log-bin", action="store_true")
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--buffer-pool", default="64M", help="innodb_buffer_pool_size")
    opts = parser.parse_args(argv)

    stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    # Blocked before the server starts, so a signal that arrives early is not lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    db = MariaDB(server_id=opts.server_id, log_bin=opts.log_bin, read_only=opts.read_only,
                 buffer_pool=opts.buffer_pool)
    try:
        db.start()
    except MariaDBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if opts.env_file:
            _write_env(opts.env_file, db)
        print(f"mariadb ready on {db.address} (socket {db.socket_path}, pid {db.pid})",
              flush=True)
        signal.sigwait(stop_signals)
    finally:
        db.stop()
        if opts.env_file:
            opts.env_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
