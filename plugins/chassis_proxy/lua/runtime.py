"""The one place that knows lupa: pick a Lua 5.1 runtime, create the state, load the bridge.

MySQL Proxy scripts are Lua 5.1 (``module()``, ``setfenv``). ``--lua-runtime`` picks the
runtime: ``lua5.1`` (the default; lupa's PUC Lua 5.1, what MySQL Proxy 0.8.5 ran, so
scripts load and order ``pairs()`` as they did) or ``luajit`` (lupa's LuaJIT 2.1:
faster, but it rejects some 5.1 sources, such as the invalid escape in
``"^(%d+)\\.(%d+)"``); never 5.2+. One :class:`LuaState` per worker process: every
connection of the worker runs in it, which is what gives ``proxy.global`` and
``require``\\d modules their sharing. Everything else in the bridge talks to Lua through
the functions returned by ``bridge.lua`` and catches :data:`LuaError` from here.

C modules (``require("lpeg")`` from ``--lua-cpath``) are built against the Lua C API and
resolve ``lua_*`` symbols when they are loaded; lupa links its Lua into its extension
module with local symbols. The first state created makes its runtime's extension global
(:func:`_bind_c_api`), so the modules bind to the Lua that runs them; a state of the other
runtime in the same process refuses C modules with a clear error instead of crashing.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
#: The pure-Lua ``proxy.*`` library shipped with chassis (``require("proxy.tokenizer")``,
#: see docs/lualib.md); always on ``package.path``, after the user's directories.
LIB_DIR = PACKAGE_DIR.parent / "lualib"

#: The parts ``bridge.lua`` is built from (package data next to it), each the Lua half of the
#: Python module of the same name; bridge.lua runs them in its own order.
BRIDGE_PARTS = ("limits", "objects", "response", "injection")

#: ``--lua-runtime`` values and lupa's module for each, the default first.
RUNTIME_OPTIONS = {"lua5.1": "lua51", "luajit": "luajit21"}
#: lupa's Lua 5.1 runtimes, the default first.
RUNTIMES = tuple(RUNTIME_OPTIONS.values())
_NAMES = {"luajit21": "LuaJIT 2.1", "lua51": "Lua 5.1"}


class LuaUnavailable(ImportError):
    """No Lua 5.1 runtime could be imported (an ImportError: the package cannot work)."""


def _import_runtimes() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    errors = []
    for name in RUNTIMES:
        try:
            found[name] = importlib.import_module(f"lupa.{name}")
        except ImportError as e:
            errors.append(f"lupa.{name}: {e}")
    if not found:
        raise LuaUnavailable(
            "no Lua 5.1 runtime: lupa provides neither Lua 5.1 nor LuaJIT 2.1 here ("
            + "; ".join(errors) + "); install lupa>=2 (pip install 'lupa>=2')"
        )
    return found


_runtimes = _import_runtimes()

#: The runtime of a state created without naming one: ``lua5.1`` (``--lua-runtime``'s
#: default), or LuaJIT where this lupa has no PUC Lua 5.1.
DEFAULT_RUNTIME = next(iter(_runtimes))

#: Raised by every call into Lua that fails (syntax errors included), whichever runtime.
LuaError: tuple[type[Exception], ...] = tuple(m.LuaError for m in _runtimes.values())
#: The memory limit was reached (subclasses of LuaError and MemoryError).
LuaMemoryError: tuple[type[Exception], ...] = tuple(m.LuaMemoryError for m in _runtimes.values())

#: The runtime C modules bind to in this process (the first one a state was created with).
_c_api_runtime: str | None = None


def resolve_runtime(option: str | None) -> str:
    """lupa's name (``lua51``, ``luajit21``) for a ``--lua-runtime`` value (``lua5.1``,
    ``luajit``; lupa's own names are accepted too); None: the default.

    Raises :class:`LuaUnavailable` naming the choices when it is unknown or not built here.
    """
    if option is None:
        return DEFAULT_RUNTIME
    name = RUNTIME_OPTIONS.get(option, option)
    if name not in _runtimes:
        known = [o for o, n in RUNTIME_OPTIONS.items() if n in _runtimes]
        why = "is not built into this lupa" if name in RUNTIMES else "is not a Lua runtime"
        raise LuaUnavailable(f"--lua-runtime={option} {why}; use one of {', '.join(known)}")
    return name


def _bind_c_api(name: str) -> str | None:
    """Make runtime ``name``'s Lua C API the one C modules resolve against, once per
    process; None when they can load into its states, else why not."""
    global _c_api_runtime
    if _c_api_runtime is None:
        path = _runtimes[name].__file__
        try:
            # promote the already loaded extension to the global symbol scope
            ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_GLOBAL | getattr(os, "RTLD_NOLOAD", 0))
        except OSError as e:
            return f"lupa's {_NAMES[name]} cannot export the Lua C API ({e})"
        _c_api_runtime = name
    if _c_api_runtime != name:
        return (
            f"this process already bound C modules to {_NAMES[_c_api_runtime]}; "
            f"they cannot also load into {_NAMES[name]}"
        )
    return None


_default_paths: dict[str, tuple[bytes, bytes]] = {}


def available_runtimes() -> list[str]:
    """The runtimes lupa provides here, the default first (``lua51``, ``luajit21``)."""
    return list(_runtimes)


def implementation(runtime: str | None = None) -> str:
    """``"Lua 5.1"`` or ``"LuaJIT 2.1"``: what scripts of runtime ``runtime`` (a
    ``--lua-runtime`` value or lupa's name; None: the default) run on."""
    return _NAMES[resolve_runtime(runtime)]


def default_search_paths(runtime: str | None = None) -> tuple[bytes, bytes]:
    """Lua's compiled-in ``package.path`` and ``package.cpath`` (what ``;;`` stands for)
    of ``runtime`` (None: the default; LuaJIT's adds its own share directory).

    Read from a throw-away state created with LUA_PATH/LUA_CPATH hidden, because a state
    reads them from the environment when it is created.
    """
    name = resolve_runtime(runtime)
    if name not in _default_paths:
        saved = {k: os.environ.pop(k) for k in ("LUA_PATH", "LUA_CPATH") if k in os.environ}
        try:
            probe = _runtimes[name].LuaRuntime(encoding=None)
            _default_paths[name] = (bytes(probe.eval(b"package.path")), bytes(probe.eval(b"package.cpath")))
        finally:
            os.environ.update(saved)
    return _default_paths[name]


def bundled_library() -> dict[bytes, tuple[bytes, bytes]]:
    """Every module of :data:`LIB_DIR` as ``{name: (source, chunk name)}``, read now.

    The bridge serves them from memory when their files cannot be read later: after
    ``--user`` dropped privileges, the installation may be closed to the worker's user.
    """
    found: dict[bytes, tuple[bytes, bytes]] = {}
    for path in sorted(LIB_DIR.rglob("*.lua")):
        parts = list(path.relative_to(LIB_DIR).with_suffix("").parts)
        if parts[-1] == "init" and len(parts) > 1:
            parts.pop()
        found[".".join(parts).encode()] = (path.read_bytes(), f"@{path}".encode())
    return found


def search_path(value: str | None, default: bytes, extra: Iterable[str] = ()) -> bytes:
    """``package.path`` from a LUA_PATH-style value: ``;;`` becomes the default path.

    ``None`` means "not set": the default. ``extra`` templates are appended (the bundled
    module directory), so the user's directories win over ours.
    """
    if value is None:
        path = default.decode()
    elif ";;" in value:
        path = value.replace(";;", ";" + default.decode() + ";", 1).replace(";;", ";")
    else:
        path = value
    parts = [p for p in path.split(";") if p]
    for e in extra:
        if e not in parts:
            parts.append(e)
    return ";".join(parts).encode()


class LuaState:
    """One Lua state with the bridge loaded: the proxy.* objects, limits and modules.

    ``callbacks`` are the Python functions ``bridge.lua`` and its parts call (their ``py.*``);
    ``max_memory`` is in bytes (0: no limit); ``hook_timeout`` in seconds (0: no limit).
    """

    def __init__(
        self,
        callbacks: Mapping[str, Callable[..., Any]],
        *,
        hook_timeout: float,
        max_memory: int,
        basedir: str | None = None,
        runtime_name: str | None = None,
    ) -> None:
        name = resolve_runtime(runtime_name)
        self.name = name
        self.implementation = _NAMES[name]
        lupa = _runtimes[name]
        kwargs: dict[str, Any] = {
            "encoding": None,
            "unpack_returned_tuples": True,
            "register_eval": False,
            "register_builtins": False,
        }
        soft_memory_kb: float | None = None
        lua_runtime: Any = None
        if max_memory > 0:
            try:
                lua_runtime = lupa.LuaRuntime(max_memory=max_memory, **kwargs)
            except Exception:
                lua_runtime = None
            if lua_runtime is None or not lua_runtime.get_max_memory():
                # the allocator cannot enforce it: the bridge's count hook checks instead
                soft_memory_kb = max_memory / 1024
                lua_runtime = None
        if lua_runtime is None:
            lua_runtime = lupa.LuaRuntime(**kwargs)
        self.runtime = runtime = lua_runtime
        self.max_memory = max_memory
        self.memory_enforced_by_allocator = max_memory > 0 and soft_memory_kb is None
        if self.memory_enforced_by_allocator:
            runtime.set_max_memory(0)  # lifted until a hook runs
        c_refused = _bind_c_api(name)  # why C modules cannot load into this state, or None
        settings = self.table(
            {
                "hook_timeout": float(hook_timeout),
                "max_memory": int(max_memory),
                "soft_memory_kb": soft_memory_kb,
                "basedir": basedir.encode() if basedir else None,
                "c_modules_refused": c_refused.encode() if c_refused else None,
            }
        )
        loader = runtime.compile((PACKAGE_DIR / "bridge.lua").read_bytes(), b"=bridge.lua")
        parts = self.table(
            {
                name: runtime.compile((PACKAGE_DIR / f"{name}.lua").read_bytes(), f"={name}.lua".encode())
                for name in BRIDGE_PARTS
            }
        )
        functions = dict(callbacks)
        functions.setdefault("clock", time.monotonic)  # limits.lua's wall clock without an FFI
        if self.memory_enforced_by_allocator:
            # arm (while a hook's Lua code runs) or lift the allocator's ceiling: see bridge.lua
            functions["memory_arm"] = partial(runtime.set_max_memory, max_memory)
            functions["memory_lift"] = partial(runtime.set_max_memory, 0)
        self.api = loader(self.table(functions), settings, parts)

    # -- conversions --------------------------------------------------------------------

    def table(self, values: Mapping[str, Any] | Iterable[Any] | None = None, **kw: Any) -> Any:
        """A Lua table from a dict (str keys become Lua strings) or a sequence (1-based)."""
        if values is None:
            values = {}
        if isinstance(values, Mapping):
            items = {(k.encode() if isinstance(k, str) else k): v for k, v in values.items()}
            items.update({k.encode(): v for k, v in kw.items()})
            return self.runtime.table_from(items)
        return self.runtime.table_from(list(values))

    def call(self, name: str, *args: Any) -> Any:
        """Call ``api.<name>`` of bridge.lua."""
        return self.api[name.encode()](*args)

    def memory_used(self) -> int:
        """Bytes the Lua state holds (from its allocator when it counts, else from the GC)."""
        used = self.runtime.get_memory_used() if self.memory_enforced_by_allocator else None
        if used:
            return int(used)
        return int(float(self.api[b"memory_kb"]()) * 1024)

    def collect(self) -> None:
        """A full garbage collection (after a memory error, to give the memory back)."""
        try:
            self.api[b"collect"]()
        except LuaError:
            pass


def is_lua_table(value: object) -> bool:
    """True for a Lua table handed to Python."""
    return any(m.lua_type(value) == "table" for m in _runtimes.values())
