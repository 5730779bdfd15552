"""Fixtures for the Lua bridge tests: a plain ConnectionView and a script host factory.

The ConnectionView here is an ordinary dataclass implementing the Protocol of
``chassis_proxy.hooks`` (the proxy's connection code implements the same Protocol);
the bridge under test runs for real on the default runtime (PUC Lua 5.1; test_limits also
on LuaJIT).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chassis_proxy.hooks import (
    AddressInfo,
    BackendState,
    BackendType,
    InjectionQueue,
    PeerInfo,
)
from chassis_proxy.lua import LuaScriptHost

LOGGER = "chassis.proxy.lua.test"


@dataclass
class Backend:
    """A BackendView."""

    address: AddressInfo
    type: BackendType = BackendType.RW
    state: BackendState = BackendState.UNKNOWN
    uuid: str | None = None
    connected_clients: int = 0


@dataclass
class Pool:
    """What a backend with connection pooling exposes to proxy.global.backends[i].pool."""

    min_idle_connections: int = 0
    max_idle_connections: int = 0
    idle: dict[str, int] = field(default_factory=dict)

    def cur_idle_connections(self, username: str) -> int:
        return self.idle.get(username, 0)


@dataclass
class PooledBackend(Backend):
    pool: Pool = field(default_factory=Pool)


def tcp(host: str, port: int) -> AddressInfo:
    return AddressInfo(f"{host}:{port}", host, port, socket.AF_INET)


@dataclass
class Conn:
    """A ConnectionView."""

    client: PeerInfo = field(
        default_factory=lambda: PeerInfo(src=tcp("127.0.0.1", 50123), dst=tcp("127.0.0.1", 4040))
    )
    server: PeerInfo | None = None
    backend_ndx: int = 0
    connection_close: bool = False
    queries: InjectionQueue = field(default_factory=InjectionQueue)
    connection_id: int = 1
    backend_list: list[Any] = field(default_factory=lambda: [Backend(tcp("127.0.0.1", 3306))])

    @property
    def backends(self) -> list[Any]:
        return self.backend_list


@dataclass
class Env:
    """A script file, a host running it and the log lines it wrote."""

    tmp_path: Path
    caplog: pytest.LogCaptureFixture
    hosts: list[LuaScriptHost] = field(default_factory=list)
    script: Path | None = None
    counter: int = 0
    runtime: str | None = None  # "luajit21" or "lua51"; None: the default

    def write(self, source: str, name: str = "script.lua") -> Path:
        path = self.tmp_path / name
        path.write_text(source)
        if name == "script.lua":
            self.script = path
        return path

    def host(self, source: str | None = None, **kw: Any) -> LuaScriptHost:
        if source is not None:
            self.write(source)
        assert self.script is not None
        kw.setdefault("logger", logging.getLogger(LOGGER))
        kw.setdefault("runtime", self.runtime)
        h = LuaScriptHost(self.script, **kw)
        self.hosts.append(h)
        return h

    def conn(self, **kw: Any) -> Conn:
        self.counter += 1
        kw.setdefault("connection_id", self.counter)
        return Conn(**kw)

    def lines(self, level: int | None = None) -> list[str]:
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.name == LOGGER and (level is None or r.levelno == level)
        ]


@pytest.fixture
def env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Env]:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    e = Env(tmp_path, caplog)
    yield e
    for h in e.hosts:
        h.close()


@pytest.fixture
def run(env: Env) -> Callable[..., Any]:
    """``run(lua_source)``: a host with a read_query that evaluates ``source`` and returns
    what it returns through a proxy.response row (for quick value checks)."""

    def _run(body: str, **kw: Any) -> Any:
        h = env.host(body, **kw)
        return h, h.open(env.conn())

    return _run


def lua_path_for(*dirs: Path) -> str:
    return ";".join(f"{d}{os.sep}?.lua" for d in dirs) + ";;"


# -- decoding what the client would get ---------------------------------------------------------


def resultset(payloads: list[bytes] | None) -> tuple[list[Any], list[list[bytes | None]]]:
    """(column definitions, rows) of a text result set made of ``payloads``."""
    from chassis_mysql.packets import is_eof
    from chassis_mysql.resultset import ColumnDefinition, column_count, parse_text_row

    assert payloads, "no payloads"
    n = column_count(payloads[0])
    columns = [ColumnDefinition.parse(p) for p in payloads[1 : 1 + n]]
    assert is_eof(payloads[1 + n]), payloads
    assert is_eof(payloads[-1]), payloads
    rows = [parse_text_row(p, n) for p in payloads[2 + n : -1]]
    return columns, rows


def error_of(payloads: list[bytes] | None) -> Any:
    """The ERR packet of a one-packet response."""
    from chassis_mysql.packets import ERR

    assert payloads is not None and len(payloads) == 1, payloads
    return ERR.parse(payloads[0])


PROBE = """
-- read_query evaluates the query text as a Lua expression list (in this connection's env)
-- and answers with one row: pcall's status, then the values, as strings
-- (the expression is not a tail call, so errors it raises carry "probe:1:")
function read_query(packet)
  local source = "local function pack(...) return { n = select('#', ...), ... } end "
    .. "local r = pack(" .. packet:sub(2) .. ") return unpack(r, 1, r.n)"
  local chunk = assert(loadstring(source, "=probe"))
  setfenv(chunk, getfenv(1))
  local function pack(...) return { n = select("#", ...), ... } end
  local r = pack(pcall(chunk))
  local n = r.n
  local fields, row = {}, {}
  for i = 1, n do
    fields[i] = { name = "v" .. i, type = proxy.MYSQL_TYPE_STRING }
    if r[i] ~= nil then row[i] = tostring(r[i]) end
  end
  proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = { row } } }
  return proxy.PROXY_SEND_RESULT
end
"""


def probe(hooks: Any, expr: str) -> list[Any]:
    """Evaluate ``expr`` in a PROBE script instance: [ok, values...] as Python values."""
    outcome = hooks.read_query(b"\x03" + expr.encode())
    _, rows = resultset(outcome.response)
    out: list[Any] = []
    for cell in rows[0]:
        if cell is None:
            out.append(None)
        else:
            text = cell.decode()
            out.append({"true": True, "false": False}.get(text, text))
    return out
