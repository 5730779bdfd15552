"""The Lua :class:`~chassis_proxy.hooks.ScriptHost`: loads the script, instantiates it per
client connection and turns what the hooks do into :class:`~chassis_proxy.hooks.Outcome`.

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

from chassis_mysql.constants import Capability

from chassis import logs
from chassis_proxy.hooks import (
    NO_DECISION,
    ConnectionView,
    Decision,
    InjectionResult,
    Outcome,
    ScriptLoadError,
)
from chassis_proxy.lua.injection import ResultView
from chassis_proxy.lua.limits import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_MEMORY,
    OnError,
    format_memory_size,
    parse_memory_size,
)
from chassis_proxy.lua.modules import ModuleContext, bundled_modules
from chassis_proxy.lua.objects import ObjectAccess
from chassis_proxy.lua.response import RESPONSE_FAILED, ResponseBuilder, err_payload
from chassis_proxy.lua.runtime import (
    LIB_DIR,
    LuaError,
    LuaMemoryError,
    LuaState,
    default_search_paths,
    search_path,
)

#: ERR messages of MySQL Proxy 0.8.5 for a script that cannot be used (reference 3.9).
LOAD_FAILED = "MySQL Proxy Lua script failed to load. Check the error log."
EXEC_FAILED = "MySQL Proxy Lua script failed to execute. Check the error log."

# statuses returned by bridge.lua's guarded calls
_OK, _MISSING, _ERROR, _TIMEOUT, _MEMORY = 0, 1, 2, 3, 4

_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_LUA_OR_VALUE_ERROR: tuple[type[Exception], ...] = (*LuaError, ValueError)
_SEND_QUERY = int(Decision.SEND_QUERY)
_SEND_RESULT = int(Decision.SEND_RESULT)
_IGNORE_RESULT = int(Decision.IGNORE_RESULT)

#: Room left under --lua-max-memory, beyond the packet itself, for read_query to arm the
#: ceiling before calling into Lua (pushing the arguments must not hit it).
_ARM_HEADROOM = 1 << 20

_SEND_QUERY_OUTCOME = Outcome(Decision.SEND_QUERY)
_IGNORE_OUTCOME = Outcome(Decision.IGNORE_RESULT)


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
        self._ids = itertools.count(1)
        self._instances: dict[int, weakref.ref[LuaConnectionHooks]] = {}
        self._current: LuaConnectionHooks | None = None
        self._builder: ResponseBuilder | None = None
        self._compiled: _Compiled | None = None
        self._closed = False

        self._objects = ObjectAccess(self._lookup, self._current_view, self.log)
        callbacks: dict[str, Callable[..., Any]] = dict(self._objects.callbacks())
        callbacks.update(
            log=self._lua_log,
            stdout_write=_stdout_write,
            resp_ok=lambda *a: self._response().ok(*a),
            resp_err=lambda *a: self._response().err(*a),
            resp_field=lambda *a: self._response().field(*a),
            resp_row=lambda *a: self._response().row(*a),
            resp_raw=lambda *a: self._response().raw(*a),
        )
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
        self._entry = {
            name: self.lua.api[name.encode()]
            for name in (
                "instantiate",
                "call_hook",
                "call_read_query",
                "call_read_auth_result",
                "call_read_query_result",
            )
        }
        self._call_read_query = self._entry["call_read_query"]
        # read_query arms the allocator's ceiling itself when there is room for the packet:
        # cheaper than bridge.lua calling back into Python twice (see call_read_query_armed).
        self._call_read_query_armed = self.lua.api[b"call_read_query_armed"]
        self._arms_itself = self.lua.memory_enforced_by_allocator
        self._set_max_memory = self.lua.runtime.set_max_memory
        self._memory_used = self.lua.runtime.get_memory_used

    # -- ScriptHost --------------------------------------------------------------------------

    def open(self, conn: ConnectionView) -> LuaConnectionHooks:
        """The script instance of a new client connection (see ScriptHost.open)."""
        if self._closed:
            raise ScriptLoadError(LOAD_FAILED)
        factory = self._factory(conn)
        cid = next(self._ids)
        hooks = LuaConnectionHooks(self, conn, cid)
        instances = self._instances
        # a connection dropped without disconnect_client() still leaves the registry
        self._instances[cid] = weakref.ref(hooks, lambda _ref: instances.pop(cid, None))
        try:
            hooks._state = self.lua.call("new_connection", cid)
            status, value = self._guarded(hooks, "instantiate", hooks._state, factory)
        except BaseException:
            self._instances.pop(cid, None)
            raise
        if status != _OK:
            self._instances.pop(cid, None)
            hooks._state = None
            self._log_failure(conn, "script", status, value, what="the script's top level")
            raise ScriptLoadError(EXEC_FAILED)
        return hooks

    def close(self) -> None:
        """Forget every instance; the Lua state goes with the host."""
        self._closed = True
        for ref in list(self._instances.values()):
            hooks = ref()
            if hooks is not None:
                hooks._state = None
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
                    message = None if factory is not None else _text(err)
                    cached = self._compiled = _Compiled(key, factory, message)
        except OSError as e:
            self.log.log(
                logs.CRITICAL,
                "%sLua script %s cannot be read: %s (check --proxy-lua-script)",
                _prefix(conn), self.script, e.strerror or e,
            )
            raise ScriptLoadError(LOAD_FAILED) from None
        except LuaError as e:
            self.log.log(logs.CRITICAL, "%sLua script %s failed to load: %s", _prefix(conn), self.script, e)
            raise ScriptLoadError(LOAD_FAILED) from None
        if cached.error is not None:
            self.log.log(logs.CRITICAL, "%sLua script failed to load: %s", _prefix(conn), cached.error)
            raise ScriptLoadError(LOAD_FAILED)
        return cached.factory

    # -- calls into Lua ------------------------------------------------------------------------

    def _guarded(self, hooks: LuaConnectionHooks, fn: str, *args: Any) -> tuple[int, Any]:
        """Call a bridge.lua entry point for ``hooks``'s connection; (status, value)."""
        previous = self._current
        self._current = hooks
        try:
            status, value = self._entry[fn](*args)
        except LuaMemoryError:
            status, value = _MEMORY, None
        except LuaError as e:
            status, value = _ERROR, str(e).encode()
        finally:
            self._current = previous
        return int(status), value

    def _send_result(self, hooks: LuaConnectionHooks, hook: str) -> Outcome:
        """proxy.response as payloads; an ERR (and one log line) when it is unusable."""
        builder = ResponseBuilder(negotiated_capabilities(hooks.conn))
        previous, self._builder = self._builder, builder
        self._current, saved = hooks, self._current
        try:
            problem = self.lua.call("build_response", hooks._state)
            payloads = None if problem is not None else builder.result()
        except _LUA_OR_VALUE_ERROR as e:
            problem, payloads = str(e).encode(), None
        finally:
            self._builder = previous
            self._current = saved
        if payloads is None or not payloads:
            reason = _text(problem) if problem is not None else "proxy.response produced no packet"
            self.log.log(logs.CRITICAL, "%s(%s) %s", _prefix(hooks.conn), hook, reason)
            return Outcome(Decision.SEND_RESULT, [err_payload(RESPONSE_FAILED)])
        return Outcome(Decision.SEND_RESULT, payloads)

    def _response(self) -> ResponseBuilder:
        if self._builder is None:  # only bridge.lua's build_response calls the resp_* callbacks
            self._builder = ResponseBuilder()
        return self._builder

    # -- failures ------------------------------------------------------------------------------

    def _log_failure(
        self, conn: ConnectionView | None, hook: str, status: int, value: Any, what: str | None = None
    ) -> None:
        where = what or f"{hook}()"
        if status == _TIMEOUT:
            msg = (
                f"({hook}) {where} ran longer than --lua-hook-timeout={self.hook_timeout:g}s "
                "and was interrupted"
            )
        elif status == _MEMORY:
            limit = format_memory_size(self.max_memory) if self.max_memory else "the available memory"
            msg = f"({hook}) {where} ran out of memory (--lua-max-memory={limit}) and was interrupted"
        else:
            msg = f"({hook}) {_text(value)}"
        self.log.log(logs.CRITICAL, "%s%s", _prefix(conn), msg)

    def _failed(
        self, hooks: LuaConnectionHooks, hook: str, status: int, value: Any, can_answer: bool = True
    ) -> Outcome:
        """A hook raised or was interrupted: log it, then the C default or an ERR.

        ``can_answer`` is False where the client was already answered (a streamed result).
        """
        self._log_failure(hooks.conn, hook, status, value)
        if self.on_error is OnError.REJECT and can_answer:
            return Outcome(
                Decision.SEND_RESULT,
                [
                    err_payload(
                        f"(lua) {hook}() failed and --proxy-lua-on-error=reject is set; "
                        "check the proxy's error log",
                        1105,
                        "HY000",
                    )
                ],
            )
        return NO_DECISION

    def _unexpected(self, hooks: LuaConnectionHooks, hook: str, value: int, doing: str) -> None:
        self.log.log(
            logs.CRITICAL,
            "%s(%s) returned %s, which this hook does not handle: %s",
            _prefix(hooks.conn), hook, value, doing,
        )

    # -- callbacks from bridge.lua -------------------------------------------------------------

    def _lookup(self, cid: int) -> ConnectionView | None:
        ref = self._instances.get(int(cid))
        hooks = ref() if ref is not None else None
        return hooks.conn if hooks is not None else None

    def _current_view(self) -> ConnectionView | None:
        return self._current.conn if self._current is not None else None

    def _lua_log(self, level: bytes, message: bytes) -> None:
        conn = self._current_view()
        self.log.log(
            logs.LEVELS.get(_text(level), logs.MESSAGE), "%s%s", _prefix(conn), _text(message)
        )

    def _module_log(self, level: str, message: str) -> None:
        self.log.log(logs.LEVELS.get(level, logs.MESSAGE), "%s%s", _prefix(self._current_view()), message)


