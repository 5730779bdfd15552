"""Run MySQL Proxy 0.8.5's example scripts (``examples/tutorial-*.lua``) through chassis.

Run through ``scripts/examples`` or ``scripts/conformance --examples`` (they install the
venv first). The scripts are read from a checkout of MySQL Proxy's source (``--source
DIR``) at run time and never copied into this project. For each example a chassis starts
with ``--proxy-lua-script=<source>/examples/tutorial-X.lua`` and ``--lua-path`` as MySQL
Proxy's install had it (the source's ``lib/?.lua``, then chassis' own path) in front of a
throwaway MariaDB (``tests.support.mariadb``); real clients (the ``mariadb`` CLI, PyMySQL,
mysql-connector-python for prepared statements) drive it as the script's comments
describe, and the check asserts what those comments say it does: what the client
receives and what the script prints (its ``print`` goes to the worker's standard output).
The checks themselves are in ``scripts/examples_checks.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pymysql  # noqa: E402

from tests.support.chassis_proc import ChassisProcess, ChassisStartError, start_chassis  # noqa: E402
from tests.support.mariadb import ACCOUNTS, MariaDB, MariaDBError, free_port  # noqa: E402

HOST = "127.0.0.1"
#: Seconds a script's print may take to show after the client got its answer.
PRINT_TIMEOUT = 15.0


class CheckFailed(AssertionError):
    """An example did not do what its comments say; the message says what differed."""


def expect(condition: object, reason: str) -> None:
    """Fail the current check with *reason* unless *condition* holds."""
    if not condition:
        raise CheckFailed(reason)


@dataclass
class Run:
    """One chassis running one example: how to reach it and what the script printed."""

    name: str
    process: ChassisProcess
    port: int
    log: Path

    def printed(self) -> str:
        """Everything the script printed so far (the worker's standard output)."""
        return self.process.stderr_text()

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log.read_text(errors="replace")
        return ""

    def wait_printed(self, pattern: str, count: int = 1, timeout: float = PRINT_TIMEOUT) -> str:
        """The output once the regular expression *pattern* matched *count* times in it.

        A script prints from ``read_query_result`` or ``disconnect_client`` after the
        client already has its answer: the check waits for the line, it does not sleep.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.printed()
            if len(re.findall(pattern, text, re.MULTILINE)) >= count:
                return text
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-8:])
                raise CheckFailed(f"the script did not print {pattern!r}"
                                  f"{f' {count} times' if count > 1 else ''} within {timeout:.0f}s;"
                                  f" its last output: {tail!r}")
            time.sleep(0.02)

    def connect(self, user: str = "root", **kwargs: Any) -> pymysql.Connection[Any]:
        """PyMySQL through the proxy; ``autocommit=None`` by default: no query of its own."""
        account = ACCOUNTS.get(user)
        kwargs.setdefault("password", account.password if account else "")
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("read_timeout", 30)
        kwargs.setdefault("autocommit", None)
        return pymysql.connect(host=HOST, port=self.port, user=user, **kwargs)

    def rows(self, conn: Any, sql: str) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(row) for row in cur.fetchall()]

    def cli(self, sql: str, *args: str, user: str = "root", password: str = "") -> subprocess.CompletedProcess[str]:
        """``mariadb --batch -e SQL`` through the proxy; never raises on a non-zero exit."""
        cmd = [shutil.which("mariadb") or "mariadb", "--no-defaults", f"--host={HOST}", f"--port={self.port}",
               "--protocol=TCP", f"--user={user}", "--skip-ssl", "--batch", "--connect-timeout=10", *args]
        if password:
            cmd.append(f"--password={password}")
        return subprocess.run([*cmd, "-e", sql], capture_output=True, text=True, timeout=60, check=False)


def mysql_error(fn: Callable[[], object]) -> tuple[int, str]:
    """Call *fn*, which must fail with a MySQL error: its (code, message)."""
    try:
        fn()
    except pymysql.err.MySQLError as exc:
        args = exc.args
        return int(args[0]), str(args[1]) if len(args) > 1 else ""
    raise CheckFailed("the client got no error")


@dataclass
class Lab:
    """The source checkout, the throwaway server, and the chassis started for one example."""

    source: Path
    db: MariaDB
    workdir: Path
    lua_path: str
    verbose: bool = False
    #: Options given to every chassis (``--chassis-arg``).
    extra_args: list[str] = field(default_factory=list)
    started: list[Run] = field(default_factory=list)
    #: Critical log lines the current example is expected to cause (regular expressions):
    #: what 0.8.5 logged as critical for it too. Any other fails the example.
    allowed_critical: list[str] = field(default_factory=list)

    def script(self, name: str) -> Path:
        return self.source / "examples" / f"{name}.lua"

    def start(self, name: str, *extra: str, backends: Sequence[str] | None = None) -> Run:
        """A chassis running the example *name* (``tutorial-basic``) with *extra* options."""
        port = free_port()
        log = self.workdir / f"{name}-{len(self.started)}.log"
        args = ["--plugins=proxy", f"--proxy-address={HOST}:{port}", f"--log-file={log}",
                f"--proxy-lua-script={self.script(name)}", f"--lua-path={self.lua_path}", *self.extra_args, *extra]
        args += [f"--proxy-backend-addresses={b}" for b in (backends or [self.db.address])]
        if self.verbose:
            print(f"   starting: chassis {' '.join(args)}", flush=True)
        try:
            process = start_chassis(args, cwd=self.workdir, timeout=30)
        except ChassisStartError as exc:
            raise CheckFailed(f"chassis did not start: {str(exc).splitlines()[0]}") from None
        run = Run(name, process, port, log)
        self.started.append(run)
        return run

    def stop_all(self) -> list[str]:
        """Stop every chassis of the example; the critical lines their logs hold."""
        critical = []
        for run in self.started:
            run.process.stop(timeout=15)
            critical += [line for line in run.log_text().splitlines() if "(critical)" in line]
        self.started.clear()
        return critical


@dataclass
class Outcome:
    name: str
    passed: bool
    note: str
    seconds: float


def run_example(lab: Lab, name: str, check: Callable[[Lab], str]) -> Outcome:
    """Run one check; its chassis are stopped whatever happens."""
    started = time.monotonic()
    try:
        note = check(lab)
        passed = True
    except AssertionError as exc:  # CheckFailed, or a wait of tests.support that timed out
        note, passed = str(exc).splitlines()[0] if str(exc) else "failed", False
    except (pymysql.err.MySQLError, OSError, subprocess.SubprocessError, ValueError) as exc:
        note, passed = f"{type(exc).__name__}: {exc}", False
    finally:
        if lab.verbose and lab.started:
            for run in lab.started:
                print(f"   --- {run.name} printed:\n{run.printed()}   --- log {run.log}:\n{run.log_text()}",
                      flush=True)
        critical = [line for line in lab.stop_all()
                    if not any(re.search(p, line) for p in lab.allowed_critical)]
        lab.allowed_critical.clear()
    if critical and passed:
        note, passed = f"chassis logged {len(critical)} critical line(s): {critical[0][-300:]}", False
    return Outcome(name, passed, note, time.monotonic() - started)


@contextlib.contextmanager
def _lab(source: Path, verbose: bool, extra_args: Sequence[str] = ()) -> Iterator[Lab]:
    workdir = Path(tempfile.mkdtemp(prefix="chassis-examples-"))
    try:
        with MariaDB(name="examples") as db:
            # MySQL Proxy's install put its lib/ on LUA_PATH; ";;" keeps chassis' own path after it
            yield Lab(source, db, workdir, f"{source}/lib/?.lua;;", verbose, list(extra_args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="a checkout of mysql-proxy (tag rel-0.8.5): reads examples/ and lib/")
    parser.add_argument("--example", action="append", default=[], metavar="NAME",
                        help="run only this example (tutorial-basic or basic; repeatable)")
    parser.add_argument("--chassis-arg", action="append", default=[], metavar="OPTION",
                        help="one more option for every chassis, e.g. --chassis-arg=--lua-runtime=luajit")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show each chassis command line, what each script printed and its log")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    from examples_checks import CHECKS

    args = parse_args([a for a in argv if a != "--examples"])
    source: Path = (Path(os.environ.get("CONFORMANCE_CWD", ".")) / args.source).resolve()
    if not (source / "examples").is_dir() or not (source / "lib").is_dir():
        print(f"error: {source} has no examples/ and lib/ (give --source a mysql-proxy checkout)", file=sys.stderr)
        return 2
    present = sorted(p.stem for p in (source / "examples").glob("tutorial-*.lua"))
    unchecked = [n for n in present if n not in CHECKS]
    wanted = [n if n.startswith("tutorial-") else f"tutorial-{n}" for n in args.example] or present
    unknown = [n for n in wanted if n not in present]
    if unknown:
        print(f"error: no such example in {source}/examples: {', '.join(unknown)}", file=sys.stderr)
        return 2
    passed = failed = 0
    try:
        with _lab(source, args.verbose, args.chassis_arg) as lab:
            print(f"chassis {ROOT}; MariaDB {lab.db.address}; {len(wanted)} examples from {source}/examples",
                  flush=True)
            for name in wanted:
                if name in unchecked:
                    outcome = Outcome(name, False, "no check written for this example", 0.0)
                else:
                    outcome = run_example(lab, name, CHECKS[name])
                mark = "ok  " if outcome.passed else "FAIL"
                sep = ": " if not outcome.passed else (" " if outcome.note else "")
                print(f"{mark} {name:<24} {outcome.seconds:5.1f}s{sep}{outcome.note}".rstrip(), flush=True)
                passed += outcome.passed
                failed += not outcome.passed
    except MariaDBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
