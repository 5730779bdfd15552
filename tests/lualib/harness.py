"""Test harness for the proxy.* Lua library: the real Lua host running scripts that require it.

The library lives in ``plugins/chassis_proxy/lualib``; until it is on the bridge's default
``package.path`` the host gets it through ``lua_path``. A :class:`Conn` is a plain
ConnectionView (the Protocol of ``chassis_proxy.hooks``); backends are dataclasses with a
pool that reports idle connections per user, as the connection pool will.

``lua.eval(code)`` runs Lua ``code`` (a chunk that returns one value) inside a
connection's ``read_query`` and gives the value back as Python data, through a JSON text
the script builds: tables become lists (keys 1..n) or dicts, strings are bytes mapped to
characters one to one (latin-1), nil is None. A Lua error raises :class:`LuaRaised`.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chassis_proxy
import pytest
from chassis_mysql.packets import ERR, OK, is_eof
from chassis_mysql.resultset import column_count, parse_text_row
from chassis_proxy.hooks import (
    AddressInfo,
    BackendState,
    BackendType,
    Decision,
    InjectionQueue,
    Outcome,
    PeerInfo,
)
from chassis_proxy.lua import LuaConnectionHooks, LuaScriptHost

LUALIB = Path(chassis_proxy.__file__).resolve().parent / "lualib"
LOGGER = "chassis.proxy.lua.lualib-test"


def tcp(host: str, port: int) -> AddressInfo:
    return AddressInfo(f"{host}:{port}", host, port, socket.AF_INET)


@dataclass
class Pool:
    """backends[i].pool: idle connections per username ("" = any user)."""

    min_idle_connections: int = 0
    max_idle_connections: int = 0
    idle: dict[str, int] = field(default_factory=dict)

    def cur_idle_connections(self, username: str) -> int:
        if username == "":
            return sum(self.idle.values())
        return self.idle.get(username, 0)


@dataclass
class Backend:
    """A BackendView with a pool."""

    address: AddressInfo
    type: BackendType = BackendType.RW
    state: BackendState = BackendState.UP
    uuid: str | None = None
    connected_clients: int = 0
    pool: Pool = field(default_factory=Pool)


@dataclass
class Conn:
    """A ConnectionView: user ``app`` with default database ``shop``."""

    client: PeerInfo = field(
        default_factory=lambda: PeerInfo(
            src=tcp("127.0.0.1", 50123), dst=tcp("127.0.0.1", 4040), username="app", default_db="shop"
        )
    )
    server: PeerInfo | None = None
    backend_ndx: int = 0
    connection_close: bool = False
    queries: InjectionQueue = field(default_factory=InjectionQueue)
    connection_id: int = 1
    backend_list: list[Backend] = field(default_factory=lambda: [Backend(tcp("127.0.0.1", 3306))])

    @property
    def backends(self) -> list[Any]:
        return list(self.backend_list)


class LuaRaised(Exception):
    """The Lua code under test raised an error (its message is the exception's text)."""


#: Lua helpers every script here gets: a JSON encoder and token dumps.
PRELUDE = r"""
local function json_string(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' elseif c == '\\' then return '\\\\' end
    return string.format('\\u%04x', c:byte())
  end) .. '"'
end

local function json(v)
  local t = type(v)
  if v == nil then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%.0f", v) end
    return string.format("%.17g", v)
  elseif t == "string" then return json_string(v)
  elseif t == "table" then
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    local parts = {}
    if n > 0 and n == count then
      for i = 1, n do parts[i] = json(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for k, item in pairs(v) do parts[#parts + 1] = json_string(tostring(k)) .. ":" .. json(item) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return json_string(tostring(v))
end
JSON = json

-- tokens as { {name, text}, ... }
function dump(tokens)
  local out = {}
  for i = 1, #tokens do out[i] = { tokens[i].token_name, tokens[i].text } end
  return out
end

tokenizer = require("proxy.tokenizer")
commands = require("proxy.commands")
parser = require("proxy.parser")
balance = require("proxy.balance")
"""

EVAL = (
    PRELUDE
    + r"""
function read_query(packet)
  local chunk, problem = loadstring(packet:sub(2), "=test")
  local text
  if not chunk then
    text = JSON({ __error__ = problem })
  else
    setfenv(chunk, getfenv(1))
    local ok, value = pcall(chunk)
    if ok then text = JSON({ value = value }) else text = JSON({ __error__ = tostring(value) }) end
  end
  proxy.response = {
    type = proxy.MYSQLD_PACKET_OK,
    resultset = { fields = { { name = "json", type = proxy.MYSQL_TYPE_STRING } }, rows = { { text } } },
  }
  return proxy.PROXY_SEND_RESULT
end
"""
)


@dataclass
class Reply:
    """What the client would get from an Outcome: a result set, an OK or an ERR."""

    outcome: Outcome

    @property
    def payloads(self) -> list[bytes]:
        assert self.outcome.decision == Decision.SEND_RESULT, self.outcome
        assert self.outcome.response, self.outcome
        return self.outcome.response

    def rows(self) -> tuple[list[bytes], list[list[str | None]]]:
        """(column names, rows) of a text result set."""
        from chassis_mysql.resultset import ColumnDefinition

        p = self.payloads
        n = column_count(p[0])
        names = [ColumnDefinition.parse(x).name for x in p[1 : 1 + n]]
        assert is_eof(p[1 + n]) and is_eof(p[-1]), p
        rows = [[None if c is None else c.decode("latin-1") for c in parse_text_row(x, n)] for x in p[2 + n : -1]]
        return names, rows

    def ok(self) -> OK:
        assert len(self.payloads) == 1 and self.payloads[0][:1] == b"\x00", self.payloads
        return OK.parse(self.payloads[0])

    def err(self) -> ERR:
        assert len(self.payloads) == 1 and self.payloads[0][:1] == b"\xff", self.payloads
        return ERR.parse(self.payloads[0])


class Lua:
    """One client connection of a script host."""

    def __init__(self, host: LuaScriptHost, conn: Conn) -> None:
        self.host = host
        self.conn = conn
        self.hooks: LuaConnectionHooks = host.open(conn)

    def query(self, sql: str | bytes) -> Outcome:
        """read_query with a COM_QUERY packet."""
        data = sql.encode("latin-1") if isinstance(sql, str) else sql
        return self.hooks.read_query(b"\x03" + data)

    def reply(self, sql: str | bytes) -> Reply:
        return Reply(self.query(sql))

    def eval(self, code: str) -> Any:
        """Run the Lua chunk ``code`` (it should ``return`` a value) and decode the value."""
        _, rows = self.reply(code).rows()
        result = json.loads(rows[0][0] or "null")
        if "__error__" in result:
            raise LuaRaised(result["__error__"])
        return result.get("value")


@dataclass
class Env:
    tmp_path: Path
    caplog: pytest.LogCaptureFixture
    hosts: list[LuaScriptHost] = field(default_factory=list)
    counter: int = 0

    def host(self, source: str, name: str = "script.lua") -> LuaScriptHost:
        path = self.tmp_path / name
        path.write_text(source)
        return self.host_for(path)

    def host_for(self, path: Path) -> LuaScriptHost:
        """A host running the script file ``path`` as it is."""
        h = LuaScriptHost(
            path,
            lua_path=f"{LUALIB}/?.lua;;",
            logger=logging.getLogger(LOGGER),
        )
        self.hosts.append(h)
        return h

    def conn(self, **kw: Any) -> Conn:
        self.counter += 1
        kw.setdefault("connection_id", self.counter)
        return Conn(**kw)

    def connect(self, host: LuaScriptHost, **kw: Any) -> Lua:
        return Lua(host, self.conn(**kw))

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.name == LOGGER]


def lua_str(data: bytes | str) -> str:
    """``data`` as a Lua string literal (every byte that is not plain ASCII as ``\\ddd``)."""
    raw = data.encode("latin-1") if isinstance(data, str) else data
    out = []
    for b in raw:
        c = chr(b)
        if c.isalnum() or c in " _.,;:()*=<>!@#%&+-/[]{}^~|?$`'":
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'
