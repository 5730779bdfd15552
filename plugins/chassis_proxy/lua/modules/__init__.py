"""The modules MySQL Proxy scripts ``require``, written for chassis with the same names
and behaviour: ``mysql.proto``, ``mysql.password``, ``mysql.tokenizer``, ``chassis``,
``posix``, ``glib2`` and ``lfs``.

Each module is a Python half (functions that do the work, returning Lua-ready values
and never raising) and a Lua shim (``<name>.lua`` next to it) that checks arguments
with Lua's own error messages and builds the module table. MySQL Proxy's own modules
are registered in ``package.preload``, so they win over any ``mysql.so`` on
``package.cpath``; ``lfs``, a subset of LuaFileSystem, is a *fallback*: the real
LuaFileSystem found on ``package.cpath`` (``--lua-cpath``) wins over it. Like MySQL
Proxy's C modules each also sets a global (``proto``, ``password``, ``tokenizer``,
``chassis`` ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


@dataclass
class ModuleContext:
    """What the modules may use of their host.

    ``log(level, message)`` writes one log line (level is a MySQL Proxy level name);
    ``set_shutdown()`` asks the worker to stop; ``stats()`` returns extra
    ``chassis.get_stats()`` sections; ``table`` makes Lua tables from Python values.
    """

    log: Callable[[str, str], None]
    table: Callable[..., Any]
    memory_used: Callable[[], int]
    memory_limit: int = 0
    set_shutdown: Callable[[], None] | None = None
    stats: Callable[[], Mapping[str, Mapping[str, int]]] | None = None


@dataclass
class LuaModule:
    """One module for ``package.preload``: its require name, the global it sets, its
    Python functions and its Lua shim. A ``fallback`` module is found after every search
    path instead: a real C module of that name on ``package.cpath`` wins."""

    name: str
    global_name: str | None
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    shim_file: str = ""
    fallback: bool = False

    def shim(self) -> bytes:
        return (_HERE / self.shim_file).read_bytes()


def bundled_modules(ctx: ModuleContext) -> list[LuaModule]:
    """Every module chassis ships, bound to this host."""
    from chassis_proxy.lua.modules import (
        chassislib,
        glib2lib,
        lfslib,
        password,
        posixlib,
        proto,
        tokenizer,
    )

    return [
        proto.module(ctx),
        password.module(ctx),
        tokenizer.module(ctx),
        chassislib.module(ctx),
        posixlib.module(ctx),
        glib2lib.module(ctx),
        lfslib.module(ctx),
    ]
