"""The Lua bridge: MySQL Proxy 0.8 scripts (hooks, ``proxy.*``, modules) on LuaJIT via lupa.

:class:`LuaScriptHost` implements :class:`chassis_proxy.hooks.ScriptHost`; the proxy
creates one per worker::

    host = LuaScriptHost(config.proxy_lua_script, on_error="forward",
                         hook_timeout=1.0, max_memory="256M")
    hooks = host.open(connection_view)   # per client; may raise ScriptLoadError
    outcome = hooks.read_query(packet)

Only :mod:`chassis_proxy.lua.runtime` imports lupa; the rest of the package (and of the
project) reaches Lua through it.
"""

from chassis_proxy.lua.host import EXEC_FAILED, LOAD_FAILED, LuaConnectionHooks, LuaScriptHost
from chassis_proxy.lua.limits import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_MEMORY,
    OnError,
    parse_memory_size,
)

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "DEFAULT_MAX_MEMORY",
    "EXEC_FAILED",
    "LOAD_FAILED",
    "LuaConnectionHooks",
    "LuaScriptHost",
    "OnError",
    "parse_memory_size",
]
