"""The proxy's series of issue 12's leftovers, scraped from a real chassis: latency, commands
by type and server errors without a script; Lua hook calls, errors and timeouts; pool taken."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from tests.metrics.test_prometheus import scrape
from tests.proxy.conftest import StartProxy
from tests.support.chassis_proc import free_port
from tests.support.mariadb import MariaDB


def test_relay_times_commands_and_counts_server_errors(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    address = f"127.0.0.1:{free_port()}"
    proxy = start_proxy([mariadb.address], ["--event-threads=2", f"--metrics-address={address}"])
    backend = (("backend", mariadb.address),)
    for _ in range(3):
        with proxy.connect(autocommit=None) as conn, conn.cursor() as cur:
            for i in range(4):
                cur.execute("SELECT %s", (i,))
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute("SELEC 1")
    m = scrape(address)
    queries = m["chassis_proxy_commands_total", (*backend, ("command", "query"))]
    assert queries >= 15  # ours, and whatever PyMySQL sends by itself
    assert m["chassis_proxy_server_errors_total", backend] == 3
    # every followed command with an answer is timed (COM_QUIT has none)
    assert m["chassis_proxy_query_duration_seconds_count", backend] == queries
    assert m["chassis_proxy_query_duration_seconds_sum", backend] > 0
    assert m["chassis_proxy_digest_errors_total", (("digest", _id(m, "selec ?")), ("digest_text", "selec ?"))] == 3


def _id(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], text: str) -> str:
    return next(dict(labels)["digest"] for name, labels in m
                if name == "chassis_proxy_digest_queries_total" and dict(labels)["digest_text"] == text)


def test_lua_hook_calls_errors_and_timeouts(start_proxy: StartProxy, mariadb: MariaDB,
                                            tmp_path: Path) -> None:
    script = tmp_path / "faulty.lua"
    script.write_text(
        "function read_query(packet)\n"
        "  local q = packet:sub(2)\n"
        "  if q == \"SELECT 'boom'\" then error('boom') end\n"
        "  if q == \"SELECT 'loop'\" then while true do end end\n"
        "end\n"
        "function read_query_result(inj) end\n")
    address = f"127.0.0.1:{free_port()}"
    proxy = start_proxy([mariadb.address], [f"--metrics-address={address}",
                                            f"--proxy-lua-script={script}", "--lua-hook-timeout=0.2"])
    with proxy.connect(autocommit=None) as conn, conn.cursor() as cur:
        for q in ("SELECT 1", "SELECT 'boom'", "SELECT 'loop'", "SELECT 2"):
            cur.execute(q)  # a failed hook forwards the query (--proxy-lua-on-error=forward)
    m = scrape(address)
    read_query = (("hook", "read_query"),)
    assert m["chassis_proxy_lua_hook_calls_total", read_query] >= 4
    assert m["chassis_proxy_lua_hook_seconds_total", read_query] >= 0.2  # the loop ran that long
    assert m["chassis_proxy_lua_hook_errors_total", (*read_query, ("reason", "error"))] == 1
    assert m["chassis_proxy_lua_hook_errors_total", (*read_query, ("reason", "timeout"))] == 1
    assert m["chassis_proxy_lua_hook_calls_total", (("hook", "script"),)] == 1  # one connection
    assert ("chassis_proxy_lua_hook_calls_total", (("hook", "read_query_result"),)) not in m


def test_pool_taken(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    address = f"127.0.0.1:{free_port()}"
    proxy = start_proxy([mariadb.address], [f"--metrics-address={address}",
                                            "--proxy-lua-script=rw-splitting.lua"])
    for _ in range(8):
        with proxy.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    m = scrape(address)
    backend = (("backend", mariadb.address),)
    # rw-splitting.lua's connect_server takes an idle connection once some are pooled
    assert m["chassis_proxy_pool_taken_total", backend] >= 1