class LuaConnectionHooks:
    """One client's instance of the script (see :class:`chassis_proxy.hooks.ConnectionHooks`)."""

    def __init__(self, host: LuaScriptHost, conn: ConnectionView, cid: int) -> None:
        self.host = host
        self.conn = conn
        self.cid = cid
        self._state: Any = None

    def _call(self, fn: str, *args: Any) -> tuple[int, Any]:
        if self._state is None:
            return _MISSING, None
        return self.host._guarded(self, fn, self._state, *args)

    def has_hook(self, name: str) -> bool:
        """Whether the script defines ``name`` (lets the connection skip work for absent hooks)."""
        if self._state is None:
            return False
        return bool(self.host.lua.call("has_hook", self._state, name.encode()))

    def _decide(self, hook: str, status: int, value: Any) -> int | Outcome:
        """The hook's number (0 for none), or the Outcome of a failure."""
        if status == _MISSING:
            return 0
        if status != _OK:
            return self.host._failed(self, hook, status, value)
        if value is None:
            return 0
        return int(value)

    def connect_server(self) -> Outcome:
        d = self._decide("connect_server", *self._call("call_hook", b"connect_server"))
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            return self.host._send_result(self, "connect_server")
        if d == _IGNORE_RESULT:
            return _IGNORE_OUTCOME
        self.host._unexpected(self, "connect_server", d, "picking a backend as if it returned nothing")
        return NO_DECISION

    def read_handshake(self) -> Outcome:
        d = self._decide("read_handshake", *self._call("call_hook", b"read_handshake"))
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_QUERY:
            self.host.log.log(
                logs.WARNING,
                "%s(read_handshake) proxy.PROXY_SEND_QUERY is deprecated here, use proxy.PROXY_SEND_RESULT",
                _prefix(self.conn),
            )
            d = _SEND_RESULT
        if d == _SEND_RESULT:
            return self.host._send_result(self, "read_handshake")
        self.host._unexpected(self, "read_handshake", d, "forwarding the handshake")
        return NO_DECISION

    def read_auth(self) -> Outcome:
        d = self._decide("read_auth", *self._call("call_hook", b"read_auth"))
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            return self.host._send_result(self, "read_auth")
        if d == _SEND_QUERY:
            if len(self.conn.queries) == 0:
                self.host.log.log(
                    logs.CRITICAL,
                    "%s(read_auth) returned proxy.PROXY_SEND_QUERY but proxy.queries is empty: "
                    "forwarding the client's login packet",
                    _prefix(self.conn),
                )
                return NO_DECISION
            return _SEND_QUERY_OUTCOME
        self.host._unexpected(self, "read_auth", d, "forwarding the login packet")
        return NO_DECISION

    def read_auth_result(self, packet: bytes) -> Outcome:
        d = self._decide("read_auth_result", *self._call("call_read_auth_result", packet))
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            return self.host._send_result(self, "read_auth_result")
        self.host._unexpected(self, "read_auth_result", d, "forwarding the server's answer")
        return NO_DECISION

    def read_query(self, packet: bytes) -> Outcome:
        queries = self.conn.queries
        queries.reset()
        state = self._state
        if state is None:
            return NO_DECISION
        # LuaScriptHost._guarded, inlined: this runs for every client command.
        host = self.host
        previous = host._current
        host._current = self
        try:
            if host._arms_itself and (host._memory_used() + len(packet) + _ARM_HEADROOM
                                      < host.max_memory):
                host._set_max_memory(host.max_memory)
                try:
                    status, value = host._call_read_query_armed(state, packet)
                finally:
                    host._set_max_memory(0)
            else:
                status, value = host._call_read_query(state, packet)
        except LuaMemoryError:
            status, value = _MEMORY, None
        except LuaError as e:
            status, value = _ERROR, str(e).encode()
        finally:
            host._current = previous
        if value is None and status <= _MISSING:  # the hook returned nothing, or there is none
            if len(queries):
                self._discard_queue()
            return NO_DECISION
        d = self._decide("read_query", int(status), value)
        if isinstance(d, Outcome):
            queries.reset()
            return d
        if d == 0:
            if len(queries):
                self._discard_queue()
            return NO_DECISION
        if d == _SEND_QUERY:
            if len(queries) == 0:
                self.host.log.log(
                    logs.CRITICAL,
                    "%s(read_query) returned proxy.PROXY_SEND_QUERY but proxy.queries is empty: "
                    "sending the original query",
                    _prefix(self.conn),
                )
                return NO_DECISION
            return _SEND_QUERY_OUTCOME
        if d == _SEND_RESULT:
            queries.reset()
            return self.host._send_result(self, "read_query")
        queries.reset()
        self.host._unexpected(self, "read_query", d, "sending the original query")
        return NO_DECISION

    def _discard_queue(self) -> None:
        queries = self.conn.queries
        self.host.log.log(
            logs.CRITICAL,
            "%s(read_query) proxy.queries has %d entries but the hook did not return "
            "proxy.PROXY_SEND_QUERY: they are discarded and the original query is sent",
            _prefix(self.conn), len(queries),
        )
        queries.reset()

    def read_query_result(self, result: InjectionResult) -> Outcome:
        buffered = result.packets is not None
        if self._state is None:
            return NO_DECISION
        view = ResultView(result, self.host.lua.table, negotiated_capabilities(self.conn))
        summary = self.host.lua.table(view.summary())
        status, value = self._call("call_read_query_result", summary, view.fields, view.row)
        if status == _MISSING:
            return NO_DECISION
        if status != _OK:
            return self.host._failed(self, "read_query_result", status, value, can_answer=buffered)
        d = 0 if value is None else int(value)
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            if not buffered:
                self.host.log.log(
                    logs.CRITICAL,
                    "%s(read_query_result) returned proxy.PROXY_SEND_RESULT for injection %d, "
                    "whose result was not buffered (append it with { resultset_is_needed = true }): "
                    "the original result was sent",
                    _prefix(self.conn), result.injection.id,
                )
                return NO_DECISION
            return self.host._send_result(self, "read_query_result")
        if d == _IGNORE_RESULT:
            if not buffered:
                self.host.log.log(
                    logs.CRITICAL,
                    "%s(read_query_result) returned proxy.PROXY_IGNORE_RESULT for injection %d, "
                    "whose result was already streamed to the client (append it with "
                    "{ resultset_is_needed = true } to drop it)",
                    _prefix(self.conn), result.injection.id,
                )
                return NO_DECISION
            return _IGNORE_OUTCOME
        self.host._unexpected(
            self, "read_query_result", d,
            "the result is dropped" if buffered else "the result was already streamed",
        )
        return _IGNORE_OUTCOME if buffered else NO_DECISION

    def disconnect_client(self) -> None:
        try:
            status, value = self._call("call_hook", b"disconnect_client")
            if status not in (_OK, _MISSING):
                self.host._log_failure(self.conn, "disconnect_client", status, value)
        finally:
            self._state = None
            self.host._instances.pop(self.cid, None)


def negotiated_capabilities(conn: ConnectionView) -> int:
    """The capabilities the client and server agreed on, which decide how result sets end
    (EOF or, with CLIENT_DEPRECATE_EOF, OK) and how column definitions look.

    ConnectionView does not carry them; the proxy's connection has ``client_capabilities``
    and ``server_handshake``, so they are read when present. Without them: PROTOCOL_41.
    """
    caps = getattr(conn, "client_capabilities", None)
    if not isinstance(caps, int):
        return _PROTOCOL_41
    handshake = getattr(conn, "server_handshake", None)
    server = getattr(handshake, "capabilities", None)
    if server is not None:
        caps &= int(server)
    return caps | _PROTOCOL_41


def _prefix(conn: ConnectionView | None) -> str:
    """Log lines about a connection start with its id."""
    if conn is None:
        return ""
    return f"conn {conn.connection_id}: "


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _stdout_write(data: bytes) -> None:
    out = sys.stdout
    try:
        out.write(_text(data))
        out.flush()
    except (OSError, ValueError):
        pass
