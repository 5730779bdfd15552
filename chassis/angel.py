"""The angel: supervises N worker processes (``--keepalive``, ``--event-threads``).

Its signals are blocked and taken one at a time with ``sigtimedwait``, so no handler
ever runs in the middle of its work (gunicorn deadlocked for years logging inside a
SIGCHLD handler). One loop: wait for a signal or the next deadline, then forward
signals to the workers (never to the process group), read the workers' readiness
reports (each report raises SIGIO through ``O_ASYNC`` on its pipe), reap with
``wait4(WNOHANG)`` (stopped workers are not reported), and start due restarts.

Policy, per worker exit:

* killed by a signal, or a non-zero exit after it was ready: a crash. With
  ``--keepalive`` it is restarted after a delay that doubles from
  ``CHASSIS_RESTART_DELAY_MIN`` (1 s) up to ``CHASSIS_RESTART_DELAY_MAX`` (60 s) and
  goes back to the minimum once a worker ran ``CHASSIS_RESTART_RESET_AFTER`` (30 s).
  ``CHASSIS_GIVE_UP_FAILURES`` (5) crashes within ``CHASSIS_GIVE_UP_WINDOW`` (60 s)
  make the angel give up and exit 1. Without ``--keepalive`` the angel stops the
  others and exits non-zero (the worker's code, or 128 + signal).
* a non-zero exit before it was ready: a start-up failure. Never restarted: the angel
  stops the others and exits with that code and the worker's message.
* exit 0 on its own (a plugin asked, or SIGTERM sent to the worker itself): the angel
  stops the others and exits 0.

SIGHUP reopens the angel's log, is forwarded (the workers reopen theirs) and reloads
the configuration: read here, checked in a child with the workers' privileges, sent to
every worker over its own socket and kept for the workers started later
(:mod:`chassis.reload`).

The angel keeps root with ``--user``: it must be able to start a worker that binds a
privileged port again, to replace the pid file, and to create a rotated log file the
workers (chowned) can reopen after SIGHUP.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field

import pluggy

from chassis import listenfds, logs, reload, signals, upgrade, watchdog, worker
from chassis.config import Config
from chassis.pidfile import PidFile
from chassis.privileges import TargetUser
from chassis.readiness import Listener, Reporter, pipe
from chassis.sdnotify import Notifier

log = logging.getLogger("chassis.angel")

#: Extra time, beyond --shutdown-timeout, before the angel SIGKILLs a stopping worker.
KILL_GRACE = 5.0
#: Exit code for a worker whose Python code escaped every handler.
INTERNAL_ERROR = 70


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, value)
        return default


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a crashed worker, and when to give up (overridable by env)."""

    delay_min: float = 1.0
    delay_max: float = 60.0
    reset_after: float = 30.0
    give_up_failures: int = 5
    give_up_window: float = 60.0

    @classmethod
    def from_environment(cls) -> RestartPolicy:
        return cls(
            delay_min=_env_float("CHASSIS_RESTART_DELAY_MIN", cls.delay_min),
            delay_max=_env_float("CHASSIS_RESTART_DELAY_MAX", cls.delay_max),
            reset_after=_env_float("CHASSIS_RESTART_RESET_AFTER", cls.reset_after),
            give_up_failures=int(_env_float("CHASSIS_GIVE_UP_FAILURES", cls.give_up_failures)),
            give_up_window=_env_float("CHASSIS_GIVE_UP_WINDOW", cls.give_up_window),
        )

    def next_delay(self, previous: float, uptime: float) -> float:
        if previous <= 0 or uptime >= self.reset_after:
            return self.delay_min
        return min(self.delay_max, previous * 2)


@dataclass
class Slot:
    """One of the N workers, across its restarts."""

    index: int
    pid: int | None = None
    listener: Listener | None = None
    started: float = 0.0
    ready: bool = False
    delay: float = 0.0
    restart_at: float | None = None
    generation: int = 0
    heartbeat: watchdog.Heartbeat | None = None
    #: Set once the watchdog found it hung: when to SIGKILL it (None: done or not hung).
    hung: bool = False
    kill_hung_at: float | None = None
    #: The angel's end of the socket that carries reloaded configurations to the worker.
    commands: socket.socket | None = None


