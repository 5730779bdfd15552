"""``chassis``: log functions, ``set_shutdown()`` and ``get_stats()``.

``chassis.log(level, msg)`` and ``critical/warning/message/info/debug(msg)`` write one
line to chassis' log as ``(source:line) msg``, the source relative to ``--basedir``;
``chassis.error`` logs at error level and, unlike MySQL Proxy's ``log("error", ...)``,
does not abort the process. Loading the module turns ``print`` into
``chassis.message`` for the whole worker (the original stays as ``os.print``).
"""

from __future__ import annotations

from typing import Any

from chassis_proxy.lua.modules import LuaModule, ModuleContext


def module(ctx: ModuleContext) -> LuaModule:
    def set_shutdown() -> None:
        if ctx.set_shutdown is None:
            ctx.log("warning", "chassis.set_shutdown(): this host cannot stop the process")
            return
        ctx.set_shutdown()

    def get_stats(name: bytes | None = None) -> Any:
        sections: dict[str, dict[str, int]] = {}
        if ctx.stats is not None:
            try:
                sections = {k: dict(v) for k, v in ctx.stats().items()}
            except Exception as e:
                ctx.log("critical", f"chassis.get_stats(): collecting the stats failed: {e}")
        if name is not None:
            wanted = bytes(name).decode("utf-8", "replace").lower()
            for key, values in sections.items():
                if key.lower() == wanted:
                    return ctx.table(values)
            return None
        used = ctx.memory_used()
        sections["chassis"] = {
            "lua_mem_bytes": used,
            "lua_mem_bytes_max": ctx.memory_limit,
            "lua_mem_alloc": 0,
            "lua_mem_free": 0,
            **sections.get("chassis", {}),
        }
        return ctx.table({k: ctx.table(v) for k, v in sections.items()})

    return LuaModule(
        name="chassis",
        global_name="chassis",
        functions={"set_shutdown": set_shutdown, "get_stats": get_stats},
        shim_file="chassis.lua",
    )
