"""The guards around scripts: how long a hook may run, how much memory Lua may hold, and
what a client gets when a hook fails.

MySQL Proxy 0.8.5 had none of these: a looping hook stalled every client and a script
could exhaust the process. The option names below are the ones the proxy plugin
registers (``--lua-hook-timeout``, ``--lua-max-memory``, ``--proxy-lua-on-error``).
"""

from __future__ import annotations

import re
from enum import StrEnum

#: Seconds one hook call (or a script's top level) may run before it is interrupted.
DEFAULT_HOOK_TIMEOUT = 1.0
#: Bytes the Lua state of one worker may hold.
DEFAULT_MAX_MEMORY = 256 * 1024 * 1024

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)[bB]?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class OnError(StrEnum):
    """``--proxy-lua-on-error``: what the client gets when a hook fails or is interrupted.

    ``forward`` is MySQL Proxy's behaviour (fail open: the hook counts as having
    returned nothing, so ``read_query`` forwards the original query); ``reject`` answers
    the client with an ERR instead, for scripts that filter.
    """

    FORWARD = "forward"
    REJECT = "reject"


def parse_memory_size(text: str | int) -> int:
    """``"256M"`` -> bytes. Accepts a plain number of bytes or a K/M/G suffix (powers of 1024).

    0 means no limit.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"memory size cannot be negative: {text}")
        return text
    m = _SIZE.match(text)
    if not m:
        raise ValueError(
            f"invalid memory size {text!r}: use bytes or a number with K, M or G (e.g. 256M)"
        )
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_memory_size(n: int) -> str:
    """Bytes as the shortest exact ``K``/``M``/``G`` form, for messages."""
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
