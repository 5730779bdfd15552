"""What the admin console sees of one worker beyond backends and stats: its clients
(``connections``), ``kill``, the pools (``pool``) and the Lua script (``lua``).

The control channel's ops (:mod:`chassis_proxy.control` dispatches here): each worker
answers for itself, the admin plugin puts the answers of every worker in its tables.
Nothing here runs on the hot path: a connection's row is read from what the relay and
the scripted loop already keep (their last buffers, the session's start time).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from chassis_mysql.constants import Command

from chassis.logs import MESSAGE
from chassis_proxy.connection import ProxyConnection
from chassis_proxy.service import ProxyService

log = logging.getLogger("chassis.proxy")

#: The most characters of a statement a ``connections`` row shows.
MAX_STATEMENT = 1024


def _command_text(buffer: bytes) -> str | None:
    """The command a client buffer starts (a packet with its header)."""
    if len(buffer) < 5 or buffer[3] != 0:
        return None
    length = int.from_bytes(buffer[:3], "little")
    return _payload_text(buffer[4:4 + min(length, 1 + MAX_STATEMENT)])


def _payload_text(payload: bytes) -> str | None:
    """A command's payload: a COM_QUERY's text, else the command's name."""
    if not payload:
        return None
    command = payload[0]
    if command == Command.QUERY:
        return payload[1:1 + MAX_STATEMENT].decode("utf-8", "replace")
    try:
        return f"COM_{Command(command).name}"
    except ValueError:
        return f"command 0x{command:02x}"


#: Offset of ``tcpi_last_data_sent`` in Linux's ``struct tcp_info`` (``tcpi_last_ack_sent``
#: and ``tcpi_last_data_recv`` follow, milliseconds each).
_TCPI_LAST_DATA_SENT = 44