@dataclass
class Angel:
    config: Config
    pm: pluggy.PluginManager
    logs: logs.Logs
    user: TargetUser | None = None
    pidfile: PidFile | None = None
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    launcher: Reporter = field(default_factory=lambda: Reporter(None))
    policy: RestartPolicy = field(default_factory=RestartPolicy.from_environment)
    #: How SIGHUP reads the configuration again (``cli.reparse``; None: logs only).
    reread: reload.Reread | None = None
    #: Started by an upgrade: the socket the old chassis hands connections over on.
    handoff: socket.socket | None = None

    def __post_init__(self) -> None:
        self.count = int(self.config.get("event_threads") or 1)
        self.keepalive = bool(self.config.get("keepalive"))
        self.watchdog_timeout = (float(self.config.get("watchdog_timeout") or 0)
                                 if self.keepalive else 0.0)
        self.slots = [Slot(i) for i in range(self.count)]
        self.failures: deque[float] = deque()
        self.ready = False
        self.stopping = False
        self.exit_code = 0
        self.kill_at: float | None = None
        self.killed = False
        self.successor: upgrade.Successor | None = None  # an upgrade under way
        self.succeeded_by: int | None = None  # the new chassis took over
        self.abandoned: int | None = None  # a new chassis that failed, until reaped
        self.claimed: set[int] = set()  # inherited listeners some worker took

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        logs.set_role("angel")
        self.pid = os.getpid()
        log.log(logs.MESSAGE, "we try to keep %d worker(s) alive%s", self.count,
                "" if self.keepalive else " (no --keepalive: a crash stops everything)")
        for slot in self.slots:
            self._spawn(slot)
        waited = signals.BLOCKED
        while True:
            timeout = self._timeout()
            info = signal.sigtimedwait(waited, timeout)
            if info is not None:
                self._on_signal(info.si_signo)
            self._poll_reports()
            self._poll_successor()
            self._reap()
            if self.stopping:
                if not any(s.pid for s in self.slots):
                    break
                self._kill_stragglers()
            else:
                self._watch()
                self._restart_due()
        return self._finish()

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [1.0 if self.successor is None else 0.1]
        deadlines += [s.restart_at - now for s in self.slots if s.restart_at is not None]
        if self.kill_at is not None and not self.killed:
            deadlines.append(self.kill_at - now)
        deadlines += [s.kill_hung_at - now for s in self.slots if s.kill_hung_at is not None]
        if self.watchdog_timeout > 0:
            deadlines.append(watchdog.interval(self.watchdog_timeout))
        return max(0.0, min(deadlines))

    def _finish(self) -> int:
        for slot in self.slots:
            if slot.listener is not None:
                slot.listener.close()
            if slot.heartbeat is not None:
                slot.heartbeat.close()
            if slot.commands is not None:
                slot.commands.close()
        if self.pidfile is not None:
            self.pidfile.release()
        level = logs.CRITICAL if self.config.get("verbose_shutdown") else logs.MESSAGE
        if self.exit_code == 0:
            log.log(level, "shutting down normally, exit code is: 0")
        else:
            log.log(logs.CRITICAL, "shutting down, exit code is: %d", self.exit_code)
        self.logs.flush()
        return self.exit_code

    # -- signals --------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        name = signals.name(signum)
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                log.log(logs.MESSAGE, "received %s, stopping the workers", name)
                self._begin_stop(0, signum)
            else:
                log.log(logs.MESSAGE, "received %s again, passing it on", name)
                self._forward(signum)
        elif signum == signal.SIGHUP:
            # Reopen first, so a rotated file exists (owned by --user) before the
            # workers, who may no longer be root, reopen it.
            self.logs.reopen_after_sighup()
            self._forward(signum)
            self._reload()
        elif signum == signal.SIGUSR2:
            self._upgrade()
        elif signum == signal.SIGUSR1:
            self._forward(signum)
        # SIGCHLD and SIGIO only wake the loop: reaping and reading follow.

    def _reload(self) -> None:
        """Read the configuration again, check it in a child with the workers'
        privileges, and send what was accepted to every worker (see chassis.reload).
        Workers started later get it at their fork."""
        if self.reread is None or self.stopping:
            return
        plan = reload.prepare(self.pm, self.config, self.reread, checker=lambda new: (
            reload.check_in_child(self.pm, self.config, new, self.user)))
        if plan is None:
            return
        self.config = plan.config
        self.logs.set_level(plan.config.get("log_level") or "message")
        for slot in self.slots:
            if slot.pid and slot.commands is not None:
                why = reload.send(slot.commands, plan.config)
                if why is not None:
                    log.log(logs.CRITICAL, "reload: worker %d (pid=%d) did not get the new "
                            "configuration: %s", slot.index + 1, slot.pid, why)

    # -- upgrade (SIGUSR2), see chassis.upgrade ------------------------------------------

    def _upgrade(self) -> None:
        """Start the new chassis with every worker's listeners; wait for it in the loop."""
        why = "stopping" if self.stopping else None if self.ready else "starting"
        if upgrade.refused(why, self.successor):
            return
        workers = [(f"worker {slot.index + 1} (pid={slot.pid})", slot.commands)
                   for slot in self.slots if slot.pid and slot.commands is not None]
        gathered = upgrade.gather(workers)
        try:
            self.successor = upgrade.begin(self.config, gathered, self.pidfile,
                                           self.notifier.address)
        finally:
            for _, sock in gathered:
                sock.close()  # copies: the new chassis has its own now
        if self.successor is not None:
            self.successor.signal_when_ready()  # SIGIO wakes the loop

    def _poll_successor(self, exited: bool = False) -> None:
        successor = self.successor
        if successor is None:
            return
        outcome = successor.check()
        if outcome is None and exited:
            outcome = (False, "it exited before it was ready")
        if outcome is None:
            return
        self.successor = None
        successor.listener.close()
        ready, why = outcome
        if not ready:
            upgrade.failed(why)
            successor.abandon()  # reaped by _reap, like a worker; then the pid file is back
            self.abandoned = successor.pid
            return
        self.succeeded_by = successor.pid
        self.notifier.send(f"MAINPID={successor.pid}")
        log.log(logs.MESSAGE, "upgrade: new chassis pid %d ready; the workers hand over "
                "and drain", successor.pid)
        self._begin_stop(0, handoff=successor)
        successor.handoff.close()

    def _forward(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _begin_stop(self, exit_code: int, signum: int = signal.SIGTERM,
                    handoff: upgrade.Successor | None = None) -> None:
        """Stop every worker: ``signum``, or, after an upgrade, "hand over" (then they stop)."""
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = exit_code
        if handoff is None:
            self.notifier.stopping()
            if self.successor is not None:  # the operator wants no chassis: stop it too
                upgrade.abandoned(self.successor.pid)
                self.successor.abandon()
                self.abandoned, self.successor = self.successor.pid, None
        timeout = float(self.config.get("shutdown_timeout", 30.0))
        self.kill_at = time.monotonic() + timeout + KILL_GRACE
        for slot in self.slots:
            slot.restart_at = None
        if handoff is None:
            self._forward(signum)
            return
        for slot in self.slots:
            if not slot.pid:
                continue
            why = ("it has no socket to the angel" if slot.commands is None else
                   upgrade.send_hand_over(slot.commands, handoff.handoff, handoff.pid))
            if why is not None:
                log.warning("upgrade: worker %d (pid=%d) cannot hand over (%s); stopping it",
                            slot.index + 1, slot.pid, why)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _kill_stragglers(self) -> None:
        if self.killed or self.kill_at is None or time.monotonic() < self.kill_at:
            return
        self.killed = True
        for slot in self.slots:
            if slot.pid:
                log.warning("worker %d (pid=%d) did not stop in time; sending SIGKILL",
                            slot.index + 1, slot.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)

    # -- workers --------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        if self.watchdog_timeout > 0:
            if slot.heartbeat is None:
                slot.heartbeat = watchdog.Heartbeat()
            slot.heartbeat.beat()  # the new worker's clock starts now
        slot.hung = False
        slot.kill_hung_at = None
        listener, reporter = pipe()
        if slot.commands is not None:
            slot.commands.close()
        slot.commands, commands = reload.channel()
        fcntl.fcntl(listener.fd, fcntl.F_SETOWN, os.getpid())
        flags = fcntl.fcntl(listener.fd, fcntl.F_GETFL)
        fcntl.fcntl(listener.fd, fcntl.F_SETFL, flags | os.O_NONBLOCK | os.O_ASYNC)
        self.logs.flush()
        try:
            pid = os.fork()
        except OSError as e:
            listener.close()
            reporter.close()
            commands.close()
            self._fail(f"cannot start a worker: {e.strerror}", 1)
            return
        if pid == 0:
            self._become_worker(slot, listener, reporter, commands)
        reporter.close()
        commands.close()
        slot.pid = pid
        slot.listener = listener
        slot.started = time.monotonic()
        slot.ready = False
        slot.restart_at = None
        slot.generation += 1
        log.log(logs.MESSAGE, "started worker %d (pid=%d)", slot.index + 1, pid)

    def _become_worker(self, slot: Slot, listener: Listener, reporter: Reporter,
                       commands: socket.socket) -> None:
        """The child side of the fork: never returns."""
        code = INTERNAL_ERROR
        try:
            listener.close()
            for other in self.slots:
                if other.listener is not None:
                    other.listener.close()
                if other.commands is not None:
                    other.commands.close()
            logs.set_role("worker" if self.count == 1 else f"worker#{slot.index + 1}")
            # what this slot's earlier workers cannot count themselves (--metrics-address)
            os.environ["CHASSIS_WORKER_RESTARTS"] = str(slot.generation)
            code = worker.run(worker.WorkerSetup(
                config=self.config, pm=self.pm, logs=self.logs, worker_id=slot.index,
                worker_count=self.count, reporter=reporter, angel_pid=self.pid,
                user=self.user, heartbeat=slot.heartbeat,
                heartbeat_interval=watchdog.interval(self.watchdog_timeout or 4.0),
                commands=commands, handoff=self.handoff,
            ))
        except BaseException:
            with contextlib.suppress(BaseException):
                log.log(logs.CRITICAL, "worker failed", exc_info=True)
        finally:
            with contextlib.suppress(BaseException):
                self.logs.flush()
            os._exit(code)

    def _watch(self) -> None:
        """The watchdog: a worker whose loop stopped beating is dumped, killed, restarted."""
        if self.watchdog_timeout <= 0:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid is None or slot.heartbeat is None:
                continue
            if slot.hung:
                if slot.kill_hung_at is not None and now >= slot.kill_hung_at:
                    slot.kill_hung_at = None
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)
                continue
            if _is_stopped(slot.pid):  # SIGSTOP by an operator: not a hang
                slot.heartbeat.beat()
                continue
            silent = slot.heartbeat.silent_for()
            if silent < self.watchdog_timeout:
                continue
            slot.hung = True
            dump = bool(self.config.get("log_backtrace_on_crash"))
            log.log(logs.CRITICAL, "worker %d (pid=%d) is hung: its event loop has not run for "
                    "%.1f s (--watchdog-timeout); %s", slot.index + 1, slot.pid, silent,
                    "dumping its tracebacks, killing and restarting it" if dump
                    else "killing and restarting it")
            self.logs.flush()
            with contextlib.suppress(ProcessLookupError):
                if dump:
                    os.kill(slot.pid, watchdog.DUMP_SIGNAL)
                    slot.kill_hung_at = now + watchdog.DUMP_GRACE
                else:
                    os.kill(slot.pid, signal.SIGKILL)

    def _poll_reports(self) -> None:
        for slot in self.slots:
            if slot.listener is None or slot.ready:
                continue
            report = slot.listener.poll()
            if report is not None and report.ready:
                slot.ready = True
                self.claimed.update(report.inherited)
                slot.listener.close()
                if self.ready:
                    log.log(logs.MESSAGE, "worker %d (pid=%s) ready", slot.index + 1, slot.pid)
        if not self.ready and not self.stopping and all(s.ready for s in self.slots):
            self._all_ready()

    def _all_ready(self) -> None:
        self.ready = True
        listenfds.close_unclaimed(self.claimed)  # kept for restarts, unless nobody uses it
        if self.pidfile is not None:
            try:
                self.pidfile.write(os.getpid())
            except Exception as e:
                self._fail(str(e), 1)
                return
        self.notifier.ready(f"{self.count} worker(s) serving")
        self.launcher.ready()
        log.log(logs.MESSAGE, "all %d worker(s) ready", self.count)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._on_exit(slot, status, usage.ru_maxrss)
            elif self.successor is not None and pid == self.successor.pid:
                self._poll_successor(exited=True)
            if pid == self.abandoned:
                self.abandoned = None
                if self.pidfile is not None:
                    self.pidfile.restore()

    def _on_exit(self, slot: Slot, status: int, maxrss_kb: int) -> None:
        now = time.monotonic()
        uptime = now - slot.started
        report = slot.listener.poll() if slot.listener is not None else None
        if slot.listener is not None:
            slot.listener.close()
        was_ready = slot.ready or bool(report and report.ready)
        pid = slot.pid
        slot.pid = None
        slot.listener = None
        slot.ready = False
        what = f"worker {slot.index + 1} (pid={pid})"
        usage = f"after {uptime:.1f} s (it used {maxrss_kb} kBytes max)"
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            how = f"died on signal={signum} ({signals.name(signum)})"
            code = 128 + signum
            crashed = True
        else:
            code = os.WEXITSTATUS(status)
            how = f"exited normally with exit-code = {code}"
            crashed = code != 0 and was_ready
        if self.stopping:
            log.log(logs.MESSAGE if code == 0 else logs.WARNING, "%s %s %s", what, how, usage)
            return
        if crashed:
            log.log(logs.CRITICAL, "%s %s %s", what, how, usage)
            self._crashed(slot, f"{what} {how}", code, uptime)
        elif code == 0:
            log.log(logs.MESSAGE, "%s %s %s; stopping the other workers", what, how, usage)
            self._begin_stop(0)
        else:
            log.log(logs.CRITICAL, "%s %s %s", what, how, usage)
            error = report.error if report is not None and report.error else (
                f"{what} {how} during start-up")
            self._fail(error, code)

    def _crashed(self, slot: Slot, description: str, code: int, uptime: float) -> None:
        if not self.keepalive:
            self._fail(f"{description}; not restarted (no --keepalive)", code)
            return
        now = time.monotonic()
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.policy.give_up_window:
            self.failures.popleft()
        if len(self.failures) >= self.policy.give_up_failures:
            self._fail(
                f"giving up: {len(self.failures)} worker failures within "
                f"{self.policy.give_up_window:g} s; the last: {description}", 1)
            return
        slot.delay = self.policy.next_delay(slot.delay, uptime)
        slot.restart_at = now + slot.delay
        log.log(logs.CRITICAL, "restarting worker %d in %.1f s", slot.index + 1, slot.delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now and slot.pid is None:
                self._spawn(slot)

    def _fail(self, error: str, code: int) -> None:
        """Stop everything and exit non-zero with ``error`` (told to --daemon's launcher)."""
        log.log(logs.CRITICAL, "%s", error)
        if not self.ready:
            self.launcher.failed(error, code or 1)
        self._begin_stop(code or 1)


def _is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, a debugger): state T or t in /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False
