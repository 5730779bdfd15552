"""Who else listens on a TCP port: the check that keeps ``SO_REUSEPORT`` among our own workers.

``SO_REUSEPORT`` lets the N workers of one chassis share a port (the kernel balances
connections between them), but the kernel lets *any* process of the same user join the
group, so a second chassis started on the same port would start "successfully" and
steal half the clients. Before and after binding, :func:`foreign_listeners` reads the
kernel's table of listening sockets (``/proc/net/tcp``, ``/proc/net/tcp6``) and
returns the ones on an overlapping address that belong to no process of this chassis
(its main process, the angel, and the angel's children, the workers). Linux only, like
the rest of the process core; where ``/proc`` cannot be read the check finds nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass

#: ``st`` column of a listening socket in /proc/net/tcp.
_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """One listening socket the kernel knows: its address and socket inode."""

    address: ipaddress.IPv6Address  # IPv4 as IPv4-mapped IPv6
    port: int
    inode: int

    def overlaps(self, other: ipaddress.IPv6Address) -> bool:
        """Whether a client connecting to ``other`` could land on this socket (or vice versa)."""
        return self.address == other or _is_wildcard(self.address) or _is_wildcard(other)


def _is_wildcard(address: ipaddress.IPv6Address) -> bool:
    return address.is_unspecified or address == _V4_ANY


_V4_ANY = ipaddress.IPv6Address("::ffff:0.0.0.0")


def as_v6(host: str) -> ipaddress.IPv6Address:
    """``127.0.0.1`` -> ``::ffff:127.0.0.1``; IPv6 addresses as they are."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}")
    return address


def _decode(hex_address: str) -> ipaddress.IPv6Address:
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    raw = b"".join(words)
    if len(raw) == 4:
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + raw)
    return ipaddress.IPv6Address(raw)


def listeners(port: int) -> list[Listener]:
    """Every listening TCP socket on ``port`` in this network namespace."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port:
                found.append(Listener(_decode(hex_address), port, int(fields[9])))
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds (empty when it cannot be read)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def family_inodes(instance_pid: int) -> set[int]:
    """Socket inodes held by this chassis: ``instance_pid``, its children and ourselves."""
    pids = {instance_pid, os.getpid(), *children(instance_pid)}
    return set().union(*(socket_inodes(pid) for pid in pids))


def foreign_listeners(host: str, port: int, instance_pid: int,
                      own_inode: int | None = None) -> list[Listener]:
    """Listening sockets on ``host:port`` (or a wildcard) that this chassis does not hold."""
    wanted = as_v6(host)
    others = [entry for entry in listeners(port)
              if entry.overlaps(wanted) and entry.inode != own_inode]
    if not others:
        return []
    ours = family_inodes(instance_pid)
    return [entry for entry in others if entry.inode not in ours]


def holder(inode: int) -> str | None:
    """``"pid 123 (chassis)"`` for the process holding socket ``inode``, if it can be seen."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and inode in socket_inodes(int(entry)):
            try:
                with open(f"/proc/{entry}/comm") as f:
                    return f"pid {entry} ({f.read().strip()})"
            except OSError:
                return f"pid {entry}"
    return None
