"""How a proxied connection ends badly: its exceptions and the texts of its failures.

Every room of a connection (login, hand-over, command loop, pumps) raises one of these;
:mod:`chassis_proxy.connection` turns them into one log line and closes the client.
"""

from __future__ import annotations

import errno
import logging
import os
import time

from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import ERR

from chassis_proxy.channel import ChannelClosed, ChannelTimeout


class ConnectionGone(Exception):
    """Stop serving this client; the message is the log line (the client was told already)."""


class LoginFailed(Exception):
    """The login ended (the server's ERR or a script's answer was sent): close quietly."""


class PoolError(Exception):
    """A pooled connection could not be made ready for a client (the message says why)."""


def connect_failure(e: BaseException, connect_timeout: float) -> str:
    """Why a backend could not be connected, as the client's ERR and the log say it."""
    if isinstance(e, ChannelTimeout | TimeoutError):
        return f"timed out after {connect_timeout:g} s (--proxy-connect-timeout)"
    if isinstance(e, ChannelClosed):
        return "closed the connection before its handshake"
    if isinstance(e, OSError):
        return (e.strerror or str(e)).lower()
    return str(e)


def tls_failure(e: BaseException) -> str:
    """A TLS handshake failure in a few words (ssl's reason and verify message)."""
    if isinstance(e, TimeoutError):
        return "timed out"
    reason = getattr(e, "reason", None)
    text = getattr(e, "verify_message", None) or str(e) or type(e).__name__
    return f"{reason}: {text}" if reason and reason not in text else text


def err_text(payload: bytes) -> str:
    """``"1045 Access denied ..."`` of an ERR payload, for log lines."""
    try:
        err = ERR.parse(payload)
    except ProtocolError:
        return "malformed ERR packet"
    return f"{err.error_code} {err.message}"


#: Errors of this process or machine, not of a backend: too many open files (EMFILE: the
#: process, ENFILE: the system), no buffer space, no memory. A backend is never marked DOWN
#: for them, and the next backend is not tried (it would fail the same way).
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def local_failure(e: OSError) -> str:
    """What a client and the log are told about a local resource error."""
    text = os.strerror(e.errno) if e.errno else str(e)
    hint = " (raise --max-open-files or the system's file limit)" \
        if e.errno in (errno.EMFILE, errno.ENFILE) else ""
    return f"{text}{hint}"


class RateLimitedLog:
    """One warning per ``interval`` seconds for a burst of the same local failure, with
    how many clients it hit meanwhile (a full fd table fails every client at once)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = -interval
        self._suppressed = 0

    def report(self, connection_id: int, e: OSError) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        also = f" ({self._suppressed} more client(s) since the last such line)" if self._suppressed else ""
        self._last, self._suppressed = now, 0
        self.logger.warning("conn %d: no backend connection for lack of local resources: %s; the "
                            "backend is not marked down%s", connection_id, local_failure(e), also)


local_failures = RateLimitedLog(logging.getLogger("chassis.proxy"))
