"""Run MySQL Proxy 0.8.5's own test suite (``tests/suite/base``) against chassis.

Run through ``scripts/conformance`` (it installs ``mariadb-test`` and the venv first). The
suite is read from a checkout of MySQL Proxy's source (``--source DIR``) at run time and
never copied into this project. Each test runs the way upstream's ``tests/suite/run-tests.lua``
runs it:

* the test's ``t/NAME.options`` (Lua) is executed with the runner's functions
  (``start_proxy``, ``chain_proxy``, ``simulate_replication``, ``sql_execute``) and variables
  (``default_proxy_options``, ``PROXY_PORT``, ...); without one, ``default.options`` starts
  one proxy with ``t/NAME.lua`` copied to ``/tmp/dummy.lua`` (results name that path);
* the "mock servers" of ``chain_proxy`` are chassis instances running ``t/NAME-mock.lua``,
  which answer the login in ``connect_server`` and the queries in ``read_query``; the proxy
  under test runs ``t/NAME-test.lua`` with the mocks as its backends;
* ``mysqltest`` (Debian's ``mariadb-test``) runs ``t/NAME.test`` against the proxy and
  compares with ``r/NAME.result``.

Differences from upstream's runner, all for isolation or this machine: every test gets
fresh proxies (upstream reuses the default proxy between option-less tests and reloads its
script); tests run in name order (upstream: directory order); the real backend is a
throwaway MariaDB (``tests.support.mariadb``), not a server on port 3306; upstream's
``tests_to_skip.lua`` is not applied (the measure is "of 35"), its reason is shown beside a
failing test it lists. An ``.options`` file's ``--user=NAME`` account is created when the
system lacks it (change_user's ``_mysql``, which upstream's machines had; as root only,
and said in the output).

``mariadb-test`` words some client errors differently from libmysqlclient 5.x, which wrote
the ``.result`` files, and echoes the connect/connection/disconnect commands that 5.x's
mysqltest did not. When a result differs, the recorded output is normalised
(:func:`normalise`) and compared again; a test that passes only so says so. Tests that
need it: ``failover`` (wording: "Lost connection to MySQL server during query", "MySQL
server has gone away"; and the echo), ``pooling`` and ``load_multi`` (the echo).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lupa.lua51 as lupa  # noqa: E402  (runs the suite's .options files, as run-tests.lua does)

from tests.support.mariadb import MariaDB, MariaDBError  # noqa: E402

#: Where upstream's runner copies the script of a test without .options; results name it.
DEFAULT_SCRIPT = Path("/tmp/dummy.lua")
HOST = "127.0.0.1"
#: Seconds a chassis instance has to start listening.
START_TIMEOUT = 30.0
#: Seconds one mysqltest run may take (overlong sends 32 MiB packets).
TEST_TIMEOUT = 180.0
#: libmysqlclient 5.x's wording of client errors (which the .result files hold) for
#: MariaDB's (which mariadb-test prints): mariadb's text -> MySQL's text.
CLIENT_WORDING: tuple[tuple[str, str], ...] = (
    ("Lost connection to server during query", "Lost connection to MySQL server during query"),
    ("Server has gone away", "MySQL server has gone away"),
    ("Lost connection to server at", "Lost connection to MySQL server at"),
    ("Can't connect to server on", "Can't connect to MySQL server on"),
)

#: The connection commands MariaDB's mysqltest writes into the result (MySQL 5.x's did not).
CONNECTION_ECHO = re.compile(r"^(?:connect +\S.*|disconnect \S+|connection \S+);\n", re.MULTILINE)


class ConformanceError(RuntimeError):
    """The run cannot go on (bad --source, a proxy that does not start); says why."""


@dataclass
class Ports:
    """The ports upstream's runner derives from one random base (``get_port_base``)."""

    base: int

    @property
    def proxy(self) -> int:
        return self.base

    @property
    def master(self) -> int:
        return self.base + 10

    @property
    def admin(self) -> int:
        return self.base + 15

    @property
    def slave(self) -> int:
        return self.base + 20

    @property
    def chain(self) -> int:
        return self.base + 30

    @classmethod
    def pick(cls) -> Ports:
        """A base whose 64 ports are free now, in upstream's range and step."""
        for _ in range(200):
            base = 32768 + 64 * random.randrange((65535 - 32768 - 64) // 64)
            if all(_port_free(base + offset) for offset in range(64)):
                return cls(base)
        raise ConformanceError("no free range of 64 TCP ports found")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _listening(address: str) -> bool:
    """Whether *address* (host:port or a unix socket path) is listening, without connecting.

    A probe connection would run the script's ``connect_server`` (mysql-40 counts them).
    """
    if ":" not in address:
        flags_listen = "00010000"  # __SO_ACCEPTCON
        with contextlib.suppress(OSError), open("/proc/net/unix") as unix:
            return any(line.split()[-1] == address and line.split()[3] == flags_listen
                       for line in unix.readlines()[1:] if len(line.split()) >= 8)
        return False
    port = int(address.rsplit(":", 1)[1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as tcp:
            for line in tcp.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


@dataclass
class Instance:
    """One running chassis (a proxy under test or a mock server)."""

    name: str
    options: dict[str, list[str]]
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return self.options["proxy-address"][0]


@dataclass
class Outcome:
    """What one test gave."""

    name: str
    passed: bool
    note: str = ""
    diff: str = ""
    output: str = ""


@dataclass
class Suite:
    """Runs the tests of one ``tests/suite/base`` against chassis; the upstream runner's state."""

    source: Path
    chassis: str
    mysqltest: str
    client: str
    db: MariaDB
    workdir: Path
    lua_path: str
    verbose: bool = False
    ports: Ports = field(default_factory=Ports.pick)
    running: dict[str, Instance] = field(default_factory=dict)
    #: The current test's directory: its instances' logs, mysqltest's files.
    testdir: Path = Path()

    @property
    def suite_dir(self) -> Path:
        return self.source / "tests" / "suite"

    @property
    def basedir(self) -> Path:
        return self.suite_dir / "base"

    def tests(self) -> list[str]:
        return sorted(p.stem for p in (self.basedir / "t").glob("*.test"))

    def skip_reasons(self) -> dict[str, str]:
        """Upstream's tests_to_skip.lua, read (not applied) to explain failures."""
        path = self.basedir / "tests_to_skip.lua"
        if not path.exists():
            return {}
        lua = lupa.LuaRuntime()
        lua.execute(path.read_text())
        table = lua.globals().tests_to_skip
        return {str(k): str(v) for k, v in table.items()} if table is not None else {}

    # -- the runner's option tables and functions -----------------------------------------

    def _defaults(self, port: int, pid: str) -> dict[str, str]:
        return {
            "proxy-backend-addresses": self.db.address,
            "proxy-address": f"{HOST}:{port}",
            "pid-file": str(self.workdir / pid),
            "proxy-lua-script": str(DEFAULT_SCRIPT),
            "plugin-dir": str(self.workdir),
            "basedir": str(self.workdir),
        }

    def _lua_env(self, script: Path) -> Any:
        """A Lua state holding what run-tests.lua offers an .options file."""
        lua = lupa.LuaRuntime(unpack_returned_tuples=True)
        g = lua.globals()
        ports = self.ports
        for name, value in {
            "PROXY_HOST": HOST, "PROXY_PORT": str(ports.proxy),
            "PROXY_MASTER_PORT": str(ports.master), "PROXY_SLAVE_PORT": str(ports.slave),
            "PROXY_CHAIN_PORT": str(ports.chain), "ADMIN_PORT": str(ports.admin),
            "ADMIN_MASTER_PORT": str(ports.base + 25), "ADMIN_SLAVE_PORT": str(ports.base + 35),
            "ADMIN_CHAIN_PORT": str(ports.base + 45), "ADMIN_USER": "root", "ADMIN_PASSWORD": "",
            "PROXY_PIDFILE": str(self.workdir / "mysql-proxy-test.pid"),
            "PROXY_LIBPATH": str(self.workdir), "PROXY_TEST_BASEDIR": str(self.workdir),
            "DEFAULT_SCRIPT_FILENAME": str(DEFAULT_SCRIPT), "default_proxy_name": "default",
            "global_basedir": str(self.basedir),
        }.items():
            g[name] = value
        proxy = self._defaults(ports.proxy, "mysql-proxy-test.pid")
        proxy["proxy-lua-script"] = str(script)
        g.default_proxy_options = lua.table_from(proxy)
        g.default_master_options = lua.table_from(self._defaults(ports.master, "mysql-proxy-test-master.pid"))
        g.default_slave_options = lua.table_from(self._defaults(ports.slave, "mysql-proxy-test-slave.pid"))
        g.start_proxy = lambda name, options: self.start_proxy(str(name), _options(options))
        g.simulate_replication = lambda master=None, slave=None: self.simulate_replication(
            _options(master) if master is not None else None, _options(slave) if slave is not None else None)
        g.chain_proxy = lambda backends, second=None, use_replication=None: self.chain_proxy(
            [str(v) for v in backends.values()] if lupa.lua_type(backends) == "table" else [str(backends)],
            str(second) if second is not None else None, bool(use_replication))
        g.sql_execute = lambda queries, proxy_name=None: self.sql_execute(
            [str(v) for v in queries.values()] if lupa.lua_type(queries) == "table" else [str(queries)],
            str(proxy_name) if proxy_name is not None else None)
        return lua

    def start_proxy(self, name: str, options: dict[str, list[str]]) -> int:
        for user in options.get("user", []):
            ensure_system_user(user)
        script = options.get("proxy-lua-script", [str(DEFAULT_SCRIPT)])[0]
        if not Path(script).exists():
            options["proxy-lua-script"] = [str(self.basedir / "t" / script)]
        args = [self.chassis]
        for key, values in options.items():
            args += [f"--{key}={value}" for value in values]
        args.append(f"--lua-path={self.lua_path}")
        # not NAME.log: mysqltest writes TEST.log in the same directory, and change_user's
        # proxy is named after its test
        log = self.testdir / f"{name}.chassis.log"
        if self.verbose:
            print(f"   starting {name}: {' '.join(args)}", flush=True)
        with open(log, "ab") as out:
            # MYSQL_PROXY_VERSION: upstream's build set it for the proxies it tested; chassis
            # speaks for MySQL Proxy 0.8.5 (proxy.PROXY_VERSION is 0x000805).
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.workdir, start_new_session=True,
                                    env=dict(os.environ, MYSQL_PROXY_VERSION="0.8.5"))
        instance = Instance(name, options, proc, log)
        self.running[name] = instance
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(instance.address):
            if proc.poll() is not None or time.monotonic() > deadline:
                lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                last = lines[-1].split(": ", 1)[-1] if lines else "no output"
                raise ConformanceError(f"{name} did not start (exit {proc.poll()}): {last}")
            time.sleep(0.05)
        return 0

    def simulate_replication(self, master: dict[str, list[str]] | None,
                             slave: dict[str, list[str]] | None) -> None:
        defaults = {k: [v] for k, v in self._defaults(self.ports.master, "m.pid").items()}
        self.start_proxy("master", master or defaults)
        defaults = {k: [v] for k, v in self._defaults(self.ports.slave, "s.pid").items()}
        self.start_proxy("slave", slave or defaults)

    def chain_proxy(self, mocks: Sequence[str], second: str | None, use_replication: bool) -> None:
        addresses = []
        for i, mock in enumerate(mocks, start=1):
            address = f"{HOST}:{self.ports.chain + i - 1}"
            addresses.append(address)
            if use_replication and "master" not in self.running:
                self.simulate_replication(None, None)
            backend = f"{HOST}:{self.ports.master}" if use_replication else self.db.address
            self.start_proxy(f"backend_proxy{i}", {
                "proxy-backend-addresses": [backend], "proxy-address": [address],
                "pid-file": [str(self.workdir / f"chain{i}.pid")],
                "proxy-lua-script": [mock or str(DEFAULT_SCRIPT)],
                "plugin-dir": [str(self.workdir)], "basedir": [str(self.workdir)],
                "log-level": ["critical"],
            })
        self.start_proxy("second_proxy", {
            "proxy-backend-addresses": addresses, "proxy-address": [f"{HOST}:{self.ports.proxy}"],
            "pid-file": [str(self.workdir / "mysql-proxy-test.pid")],
            "proxy-lua-script": [second or str(DEFAULT_SCRIPT)],
            "plugin-dir": [str(self.workdir)], "basedir": [str(self.workdir)],
            "log-level": ["critical"],
        })

    def sql_execute(self, queries: Sequence[str], proxy_name: str | None) -> int:
        port = str(self.db.port)
        if proxy_name is not None:
            port = self.running[proxy_name].address.rsplit(":", 1)[1]
        done = subprocess.run(
            [self.client, "--user=root", "--password=", "--database=test", f"--host={HOST}",
             f"--port={port}", "--execute=" + "".join(";" + q for q in queries)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0 and proxy_name is not None:
            raise ConformanceError(f"sql_execute through {proxy_name} failed: {done.stderr}")
        return done.returncode

    def stop_all(self) -> None:
        for instance in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(instance.proc.pid, signal.SIGTERM)
        for instance in self.running.values():
            try:
                instance.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(instance.proc.pid, signal.SIGKILL)
                instance.proc.wait()
        self.running.clear()

    # -- one test -----------------------------------------------------------------------

    def run(self, name: str) -> Outcome:
        tdir = self.basedir / "t"
        self.testdir = self.workdir / name
        self.testdir.mkdir(exist_ok=True)
        script = tdir / f"{name}.lua"
        options = tdir / f"{name}.options"
        DEFAULT_SCRIPT.write_bytes(b"")
        if script.exists() and not options.exists():
            shutil.copyfile(script, DEFAULT_SCRIPT)
            script = DEFAULT_SCRIPT
        elif not script.exists():
            script = DEFAULT_SCRIPT
        try:
            lua = self._lua_env(script)
            lua.execute((options if options.exists() else tdir / "default.options").read_text())
        except (ConformanceError, lupa.LuaError) as exc:
            self.stop_all()
            return Outcome(name, False, note=f"set-up failed: {exc}")
        try:
            return self._mysqltest(name)
        finally:
            self.stop_all()

    def _mysqltest(self, name: str) -> Outcome:
        logdir = self.testdir
        expected = self.basedir / "r" / f"{name}.result"
        # mysqltest writes NAME.reject beside the result file: use a copy, not the source tree.
        result = logdir / f"{name}.result"
        shutil.copyfile(expected, result)
        env = dict(os.environ, MYSQL_USER="root", MYSQL_PASSWORD="", PROXY_HOST=HOST,
                   PROXY_PORT=str(self.ports.proxy), PROXY_CHAIN_PORT=str(self.ports.chain),
                   MASTER_PORT=str(self.ports.master), SLAVE_PORT=str(self.ports.slave),
                   srcdir=str(self.suite_dir))
        # --skip-ssl: libmysqlclient 5.x used TLS only when asked; libmariadb tries it and
        # then reports an ERR before the greeting as 2002 "before completion of TLS handshake".
        cmd = [self.mysqltest, "--user=root", "--password=", "--database=test", f"--host={HOST}",
               f"--port={self.ports.proxy}", "--skip-ssl", "--max-connect-retries=20",
               f"--test-file={self.basedir / 't' / (name + '.test')}",
               f"--result-file={result}", f"--logdir={logdir}", f"--tmpdir={logdir}"]
        # load-data-infile's mock asks for "Makefile": upstream ran mysqltest in the suite's
        # build directory, which has one; a copy of the suite's Makefile.am stands in.
        shutil.copyfile(self.suite_dir / "Makefile.am", logdir / "Makefile")
        try:
            done = subprocess.run(cmd, env=env, cwd=logdir, capture_output=True, text=True, timeout=TEST_TIMEOUT,
                                  check=False, errors="replace")
        except subprocess.TimeoutExpired:
            return Outcome(name, False, note=f"mysqltest took over {TEST_TIMEOUT:.0f}s")
        output = done.stdout + done.stderr
        (logdir / "mysqltest.out").write_text(output)
        if done.returncode == 0:
            return Outcome(name, True, output=output)
        reject = logdir / f"{name}.reject"
        if not reject.exists():
            died = self._died()
            note = _first_error(output) + (f" ({died})" if died else "")
            return Outcome(name, False, note=note, output=output)
        want = expected.read_text(errors="replace")
        got = reject.read_text(errors="replace")
        normalised = normalise(got)
        if normalised == want:
            return Outcome(name, True, note="client error wording normalised", output=output)
        diff = "".join(difflib.unified_diff(want.splitlines(True), normalised.splitlines(True),
                                            f"r/{name}.result", f"{name}.reject (normalised)"))
        return Outcome(name, False, note="result differs", diff=diff, output=output)


    def _died(self) -> str:
        """Which instance exited during the test, with its last critical line."""
        for instance in self.running.values():
            if instance.proc.poll() is not None:
                lines = instance.log.read_text(errors="replace").splitlines()
                critical = [line for line in lines if "(critical)" in line] or lines or [""]
                why = critical[-1].split(": ", 1)[-1][:300]
                return f"{instance.name} exited" + (f": {why}" if why else "")
        return ""


def ensure_system_user(user: str) -> None:
    """Create the system account an .options file names with ``--user`` when it is missing.

    change_user runs its proxy with ``--user=_mysql``, an account upstream's machines had
    (OS X and the BSDs ship it; Debian does not). Only as root (the proxy must be started
    as root to change user anyway); the creation is announced, and the account has no home
    and no login shell.
    """
    import pwd

    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise ConformanceError(f"--user={user}: no such system user, and only root can create it"
                               f" (useradd --system {user})")
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConformanceError(f"cannot create the system user {user}: {done.stderr.strip()}")
    print(f"   created the system user {user} (an .options file runs a proxy with --user={user};"
          " upstream's machines had it)", flush=True)


def normalise(text: str) -> str:
    """mariadb-test's output in the form of MySQL 5.x's mysqltest, which wrote the results.

    Client errors are worded as libmysqlclient 5.x worded them, and the ``connect``,
    ``connection`` and ``disconnect`` commands that MariaDB's mysqltest echoes (5.x's did
    not) are dropped.
    """
    for mariadb, mysql in CLIENT_WORDING:
        text = text.replace(mariadb, mysql)
    return CONNECTION_ECHO.sub("", text)


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if "At line" in line or "failed" in line or "error" in line.lower():
            return line.strip()[:300]
    return output.strip().splitlines()[-1][:300] if output.strip() else "mysqltest failed"


def _options(table: Any) -> dict[str, list[str]]:
    """An options table of run-tests.lua as ``{name: [value, ...]}`` (tables repeat)."""
    result: dict[str, list[str]] = {}
    for key, value in table.items():
        if lupa.lua_type(value) == "table":
            result[str(key)] = [str(v) for v in value.values()]
        else:
            result[str(key)] = [str(value)]
    return result


@contextlib.contextmanager
def _default_script_lock() -> Iterator[None]:
    """One run at a time on this machine: every run writes /tmp/dummy.lua."""
    with open(f"{DEFAULT_SCRIPT}.conformance-lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConformanceError(f"another conformance run holds {lock.name}") from None
        yield


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="a checkout of mysql-proxy (tag rel-0.8.5): reads tests/suite/base and lib/")
    parser.add_argument("--test", action="append", default=[], metavar="NAME",
                        help="run only this test (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the logs of every instance and test")
    parser.add_argument("-v", "--verbose", action="store_true", help="show diffs and mysqltest's output")
    parser.add_argument("--lua-path", help="--lua-path for every chassis (default: the source's lib/ and"
                        " base/t/, as upstream's runner sets LUA_PATH, then chassis's own path)")
    parser.add_argument("--chassis", default=str(ROOT / ".venv" / "bin" / "chassis"),
                        help="the chassis command to test (default: this checkout's .venv)")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    if "--examples" in argv:  # MySQL Proxy's examples/, not its suite: scripts/examples.py
        from examples import main as examples_main

        return examples_main(argv)
    args = parse_args(argv)
    source: Path = (Path(os.environ.get("CONFORMANCE_CWD", ".")) / args.source).resolve()
    if not (source / "tests" / "suite" / "base" / "t").is_dir():
        print(f"error: {source} has no tests/suite/base/t (give --source a mysql-proxy checkout)",
              file=sys.stderr)
        return 2
    mysqltest = shutil.which("mariadb-test") or shutil.which("mysqltest")
    client = shutil.which("mariadb") or shutil.which("mysql")
    if not mysqltest or not client:
        print("error: mariadb-test and mariadb are needed (apt-get install mariadb-test mariadb-client)",
              file=sys.stderr)
        return 2
    if "/tmp/" in f"{source}/":
        # lib/load-multi.lua writes modules to /tmp/ and adds /tmp/?.lua to package.path
        # only when the path does not mention /tmp/ already: load_multi fails.
        print(f"warning: {source} is under a /tmp/ directory: load_multi will fail"
              " (lib/load-multi.lua's package.path check); extract the source elsewhere", flush=True)
    lua_path = args.lua_path or f"{source}/lib/?.lua;{source}/tests/suite/base/t/?.lua;;"
    workdir = Path(tempfile.mkdtemp(prefix="chassis-conformance-"))
    passed = failed = 0
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_default_script_lock())
            db = stack.enter_context(MariaDB(name="conformance"))
            suite = Suite(source, args.chassis, mysqltest, client, db, workdir, lua_path, args.verbose)
            names = args.test or suite.tests()
            unknown = [n for n in names if not (suite.basedir / "t" / f"{n}.test").exists()]
            if unknown:
                print(f"error: no such test: {', '.join(unknown)}", file=sys.stderr)
                return 2
            skips = suite.skip_reasons()
            print(f"chassis {args.chassis}; MariaDB {db.address}; ports from {suite.ports.base};"
                  f" {len(names)} tests", flush=True)
            for name in names:
                started = time.monotonic()
                outcome = suite.run(name)
                took = time.monotonic() - started
                mark = "pass" if outcome.passed else "FAIL"
                note = outcome.note
                if not outcome.passed and name in skips:
                    note += f" [upstream skips it: {skips[name]}]"
                print(f"{mark} {name:<26} {took:5.1f}s {note}".rstrip(), flush=True)
                if args.verbose and not outcome.passed:
                    print(outcome.diff or outcome.output, flush=True)
                passed += outcome.passed
                failed += not outcome.passed
    except (MariaDBError, ConformanceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        DEFAULT_SCRIPT.unlink(missing_ok=True)
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
