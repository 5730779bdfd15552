"""A sans-IO codec for the MySQL client/server protocol: bytes in, packets out, no I/O.

Shared by every plugin that speaks MySQL (proxy, admin). Modules, lowest first:
``constants`` (capability, command, status, type numbers), ``errors``
(:class:`ProtocolError`, the only exception parsers raise), ``wire`` (length-encoded
integers and strings), ``framing`` (packet headers, 16 MiB splitting, the relay's
``scan``), ``handshake`` (connection phase), ``packets`` (OK/ERR/EOF), ``resultset``
(column definitions, text and binary rows), ``execute`` (COM_STMT_EXECUTE and binary
parameters), ``commands`` (COM_*), ``infile`` (LOAD DATA LOCAL), ``response``
(:class:`~chassis_mysql.response.ResponseTracker`), ``login``
(:class:`~chassis_mysql.login.LoginTracker`, the connection phase) and ``auth``
(password scrambles, challenges, RSA password encryption). See docs/codec.md.
"""

from chassis_mysql.errors import ProtocolError

__all__ = ["ProtocolError"]
