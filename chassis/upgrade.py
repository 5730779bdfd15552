"""SIGUSR2: a new chassis (new code, new configuration) takes over without dropping clients.

nginx's and gunicorn's model. The main process (the angel, or the single process)
on SIGUSR2:

1. renames the pid file to ``PATH.oldbin`` (nginx's name; :meth:`PidFile.set_aside`),
   so the new chassis locks and writes ``PATH`` itself;
2. gathers the listening sockets (the angel asks each worker for its own over the
   socket it sends reloads on: :data:`ASK_LISTENERS`) and makes a ``SOCK_SEQPACKET``
   socket pair for handing over connections;
3. starts the new chassis (:func:`spawn`): fork, then exec of the same command line
   (``sys.orig_argv``) from the directory the first one started in, so the
   defaults-file is read again; the listeners are fds 3.. announced with systemd's
   ``LISTEN_FDS``/``LISTEN_PID``/``LISTEN_FDNAMES`` (:mod:`chassis.listenfds`), and
   ``CHASSIS_UPGRADE`` names the readiness pipe, the hand-over socket and the old pid;
4. the new chassis starts as usual (but does not daemonize again), takes the inherited
   listeners instead of binding, and reports ready through the pipe as it would to a
   ``--daemon`` launcher (:mod:`chassis.readiness`);
5. once it is ready, the old main process tells systemd the new ``MAINPID``, and each
   old worker calls every plugin's ``chassis_handover_out`` (a plugin sends what can
   move: state as JSON, sockets as fds) and stops as on SIGTERM (``chassis_stop``
   with ``--shutdown-timeout``). The new workers read the hand-over socket
   (:func:`receive`), any of them, and give each item to ``chassis_handover_in``.

If the new chassis fails (exits, reports an error, is not ready within
``CHASSIS_UPGRADE_TIMEOUT`` seconds, 60 by default) it is killed, ``PATH.oldbin``
goes back to ``PATH``, and the old chassis goes on serving; one log line says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chassis import listenfds, logs, signals
from chassis.config import Config
from chassis.errors import ChassisError
from chassis.pidfile import PidFile
from chassis.readiness import Listener, Reporter, pipe

log = logging.getLogger("chassis.upgrade")

#: What the new chassis finds in its environment: "READY_FD:HANDOFF_FD:OLD_PID".
ENV = "CHASSIS_UPGRADE"
#: Seconds the old chassis waits for the new one to be ready (environment override).
TIMEOUT_ENV = "CHASSIS_UPGRADE_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
#: Angel to worker (on the socket reloads use): send me your listening sockets.
ASK_LISTENERS = b"upgrade:listeners"
#: Angel to worker, with the hand-over socket attached: the new chassis is ready.
HAND_OVER = b"upgrade:handover:"
#: Most bytes of one hand-over item's description, and most fds it carries.
MAX_ITEM = 65536
MAX_FDS = 16
#: Seconds a sender waits while the kernel has too many fds in flight.
IN_FLIGHT_WAIT = 5.0


def timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


# -- the new chassis: what it inherited -------------------------------------------------


@dataclass
class Inheritance:
    """What a chassis started by an upgrade got from the one it replaces."""

    reporter: Reporter
    handoff: socket.socket
    old_pid: int


def from_environment() -> Inheritance | None:
    """Read (and remove) ``CHASSIS_UPGRADE``; None when this is no upgrade."""
    value = os.environ.pop(ENV, None)
    if not value:
        return None
    try:
        ready_fd, handoff_fd, old_pid = (int(part) for part in value.split(":"))
        handoff = socket.socket(fileno=handoff_fd)
    except (ValueError, OSError):
        return None
    for fd in (ready_fd, handoff_fd):
        os.set_inheritable(fd, False)
    return Inheritance(Reporter(ready_fd), handoff, old_pid)


def report_early_failure(message: str, exit_code: int) -> None:
    """A chassis started by an upgrade failed before it could run (a bad command line or
    defaults-file): tell the old one why, for its log line."""
    value = os.environ.get(ENV)
    if not value:
        return
    with contextlib.suppress(ValueError):
        Reporter(int(value.split(":")[0])).failed(message, exit_code)


# -- the old chassis: starting the new one -----------------------------------------------


@dataclass
class Successor:
    """The new chassis while the old one waits for it."""

    pid: int
    listener: Listener
    handoff: socket.socket  # the old side's end, for its workers
    timeout: float
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def check(self) -> tuple[bool, str] | None:
        """(True, "") once ready, (False, why) once it failed, None while starting."""
        report = self.listener.poll()
        if report is not None:
            if report.ready:
                return True, ""
            return False, f"it failed to start: {report.error}"
        if self.listener.closed:
            return False, "it exited before it was ready"
        if time.monotonic() >= self.deadline:
            return False, f"it was not ready within {self.timeout:g} s ({TIMEOUT_ENV})"
        return None

    def signal_when_ready(self) -> None:
        """The angel's way of waiting: its report raises SIGIO (``O_ASYNC``), which the
        angel's ``sigtimedwait`` takes like its workers' reports."""
        fcntl.fcntl(self.listener.fd, fcntl.F_SETOWN, os.getpid())
        flags = fcntl.fcntl(self.listener.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.listener.fd, fcntl.F_SETFL, flags | os.O_ASYNC)

    def abandon(self) -> None:
        """The upgrade failed: stop the new chassis if it still runs, release our ends."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        self.listener.close()
        self.handoff.close()

    def reap(self) -> int | None:
        """Its exit status, once it is gone (None while it runs)."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        return status if pid else None


def command_line() -> list[str]:
    """How this chassis was started: the interpreter and its arguments, run again."""
    return [sys.executable, *sys.orig_argv[1:]]


def spawn(config: Config, listeners: Sequence[tuple[str, int]],
          notify_socket: str | None) -> Successor:
    """Fork and exec the new chassis with ``listeners`` (name, fd) as fds 3.., the
    readiness pipe and the hand-over socket. The caller keeps its own copies of the fds."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener, reporter = pipe()
    assert reporter.fd is not None
    argv = command_line()
    env = {k: v for k, v in os.environ.items()
           if k not in (listenfds.ENV_FDS, listenfds.ENV_PID, listenfds.ENV_NAMES, ENV)}
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
    count = len(listeners)
    env[ENV] = f"{_extra_fd(count)}:{_extra_fd(count) + 1}:{os.getpid()}"
    names = [name for name, _ in listeners]
    sources = [fd for _, fd in listeners] + [reporter.fd, theirs.fileno()]
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    pid = os.fork()
    if pid == 0:  # the child: only plain system calls until exec
        try:
            # The parent's event loop learns of signals through a wakeup fd this child
            # shares: a signal caught here (SIGTERM from an old chassis giving up on us)
            # must not be written there, or the old chassis would act on it.
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            signal.set_wakeup_fd(-1)
            for signum in signals.BLOCKED:
                signal.signal(signum, signal.SIG_DFL)
            floor = listenfds.FIRST_FD + len(sources)
            moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in sources]
            for i, fd in enumerate(moved):
                os.dup2(fd, listenfds.FIRST_FD + i)  # inheritable
            env.update(listenfds.environment(names, os.getpid()))
            os.chdir(config.start_dir)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execve(argv[0], argv, env)
        except OSError as e:  # tell the old chassis why, through the readiness pipe
            with contextlib.suppress(BaseException):
                why = f"cannot run {argv[0]} as uid {os.geteuid()}: {e.strerror}"
                os.write(_extra_fd(count), json.dumps(
                    {"ready": False, "error": why, "exit_code": 127}).encode() + b"\n")
        finally:
            os._exit(127)
    reporter.close()
    theirs.close()
    flags = fcntl.fcntl(listener.fd, fcntl.F_GETFL)
    fcntl.fcntl(listener.fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    ours.setblocking(False)
    log.log(logs.MESSAGE, "upgrade: started a new chassis (pid=%d) with %d listening "
            "socket(s): %s", pid, count, " ".join(argv[1:]))
    return Successor(pid, listener, ours, timeout())


def _extra_fd(listeners: int) -> int:
    """The fd of the readiness pipe in the new chassis (the hand-over socket is next)."""
    return listenfds.FIRST_FD + listeners


def refused(why: str | None, successor: Successor | None) -> bool:
    """Whether SIGUSR2 must be ignored now, said in one log line: while the process is
    ``why`` (stopping, starting) or while a new chassis (``successor``) still starts."""
    if why is not None:
        log.warning("upgrade: received SIGUSR2 while %s; ignored", why)
        return True
    if successor is not None:
        log.warning("upgrade: received SIGUSR2 while the new chassis (pid=%d) starts; "
                    "ignored", successor.pid)
        return True
    log.log(logs.MESSAGE, "upgrade: received SIGUSR2, starting a new chassis")
    return False


def begin(config: Config, listeners: Sequence[tuple[str, socket.socket]],
          pidfile: PidFile | None, notify_socket: str | None) -> Successor | None:
    """SIGUSR2 in the main process: set the pid file aside and start the new chassis
    with ``listeners`` (name, socket); None when it cannot be started (logged, and the
    pid file is back)."""
    try:
        if pidfile is not None:
            pidfile.set_aside()
        return spawn(config, [(name, sock.fileno()) for name, sock in listeners],
                     notify_socket)
    except (ChassisError, OSError) as e:
        failed(f"cannot start it: {e}")
        if pidfile is not None:
            pidfile.restore()
        return None


def gather(workers: Sequence[tuple[str, socket.socket]]) -> list[tuple[str, socket.socket]]:
    """In the angel: each worker's listening sockets, asked over its reload socket
    (``workers``: a label for the log and that socket), and the sockets the angel
    inherited that none of them holds. Copies: close them once the new chassis runs."""
    gathered: list[tuple[str, socket.socket]] = []
    for label, commands in workers:
        try:
            got = ask_listeners(commands, 5.0)
        except OSError as e:
            log.warning("upgrade: cannot ask %s for its listening sockets: %s", label, e)
            continue
        if not got:
            log.warning("upgrade: %s sent no listening socket", label)
        gathered += got
    inodes = {os.fstat(sock.fileno()).st_ino for _, sock in gathered}
    for entry in listenfds.inherited():
        if os.fstat(entry.sock.fileno()).st_ino not in inodes:
            gathered.append((listenfds.address_of(entry.name), entry.sock.dup()))
    return gathered


def abandoned(pid: int) -> None:
    log.log(logs.MESSAGE, "upgrade abandoned: this chassis is stopping, so is the new one "
            "(pid=%d)", pid)


def failed(why: str) -> None:
    log.log(logs.CRITICAL, "upgrade failed, the running chassis stays: the new chassis: %s",
            why)


# -- the angel asks a worker (over its reload socket) -----------------------------------


def answer_listeners(sock: socket.socket) -> None:
    """In a worker asked for :data:`ASK_LISTENERS`: send names and fds in one message."""
    entries = listenfds.opened()
    data = json.dumps([name for name, _ in entries]).encode()
    socket.send_fds(sock, [data], [s.fileno() for _, s in entries])


def ask_listeners(sock: socket.socket, wait: float) -> list[tuple[str, socket.socket]]:
    """In the angel: one worker's listening sockets (our own copies), or [] if it does
    not answer within ``wait`` seconds."""
    import select

    sock.send(ASK_LISTENERS)
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], remaining)[0]:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_ITEM, 64)
        except BlockingIOError:
            continue
        try:
            names = json.loads(data)
        except ValueError:
            names = []
        found = []
        for i, fd in enumerate(fds):
            name = names[i] if i < len(names) else "unknown"
            found.append((str(name), socket.socket(fileno=fd)))
        return found
    return []


