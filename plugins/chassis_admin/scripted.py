"""``--admin-lua-script``: MySQL Proxy admin scripts answer the console's queries.

The script runs in its own Lua state (one per worker) through the proxy plugin's Lua
bridge, which the proxy offers through the chassis as ``"proxy.lua_script_host"``
(``chassis_offer``); ``proxy.global.backends`` shows this worker's proxy backends. The
admin plugin does not import the proxy plugin: the Protocols below are all it relies
on. As in MySQL Proxy, ``read_query`` must answer with ``proxy.response`` and
``PROXY_SEND_RESULT``; anything else gets an ERR (the connection stays open, where
MySQL Proxy closed it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chassis_mysql.constants import ErrorCode
from chassis_mysql.packets import err_packet

from chassis.errors import StartupError
from chassis.runtime import Runtime

log = logging.getLogger("chassis.admin")

#: The name under which the proxy plugin offers its Lua bridge (``chassis_offer``).
LUA_SCRIPT_HOST = "proxy.lua_script_host"
#: MySQL Proxy's ``proxy.PROXY_SEND_RESULT``: the script answered with ``proxy.response``.
PROXY_SEND_RESULT = 2


class ScriptOutcome(Protocol):
    """A hook's decision: MySQL Proxy's ``PROXY_*`` number and the payloads to send."""

    @property
    def decision(self) -> int: ...
    @property
    def response(self) -> list[bytes] | None: ...


class ScriptHooks(Protocol):
    """One console connection's script instance."""

    def read_query(self, packet: bytes) -> ScriptOutcome: ...
    def disconnect_client(self) -> None: ...


class ScriptHost(Protocol):
    """The worker's script; ``open`` raises RuntimeError (the text for the client) when
    the script cannot be loaded."""

    def open(self, *, username: str, connection_id: int, capabilities: int) -> ScriptHooks: ...
    def close(self) -> None: ...


class ScriptHostFactory(Protocol):
    """``runtime.offered("proxy.lua_script_host")``; raises ImportError without Lua."""

    def __call__(self, script: Path, *, set_shutdown: Callable[[], None],
                 logger: logging.Logger) -> ScriptHost: ...


def create_host(runtime: Runtime, script: Path) -> ScriptHost:
    factory: ScriptHostFactory | None = runtime.offered(LUA_SCRIPT_HOST)
    if factory is None:
        raise StartupError("--admin-lua-script needs the proxy plugin's Lua bridge: "
                           "load both plugins (--plugins=proxy,admin)")
    try:
        return factory(
            script,
            set_shutdown=lambda: runtime.request_shutdown("chassis.set_shutdown() called by the admin script"),
            logger=logging.getLogger("chassis.admin.lua"),
        )
    except ImportError as e:
        raise StartupError(f"--admin-lua-script needs the Lua bridge: {e}") from None


def open_script(host: ScriptHost, *, username: str, connection_id: int,
                capabilities: int) -> ScriptHooks:
    """The script instance of a console connection that just logged in; a script that
    cannot be loaded answers every query with the reason."""
    try:
        return host.open(username=username, connection_id=connection_id, capabilities=capabilities)
    except RuntimeError as e:
        log.warning("admin connection %d: %s", connection_id, e)
        return _Failed(str(e))


def run_query(hooks: ScriptHooks, packet: bytes) -> list[bytes]:
    """The script's answer to one command, or an ERR saying what it should have done."""
    outcome = hooks.read_query(packet)
    if outcome.decision == PROXY_SEND_RESULT and outcome.response:
        return outcome.response
    return [err_packet(ErrorCode.UNKNOWN_ERROR,
                       "[admin] the admin script must answer with proxy.response and "
                       "return proxy.PROXY_SEND_RESULT")]


@dataclass(frozen=True)
class _Answer:
    decision: int
    response: list[bytes] | None


class _Failed:
    """Hooks of a script that failed to load: every query gets the load error."""

    def __init__(self, message: str) -> None:
        self.message = message

    def read_query(self, packet: bytes) -> ScriptOutcome:
        return _Answer(PROXY_SEND_RESULT, [err_packet(ErrorCode.UNKNOWN_ERROR, self.message)])

    def disconnect_client(self) -> None:
        pass
