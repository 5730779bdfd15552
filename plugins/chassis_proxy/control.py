"""What the proxy shows the other plugins (the admin console), through the chassis.

Answers to other workers' control requests (``chassis_control``): requests carry
``plugin: "proxy"`` and an ``op``: ``backends`` (state, role, replication, counters and
idle pooled connections per backend), ``stats`` (this worker's totals),
``set_backend_state`` (up, down, offline, unknown), ``digests`` or ``truncate_digests``,
those of :mod:`chassis_proxy.inspection`: ``connections``, ``kill``, ``pool``, ``lua``,
and between workers ``monitor_update`` / ``monitor_snapshot`` (the replication monitor's
reports, see :mod:`chassis_proxy.monitor`). Every
worker answers for itself; the admin plugin merges the answers. An unknown op raises
ValueError ("unknown proxy control operation").

``{"op": "digests"}`` returns this worker's query digests (``--proxy-query-digest``; an
empty list when it is off)::

    {"digests": [{"digest": "0x...", "digest_text": "select c from sbtest1 where id=?",
                  "user": "app", "schema": "shop", "backend": "127.0.0.1:3306",
                  "count": 12, "sum_time": 0.0061, "min_time": 0.0003, "max_time": 0.0012,
                  "rows_sent": 12, "rows_affected": 0, "errors": 0,
                  "first_seen": 1796380050.12, "last_seen": 1796380110.5}, ...]}

One row per (digest, user, schema, backend); times in seconds (floats), first/last seen
as Unix timestamps. ``digest`` is pt-query-digest's Query ID of ``digest_text`` (``0x``
and the upper-case MD5 of the fingerprint); the row of digest ``"overflow"`` counts the
queries of new shapes once ``--proxy-query-digest-max`` rows are kept. The same digest
comes from every worker that saw it: sum ``count``, times, rows and errors, take the
min/max of ``min_time``/``max_time``, ``first_seen``/``last_seen``.
``{"op": "truncate_digests"}`` empties this worker's table and returns ``{"ok": true}``.

Inside one worker, :class:`ConsoleScripts` is what ``chassis_offer`` hands out as
``"proxy.lua_script_host"``: Lua script hosts for a console's own scripts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chassis.config import Config
from chassis_proxy import inspection
from chassis_proxy.hooks import (
    BackendState,
    BackendView,
    ConnectionHooks,
    InjectionQueue,
    PeerInfo,
    ScriptHost,
    ScriptLoadError,
)
from chassis_proxy.monitor import reports_from
from chassis_proxy.service import ProxyService

log = logging.getLogger("chassis.proxy")

_STATES = {"up": BackendState.UP, "down": BackendState.DOWN, "offline": BackendState.OFFLINE,
           "unknown": BackendState.UNKNOWN}


def answer(service: ProxyService, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op in ("backends", "stats"):
        inspection.fold_counters(service)
    if op == "backends":
        return {"backends": [
            {
                "ndx": b.index,
                "address": str(b.addr),
                "state": b.state.name.lower(),
                "type": b.type.name.lower(),
                "uuid": b.uuid,
                "connected_clients": b.connected_clients,
                **b.stats.as_dict(),
                "pool_idle": b.pool.idle_count,
                # floats and text: the console's merge sums only integers
                "replication": b.replication.state,
                "lag": b.replication.lag,
                "stale": "yes" if b.replication.stale else "no",
            }
            for b in service.backends
        ]}
    if op == "stats":
        return {"stats": {"connections_current": len(service.connections), **service.stats.as_dict(),
                          "pool_idle": sum(b.pool.idle_count for b in service.backends)}}
    if op == "set_backend_state":
        backend = service.backends.by_index(int(request.get("ndx", 0)))
        state = _STATES.get(str(request.get("state")))
        if backend is None:
            return {"ok": False, "message": f"no backend {request.get('ndx')} (see SELECT * FROM backends)"}
        if state is None:
            return {"ok": False, "message": f"unknown state {request.get('state')!r} (up, down, offline)"}
        backend.set_admin_state(state)
        return {"ok": True}
    if op == "monitor_update":  # from worker 1's replication monitor (chassis_proxy.monitor)
        service.apply_reports(reports_from(request.get("reports")))
        return {"ok": True}
    if op == "monitor_snapshot":  # a worker that just started asks worker 1
        last = service.monitor.last if service.monitor is not None else []
        return {"reports": [r.as_dict() for r in last]}
    digests = service.recorder.digests if service.recorder is not None else None
    if op == "digests":
        return {"digests": digests.as_rows() if digests is not None else []}
    if op == "truncate_digests":
        if digests is not None:
            digests.truncate()
        return {"ok": True}
    if op in inspection.OPS:  # connections, kill, pool, lua
        return inspection.OPS[op](service, request)
    raise ValueError(f"unknown proxy control operation {op!r}")


class ConsoleScripts:
    """Offered as ``"proxy.lua_script_host"``: makes Lua script hosts for a console.

    A console (the admin plugin's ``--admin-lua-script``) runs MySQL Proxy admin scripts
    in a Lua state of their own, with the proxy's bridge and limits (``--lua-hook-timeout``,
    ``--lua-max-memory``); ``proxy.global.backends`` shows this worker's backends. The
    console sees only what this module gives it: ``factory(script, set_shutdown=...,
    logger=...)`` returns a :class:`ConsoleScriptHost`, whose hooks answer ``read_query``
    with an outcome (``decision``, MySQL Proxy's ``PROXY_*`` number, and ``response``
    payloads).
    """

    def __init__(self, config: Config, backends: Callable[[], list[BackendView]]) -> None:
        self.config = config
        self.backends = backends

    def __call__(self, script: Path, *, set_shutdown: Callable[[], None],
                 logger: logging.Logger) -> ConsoleScriptHost:
        """A host for ``script``; raises ImportError when the Lua bridge cannot be loaded."""
        from chassis_proxy.lua import LuaScriptHost

        config = self.config
        host = LuaScriptHost(
            script,
            hook_timeout=float(config.get("lua_hook_timeout") or 1.0),
            max_memory=config.get("lua_max_memory") or "256M",
            basedir=config.basedir,
            set_shutdown=set_shutdown,
            logger=logger,
            runtime=config.get("lua_runtime"),  # the proxy's: C modules bind to one per process
        )
        return ConsoleScriptHost(host, self.backends)


class ConsoleScriptHost:
    """One script for a console's connections, each with a view that has no server."""

    def __init__(self, host: ScriptHost, backends: Callable[[], list[BackendView]]) -> None:
        self._host = host
        self._backends = backends

    def open(self, *, username: str, connection_id: int, capabilities: int) -> ConnectionHooks:
        """The script instance of a new console connection.

        Raises RuntimeError, whose text is what the console's client should be told, when
        the script cannot be loaded (the console does not know the proxy's ScriptLoadError).
        """
        view = ConsoleView(client=PeerInfo(username=username), connection_id=connection_id,
                           client_capabilities=capabilities, backends_of=self._backends)
        try:
            return self._host.open(view)
        except ScriptLoadError as e:
            raise RuntimeError(str(e)) from None

    def close(self) -> None:
        self._host.close()


@dataclass
class ConsoleView:
    """What a console's script sees of its connection (a ConnectionView without a server)."""

    client: PeerInfo
    connection_id: int
    client_capabilities: int
    backends_of: Callable[[], list[BackendView]]
    server: PeerInfo | None = None
    backend_ndx: int = 0
    connection_close: bool = False
    queries: InjectionQueue = field(default_factory=InjectionQueue)

    @property
    def backends(self) -> list[BackendView]:
        return self.backends_of()
