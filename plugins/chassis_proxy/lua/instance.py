"""One client's instance of the Lua script: what each hook returned, as an
:class:`~chassis_proxy.hooks.Outcome` (see :class:`chassis_proxy.hooks.ConnectionHooks`).

The instance is handed what it needs by the host (the hook calls, the limits, the
response collector, a callback that takes it off the host's registry), never the host:
the calls into Lua go through :class:`~chassis_proxy.lua.calls.HookCalls`, a failed call
becomes what :class:`~chassis_proxy.lua.limits.Limits` says, and proxy.response is read
through :class:`~chassis_proxy.lua.response.ResponseCollector`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from chassis import logs
from chassis_proxy.hooks import (
    NO_DECISION,
    ConnectionView,
    Decision,
    InjectionResult,
    Outcome,
)
from chassis_proxy.lua.calls import HookCalls, unpack_answer
from chassis_proxy.lua.injection import ResultView
from chassis_proxy.lua.limits import ARM_HEADROOM, CALL_ERROR, CALL_MEMORY, CALL_MISSING, CALL_OK, Limits
from chassis_proxy.lua.objects import log_prefix, negotiated_capabilities, python_text
from chassis_proxy.lua.response import RESPONSE_FAILED, ResponseCollector, err_payload
from chassis_proxy.lua.runtime import LuaError, LuaMemoryError

_LUA_OR_VALUE_ERROR: tuple[type[Exception], ...] = (*LuaError, ValueError)
_SEND_QUERY = int(Decision.SEND_QUERY)
#: A command this small cannot crowd the headroom the count hook keeps (LuaJIT's soft limit).
SMALL_PACKET = ARM_HEADROOM // 4
_SEND_RESULT = int(Decision.SEND_RESULT)
_IGNORE_RESULT = int(Decision.IGNORE_RESULT)

_SEND_QUERY_OUTCOME = Outcome(Decision.SEND_QUERY)
_IGNORE_OUTCOME = Outcome(Decision.IGNORE_RESULT)


class LuaConnectionHooks:
    """One client's instance of the script (see :class:`chassis_proxy.hooks.ConnectionHooks`).

    ``state`` is bridge.lua's per-connection state (the script's env and private
    proxy.* keys), in which the host runs the script's top level (None until
    :meth:`attach`); ``release(cid)`` takes the instance off the host's registry when the
    client disconnects. A tracked hook (calls.TRACKED_HOOKS) that neither the env nor _G
    may hold is answered here without calling into Lua.
    """

    def __init__(
        self,
        conn: ConnectionView,
        cid: int,
        state: Any,
        *,
        calls: HookCalls,
        limits: Limits,
        responses: ResponseCollector,
        release: Callable[[int], None],
        log: logging.Logger,
    ) -> None:
        self.conn = conn
        self.cid = cid
        self._state: Any = state
        self._calls = calls
        self._limits = limits
        self._responses = responses
        self._release = release
        self._log = log
        #: The tracked hooks (calls.TRACKED_HOOKS) that may be defined in the env: what the
        #: top level left there and what was written there since (bridge.lua tells).
        self._defined: frozenset[str] | set[str] = frozenset()
        self._in_G = calls.defined_in_G  # the same for _G, shared by the connections

    def attach(self, state: Any, defined: frozenset[str]) -> None:
        """The script's top level ran in ``state``, leaving the tracked hooks ``defined``."""
        self._state = state
        self._defined = self._defined | defined if self._defined else defined

    def may_define(self, names: tuple[str, ...]) -> None:
        """The script wrote the hooks ``names`` into the env (or may have): call them."""
        self._defined = self._defined.union(names)

    def _absent(self, hook: str) -> bool:
        """Whether the script surely does not define ``hook`` (a tracked one) now."""
        return hook not in self._defined and hook not in self._in_G

    def detach(self) -> None:
        """Stop calling into Lua: the host closed, or the script's top level failed. Every
        hook then answers as if the script did not define it."""
        self._state = None

    def _call(self, fn: str, *args: Any) -> tuple[int, Any]:
        if self._state is None:
            return CALL_MISSING, None
        return self._calls.call(self.conn, fn, self._state, *args)

    def _call_hook(self, name: bytes) -> tuple[int, Any]:
        if self._state is None:
            return CALL_MISSING, None
        return self._calls.call_hook(self.conn, self._state, name)

    def _login_hook(self, hook: str, name: bytes) -> int | Outcome:
        """Run the hook ``name`` (bytes of ``hook``) without arguments: :meth:`_decide` of
        what :meth:`_call_hook` returns, in one call (the login hooks run at every login)."""
        state = self._state
        if state is None:
            return 0
        status, value = self._calls.call_hook(self.conn, state, name)
        if status == CALL_OK:
            return 0 if value is None else int(value)
        if status == CALL_MISSING:
            return 0
        return self._limits.failed(self.conn, hook, status, value)

    def has_hook(self, name: str) -> bool:
        """Whether the script defines ``name`` (lets the connection skip work for absent hooks)."""
        if self._state is None:
            return False
        return self._calls.has_hook(self._state, name)

    def _decide(self, hook: str, status: int, value: Any) -> int | Outcome:
        """The hook's number (0 for none), or the Outcome of a failure."""
        if status == CALL_MISSING:
            return 0
        if status != CALL_OK:
            return self._limits.failed(self.conn, hook, status, value)
        if value is None:
            return 0
        return int(value)

    def connect_server(self) -> Outcome:
        if "connect_server" not in self._defined and "connect_server" not in self._in_G:
            return NO_DECISION
        d = self._login_hook("connect_server", b"connect_server")
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            return self._send_result("connect_server")
        if d == _IGNORE_RESULT:
            return _IGNORE_OUTCOME
        self._unexpected("connect_server", d, "picking a backend as if it returned nothing")
        return NO_DECISION

    def read_handshake(self) -> Outcome:
        if "read_handshake" not in self._defined and "read_handshake" not in self._in_G:
            return NO_DECISION
        d = self._login_hook("read_handshake", b"read_handshake")
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_QUERY:
            self._log.log(
                logs.WARNING,
                "%s(read_handshake) proxy.PROXY_SEND_QUERY is deprecated here, use proxy.PROXY_SEND_RESULT",
                log_prefix(self.conn),
            )
            d = _SEND_RESULT
        if d == _SEND_RESULT:
            return self._send_result("read_handshake")
        self._unexpected("read_handshake", d, "forwarding the handshake")
        return NO_DECISION

    def read_auth(self) -> Outcome:
        if "read_auth" not in self._defined and "read_auth" not in self._in_G:
            return NO_DECISION
        d = self._login_hook("read_auth", b"read_auth")
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            return self._send_result("read_auth")
        if d == _SEND_QUERY:
            if len(self.conn.queries) == 0:
                self._log.log(
                    logs.CRITICAL,
                    "%s(read_auth) returned proxy.PROXY_SEND_QUERY but proxy.queries is empty: "
                    "forwarding the client's login packet",
                    log_prefix(self.conn),
                )
                return NO_DECISION
            return _SEND_QUERY_OUTCOME
        self._unexpected("read_auth", d, "forwarding the login packet")
        return NO_DECISION

    def read_auth_result(self, packet: bytes) -> Outcome:
        if "read_auth_result" not in self._defined and "read_auth_result" not in self._in_G:
            return NO_DECISION
        d = self._decide("read_auth_result", *self._call("call_read_auth_result", packet))
        if isinstance(d, Outcome):
            return d
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            return self._send_result("read_auth_result")
        self._unexpected("read_auth_result", d, "forwarding the server's answer")
        return NO_DECISION

    def read_query(self, packet: bytes) -> Outcome:
        conn = self.conn
        queries = conn.queries
        if queries:
            queries.reset()
        state = self._state
        if state is None:
            return NO_DECISION
        # HookCalls.call, inlined (this runs for every client command), arming the memory
        # ceiling from here when there is room for the packet (see HookCalls.arm_below).
        calls = self._calls
        size = len(packet)
        used = 0
        # Where the allocator counts, asking is a C call; else (LuaJIT) it is a Lua call, and
        # only a packet that could crowd the headroom the count hook keeps is worth it.
        if calls.max_memory and (calls.arms_itself or size > SMALL_PACKET):
            used = calls.memory_used()
            if used + 2 * size > calls.arm_below and not calls.fits(size, used):
                return self._limits.too_big(conn, "read_query", size, calls.memory_used())
        previous = calls.current
        calls.current = conn
        started = perf_counter()
        if calls.arms_itself and used + size < calls.arm_below:
            set_max_memory = calls.set_max_memory
            set_max_memory(calls.max_memory)
            try:
                answer = calls.call_read_query_armed(state, packet)
            except LuaMemoryError:
                answer = CALL_MEMORY, None
            except LuaError as e:
                answer = CALL_ERROR, str(e).encode()
            finally:
                set_max_memory(0)
                calls.current = previous
        else:  # the same, unarmed (HookCalls.call's shape, inlined as above)
            try:
                answer = calls.call_read_query(state, packet)
            except LuaMemoryError:
                answer = CALL_MEMORY, None
            except LuaError as e:
                answer = CALL_ERROR, str(e).encode()
            finally:
                calls.current = previous
        if answer is None:  # the hook returned no number (the common case), in short
            calls.read_query_calls += 1  # the metrics (HookCalls.hook_stats)
            calls.read_query_seconds += perf_counter() - started
            if used and calls.memory_used() - used > calls.big_hook:
                calls.collect()  # the packet and the hook's garbage, before anyone arms again
            if queries:
                self._discard_queue()
            return NO_DECISION
        status, value = unpack_answer(answer)
        if status != CALL_MISSING:  # the metrics (HookCalls.hook_stats)
            calls.read_query_calls += 1
            calls.read_query_seconds += perf_counter() - started
        if used and calls.memory_used() - used > calls.big_hook:
            calls.collect()  # the packet and the hook's garbage, before anyone arms again
        if value is None and status <= CALL_MISSING:  # the hook returned nothing, or there is none
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
                self._log.log(
                    logs.CRITICAL,
                    "%s(read_query) returned proxy.PROXY_SEND_QUERY but proxy.queries is empty: "
                    "sending the original query",
                    log_prefix(self.conn),
                )
                return NO_DECISION
            return _SEND_QUERY_OUTCOME
        if d == _SEND_RESULT:
            queries.reset()
            return self._send_result("read_query")
        queries.reset()
        self._unexpected("read_query", d, "sending the original query")
        return NO_DECISION

    def _discard_queue(self) -> None:
        queries = self.conn.queries
        self._log.log(
            logs.CRITICAL,
            "%s(read_query) proxy.queries has %d entries but the hook did not return "
            "proxy.PROXY_SEND_QUERY: they are discarded and the original query is sent",
            log_prefix(self.conn), len(queries),
        )
        queries.reset()

    def sees_results(self) -> bool:
        return self._state is not None and not self._absent("read_query_result")

    def read_query_result(self, result: InjectionResult) -> Outcome:
        buffered = result.packets is not None
        if self._state is None or self._absent("read_query_result"):
            return NO_DECISION
        view = ResultView(result, self._calls.table, self.conn)
        args = view.arguments()
        status, value = self._calls.call_read_query_result(self.conn, self._state, args, view.size)
        if status == CALL_MISSING:
            return NO_DECISION
        if status != CALL_OK:
            return self._limits.failed(self.conn, "read_query_result", status, value, can_answer=buffered)
        d = 0 if value is None else int(value)
        if d == 0:
            return NO_DECISION
        if d == _SEND_RESULT:
            if not buffered:
                self._log.log(
                    logs.CRITICAL,
                    "%s(read_query_result) returned proxy.PROXY_SEND_RESULT for injection %d, "
                    "whose result was not buffered (append it with { resultset_is_needed = true }): "
                    "the original result was sent",
                    log_prefix(self.conn), result.injection.id,
                )
                return NO_DECISION
            return self._send_result("read_query_result")
        if d == _IGNORE_RESULT:
            if not buffered:
                self._log.log(
                    logs.CRITICAL,
                    "%s(read_query_result) returned proxy.PROXY_IGNORE_RESULT for injection %d, "
                    "whose result was already streamed to the client (append it with "
                    "{ resultset_is_needed = true } to drop it)",
                    log_prefix(self.conn), result.injection.id,
                )
                return NO_DECISION
            return _IGNORE_OUTCOME
        self._unexpected(
            "read_query_result", d,
            "the result is dropped" if buffered else "the result was already streamed",
        )
        return _IGNORE_OUTCOME if buffered else NO_DECISION

    def disconnect_client(self) -> None:
        try:
            if not self._absent("disconnect_client"):
                status, value = self._call_hook(b"disconnect_client")
                if status not in (CALL_OK, CALL_MISSING):
                    self._limits.log_failure(self.conn, "disconnect_client", status, value)
        finally:
            self._state = None
            self._release(self.cid)

    # -- answers -------------------------------------------------------------------------------

    def _send_result(self, hook: str) -> Outcome:
        """proxy.response as payloads; an ERR (and one log line) when it is unusable."""
        conn, state = self.conn, self._state
        try:
            problem, payloads = self._responses.collect(
                negotiated_capabilities(conn), lambda: self._calls.build_response(conn, state)
            )
        except _LUA_OR_VALUE_ERROR as e:
            problem, payloads = str(e).encode(), None
        if payloads is None or not payloads:
            reason = python_text(problem) if problem is not None else "proxy.response produced no packet"
            self._log.log(logs.CRITICAL, "%s(%s) %s", log_prefix(conn), hook, reason)
            return Outcome(Decision.SEND_RESULT, [err_payload(RESPONSE_FAILED)])
        return Outcome(Decision.SEND_RESULT, payloads)

    def _unexpected(self, hook: str, value: int, doing: str) -> None:
        self._log.log(
            logs.CRITICAL,
            "%s(%s) returned %s, which this hook does not handle: %s",
            log_prefix(self.conn), hook, value, doing,
        )