def quiet_ms(transport: asyncio.BaseTransport | None) -> tuple[int, int] | None:
    """Milliseconds since the kernel last sent data to the client, and last received
    data from it (``TCP_INFO``): exact, and nothing to keep on the hot path. None on a
    unix socket or a system without ``TCP_INFO``."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    tcp_info = getattr(socket, "TCP_INFO", None)
    if sock is None or tcp_info is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 104)
    except OSError:
        return None
    if len(info) < _TCPI_LAST_DATA_SENT + 12:
        return None
    sent, _ack, received = struct.unpack_from("=III", info, _TCPI_LAST_DATA_SENT)
    return sent, received


def describe(conn: ProxyConnection, now: float, loop_now: float) -> dict[str, Any]:
    """One ``connections`` row: who, from where, to which backend, doing what since when.

    ``state`` is ``login`` until the client is logged in, then ``query`` while a command
    waits for its answer (in the flat relay: until the answer starts, or while a slow
    peer holds it up), else ``idle``. ``time``: seconds in that state: from the command's
    start (known with a script) or, since the flat relay keeps no clock, from the
    kernel's record of the client socket's last traffic (``TCP_INFO``). On a unix socket
    the relay's figure is the time since the proxy noticed traffic, which can be short
    by up to its idle sweeper's interval.
    """
    st = conn.state
    row: dict[str, Any] = {
        "id": conn.connection_id,
        "user": st.client.username or None,
        "client": conn.name,
        "backend": str(st.backend.addr) if st.backend is not None else None,
        "state": "login",
        "statement": None,
        "time": None,
    }
    session, client_leg, server_leg = conn.session, conn.client_leg, conn.server_leg
    quiet = quiet_ms(st.client_ch.transport)
    running = False
    if client_leg is not None and server_leg is not None:
        # Running: the command has no answer yet, or its answer waits for a slow peer.
        running = client_leg.turn[0] or client_leg.paused or server_leg.paused
        if running:
            row["statement"] = _command_text(client_leg.last)
    elif session is not None:
        running = session.busy
        if running:
            row["statement"] = _payload_text(session.command)
    if client_leg is not None or session is not None:
        row["state"] = "query" if running else "idle"
    if running and session is not None and session.started:
        row["time"] = round(max(0.0, now - session.started), 3)
    elif quiet is not None:  # a command: since it arrived; else since the last traffic
        row["time"] = (quiet[1] if running else min(quiet)) / 1000
    elif client_leg is not None:
        conn.at_rest()  # notices traffic since the sweeper's last look (quiet_since)
        row["time"] = round(max(0.0, loop_now - conn.quiet_since), 3)
    return row


def fold_counters(service: ProxyService) -> None:
    """Bring the worker's and backends' counters up to date: relayed connections count
    by themselves and are folded in only by the idle sweeper, every few seconds."""
    for conn in list(service.connections):
        conn.fold_counters()


def connections(service: ProxyService, request: dict[str, Any]) -> dict[str, Any]:
    """``connections``: one row per client connection of this worker."""
    now = time.monotonic()
    loop_now = asyncio.get_running_loop().time()
    return {"connections": [describe(c, now, loop_now) for c in sorted(
        service.connections, key=lambda c: c.connection_id) if not c.closed]}


def kill(service: ProxyService, request: dict[str, Any]) -> dict[str, Any]:
    """``kill`` {id}: close a client connection of this worker (its server connection too).

    The client sees its connection lost (error 2013 at its next read), as a client of a
    MySQL server whose connection is killed does. ``ok`` is False when this worker has
    no such connection.
    """
    try:
        wanted = int(request.get("id", -1))
    except (TypeError, ValueError):
        return {"ok": False, "message": f"not a connection id: {request.get('id')!r}"}
    conn = next((c for c in service.connections if c.connection_id == wanted and not c.closed), None)
    if conn is None:
        return {"ok": False, "message": f"no connection {wanted} (see SELECT * FROM connections)"}
    log.log(MESSAGE, "conn %d: client %s (user %r) killed from the admin console", wanted, conn.name,
            conn.state.client.username)
    conn.close("killed from the admin console")
    return {"ok": True, "message": f"connection {wanted} killed"}


def pool(service: ProxyService, request: dict[str, Any]) -> dict[str, Any]:
    """``pool``: per backend, idle pooled server connections and those taken by clients."""
    return {"pool": [
        {
            "ndx": b.index,
            "address": str(b.addr),
            "idle": b.pool.idle_count,
            "taken": b.connected_clients,
            "max_idle": b.pool.limit,
            "max_idle_age": b.pool.max_age,
        }
        for b in service.backends
    ]}


def hook_rows(host: Any) -> list[dict[str, Any]] | None:
    """Per hook: calls, seconds, errors (raised, or out of --lua-max-memory) and timeouts,
    from what the bridge counts (``calls.hook_stats()``: hook -> (calls, seconds);
    ``limits.failures``: (hook, reason) -> n); None when it counts nothing."""
    stats = getattr(getattr(host, "calls", None), "hook_stats", None)
    failures = getattr(getattr(host, "limits", None), "failures", None)
    if not callable(stats) and not isinstance(failures, dict):
        return None
    rows: dict[str, dict[str, Any]] = {}

    def row(hook: str) -> dict[str, Any]:
        return rows.setdefault(hook, {"hook": hook, "calls": 0, "seconds": 0.0, "errors": 0, "timeouts": 0})

    if callable(stats):
        for hook, (calls, seconds) in stats().items():
            row(hook).update(calls=calls, seconds=round(seconds, 6))
    if isinstance(failures, dict):
        for (hook, reason), n in failures.items():
            row(hook)["timeouts" if reason == "timeout" else "errors"] += n
    return [rows[h] for h in sorted(rows)]


def lua(service: ProxyService, request: dict[str, Any]) -> dict[str, Any]:
    """``lua``: this worker's script (``--proxy-lua-script``), its memory, and its hooks'
    calls when the bridge counts them (``hook_*`` totals and ``hooks`` per hook; absent
    keys are NULL in the console), or ``{"lua": None}`` without a script."""
    host = service.script_host
    if host is None:
        return {"lua": None}
    state = getattr(host, "lua", None)
    memory_used = getattr(state, "memory_used", None)
    script = getattr(host, "script", None)
    info: dict[str, Any] = {
        "script": str(script) if script is not None else None,
        "runtime": getattr(state, "name", None),
        "memory_used": int(memory_used()) if callable(memory_used) else None,
        "memory_limit": getattr(host, "max_memory", None),
        "hook_timeout": getattr(host, "hook_timeout", None),
    }
    hooks = hook_rows(host)
    if hooks is not None:
        info["hooks"] = hooks
        for key in ("calls", "seconds", "errors", "timeouts"):
            info[f"hook_{key}"] = sum(h[key] for h in hooks)
    return {"lua": info}


#: The ops this module answers, by name.
OPS: dict[str, Callable[[ProxyService, dict[str, Any]], dict[str, Any]]] = {
    "connections": connections,
    "kill": kill,
    "pool": pool,
    "lua": lua,
}
