"""The Lua bridge: MySQL Proxy 0.8 scripts (hooks, ``proxy.*``, modules) on Lua 5.1 or LuaJIT via lupa.

:class:`LuaScriptHost` implements :class:`chassis_proxy.hooks.ScriptHost`; the proxy
plugin creates one per worker with :func:`create_script_host`::

    host = LuaScriptHost(script, on_error="forward", hook_timeout=1.0, max_memory="256M")
    hooks = host.open(connection_view)   # per client; may raise ScriptLoadError
    outcome = hooks.read_query(packet)

Only :mod:`chassis_proxy.lua.runtime` imports lupa; the rest of the package (and of the
project) reaches Lua through it. docs/lua.md is the script author's reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chassis_proxy.lua.host import EXEC_FAILED, LOAD_FAILED, LuaScriptHost
from chassis_proxy.lua.instance import LuaConnectionHooks
from chassis_proxy.lua.limits import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_MEMORY,
    OnError,
    parse_memory_size,
)
from chassis_proxy.lua.runtime import LuaUnavailable

if TYPE_CHECKING:
    from chassis.config import Config
    from chassis.runtime import Runtime

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "DEFAULT_MAX_MEMORY",
    "EXEC_FAILED",
    "LOAD_FAILED",
    "LuaConnectionHooks",
    "LuaScriptHost",
    "OnError",
    "create_script_host",
    "parse_memory_size",
]


def create_script_host(*, config: Config, runtime: Runtime, settings: Any) -> LuaScriptHost:
    """The worker's script host from the proxy's options.

    Reads ``--proxy-lua-script`` (``settings.lua_script``, already resolved against
    ``--basedir``), ``--proxy-lua-on-error``, ``--lua-runtime``, ``--lua-hook-timeout``
    and ``--lua-max-memory`` (defaults when the options are not registered);
    ``--lua-path``/``--lua-cpath`` arrive through LUA_PATH/LUA_CPATH, which the chassis
    exports. ``chassis.set_shutdown()`` stops the worker. A script that cannot be read
    or compiled raises StartupError with the file, line and reason.
    """
    from chassis.errors import StartupError

    on_error = config.get("proxy_lua_on_error") or OnError.FORWARD.value
    try:
        on_error = OnError(str(on_error).lower())
    except ValueError:
        raise StartupError(
            f"--proxy-lua-on-error: {on_error!r} is not one of forward, reject"
        ) from None
    given = config.get("lua_hook_timeout")
    try:
        timeout = float(DEFAULT_HOOK_TIMEOUT if given is None else given)
        if timeout < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise StartupError(
            f"--lua-hook-timeout: {given!r} is not a number of seconds (0 for no limit)"
        ) from None
    memory = config.get("lua_max_memory")
    try:
        max_memory = parse_memory_size(memory if memory is not None else DEFAULT_MAX_MEMORY)
    except ValueError as e:
        raise StartupError(f"--lua-max-memory: {e}") from None

    try:
        host = LuaScriptHost(
            settings.lua_script,
            on_error=on_error,
            hook_timeout=timeout,
            max_memory=max_memory,
            basedir=config.basedir,
            set_shutdown=lambda: runtime.request_shutdown("chassis.set_shutdown() called by the Lua script"),
            runtime=config.get("lua_runtime"),
        )
    except LuaUnavailable as e:
        raise StartupError(str(e)) from None
    # A script that cannot be used stops the start (exit 3) rather than refusing every client.
    problem = host.check()
    if problem is not None:
        host.close()
        raise StartupError(f"--proxy-lua-script: {problem}")
    return host
