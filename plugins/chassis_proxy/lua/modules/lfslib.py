"""``lfs``: the part of LuaFileSystem 1.2 that proxy scripts use.

``attributes(path [, name])``, ``currentdir()``, ``chdir(path)``, ``dir(path)`` (with
``.`` and ``..`` like LuaFileSystem), ``mkdir``, ``rmdir`` and ``touch``. Failures return
``nil, message`` as LuaFileSystem does; ``lock``/``unlock`` are not provided. The real
LuaFileSystem, when ``require`` finds it on ``package.cpath`` (``--lua-cpath``), wins over
this subset (a fallback module).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from chassis_proxy.lua.modules import LuaModule, ModuleContext


def _mode_name(mode: int) -> bytes:
    for test, name in (
        (stat.S_ISREG, b"file"),
        (stat.S_ISDIR, b"directory"),
        (stat.S_ISLNK, b"link"),
        (stat.S_ISSOCK, b"socket"),
        (stat.S_ISFIFO, b"named pipe"),
        (stat.S_ISCHR, b"char device"),
        (stat.S_ISBLK, b"block device"),
    ):
        if test(mode):
            return name
    return b"other"


def _permissions(mode: int) -> bytes:
    return stat.filemode(mode)[1:].encode()


def _fail(path: bytes, e: OSError) -> tuple[None, bytes]:
    return None, f"{path.decode('utf-8', 'surrogateescape')}: {e.strerror}".encode()


def module(ctx: ModuleContext) -> LuaModule:
    def attributes(path: bytes, name: bytes | None = None) -> Any:
        try:
            st = os.stat(path)
        except OSError as e:
            return _fail(path, e)
        values: dict[str, Any] = {
            "dev": st.st_dev,
            "ino": st.st_ino,
            "mode": _mode_name(st.st_mode),
            "nlink": st.st_nlink,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "rdev": st.st_rdev,
            "access": int(st.st_atime),
            "modification": int(st.st_mtime),
            "change": int(st.st_ctime),
            "size": st.st_size,
            "blocks": st.st_blocks,
            "blksize": st.st_blksize,
            "permissions": _permissions(st.st_mode),
        }
        if name is not None:
            key = bytes(name).decode("latin-1")
            if key not in values:
                return None, f"invalid attribute name '{key}'".encode()
            return values[key], None
        return ctx.table(values), None

    def currentdir() -> Any:
        try:
            return os.getcwdb(), None
        except OSError as e:
            return None, e.strerror.encode() if e.strerror else b"getcwd failed"

    def chdir(path: bytes) -> Any:
        try:
            os.chdir(path)
        except OSError as e:
            return _fail(path, e)
        return True, None

    def listdir(path: bytes) -> Any:
        try:
            names = os.listdir(path)
        except OSError as e:
            return None, f"cannot open {path.decode('utf-8', 'surrogateescape')}: {e.strerror}".encode()
        return ctx.table([b".", b"..", *sorted(names)]), None

    def mkdir(path: bytes) -> Any:
        try:
            os.mkdir(path, 0o777)
        except OSError as e:
            return _fail(path, e)
        return True, None

    def rmdir(path: bytes) -> Any:
        try:
            os.rmdir(path)
        except OSError as e:
            return _fail(path, e)
        return True, None

    def touch(path: bytes, atime: float | None = None, mtime: float | None = None) -> Any:
        try:
            if not os.path.exists(path):
                with open(path, "ab"):
                    pass
            if atime is None and mtime is None:
                os.utime(path, None)
            else:
                a = float(atime if atime is not None else mtime)  # type: ignore[arg-type]
                m = float(mtime if mtime is not None else a)
                os.utime(path, (a, m))
        except OSError as e:
            return _fail(path, e)
        return True, None

    return LuaModule(
        name="lfs",
        global_name="lfs",
        fallback=True,
        functions={
            "attributes": attributes,
            "currentdir": currentdir,
            "chdir": chdir,
            "listdir": listdir,
            "mkdir": mkdir,
            "rmdir": rmdir,
            "touch": touch,
        },
        shim_file="lfs.lua",
    )
