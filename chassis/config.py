"""The merged configuration: every option's value and where it came from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where a value came from, in order of precedence.
COMMAND_LINE = "command line"
DEFAULTS_FILE = "defaults-file"
DEFAULT = "default"


@dataclass
class Config:
    """Option values by Python name (``config.proxy_address``), core and plugins alike.

    Paths given relative are resolved against ``--basedir`` (or the directory chassis
    was started from) by :meth:`path` *before* the daemon changes to ``/``.
    """

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    defaults_file: Path | None = None
    plugins: list[str] = field(default_factory=list)
    start_dir: Path = field(default_factory=lambda: Path(os.getcwd()))
    #: The command line it was parsed from, read again by a reload (SIGHUP).
    argv: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(f"no option {name!r} (is its plugin loaded?)") from None

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def source(self, name: str) -> str:
        """``command line``, ``defaults-file`` or ``default``."""
        return self.sources.get(name, DEFAULT)

    @property
    def basedir(self) -> Path:
        base = self.values.get("basedir")
        return Path(base) if base else self.start_dir

    def path(self, value: str | os.PathLike[str] | None) -> Path | None:
        """Resolve a path option against ``--basedir`` (absolute paths are kept)."""
        if value is None or str(value) == "":
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.basedir / p
