"""What a worker says about itself for the ``workers`` table (control op ``admin.worker``).

Each worker answers for its own process: pid, when it started, CPU time and resident
memory (from ``/proc``, where there is one), and the console connections it serves.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory now (Linux ``/proc/self/statm``), else the peak the kernel reports."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def describe(started: float, admin_connections: int) -> dict[str, Any]:
    times = os.times()
    now = time.time()
    return {
        "started": round(started, 3),
        "uptime": round(now - started, 3),
        "cpu_user": round(times.user, 3),
        "cpu_system": round(times.system, 3),
        "rss_bytes": rss_bytes(),
        "admin_connections": admin_connections,
    }
