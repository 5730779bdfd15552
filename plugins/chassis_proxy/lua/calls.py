"""The calls into bridge.lua's entry points, and which connection's hook is running.

Every call that runs script code goes through :class:`HookCalls`: it records the
connection whose hook runs (``proxy.global.backends``, log lines and the response
builder read it back as :attr:`HookCalls.current`) and turns a Lua error into the
statuses of :mod:`chassis_proxy.lua.limits`. The one exception is ``read_query``, which
runs for every client command: :meth:`LuaConnectionHooks.read_query
<chassis_proxy.lua.instance.LuaConnectionHooks.read_query>` inlines :meth:`HookCalls.call`
(a Python call fewer per command) with the public attributes below, and arms
``--lua-max-memory`` itself when there is room for the packet, instead of limits.lua
calling back into Python twice to arm and lift it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chassis_proxy.hooks import ConnectionView
from chassis_proxy.lua.limits import ARM_HEADROOM, CALL_ERROR, CALL_MEMORY, CALL_MISSING, CALL_OK
from chassis_proxy.lua.runtime import LuaError, LuaMemoryError, LuaState

#: The hooks whose absence the Python side tracks (bridge.lua's "Which hooks a script may
#: define"), in the order of the bits of bridge.lua's ``open``: a call for one of these that
#: the script surely does not define is answered without crossing into Lua.
TRACKED_HOOKS = (
    "connect_server",
    "read_handshake",
    "read_auth",
    "read_auth_result",
    "read_query_result",
    "disconnect_client",
)

#: The names of the bits of bridge.lua's ``open`` (its fourth value), as they are met.
_BY_BITS: dict[int, frozenset[str]] = {}

#: The hook each entry point runs, for the metrics (``call_hook`` names its hook itself).
_HOOK_OF = {
    "call_read_query": "read_query",
    "call_read_auth_result": "read_auth_result",
    "call_read_query_result": "read_query_result",
}

#: The hooks call_hook runs, by their names as bytes (for the metrics).
_HOOK_NAMES = {name.encode(): name for name in TRACKED_HOOKS}

#: bridge.lua's entry points that run script code (see its "hook dispatcher").
_ENTRIES = (
    "call_hook",
    "call_read_query",
    "call_read_auth_result",
    "call_read_query_result",
)


def unpack_answer(answer: Any) -> tuple[int, Any]:
    """(status, value) of a short answer: call_read_query(_armed) and call_hook_armed
    (limits.lua's read_query_entries, run_armed_bare) answer a hook that returned with nothing
    (None) or the number it returned, anything else as (status, value)."""
    if answer is None:
        return CALL_OK, None
    if answer.__class__ is tuple:
        return int(answer[0]), answer[1]
    return CALL_OK, answer


class HookCalls:
    """bridge.lua's hook entry points for one Lua state, each call made on behalf of a
    connection (``conn``) and returning ``(status, value)`` (see limits.lua)."""

    def __init__(self, lua: LuaState) -> None:
        self.lua = lua
        #: A Lua table from a dict or a sequence (LuaState.table), for values handed to hooks.
        self.table = lua.table
        #: The connection whose hook (or proxy.response) is running, if any. Whoever calls
        #: into Lua sets it for the call and restores the previous value after it.
        self.current: ConnectionView | None = None
        self._entry = {name: lua.api[name.encode()] for name in _ENTRIES}
        self._open: Callable[[int, Any, bool], Any] = lua.api[b"open"]
        self._hook_armed: Callable[[Any, bytes], Any] = lua.api[b"call_hook_armed"]
        lua.api[b"track_hooks"](lua.table([name.encode() for name in TRACKED_HOOKS]))
        #: The tracked hooks that may be defined in _G (the envs' are the instances'); a
        #: name is added when written there (bridge.lua's py.hook_defined), never removed.
        self.defined_in_G: set[str] = set()

        # -- what read_query's inlined call uses --
        #: bridge.lua's ``call_read_query(state, packet)``: limits.lua arms the ceiling; it
        #: answers in short (see :func:`unpack_answer`).
        self.call_read_query: Callable[[Any, bytes], Any] = self._entry["call_read_query"]
        #: ``call_read_query_armed(state, packet)``: the caller armed the ceiling and lifts it;
        #: it answers in short (see :func:`unpack_answer`).
        self.call_read_query_armed: Callable[[Any, bytes], Any] = lua.api[b"call_read_query_armed"]
        #: ``call_read_query_result_armed(state, ...)``: the same for read_query_result.
        self._result_armed: Callable[..., Any] = lua.api[b"call_read_query_result_armed"]
        #: Whether the allocator enforces --lua-max-memory (else nothing is armed).
        self.arms_itself = lua.memory_enforced_by_allocator
        #: --lua-max-memory in bytes, the ceiling to arm.
        self.max_memory = lua.max_memory
        #: read_query arms the ceiling itself while the state's bytes plus the packet's stay
        #: under this (room left for pushing the arguments).
        self.arm_below = lua.max_memory - ARM_HEADROOM
        #: ``set_max_memory(bytes)`` arms the ceiling, ``set_max_memory(0)`` lifts it.
        self.set_max_memory: Callable[[int], Any] = lua.runtime.set_max_memory
        #: ``memory_used()``: the bytes the state holds (the allocator's count when it
        #: enforces the ceiling, else the garbage collector's).
        self.memory_used: Callable[[], int] = (
            lua.runtime.get_memory_used if lua.memory_enforced_by_allocator else lua.memory_used
        )
        #: A hook that grew the state by more than this (its packet included) leaves its
        #: garbage to a full collection at once, before the ceiling is armed for anyone else.
        self.big_hook = max(ARM_HEADROOM, lua.max_memory // 8)
        self._live = 0  # bytes in use after the last full collection
        # -- the metrics: calls of each defined hook and the seconds they took (failures
        # are counted by Limits); read_query's as plain attributes, its path is inlined --
        self.read_query_calls = 0
        self.read_query_seconds = 0.0
        self.hook_calls: dict[str, int] = {}
        self.hook_seconds: dict[str, float] = {}

    def hook_stats(self) -> dict[str, tuple[int, float]]:
        """Calls and seconds per hook, read_query's included."""
        out = {hook: (n, self.hook_seconds.get(hook, 0.0)) for hook, n in self.hook_calls.items()}
        if self.read_query_calls:
            out["read_query"] = (self.read_query_calls, self.read_query_seconds)
        return out

    def collect(self) -> int:
        """A full garbage collection, with the ceiling lifted: the bytes still in use."""
        self.lua.collect()
        self._live = used = self.memory_used()
        return used

    def fits(self, size: int, used: int) -> bool:
        """Whether a packet of ``size`` bytes can be shown to ``read_query`` within
        --lua-max-memory, the state holding ``used`` bytes: room for it twice (the packet
        and the copy ``packet:sub(2)`` makes). Short of room, the garbage is collected
        first (when there can be a MiB of it), so that one client's big packet or hook
        never leaves the next client's hook without room.
        """
        if used + 2 * size <= self.arm_below:
            return True
        if used - self._live > ARM_HEADROOM:
            used = self.collect()
        return used + 2 * size <= self.max_memory

    def open(self, conn: ConnectionView, cid: int, factory: Any) -> tuple[Any, int, Any, frozenset[str]]:
        """A fresh per-connection state (its env and private proxy.* keys) for ``cid``, in
        which the script (``factory``) runs from the top, in one call into Lua: the state,
        (status, value) as :meth:`call`'s, and the tracked hooks the top level defined."""
        previous = self.current
        self.current = conn
        started = time.perf_counter()
        used = self.memory_used() if self.arms_itself else 0
        armed = self.arms_itself and used < self.arm_below  # as call_hook
        if armed:
            self.set_max_memory(self.max_memory)
        try:
            state, status, value, bits = self._open(cid, factory, armed)
        except LuaMemoryError:
            state, status, value, bits = None, CALL_MEMORY, None, 0
        except LuaError as e:
            state, status, value, bits = None, CALL_ERROR, str(e).encode(), 0
        finally:
            if armed:
                self.set_max_memory(0)
            self.current = previous
        if armed and self.memory_used() - used > self.big_hook:
            self.collect()  # the top level's garbage, before anyone arms again
        status = int(status)
        self.hook_calls["script"] = self.hook_calls.get("script", 0) + 1
        self.hook_seconds["script"] = self.hook_seconds.get("script", 0.0) + time.perf_counter() - started
        names = _BY_BITS.get(bits)
        if names is None:
            names = _BY_BITS[bits] = frozenset(n for i, n in enumerate(TRACKED_HOOKS) if int(bits) >> i & 1)
        return state, status, value, names

    def has_hook(self, state: Any, name: str) -> bool:
        """Whether the script instance behind ``state`` defines ``name``."""
        return bool(self.lua.call("has_hook", state, name.encode()))

    def call(self, conn: ConnectionView, fn: str, *args: Any) -> tuple[int, Any]:
        """Call the entry point ``fn`` for ``conn``'s script instance: (status, value)."""
        previous = self.current
        self.current = conn
        started = time.perf_counter()
        try:
            status, value = self._entry[fn](*args)
        except LuaMemoryError:
            status, value = CALL_MEMORY, None
        except LuaError as e:
            status, value = CALL_ERROR, str(e).encode()
        finally:
            self.current = previous
        status = int(status)
        if status != CALL_MISSING:
            hook = _HOOK_OF.get(fn)
            if hook is None:  # call_hook(state, name)
                hook = args[1].decode() if len(args) > 1 and isinstance(args[1], bytes) else fn
            self.hook_calls[hook] = self.hook_calls.get(hook, 0) + 1
            self.hook_seconds[hook] = self.hook_seconds.get(hook, 0.0) + time.perf_counter() - started
        return status, value

    def call_read_query_result(self, conn: ConnectionView, state: Any, args: tuple[Any, ...],
                               size: int) -> tuple[int, Any]:
        """:meth:`call` of ``call_read_query_result`` with ``args`` (``size``: the bytes of
        its strings), arming --lua-max-memory from here when there is room for them, as
        read_query does: two Python callbacks fewer per result."""
        if not self.arms_itself:
            return self.call(conn, "call_read_query_result", state, *args)
        used = self.memory_used()
        if used + size >= self.arm_below:
            return self.call(conn, "call_read_query_result", state, *args)
        return self._call_armed(conn, used, self._result_armed, "read_query_result", state, *args)

    def call_hook(self, conn: ConnectionView, state: Any, name: bytes) -> tuple[int, Any]:
        """:meth:`call` of ``call_hook`` for the hook ``name``, arming --lua-max-memory from
        here when there is room, as read_query does: two Python callbacks fewer per call."""
        if not self.arms_itself:
            return self.call(conn, "call_hook", state, name)
        used = self.memory_used()
        if used >= self.arm_below:
            return self.call(conn, "call_hook", state, name)
        return self._call_armed(conn, used, self._hook_armed, _HOOK_NAMES.get(name) or name.decode(),
                                state, name)

    def _call_armed(self, conn: ConnectionView, used: int, entry: Callable[..., Any], hook: str,
                    *args: Any) -> tuple[int, Any]:
        """``entry(*args)`` (a bridge.lua entry that leaves the ceiling to its caller) for
        ``conn``'s ``hook`` with the ceiling armed, the state holding ``used`` bytes."""
        previous = self.current
        self.current = conn
        started = time.perf_counter()
        self.set_max_memory(self.max_memory)
        try:
            answer = entry(*args)
        except LuaMemoryError:
            answer = CALL_MEMORY, None
        except LuaError as e:
            answer = CALL_ERROR, str(e).encode()
        finally:
            self.set_max_memory(0)
            self.current = previous
        status, value = unpack_answer(answer)
        if status != CALL_MISSING:
            self.hook_calls[hook] = self.hook_calls.get(hook, 0) + 1
            self.hook_seconds[hook] = self.hook_seconds.get(hook, 0.0) + time.perf_counter() - started
        if self.memory_used() - used > self.big_hook:
            self.collect()  # the hook's garbage, before anyone arms again
        return status, value

    def build_response(self, conn: ConnectionView, state: Any) -> Any:
        """Have response.lua read ``conn``'s proxy.response into the ``resp_*`` callbacks:
        None, or why it cannot be sent. Lua errors propagate."""
        previous = self.current
        self.current = conn
        try:
            return self.lua.call("build_response", state)
        finally:
            self.current = previous
