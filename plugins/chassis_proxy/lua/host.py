"""The Lua :class:`~chassis_proxy.hooks.ScriptHost`: creates the Lua state, loads the
script and instantiates it per client connection as a
:class:`~chassis_proxy.lua.instance.LuaConnectionHooks`, which turns what the hooks do
into :class:`~chassis_proxy.hooks.Outcome`.

Script semantics are MySQL Proxy 0.8.5's (reference section 3.1): the file is compiled
once per version (path, nanosecond mtime and size) and run from the top for each new
connection in a fresh environment that falls back to ``_G``; ``proxy.global`` and
``require``\\d modules are shared by the connections of the worker. A script that fails
to compile or to run gives the client the ERR of section 3.9. Hook errors, timeouts and
memory errors are logged once with the connection id and the script's file and line;
the client then gets the C default (``--proxy-lua-on-error=forward``, MySQL Proxy's
fail-open) or an ERR (``reject``).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chassis import logs
from chassis_proxy.hooks import ConnectionView, ScriptLoadError
from chassis_proxy.lua.calls import HookCalls
from chassis_proxy.lua.instance import LuaConnectionHooks
from chassis_proxy.lua.limits import (
    CALL_OK,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_MEMORY,
    Limits,
    OnError,
    parse_memory_size,
)
from chassis_proxy.lua.modules import ModuleContext, bundled_modules
from chassis_proxy.lua.objects import ObjectAccess, log_prefix, python_text
from chassis_proxy.lua.response import ResponseCollector
from chassis_proxy.lua.runtime import (
    LIB_DIR,
    LuaError,
    LuaState,
    default_search_paths,
    search_path,
)

#: ERR messages of MySQL Proxy 0.8.5 for a script that cannot be used (reference 3.9).
LOAD_FAILED = "MySQL Proxy Lua script failed to load. Check the error log."
EXEC_FAILED = "MySQL Proxy Lua script failed to execute. Check the error log."


class _Compiled:
    """One version of the script file: its compiled factory or why it failed."""

    __slots__ = ("error", "factory", "key")

    def __init__(self, key: tuple[int, int], factory: Any, error: str | None) -> None:
        self.key = key
        self.factory = factory
        self.error = error


class LuaScriptHost:
    """One per worker process: a Lua state running ``script`` for every client connection.

    ``on_error`` is ``--proxy-lua-on-error`` (``forward`` or ``reject``),
    ``hook_timeout`` ``--lua-hook-timeout`` in seconds (0: no limit), ``max_memory``
    ``--lua-max-memory`` (bytes or ``"256M"``; 0: no limit). ``lua_path``/``lua_cpath``
    default to LUA_PATH/LUA_CPATH from the environment (``;;`` is Lua's default path);
    the bundled modules are always found after them. ``set_shutdown`` is what
    ``chassis.set_shutdown()`` calls, ``stats`` adds sections to ``chassis.get_stats()``,
    ``basedir`` is stripped from the sources in ``chassis.*`` log lines. ``runtime``
    (``"luajit21"`` or ``"lua51"``) overrides the choice of Lua runtime, for tests.
    """

    def __init__(
        self,
        script: str | os.PathLike[str],
        *,
        on_error: OnError | str = OnError.FORWARD,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT,
        max_memory: int | str = DEFAULT_MAX_MEMORY,
        lua_path: str | None = None,
        lua_cpath: str | None = None,
        basedir: str | os.PathLike[str] | None = None,
        set_shutdown: Callable[[], None] | None = None,
        stats: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
        logger: logging.Logger | None = None,
        runtime: str | None = None,
    ) -> None:
        self.script = Path(os.path.abspath(script))
        self.on_error = OnError(on_error)
        if hook_timeout < 0:
            raise ValueError(f"--lua-hook-timeout cannot be negative: {hook_timeout}")
        self.hook_timeout = float(hook_timeout)
        self.max_memory = parse_memory_size(max_memory)
        self.log = logger or logging.getLogger("chassis.proxy.lua")
        self.limits = Limits(self.on_error, self.hook_timeout, self.max_memory, self.log)
        self._ids = itertools.count(1)
        self._instances: dict[int, weakref.ref[LuaConnectionHooks]] = {}
        self._compiled: _Compiled | None = None
        self._closed = False
        self._calls: HookCalls | None = None  # once the state exists

        self._objects = ObjectAccess(self._lookup, self._current_view, self.log)
        self._responses = ResponseCollector()
        callbacks: dict[str, Callable[..., Any]] = dict(self._objects.callbacks())
        callbacks.update(self._responses.callbacks())
        callbacks.update(log=self._lua_log, stdout_write=_stdout_write)
        self.lua = LuaState(
            callbacks,
            hook_timeout=self.hook_timeout,
            max_memory=self.max_memory,
            basedir=os.fspath(basedir) if basedir is not None else None,
            runtime_name=runtime,
        )
        default_path, default_cpath = default_search_paths()
        path = search_path(
            lua_path if lua_path is not None else os.environ.get("LUA_PATH"),
            default_path,
            extra=[f"{LIB_DIR}/?.lua", f"{LIB_DIR}/?/init.lua"],
        )
        cpath = search_path(
            lua_cpath if lua_cpath is not None else os.environ.get("LUA_CPATH"), default_cpath
        )
        self.lua.call("set_search_path", path, cpath)
        ctx = ModuleContext(
            log=self._module_log,
            table=self.lua.table,
            memory_used=self.lua.memory_used,
            memory_limit=self.max_memory,
            set_shutdown=set_shutdown,
            stats=stats,
        )
        specs = {
            m.name: self.lua.table(
                {
                    "source": m.shim(),
                    "py": self.lua.table(m.functions),
                    "global": m.global_name.encode() if m.global_name else None,
                }
            )
            for m in bundled_modules(ctx)
        }
        self.lua.call("install_modules", self.lua.table(specs))
        self._calls = calls = HookCalls(self.lua)
        #: The calls into the script's hooks (and whose hook is running).
        self.calls = calls

    # -- ScriptHost --------------------------------------------------------------------------

    def open(self, conn: ConnectionView) -> LuaConnectionHooks:
        """The script instance of a new client connection (see ScriptHost.open)."""
        if self._closed:
            raise ScriptLoadError(LOAD_FAILED)
        factory = self._factory(conn)
        cid = next(self._ids)
        state = self.calls.new_connection(cid)
        hooks = LuaConnectionHooks(
            conn,
            cid,
            state,
            calls=self.calls,
            limits=self.limits,
            responses=self._responses,
            release=self._release,
            log=self.log,
        )
        instances = self._instances
        # a connection dropped without disconnect_client() still leaves the registry
        self._instances[cid] = weakref.ref(hooks, lambda _ref: instances.pop(cid, None))
        try:
            status, value = self.calls.call(conn, "instantiate", state, factory)
        except BaseException:
            self._instances.pop(cid, None)
            raise
        if status != CALL_OK:
            self._instances.pop(cid, None)
            hooks.detach()
            self.limits.log_failure(conn, "script", status, value, what="the script's top level")
            raise ScriptLoadError(EXEC_FAILED)
        return hooks

    def close(self) -> None:
        """Forget every instance; the Lua state goes with the host."""
        self._closed = True
        for ref in list(self._instances.values()):
            hooks = ref()
            if hooks is not None:
                hooks.detach()
        self._instances.clear()

    # -- script cache ------------------------------------------------------------------------

    def _factory(self, conn: ConnectionView) -> Any:
        """The compiled script, recompiled when the file changed (mtime_ns or size)."""
        try:
            with open(self.script, "rb") as f:  # stat and read the same file, even if replaced
                st = os.fstat(f.fileno())
                key = (st.st_mtime_ns, st.st_size)
                cached = self._compiled
                if cached is None or cached.key != key:
                    source = f.read()
                    factory, err = self.lua.call("compile", source, b"@" + os.fsencode(self.script))
                    message = None if factory is not None else python_text(err)
                    cached = self._compiled = _Compiled(key, factory, message)
        except OSError as e:
            self.log.log(
                logs.CRITICAL,
                "%sLua script %s cannot be read: %s (check --proxy-lua-script)",
                log_prefix(conn), self.script, e.strerror or e,
            )
            raise ScriptLoadError(LOAD_FAILED) from None
        except LuaError as e:
            self.log.log(logs.CRITICAL, "%sLua script %s failed to load: %s", log_prefix(conn), self.script, e)
            raise ScriptLoadError(LOAD_FAILED) from None
        if cached.error is not None:
            self.log.log(logs.CRITICAL, "%sLua script failed to load: %s", log_prefix(conn), cached.error)
            raise ScriptLoadError(LOAD_FAILED)
        return cached.factory

    # -- callbacks from bridge.lua -------------------------------------------------------------

    def _release(self, cid: int) -> None:
        """An instance's client disconnected: it leaves the registry."""
        self._instances.pop(cid, None)

    def _lookup(self, cid: int) -> ConnectionView | None:
        ref = self._instances.get(int(cid))
        hooks = ref() if ref is not None else None
        return hooks.conn if hooks is not None else None

    def _current_view(self) -> ConnectionView | None:
        return self._calls.current if self._calls is not None else None

    def _lua_log(self, level: bytes, message: bytes) -> None:
        conn = self._current_view()
        self.log.log(
            logs.LEVELS.get(python_text(level), logs.MESSAGE), "%s%s", log_prefix(conn), python_text(message)
        )

    def _module_log(self, level: str, message: str) -> None:
        self.log.log(logs.LEVELS.get(level, logs.MESSAGE), "%s%s", log_prefix(self._current_view()), message)


def _stdout_write(data: bytes) -> None:
    out = sys.stdout
    try:
        out.write(python_text(data))
        out.flush()
    except (OSError, ValueError):
        pass
