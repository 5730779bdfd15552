"""Password files given to options (``--admin-password-file``, ``--proxy-monitor-password-file``).

One rule for every plugin: the file may be read by its group but written by nobody else
and read by no one outside the group (0640 or stricter), like MySQL's own option files
that hold passwords; the password is its first line. Errors name the option and the fix.
"""

from __future__ import annotations

import stat
from pathlib import Path

from chassis.errors import StartupError


def read_password_file(path: Path, option: str) -> str:
    """The first line of ``path`` (empty if the file is empty); a :class:`StartupError`
    when the file is exposed or unreadable. The password itself is never in a message."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077 & ~0o040:  # group may read, nobody may write, others nothing
            raise StartupError(
                f"{option} {path}: mode {stat.S_IMODE(mode):04o} lets others read "
                f"it or its group write it (0640 or stricter required); run: chmod 0600 {path}"
            )
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise StartupError(f"{option} {path}: {e.strerror}") from None
    return lines[0] if lines else ""