def send_hand_over(sock: socket.socket, handoff: socket.socket, new_pid: int) -> str | None:
    """In the angel: tell a worker to hand over and stop; why it failed, or None."""
    try:
        socket.send_fds(sock, [HAND_OVER + str(new_pid).encode()], [handoff.fileno()])
    except OSError as e:
        return e.strerror or str(e)
    return None


# -- hand-over items ---------------------------------------------------------------------


@dataclass(frozen=True)
class HandoverItem:
    """One thing a plugin hands to the new chassis: its name, a JSON state, the fds
    (owned by whoever receives the item: close them if you do not use them)."""

    plugin: str
    state: dict[str, Any]
    fds: list[int]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


#: What ``chassis_handover_out`` gets: ``await send(state, fds)``.
Send = Callable[[dict[str, Any], Sequence[int]], Awaitable[None]]


class Sender:
    """The old worker's end of the hand-over socket; shared by its plugins."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.sent = 0

    def for_plugin(self, plugin: str) -> Send:
        async def send(state: dict[str, Any], fds: Sequence[int]) -> None:
            await self.send(plugin, state, fds)
        return send

    async def send(self, plugin: str, state: dict[str, Any], fds: Sequence[int]) -> None:
        """One item; the fds are duplicated into the message (close yours afterwards).
        Raises OSError when the new chassis is gone."""
        data = json.dumps({"plugin": plugin, "state": state}).encode()
        if len(data) > MAX_ITEM or len(fds) > MAX_FDS:
            raise ValueError(f"a hand-over item is limited to {MAX_ITEM} bytes and {MAX_FDS} fds")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + IN_FLIGHT_WAIT
        while True:
            try:
                socket.send_fds(self.sock, [data], list(fds))
                self.sent += 1
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.sock.fileno(), _set_done, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.sock.fileno())
            except OSError as e:
                # Too many fds in flight for this user (the kernel's limit is
                # RLIMIT_NOFILE): the new workers are reading them, wait a little.
                if e.errno not in (errno.ETOOMANYREFS, errno.ENOBUFS) or loop.time() > give_up:
                    raise
                await asyncio.sleep(0.01)

    def close(self) -> None:
        self.sock.close()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def receive(sock: socket.socket) -> HandoverItem | None:
    """One item from the hand-over socket (shared by the new workers: any may get it).

    None at the end (every old worker closed its end); raises BlockingIOError when
    another worker took what was there.
    """
    data, fds, flags, _ = socket.recv_fds(sock, MAX_ITEM, MAX_FDS, socket.MSG_DONTWAIT)
    if not data and not fds:
        return None
    try:
        message = json.loads(data)
        item = HandoverItem(str(message["plugin"]), dict(message["state"]), list(fds))
    except (ValueError, KeyError, TypeError):
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        log.log(logs.CRITICAL, "upgrade: a garbled hand-over item (%d bytes) was dropped", len(data))
        return HandoverItem("", {}, [])
    if flags & socket.MSG_CTRUNC:
        log.warning("upgrade: a hand-over item carried more than %d fds; the rest were lost",
                    MAX_FDS)
    return item
