"""Address syntax (MySQL Proxy's) and listening sockets shared by N workers."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass

from chassis import listenfds, portowners
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


#: Listen backlog when the caller gives none: bursts of logins must not overflow the
#: accept queue (the kernel caps it at ``net.core.somaxconn``, 4096 on current kernels).
DEFAULT_BACKLOG = 4096

_instance_pid: int | None = None
_worker_id = 0
#: TCP addresses this process listens on, with the option that gave each: two plugins
#: (or two options) on one address would split its clients between them.
_bound_here: dict[tuple[str, int], tuple[str, socket.socket]] = {}


def set_instance(pid: int, worker_id: int = 0) -> None:
    """Name the chassis process whose workers may share our listeners (the angel's pid, or
    the worker's own without an angel), and which worker this is (it picks the inherited
    socket of that rank); called by the worker before the plugins bind."""
    global _instance_pid, _worker_id
    _instance_pid = pid
    _worker_id = worker_id


def bind_listener(address: Address, *, reuse_port: bool = True, backlog: int = DEFAULT_BACKLOG,
                  option: str | None = None) -> socket.socket:
    """Bind and listen; the workers of this chassis may share a TCP address (``SO_REUSEPORT``).

    Only our own workers: a listener of any other process on the address (a second
    chassis, which ``SO_REUSEPORT`` would let in) is a :class:`StartupError`, found
    before binding and checked again after it (two starting at once both refuse rather
    than share). A stale unix socket file nobody answers on is removed first.
    ``option`` names the option that gave the address, for the error's hint.

    A listening socket handed down on this address (systemd socket activation, or the
    chassis this one replaces on SIGUSR2: :mod:`chassis.listenfds`) is taken instead of
    binding one.
    """
    if address.path is not None:
        sock = listenfds.take(address.path, str(address), _worker_id)
        if sock is None:
            sock = _bind_unix(address.path, backlog)
        listenfds.remember(str(address), sock)
        return sock
    host = address.host or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(
            host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise StartupError(f"cannot resolve listen address {address}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    key = (str(sockaddr[0]), address.port)
    _refuse_twice(address, key, option)
    inherited = listenfds.take((sockaddr[0], sockaddr[1]), str(address), _worker_id)
    if inherited is not None:
        return _opened(address, key, option, inherited)
    hint = f"is another chassis or server running there? see {option or 'the listen address'}"
    shared = reuse_port and hasattr(socket, "SO_REUSEPORT") and address.port != 0
    if shared:
        _refuse_strangers(address, str(sockaddr[0]), address.port, None, hint)
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
        extra = f" ({hint})" if e.errno == errno.EADDRINUSE else ""
        raise StartupError(f"cannot listen on {address}: {e.strerror}{extra}") from None
    if shared:
        try:
            _refuse_strangers(address, str(sockaddr[0]), address.port,
                              os.fstat(sock.fileno()).st_ino, hint)
        except StartupError:
            sock.close()
            raise
    sock.setblocking(False)
    return _opened(address, key, option, sock)


def _opened(address: Address, key: tuple[str, int], option: str | None,
            sock: socket.socket) -> socket.socket:
    """Note a TCP listener of this process: for :func:`_refuse_twice`, and for the next
    chassis (an upgrade passes every listener on)."""
    if address.port != 0:
        _bound_here[key] = (option or "another listener", sock)
    listenfds.remember(str(address), sock)
    return sock


def _refuse_twice(address: Address, key: tuple[str, int], option: str | None) -> None:
    """One address, one listener per process: SO_REUSEPORT would let a second one of ours
    bind it too, and the kernel would hand each of them some of the clients."""
    held = _bound_here.get(key)
    if held is None or held[1].fileno() == -1:  # a closed listener no longer counts
        return
    raise StartupError(
        f"cannot listen on {address} for {option or 'this listener'}: {held[0]} listens "
        "there already in this chassis; give each listener its own address"
    )


def _refuse_strangers(address: Address, host: str, port: int, own_inode: int | None,
                      hint: str) -> None:
    instance = _instance_pid if _instance_pid is not None else os.getpid()
    strangers = portowners.foreign_listeners(host, port, instance, own_inode)
    if not strangers:
        return
    who = portowners.holder(strangers[0].inode)
    raise StartupError(
        f"cannot listen on {address}: address in use by another process"
        f"{f' ({who})' if who else ''}; only this chassis' own workers may share it ({hint})"
    )


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
