"""MySQL Proxy's ``--defaults-file``: a GLib keyfile whose ``[mysql-proxy]`` group holds options.

Read strictly: a file others can read or write is refused (it may hold passwords), and
every error names the file and line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from chassis.errors import ConfigError

#: Groups whose keys are options; other groups (a shared my.cnf) are ignored.
OPTION_GROUPS = ("mysql-proxy", "chassis")

_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


@dataclass(frozen=True)
class Entry:
    """One ``key = value`` line of an option group."""

    key: str
    value: str
    line: int


@dataclass(frozen=True)
class DefaultsFile:
    path: Path
    entries: dict[str, Entry]

    def where(self, key: str) -> str:
        return f"{self.path}:{self.entries[key].line}"


def check_permissions(path: Path) -> None:
    """Refuse what MySQL Proxy refuses: not a regular file, or any bit for "other"."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"--defaults-file {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"--defaults-file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"--defaults-file {path}: not a regular file")
    if st.st_mode & 0o007:
        raise ConfigError(
            f"permissions of {path} aren't secure (0660 or stricter required): "
            f"mode is {stat.S_IMODE(st.st_mode):04o} and others may read or write it, "
            f"but it can hold passwords; run: chmod o-rwx {path}"
        )


def _unescape(raw: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise ConfigError(f"{where}: invalid escape sequence '\\{nxt}'")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse(text: str, path: Path) -> DefaultsFile:
    """Parse keyfile text; keys of the option groups only, the last of a repeated key wins."""
    entries: dict[str, Entry] = {}
    group: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        where = f"{path}:{number}"
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise ConfigError(f"{where}: group header {stripped!r} lacks its ']'")
            group = stripped[1:-1].strip()
            continue
        if "=" not in stripped:
            raise ConfigError(f"{where}: expected 'key = value', got {stripped!r}")
        if group is None:
            raise ConfigError(f"{where}: key outside a group; put it under [mysql-proxy]")
        key, _, value = stripped.partition("=")
        key = key.strip()
        if group not in OPTION_GROUPS:
            continue
        if not key:
            raise ConfigError(f"{where}: empty key")
        entries[key] = Entry(key, _unescape(value.strip(), where), number)
    return DefaultsFile(path, entries)


def load(path_text: str) -> DefaultsFile:
    """Check the file's permissions, then read it."""
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = Path(os.getcwd()) / path
    check_permissions(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--defaults-file {path}: cannot read it: {e}") from None
    return parse(text, path)
