"""``--admin-lua-script``: MySQL Proxy admin scripts answer the console's queries.

The script runs in its own Lua state (one per worker) through the proxy's Lua bridge;
``proxy.global.backends`` shows this worker's proxy backends when the proxy plugin is
loaded. As in MySQL Proxy, ``read_query`` must answer with ``proxy.response`` and
``PROXY_SEND_RESULT``; anything else gets an ERR (the connection stays open, where
MySQL Proxy closed it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chassis_mysql.packets import err_packet
from chassis_proxy.hooks import (
    BackendView,
    ConnectionHooks,
    Decision,
    InjectionQueue,
    PeerInfo,
    ScriptHost,
    ScriptLoadError,
)

from chassis.errors import StartupError
from chassis.runtime import Runtime

if TYPE_CHECKING:
    from chassis_admin.server import AdminConnection

log = logging.getLogger("chassis.admin")


def create_host(runtime: Runtime, script: Path) -> ScriptHost:
    try:
        from chassis_proxy.lua import LuaScriptHost
    except ImportError as e:
        raise StartupError(f"--admin-lua-script needs the Lua bridge: {e}") from None
    config = runtime.config
    return LuaScriptHost(
        script,
        hook_timeout=float(config.get("lua_hook_timeout") or 1.0),
        max_memory=config.get("lua_max_memory") or "256M",
        basedir=config.basedir,
        set_shutdown=lambda: runtime.request_shutdown("chassis.set_shutdown() called by the admin script"),
        logger=logging.getLogger("chassis.admin.lua"),
    )


def _proxy_backends() -> list[BackendView]:
    try:
        from chassis_proxy.plugin import service
    except ImportError:
        return []
    proxy = service()
    return list(proxy.backends) if proxy is not None else []


@dataclass
class AdminView:
    """What an admin script sees of its connection (a ConnectionView without a server)."""

    client: PeerInfo
    connection_id: int
    client_capabilities: int
    server: PeerInfo | None = None
    backend_ndx: int = 0
    connection_close: bool = False
    queries: InjectionQueue = field(default_factory=InjectionQueue)

    @property
    def backends(self) -> list[BackendView]:
        return _proxy_backends()


def open_script(host: ScriptHost, conn: AdminConnection, capabilities: int) -> ConnectionHooks | None:
    view = AdminView(client=PeerInfo(username=conn.server.username.decode()), connection_id=conn.id,
                     client_capabilities=capabilities)
    try:
        return host.open(view)
    except ScriptLoadError as e:
        log.warning("admin connection %d: %s", conn.id, e)
        return _Failed(str(e))


def run_query(hooks: ConnectionHooks, packet: bytes) -> list[bytes]:
    """The script's answer to one command, or an ERR saying what it should have done."""
    outcome = hooks.read_query(packet)
    if outcome.decision == Decision.SEND_RESULT and outcome.response:
        return outcome.response
    return [err_packet(1105, "[admin] the admin script must answer with proxy.response and "
                             "return proxy.PROXY_SEND_RESULT")]


class _Failed:
    """Hooks of a script that failed to load: every query gets the load error."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def read_query(self, packet: bytes) -> Any:
        from chassis_proxy.hooks import Outcome

        return Outcome(Decision.SEND_RESULT, [err_packet(1105, self.message)])

    def disconnect_client(self) -> None:
        pass
