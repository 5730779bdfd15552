"""``--max-open-files``: set RLIMIT_NOFILE before anything forks, so every worker has it."""

from __future__ import annotations

import resource

from chassis.errors import ChassisError


def set_max_open_files(wanted: int) -> tuple[int, int]:
    """Set the soft limit to ``wanted`` (raising the hard limit too when allowed).

    Returns the (soft, hard) limits in force afterwards. A limit the hard limit (or the
    kernel's ``fs.nr_open``) forbids is an error that says how to raise it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = hard if hard == resource.RLIM_INFINITY or wanted <= hard else wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ChassisError(
            f"--max-open-files={wanted}: cannot {'raise' if wanted > soft else 'set'} the open "
            f"files limit (soft {soft}, "
            f"hard {hard}): {reason}; raise the hard limit first (ulimit -Hn, systemd "
            "LimitNOFILE=, or start as root; the kernel caps it at /proc/sys/fs/nr_open)"
        ) from None
    return resource.getrlimit(resource.RLIMIT_NOFILE)
