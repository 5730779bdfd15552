"""How a proxied connection ends badly: its exceptions and the texts of its failures.

Every room of a connection (login, hand-over, command loop, pumps) raises one of these;
:mod:`chassis_proxy.connection` turns them into one log line and closes the client.
"""

from __future__ import annotations

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
