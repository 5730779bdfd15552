"""``posix``: ``getpid()``, ``getuid()``, ``getpwuid(uid)`` and ``kill(pid, sig)``."""

from __future__ import annotations

import os
import pwd
from typing import Any

from chassis_proxy.lua.modules import LuaModule, ModuleContext


def module(ctx: ModuleContext) -> LuaModule:
    def getpwuid(uid: int) -> Any:
        try:
            p = pwd.getpwuid(int(uid))
        except (KeyError, OverflowError, ValueError):
            return None
        return ctx.table(
            {
                "name": p.pw_name.encode(),
                "uid": p.pw_uid,
                "gid": p.pw_gid,
                "dir": p.pw_dir.encode(),
                "shell": p.pw_shell.encode(),
            }
        )

    def kill(pid: int, sig: int) -> int:
        """0 on success, -1 on failure (the C function's return value)."""
        try:
            os.kill(int(pid), int(sig))
        except (OSError, OverflowError, ValueError):
            return -1
        return 0

    return LuaModule(
        name="posix",
        global_name="posix",
        functions={
            "getpid": os.getpid,
            "getuid": os.getuid,
            "getpwuid": getpwuid,
            "kill": kill,
        },
        shim_file="posix.lua",
    )
