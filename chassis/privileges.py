"""``--user``: give up root for good, and prove it.

MySQL Proxy calls setgid then setuid, ignores both results and keeps root's
supplementary groups. We set the groups first (only the target user's own), then
the real, effective and saved gid, then the uids, then check that root cannot come
back and set ``PR_SET_NO_NEW_PRIVS``. The kernel clears ``PR_SET_PDEATHSIG`` when
credentials change, which is why the worker sets it after :func:`drop`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
from dataclasses import dataclass

from chassis.errors import ConfigError, StartupError

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class TargetUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid


def lookup(name: str) -> TargetUser:
    """Check ``--user`` before anything starts: root only, and the user must exist."""
    if os.geteuid() != 0:
        raise ConfigError(
            f"--user={name}: can only switch user when started as root (running as uid "
            f"{os.geteuid()}); start chassis as root or leave out --user"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"--user={name}: no such user (check /etc/passwd)") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return TargetUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def prctl(option: int, arg: int) -> None:
    if _libc().prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` when the parent (the angel) dies."""
    prctl(PR_SET_PDEATHSIG, signum)


def drop(user: TargetUser) -> None:
    """Become ``user`` for good; :class:`StartupError` if any step or check fails."""
    try:
        os.setgroups(list(user.groups))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise StartupError(f"--user={user.name}: cannot switch to uid {user.uid} "
                           f"gid {user.gid}: {e.strerror}") from None
    problems = []
    if user.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            problems.append("setuid(0) succeeded afterwards")
    if os.getresuid() != (user.uid,) * 3:
        problems.append(f"uids are {os.getresuid()}")
    if os.getresgid() != (user.gid,) * 3:
        problems.append(f"gids are {os.getresgid()}")
    if set(os.getgroups()) - set(user.groups):
        problems.append(f"supplementary groups are {sorted(os.getgroups())}")
    if problems:
        raise StartupError(f"--user={user.name}: privileges not fully dropped: "
                           + "; ".join(problems))
    try:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
        raise StartupError(f"--user={user.name}: cannot set PR_SET_NO_NEW_PRIVS: "
                           f"{e.strerror}") from None
