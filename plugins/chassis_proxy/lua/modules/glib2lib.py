"""``glib2``: ``md5(s)`` (hex digest), ``get_current_time()`` (``{tv_sec, tv_usec}``) and
``usleep(us)``.

``usleep`` blocks the worker's event loop, as it did in MySQL Proxy; here it never
sleeps past the hook's ``--lua-hook-timeout`` (the shim cuts it short and interrupts the
hook).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from chassis_proxy.lua.modules import LuaModule, ModuleContext


def module(ctx: ModuleContext) -> LuaModule:
    def md5(data: bytes) -> bytes:
        return hashlib.md5(bytes(data)).hexdigest().encode()

    def get_current_time() -> Any:
        now = time.time_ns() // 1000
        return ctx.table({"tv_sec": now // 1_000_000, "tv_usec": now % 1_000_000})

    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    return LuaModule(
        name="glib2",
        global_name="glib2",
        functions={"md5": md5, "get_current_time": get_current_time, "sleep": sleep},
        shim_file="glib2.lua",
    )
