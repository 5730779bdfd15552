"""Address syntax (MySQL Proxy's) and listening sockets shared by N workers."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass

from chassis.errors import StartupError


@dataclass(frozen=True)
class Address:
    """``host:port``, ``[v6]:port``, ``:port`` or a unix socket ``/path``."""

    host: str = ""
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host or '0.0.0.0'}:{self.port}"


def parse_address(text: str, default_port: int) -> Address:
    """Parse an address the way MySQL Proxy does; ``ValueError`` says what is wrong.

    ``/path`` is a unix socket; ``host`` without a port gets ``default_port``;
    ``:port`` means every IPv4 address.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("/"):
        if len(os.fsencode(text)) > 107:
            raise ValueError(f"unix socket path {text!r} is longer than 107 bytes")
        return Address(path=text)
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"missing ']' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"garbage after ']' in {text!r}")
            port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not port_text:
        return Address(host=host, port=default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"failed to parse the port in {text!r} (expected 0-65535)")
    return Address(host=host, port=int(port_text))


def bind_listener(address: Address, *, reuse_port: bool = True, backlog: int = 128) -> socket.socket:
    """Bind and listen; several processes may bind the same TCP address (``SO_REUSEPORT``).

    A stale unix socket file nobody answers on is removed first. Raises
    :class:`StartupError` with an actionable message.
    """
    if address.path is not None:
        return _bind_unix(address.path, backlog)
    host = address.host or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(
            host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise StartupError(f"cannot resolve listen address {address}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        hint = " (is another server running there?)" if e.errno == errno.EADDRINUSE else ""
        raise StartupError(f"cannot listen on {address}: {e.strerror}{hint}") from None
    sock.setblocking(False)
    return sock


def _bind_unix(path: str, backlog: int) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody answers
            else:
                raise StartupError(f"cannot listen on {path}: another server answers there")
            finally:
                probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {path}: {e.strerror}") from None
    sock.setblocking(False)
    return sock
