"""Listening sockets handed down to a chassis: systemd's ``LISTEN_FDS`` protocol.

Two senders use the same protocol (sd_listen_fds(3)): systemd socket activation, and
a running chassis that starts its successor on SIGUSR2 (:mod:`chassis.upgrade`, the
way gunicorn does it). The sockets are file descriptors 3, 4, ... ; ``LISTEN_FDS``
says how many, ``LISTEN_PID`` which process they are for (another process ignores
them: they were meant for its parent), ``LISTEN_FDNAMES`` names them (colon-separated;
chassis names each with the address it was configured with).

The main process reads them once at start-up (:func:`adopt_environment`), before it
forks: every worker inherits them, and :func:`chassis.listen.bind_listener` takes the
inherited socket listening on the wanted address instead of binding one (so no
connection waiting in the kernel's queue is lost across an upgrade, and no "address in
use" arises). Worker *i* takes the *i*-th socket of an address; with more workers than
sockets they share them (the kernel spreads a shared queue's connections among the
processes that accept on it).

Each process also remembers the listeners it opened (:func:`opened`), so that an
upgrade can hand them all to the next chassis without knowing which plugin owns which.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

#: The first inherited file descriptor (after stdin, stdout, stderr).
FIRST_FD = 3
ENV_FDS = "LISTEN_FDS"
ENV_PID = "LISTEN_PID"
ENV_NAMES = "LISTEN_FDNAMES"


@dataclass
class Inherited:
    """One listening socket handed down, and whether this process took it."""

    name: str
    sock: socket.socket
    taken: bool = False

    @property
    def key(self) -> object:
        """Its local address (``(host, port)``, or the unix path), what it is matched by."""
        return _local_key(self.sock)


_inherited: list[Inherited] = []
_opened: list[tuple[str, socket.socket]] = []


def _local_key(sock: socket.socket) -> object:
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if isinstance(name, tuple):
        return (name[0], name[1])
    return name.decode() if isinstance(name, bytes) else name


def adopt_environment(environ: dict[str, str] | None = None) -> int:
    """Take the sockets ``LISTEN_FDS`` announces for this process; returns how many.

    The variables are removed (a plugin's child must not believe they are for it);
    sockets that are not stream listeners are ignored (closed). Called once, in the
    main process, before anything forks.
    """
    env = os.environ if environ is None else environ
    count_text = env.pop(ENV_FDS, None)
    pid_text = env.pop(ENV_PID, None)
    names_text = env.pop(ENV_NAMES, None)
    if not count_text:
        return 0
    if pid_text and pid_text.strip() != str(os.getpid()):
        return 0  # meant for another process (our parent)
    try:
        count = int(count_text)
    except ValueError:
        return 0
    names = names_text.split(":") if names_text else []
    for i in range(count):
        fd = FIRST_FD + i
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        os.set_inheritable(fd, False)  # only what we pass on purpose reaches a child
        if sock.type != socket.SOCK_STREAM or not _is_listening(sock):
            sock.detach()
            with contextlib.suppress(OSError):
                os.close(fd)
            continue
        name = names[i] if i < len(names) and names[i] else "unknown"
        _inherited.append(Inherited(name, sock))
    return len(_inherited)


def _is_listening(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def inherited() -> list[Inherited]:
    return list(_inherited)


def take(key: object, name: str, worker_id: int) -> socket.socket | None:
    """The inherited socket for local address ``key`` (or, failing that, named ``name``:
    an address with port 0 listens wherever the kernel put it) for worker ``worker_id``.

    Worker *i* gets the *i*-th of the matching sockets, several workers share one when
    there are fewer sockets than workers. None when nothing was inherited for it.
    """
    matching = [s for s in _inherited if s.key == key] or [
        s for s in _inherited if s.name == fd_name(name)]
    if not matching:
        return None
    chosen = matching[worker_id % len(matching)]
    chosen.taken = True
    sock = chosen.sock.dup()  # our own descriptor: the caller may close it
    sock.setblocking(False)
    return sock


def close_untaken() -> list[int]:
    """In a worker once its plugins have bound: drop the inherited sockets it did not take
    (their copies in the main process stay, for workers started later); returns the
    places of those it took, for the main process (:func:`close_unclaimed`)."""
    taken = [i for i, entry in enumerate(_inherited) if entry.taken]
    for entry in _inherited:
        entry.sock.close()
    _inherited.clear()
    return taken


def close_unclaimed(claimed: set[int]) -> None:
    """In the main process once every worker is ready: close the inherited sockets no
    worker took (an address the configuration no longer listens on), so that clients
    connecting there are refused rather than left waiting in a queue nobody accepts from."""
    for i, entry in enumerate(list(_inherited)):
        if i not in claimed:
            entry.sock.close()
    _inherited[:] = [entry for i, entry in enumerate(_inherited) if i in claimed]


def close_surplus(worker_count: int) -> None:
    """In the main process: close inherited sockets no worker will take (an upgrade to
    fewer ``--event-threads``: worker *i* takes the *i*-th socket of an address)."""
    seen: dict[object, int] = {}
    keep = []
    for entry in _inherited:
        index = seen.get(entry.key, 0)
        seen[entry.key] = index + 1
        if index < worker_count:
            keep.append(entry)
        else:
            entry.sock.close()
    _inherited[:] = keep


def remember(name: str, sock: socket.socket) -> None:
    """A listener this process listens on (bound or taken), for the next chassis."""
    _opened.append((name, sock))


def opened() -> list[tuple[str, socket.socket]]:
    """This process's listeners that are still open, with their names."""
    _opened[:] = [(name, sock) for name, sock in _opened if sock.fileno() >= 0]
    return list(_opened)


def environment(names: list[str], pid: int) -> dict[str, str]:
    """The variables announcing ``len(names)`` sockets at fds 3.. to process ``pid``."""
    return {ENV_FDS: str(len(names)), ENV_PID: str(pid),
            ENV_NAMES: ":".join(fd_name(name) for name in names)}


def fd_name(address: str) -> str:
    """An address as a name in ``LISTEN_FDNAMES`` (which separates names with colons)."""
    return address.replace(":", "@")


def address_of(name: str) -> str:
    """The address an :func:`fd_name` stands for."""
    return name.replace("@", ":")
