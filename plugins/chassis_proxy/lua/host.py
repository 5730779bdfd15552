"""The Lua :class:`~chassis_proxy.hooks.ScriptHost`: creates the Lua state, loads the
script and instantiates it per client connection as a
:class:`~chassis_proxy.lua.instance.LuaConnectionHooks`, which turns what the hooks do
into :class:`~chassis_proxy.hooks.Outcome`.

Script semantics are MySQL Proxy 0.8.5's (reference section 3.1): the file is compiled
once per version (path, nanosecond mtime and size) and run from the top for each new
connection in a fresh environment that falls back to ``_G``; ``proxy.global`` and
``require``\\d modules are shared by the connections of the worker. A new version that
cannot be read or compiled is logged once and new connections keep the last version that
compiled; with none (or a top level that fails) the client gets the ERR of section 3.9.
The proxy checks the script at start-up (:meth:`LuaScriptHost.check`). Hook errors, timeouts and
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
from chassis_proxy.lua.calls import TRACKED_HOOKS, HookCalls
from chassis_proxy.lua.injection import callbacks as injection_callbacks
from chassis_proxy.lua.instance import LuaConnectionHooks
from chassis_proxy.lua.limits import (
    CALL_OK,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_MEMORY,
    Limits,
    OnError,
    full_chunk_name,
    parse_memory_size,
)
from chassis_proxy.lua.modules import ModuleContext, bundled_modules
from chassis_proxy.lua.objects import ObjectAccess, log_prefix, python_text
from chassis_proxy.lua.response import ResponseCollector
from chassis_proxy.lua.runtime import (
    LIB_DIR,
    LuaError,
    LuaState,
    bundled_library,
    default_search_paths,
    search_path,
)

#: ERR messages of MySQL Proxy 0.8.5 for a script that cannot be used (reference 3.9).
LOAD_FAILED = "MySQL Proxy Lua script failed to load. Check the error log."
EXEC_FAILED = "MySQL Proxy Lua script failed to execute. Check the error log."


class _Compiled:
    """One version of the script file: its compiled factory or why it failed."""

    __slots__ = ("error", "factory", "key")

    def __init__(self, key: tuple[int, int, int], factory: Any, error: str | None) -> None:
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
    ``basedir`` is stripped from the sources in ``chassis.*`` log lines. ``runtime`` is
    ``--lua-runtime`` (``"lua5.1"``, the default, or ``"luajit"``; lupa's names
    ``"lua51"``/``"luajit21"`` too).
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
        self.limits = Limits(
            self.on_error, self.hook_timeout, self.max_memory, self.log, script=os.fspath(self.script)
        )
        self._ids = itertools.count(1)
        self._instances: dict[int, weakref.ref[LuaConnectionHooks]] = {}
        self._compiled: _Compiled | None = None  # the last version that compiled
        self._broken: _Compiled | None = None  # the file's version that does not, if newer
        self._reported: str | None = None  # the problem last logged while falling back
        self._closed = False
        self._calls: HookCalls | None = None  # once the state exists

        self._objects = ObjectAccess(self._lookup, self._current_view, self.log)
        self._responses = ResponseCollector()
        callbacks: dict[str, Callable[..., Any]] = dict(self._objects.callbacks())
        callbacks.update(self._responses.callbacks())
        callbacks.update(injection_callbacks())
        callbacks.update(log=self._lua_log, stdout_write=_stdout_write, hook_defined=self._hook_defined)
        self.lua = LuaState(
            callbacks,
            hook_timeout=self.hook_timeout,
            max_memory=self.max_memory,
            basedir=os.fspath(basedir) if basedir is not None else None,
            runtime_name=runtime,
        )
        default_path, default_cpath = default_search_paths(self.lua.name)
        path = search_path(
            lua_path if lua_path is not None else os.environ.get("LUA_PATH"),
            default_path,
            extra=[f"{LIB_DIR}/?.lua", f"{LIB_DIR}/?/init.lua"],
        )
        cpath = search_path(
            lua_cpath if lua_cpath is not None else os.environ.get("LUA_CPATH"), default_cpath
        )
        self.lua.call("set_search_path", path, cpath)
        self.lua.call("set_bundled_library", self.lua.table(
            {name: self.lua.table([source, chunk]) for name, (source, chunk) in bundled_library().items()}))
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
                    "fallback": m.fallback,
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
        hooks = LuaConnectionHooks(
            conn,
            cid,
            None,
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
            state, status, value, defined = self.calls.open(conn, cid, factory)
        except BaseException:
            self._instances.pop(cid, None)
            raise
        if status != CALL_OK:
            self._instances.pop(cid, None)
            self.limits.log_failure(conn, "script", status, value, what="the script's top level")
            raise ScriptLoadError(EXEC_FAILED)
        hooks.attach(state, defined)
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

    def check(self) -> str | None:
        """Compile the script now: why it cannot be used (file, line and reason), or None.

        The start-up check of ``--proxy-lua-script``; the version compiled here is the
        first good one, which a later broken or unreadable file falls back to.
        """
        factory, problem = self._load()
        return None if factory is not None else problem

    def _load(self) -> tuple[Any, str | None]:
        """The file's compiled factory (recompiled when its mtime, ctime or size changed), or
        None and why it cannot be used. A broken version is compiled once, not per client."""
        try:
            # Every new client checks the file: one stat when it is the version compiled
            # already (the common case), else stat and read the same file, even if replaced,
            # through a bare descriptor.
            st = os.stat(self.script)
            key = (st.st_mtime_ns, st.st_size, st.st_ctime_ns)  # ctime: a chmod too
            good, broken = self._compiled, self._broken
            if good is not None and good.key == key:
                return good.factory, None
            if broken is not None and broken.key == key:
                return None, broken.error
            fd = os.open(self.script, os.O_RDONLY | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                key = (st.st_mtime_ns, st.st_size, st.st_ctime_ns)
                good, broken = self._compiled, self._broken
                if good is not None and good.key == key:
                    return good.factory, None
                if broken is not None and broken.key == key:
                    return None, broken.error
                with open(fd, "rb", closefd=False) as f:
                    source = f.read()
            finally:
                os.close(fd)
            factory, err = self.lua.call("compile", source, os.fsencode(self.script))
        except OSError as e:
            return None, f"Lua script {self.script} cannot be read: {e.strerror or e} (check --proxy-lua-script)"
        except LuaError as e:
            return None, f"Lua script {self.script} failed to load: {e}"
        if factory is None:
            why = full_chunk_name(python_text(err), os.fspath(self.script))
            if self.lua.name == "luajit21" and "invalid escape sequence" in why:
                why += " (LuaJIT rejects escapes that Lua 5.1 accepted: --lua-runtime=lua5.1 loads it)"
            self._broken = _Compiled(key, None, f"Lua script failed to load: {why}")
            return None, self._broken.error
        self._compiled = _Compiled(key, factory, None)
        self._broken = None
        return factory, None

    def _factory(self, conn: ConnectionView) -> Any:
        """The script for a new connection: the file's current version, else the last good
        one (the problem logged once per change of the file), else ScriptLoadError."""
        factory, problem = self._load()
        if factory is not None:
            self._reported = None  # usable again: the next problem is news
            return factory
        good = self._compiled
        if good is None:  # nothing to fall back to: this client is refused
            self.log.log(logs.CRITICAL, "%s%s", log_prefix(conn), problem)
            raise ScriptLoadError(LOAD_FAILED)
        if problem != self._reported:
            self._reported = problem
            self.log.log(
                logs.CRITICAL, "%s; new connections keep using the last version that loaded", problem
            )
        return good.factory

    # -- callbacks from bridge.lua -------------------------------------------------------------

    def _release(self, cid: int) -> None:
        """An instance's client disconnected: it leaves the registry."""
        self._instances.pop(cid, None)

    def _hook_defined(self, cid: int, name: bytes | None) -> None:
        """bridge.lua wrote the hook ``name`` into connection ``cid``'s env (0: into _G), or
        (None) stopped tracking that table: its hooks are called from now on."""
        names = TRACKED_HOOKS if name is None else (bytes(name).decode("utf-8", "replace"),)
        if not cid:
            if self._calls is not None:
                self._calls.defined_in_G.update(names)
            return
        ref = self._instances.get(int(cid))
        hooks = ref() if ref is not None else None
        if hooks is not None:
            hooks.may_define(names)

    def _lookup(self, cid: int) -> ConnectionView | None:
        ref = self._instances.get(int(cid))
        hooks = ref() if ref is not None else None
        return hooks.conn if hooks is not None else None

    def _current_view(self) -> ConnectionView | None:
        return self._calls.current if self._calls is not None else None

    def _lua_log(self, level: bytes, message: bytes) -> None:
        conn = self._current_view()
        self.log.log(
            logs.LEVELS.get(python_text(level), logs.MESSAGE), "%s%s", log_prefix(conn), _log_text(message)
        )

    def _module_log(self, level: str, message: str) -> None:
        self.log.log(logs.LEVELS.get(level, logs.MESSAGE), "%s%s", log_prefix(self._current_view()), message)


def _stdout_write(data: bytes) -> None:
    """Lua's ``print``: the bytes as they are (a script may print binary data, as in 0.8.5)."""
    out = sys.stdout
    try:
        out.flush()
        raw = getattr(out, "buffer", None)
        if raw is not None:
            raw.write(bytes(data))
            raw.flush()
        else:
            out.write(bytes(data).decode("utf-8", "surrogateescape"))
            out.flush()
    except (OSError, ValueError):
        pass


def _log_text(message: Any) -> str:
    """A Lua log message (``chassis.*``, ``print`` once chassis is loaded) for the log file:
    its UTF-8 text as it is, other bytes as ``\\xNN``, so nothing is lost and the log stays
    valid UTF-8."""
    if isinstance(message, bytes | bytearray):
        return bytes(message).decode("utf-8", "backslashreplace")
    return str(message)
