"""``--daemon``: detach from the terminal, and tell the launching shell how start-up went.

The classic double fork (daemon(7)): fork, ``setsid`` in the child, fork again so the
daemon is not a session leader and can never get a controlling terminal back. Beyond
MySQL Proxy: stdin/stdout/stderr go to /dev/null, the umask is 027 unless ``--umask``
says otherwise (never 0), and the launching process waits on a pipe until the daemon
is ready (pid file written, listening) or failed, so ``chassis --daemon && client``
works and a daemon that cannot start makes the command fail with its message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from chassis.readiness import Listener, Reporter

DEFAULT_UMASK = 0o027


def daemonize(umask: int | None) -> Reporter | int:
    """Return the daemon's reporter in the daemon, or the exit code in the launcher."""
    for signum in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP):
        signal.signal(signum, signal.SIG_IGN)
    _flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:  # the launching process: Ctrl-C must work while it waits
        os.close(w)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            return _wait_for_daemon(Listener(r), pid)
        except KeyboardInterrupt:
            print("chassis: interrupted; the daemon may still be starting (see its log file)",
                  file=sys.stderr)
            return 130
    os.close(r)
    try:
        os.setsid()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the session leader's last words
        if os.fork() > 0:
            os._exit(0)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.chdir("/")
        os.umask(DEFAULT_UMASK if umask is None else umask)
        _stdio_to_devnull()
    except BaseException as e:
        Reporter(w).failed(f"cannot daemonize: {e}", 1)
        os._exit(1)
    return Reporter(w)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _stdio_to_devnull() -> None:
    _flush()
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def _wait_for_daemon(listener: Listener, child: int) -> int:
    report = listener.wait()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)  # the intermediate child exits at once
    if report is None:
        print("chassis: the daemon exited before it was ready (see its log file)",
              file=sys.stderr)
        return 1
    if report.ready:
        return 0
    print(f"chassis: {report.error}", file=sys.stderr)
    return report.exit_code or 1
