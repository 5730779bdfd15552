"""Fixtures for Lua scripts end to end: a real ``chassis --proxy-lua-script=…`` process in
front of the session's MariaDB, reached by real clients.

The scripts are ours (inline in the tests or in ``scripts/`` next to this file). A
chassis starts in about 0.3 s, so each test that needs its own script or options starts
its own with ``lua_proxy``; the MariaDB is the session's one (``tests/conftest.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.proxy.conftest import Proxy, StartProxy, start_proxy  # noqa: F401  (fixture)
from tests.support.mariadb import MariaDB

SCRIPTS = Path(__file__).parent / "scripts"

#: The ERR of reference 3.8 for a proxy.response that cannot be sent.
RESPONSE_FAILED = "(lua) handling proxy.response failed, check error-log"


@dataclass
class LuaProxy(Proxy):
    """A chassis running ``script``; rewriting the file changes what new clients get."""

    script: Path = Path()

    def rows(self, sql: str, **kwargs: Any) -> list[tuple[Any, ...]]:
        """One query on a fresh connection: its rows."""
        with self.connect(**kwargs) as conn:
            return query(conn, sql)

    def critical_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if "(critical)" in line]


LuaProxyFactory = Callable[..., LuaProxy]


def query(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` on a DB-API connection and return all its rows as tuples."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return [tuple(row) for row in cur.fetchall()] if cur.description else []
    finally:
        cur.close()


def write_script(path: Path, text: str) -> Path:
    """Write a Lua script (dedented) and return its path."""
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def lua_proxy(start_proxy: StartProxy, mariadb: MariaDB,  # noqa: F811
              tmp_path: Path) -> LuaProxyFactory:
    """``lua_proxy(script, *extra_args, backends=None)`` -> a ready :class:`LuaProxy`.

    ``script`` is Lua source (written to a file in ``tmp_path``) or the :class:`Path` of
    a file (used as it is); ``backends`` defaults to the session's MariaDB.
    """
    count = 0

    def start(script: str | Path, *extra: str, backends: Sequence[str] | None = None,
              **kwargs: Any) -> LuaProxy:
        nonlocal count
        count += 1
        if isinstance(script, str):
            script = write_script(tmp_path / f"script{count}.lua", script)
        proxy = start_proxy(list(backends) if backends is not None else [mariadb.address],
                            [f"--proxy-lua-script={script}", *extra], **kwargs)
        return LuaProxy(proxy.process, proxy.host, proxy.port, proxy.log_file, script)

    return start


@pytest.fixture(scope="session")
def mariadb_cli() -> str:
    """Path of the ``mariadb`` command-line client."""
    found = shutil.which("mariadb")
    if found is None:
        pytest.skip("the mariadb command-line client is not installed (Debian: mariadb-client)")
    return found


def run_cli(cli: str, proxy: Proxy, sql: str, *args: str, user: str = "root",
            password: str = "") -> subprocess.CompletedProcess[str]:
    """``mariadb --batch -e SQL`` through ``proxy``; never raises on a non-zero exit."""
    cmd = [cli, "-h", proxy.host, "-P", str(proxy.port), "-u", user, "--skip-ssl", "--batch",
           "--connect-timeout=10", *args, "-e", sql]
    if password:
        cmd.insert(-2, f"-p{password}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def expect_error(fn: Callable[[], object]) -> tuple[int, str]:
    """Call ``fn``; it must raise a PyMySQL error with (code, message)."""
    with pytest.raises(pymysql.err.MySQLError) as info:
        fn()
    args = info.value.args
    return int(args[0]), str(args[1]) if len(args) > 1 else ""


@pytest.fixture
def cleanup_tables(mariadb: MariaDB) -> Iterator[list[str]]:
    """Tables a test creates (``test.x``): dropped at teardown."""
    tables: list[str] = []
    yield tables
    for name in tables:
        mariadb.sql(f"DROP TABLE IF EXISTS {name}")
