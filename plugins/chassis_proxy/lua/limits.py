"""The guards around scripts: how long a hook may run, how much memory Lua may hold, and
what a client gets when a hook fails.

MySQL Proxy 0.8.5 had none of these: a looping hook stalled every client and a script
could exhaust the process. The option names below are the ones the proxy plugin
registers (``--lua-hook-timeout``, ``--lua-max-memory``, ``--proxy-lua-on-error``).
``limits.lua`` is the Lua half: it enforces the deadline and the ceiling while a hook
runs and reports how the call ended with the statuses below; :class:`Limits` turns a
failed call into one log line and the client's answer.
"""

from __future__ import annotations

import logging
import re
from enum import StrEnum
from typing import Any

from chassis_mysql.constants import ErrorCode

from chassis import logs
from chassis_proxy.hooks import NO_DECISION, ConnectionView, Decision, Outcome
from chassis_proxy.lua.objects import log_prefix, python_text
from chassis_proxy.lua.response import err_payload

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


def full_chunk_name(message: str, path: str) -> str:
    """``message`` with the script's chunk name, which Lua shortens past 60 characters
    (LUA_IDSIZE), naming the whole file again: ``[string "/a/long/pa..."]:3:`` becomes
    ``[string "/a/long/path/x.lua"]:3:`` (the script's chunk name is its path, as in
    MySQL Proxy 0.8.5) and ``...path/x.lua:3:`` (a ``@`` chunk name) ``/a/long/path/x.lua:3:``.
    The operator reads which file, whatever its length."""
    def expand(m: re.Match[str]) -> str:
        return f'[string "{path}"]' if path.startswith(m.group(1)) else m.group(0)

    message = re.sub(r'\[string "([^"\n]*)\.\.\."\]', expand, message)
    if message.startswith("..."):
        tail, sep, rest = message[3:].partition(":")
        if sep and path.endswith(tail):
            return f"{path}:{rest}"
    return message


# How a guarded call into bridge.lua ended (limits.lua's ST_*): plain ints, since the
# read_query path compares them for every client command.
#: The hook returned (the value is its number, or None).
CALL_OK = 0
#: The script does not define the hook.
CALL_MISSING = 1
#: The hook raised (the value is the message).
CALL_ERROR = 2
#: The hook ran longer than --lua-hook-timeout.
CALL_TIMEOUT = 3
#: The hook ran out of memory (--lua-max-memory).
CALL_MEMORY = 4

_REASONS = {CALL_TIMEOUT: "timeout", CALL_MEMORY: "memory"}

#: Room left under --lua-max-memory, beyond the packet itself, for read_query to arm the
#: ceiling before calling into Lua (pushing the arguments must not hit it).
ARM_HEADROOM = 1 << 20


class Limits:
    """The three options of one script host, and what a failed hook call becomes.

    ``on_error`` is ``--proxy-lua-on-error``, ``hook_timeout`` ``--lua-hook-timeout`` in
    seconds (0: no limit), ``max_memory`` ``--lua-max-memory`` in bytes (0: no limit).
    """

    def __init__(
        self,
        on_error: OnError,
        hook_timeout: float,
        max_memory: int,
        log: logging.Logger,
        script: str | None = None,
    ) -> None:
        self.on_error = on_error
        self.script = script
        self.hook_timeout = hook_timeout
        self.max_memory = max_memory
        self._log = log
        #: Hook calls that did not return, by (hook, reason): error, timeout or memory.
        self.failures: dict[tuple[str, str], int] = {}

    def log_failure(
        self, conn: ConnectionView | None, hook: str, status: int, value: Any, what: str | None = None
    ) -> None:
        """One critical line, with the connection id, for a call that did not return.

        ``what`` names the code that ran when it is not ``hook()`` (the script's top level).
        """
        where = what or f"{hook}()"
        reason = _REASONS.get(status, "error")
        key = ("script" if what else hook, reason)
        self.failures[key] = self.failures.get(key, 0) + 1
        if status == CALL_TIMEOUT:
            msg = (
                f"({hook}) {where} ran longer than --lua-hook-timeout={self.hook_timeout:g}s "
                "and was interrupted"
            )
        elif status == CALL_MEMORY:
            limit = format_memory_size(self.max_memory) if self.max_memory else "the available memory"
            msg = f"({hook}) {where} ran out of memory (--lua-max-memory={limit}) and was interrupted"
        else:
            text = python_text(value)
            msg = f"({hook}) {full_chunk_name(text, self.script) if self.script else text}"
        self._log.log(logs.CRITICAL, "%s%s", log_prefix(conn), msg)

    def too_big(self, conn: ConnectionView, hook: str, size: int, used: int) -> Outcome:
        """A packet the script cannot be shown within --lua-max-memory: one log line, and
        ERR 1153 for the client (the packet is never shown, so a filter is never bypassed
        by a hook that fails for want of memory)."""
        limit = format_memory_size(self.max_memory)
        self._log.log(
            logs.WARNING,
            "%s(%s) a command of %d bytes cannot be shown to the script within "
            "--lua-max-memory=%s (%d bytes in use, twice the command needed): "
            "answered with ERR %d",
            log_prefix(conn), hook, size, limit, used, ErrorCode.NET_PACKET_TOO_LARGE,
        )
        return Outcome(
            Decision.SEND_RESULT,
            [
                err_payload(
                    f"Got a packet bigger than the proxy's Lua script may be shown ({size} bytes, "
                    f"--lua-max-memory={limit})",
                    ErrorCode.NET_PACKET_TOO_LARGE,
                    "08S01",
                )
            ],
        )

    def failed(
        self, conn: ConnectionView, hook: str, status: int, value: Any, can_answer: bool = True
    ) -> Outcome:
        """A hook raised or was interrupted: log it, then the C default or an ERR.

        ``can_answer`` is False where the client was already answered (a streamed result).
        """
        self.log_failure(conn, hook, status, value)
        if self.on_error is OnError.REJECT and can_answer:
            return Outcome(
                Decision.SEND_RESULT,
                [
                    err_payload(
                        f"(lua) {hook}() failed and --proxy-lua-on-error=reject is set; "
                        "check the proxy's error log",
                        ErrorCode.UNKNOWN_ERROR,
                        "HY000",
                    )
                ],
            )
        return NO_DECISION
