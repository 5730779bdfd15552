"""sysbench directly against a throwaway MariaDB and through chassis, side by side.

Run through ``scripts/bench`` (it installs sysbench and the venv first). For each
workload and thread count the direct run and the proxied run(s) follow each other, so
they see the same machine; the table shows QPS, p95 latency and proxied/direct ratios,
and the figures go to ``bench-results/<timestamp>.json``.

``--lua`` adds a chassis running a script: without a file, ``scripts/bench-inspect.lua``,
whose ``read_query`` looks at every query and returns nothing (the cost of having a
script at all). ``--repeat N`` runs every cell N times, interleaved, and shows medians:
the machine is shared and single runs are noisy.

Each chassis' CPU time per query is measured too: user + system time of its whole
process group (angel and workers, from /proc) over the run, divided by the queries
sysbench counted. ``--digest-off`` adds the same chassis with ``--proxy-query-digest=off``
(``proxied-nodigest``, and ``proxied+lua-nodigest`` with ``--lua``), so the cost of query
digests (on by default) shows side by side; the issue's target is at most 10 % more CPU
per query with digests on, at 32 threads of point selects.

``--compare haproxy`` adds HAProxy in TCP mode in front of the same server (as many
threads as chassis has workers): a C byte relay, the physical reference for the CPU per
query and per login (``haproxy`` columns; the targets of issue 15 are ratios to it).
``--compare uvloop`` adds ``scripts/uvloop_relay.py``, a byte relay in Python on uvloop
that parses nothing (as many workers as chassis): the floor for any Python proxy on
chassis' event loop. Its ratios to HAProxy show what Python and uvloop cost by
themselves; what chassis spends beyond it is chassis' own work.

The ``connect`` workload (``scripts/bench-connect.lua``, in the default list) is what
PHP-style applications do: every event connects, runs ``SELECT 1`` and quits, so its
events per second are logins per second, shown in a table of their own with the CPU
microseconds per login. ``--lua`` runs it with ``scripts/bench-inspect.lua``, which also
defines ``read_auth``. Every cell also shows the p50 latency (from sysbench's histogram).

sysbench keeps its defaults (reported in the JSON and the header): notably
``--db-ps-mode=auto``, i.e. server-side prepared statements, and ``--rand-type=special``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402

from tests.support.haproxy import HAProxy, find_haproxy  # noqa: E402
from tests.support.mariadb import MariaDB, MariaDBError, free_port  # noqa: E402

WORKLOADS = ("oltp_point_select", "oltp_read_only", "connect")
THREADS = (1, 8, 32)
#: The issue's target: proxied/direct QPS for point selects at 32 threads.
TARGET = ("oltp_point_select", 32, 0.55)
#: Query digests on may cost this much more proxy CPU per query than off (issue 12).
DIGEST_TARGET = ("oltp_point_select", 32, 1.10)
#: The target with the inspect-every-query script (scripts/bench-inspect.lua).
LUA_TARGET = ("oltp_point_select", 32, 0.5)
INSPECT_SCRIPT = ROOT / "scripts" / "bench-inspect.lua"
#: The connect-heavy workload: connect, ``SELECT 1``, quit (one login per event).
CONNECT_WORKLOAD = "connect"
CONNECT_SCRIPT = ROOT / "scripts" / "bench-connect.lua"
#: Issue 15's targets against HAProxy: (workload, threads, chassis CPU per event at most
#: this times HAProxy's, chassis events/s at least this times HAProxy's or None).
HAPROXY_TARGETS = (
    (CONNECT_WORKLOAD, 8, 1.5, 0.8),
    ("oltp_point_select", 32, 1.05, None),
)
READY_TIMEOUT = 30.0
#: sysbench defaults worth stating next to the figures (parsed from its help).
REPORTED_DEFAULTS = ("db-ps-mode", "rand-type", "percentile", "point_selects",
                     "range_selects", "skip_trx", "mysql-ssl")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


@dataclass
class Run:
    """One sysbench run's figures (``error`` set and figures zero if it failed)."""

    workload: str
    threads: int
    target: str
    qps: float = 0.0
    tps: float = 0.0
    p95_ms: float = 0.0
    p50_ms: float = 0.0  # from sysbench's latency histogram
    errors: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    queries: int = 0
    events: int = 0  # sysbench's transactions: logins for the connect workload
    cpu_seconds: float = 0.0  # the chassis' CPU (user + system) over the run; 0 for direct
    error: str = ""
    command: list[str] = field(default_factory=list)
    attempt: int = 0  # with --repeat: which round (runs of one round follow each other)


@dataclass
class Target:
    """Where sysbench connects: the server itself or a chassis in front of it."""

    name: str
    port: int
    pgid: int = 0  # the chassis' process group (0: the server itself, not measured)
    pid: int = 0  # a proxy that is one process (HAProxy): its CPU, every thread's


def target_cpu_seconds(target: Target) -> float:
    """The CPU seconds a proxy target has used so far (0.0 for the server itself)."""
    if target.pgid:
        return group_cpu_seconds(target.pgid)
    if target.pid:
        return process_cpu_seconds(target.pid)
    return 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads (from /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process of the group (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# -- sysbench ----------------------------------------------------------------------------

def sysbench_base(workload: str, port: int, args: argparse.Namespace) -> list[str]:
    test = str(CONNECT_SCRIPT) if workload == CONNECT_WORKLOAD else workload
    return [
        args.sysbench, test, "--db-driver=mysql", "--mysql-host=127.0.0.1",
        f"--mysql-port={port}", "--mysql-user=root", "--mysql-password=",
        "--mysql-db=sbtest", f"--tables={args.tables}", f"--table-size={args.table_size}",
    ]


def sysbench_defaults(sysbench: str) -> dict[str, str]:
    """The defaults sysbench prints in ``--help`` and ``oltp_read_only help``."""
    found: dict[str, str] = {}
    for cmd in ([sysbench, "--help"], [sysbench, "oltp_read_only", "help"],
                [sysbench, "--db-driver=mysql", "oltp_read_only", "help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        for name, default in re.findall(r"^\s+--([\w-]+)(?:\[?=[^\s\]]*\]?)?\s.*\[([^\]]*)\]\s*$",
                                        out, re.MULTILINE):
            found.setdefault(name, default)
    return {k: found[k] for k in REPORTED_DEFAULTS if k in found}


def parse_sysbench(out: str) -> dict[str, float]:
    """QPS, TPS, p95 and error counts from sysbench 1.0's report."""
    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        if match is None:
            raise BenchError(f"sysbench report has no {pattern!r}:\n{out[-1500:]}")
        return float(match.group(1))
    return {
        "qps": number(r"queries:\s+\d+\s+\(([\d.]+) per sec"),
        "queries": number(r"queries:\s+(\d+)\s+\("),
        "tps": number(r"transactions:\s+\d+\s+\(([\d.]+) per sec"),
        "events": number(r"transactions:\s+(\d+)\s+\("),
        "p95_ms": number(r"95th percentile:\s+([\d.]+)"),
        "errors": number(r"ignored errors:\s+(\d+)"),
        "reconnects": number(r"reconnects:\s+(\d+)"),
        "seconds": number(r"total time:\s+([\d.]+)s"),
    }


def histogram_percentile(out: str, percent: float) -> float:
    """The latency (ms) at ``percent`` from sysbench's ``--histogram`` report: the first
    bucket where the running count reaches it, as sysbench computes its own percentile."""
    buckets = [(float(v), int(n)) for v, n in
               re.findall(r"^\s+([\d.]+) \|\**\s+(\d+)\s*$", out, re.MULTILINE)]
    total = sum(n for _v, n in buckets)
    if not total:
        raise BenchError(f"sysbench report has no latency histogram:\n{out[-1500:]}")
    seen = 0
    for value, count in buckets:
        seen += count
        if seen * 100 >= total * percent:
            return value
    return buckets[-1][0]


def run_sysbench(workload: str, threads: int, target: Target, seconds: int,
                 args: argparse.Namespace) -> Run:
    cmd = [*sysbench_base(workload, target.port, args), f"--threads={threads}",
           f"--time={seconds}", "--report-interval=0", "--histogram=on", "run"]
    run = Run(workload=workload, threads=threads, target=target.name, command=cmd)
    cpu_before = target_cpu_seconds(target)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=seconds + 60)
        if target.pgid or target.pid:
            run.cpu_seconds = target_cpu_seconds(target) - cpu_before
    except subprocess.TimeoutExpired:
        run.error = f"sysbench did not finish within {seconds + 60} s"
        return run
    if done.returncode != 0:
        run.error = (done.stderr.strip() or done.stdout.strip())[-500:] or \
            f"sysbench exited {done.returncode}"
        return run
    try:
        figures = parse_sysbench(done.stdout)
        run.p50_ms = histogram_percentile(done.stdout, 50)
    except BenchError as exc:
        run.error = str(exc)
        return run
    run.qps, run.tps, run.p95_ms = figures["qps"], figures["tps"], figures["p95_ms"]
    run.errors, run.reconnects = int(figures["errors"]), int(figures["reconnects"])
    run.seconds = figures["seconds"]
    run.queries = int(figures["queries"])
    run.events = int(figures["events"])
    return run


def cpu_us_per_query(run: Run) -> float | None:
    """The proxy's CPU microseconds per query sysbench counted (None: direct, or failed);
    per login for the connect workload (one query per login)."""
    count = run.events if run.workload == CONNECT_WORKLOAD else run.queries
    if run.error or not count or not run.cpu_seconds:
        return None
    return run.cpu_seconds / count * 1e6


# -- chassis -----------------------------------------------------------------------------

def _answers(port: int) -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=port, user="root", password="",
                        connect_timeout=2, read_timeout=2).close()
        return True
    except pymysql.err.MySQLError:
        return False


def _start_answering(cmd: list[str], log: Path, port: int, what: str) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group (output to ``log``) and wait until it
    answers a login on ``port`` or exits; BenchError, the group stopped, if it does
    neither within READY_TIMEOUT."""
    with log.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while proc.poll() is None and not _answers(port):
        if time.monotonic() > deadline:
            _stop_group(proc)
            raise BenchError(f"{what} did not answer on port {port} within {READY_TIMEOUT} s;"
                             f" its log:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return proc


@contextlib.contextmanager
def chassis(db: MariaDB, args: argparse.Namespace, lua: Path | None,
            log_dir: Path, executable: str | None = None, label: str = "proxied",
            extra: Sequence[str] = (), suffix: str = "") -> Iterator[Target]:
    """A chassis proxy in front of *db*, stopped (its whole process group) on exit."""
    name = (f"{label}+lua" if lua else label) + suffix
    log = log_dir / f"chassis-{name}.log"
    for _attempt in range(3):
        port = free_port()
        cmd = [executable or args.chassis, "--plugins=proxy", f"--proxy-backend-addresses={db.address}",
               f"--proxy-address=127.0.0.1:{port}", f"--event-threads={args.event_threads}",
               *(args.chassis_arg if executable is None else args.baseline_arg), *extra]
        if lua is not None:
            cmd.append(f"--proxy-lua-script={lua}")
        proc = _start_answering(cmd, log, port, "chassis")
        try:
            if proc.poll() is None:
                print(f"   {name}: {' '.join(cmd)}", flush=True)
                yield Target(name=name, port=port, pgid=proc.pid)
                return
            text = log.read_text(errors="replace")
            if "in use" not in text:
                raise BenchError(f"chassis exited with {proc.returncode}:\n{text[-2000:]}")
        finally:
            _stop_group(proc)
    raise BenchError("chassis could not get a free port in 3 tries")


@contextlib.contextmanager
def haproxy(db: MariaDB, args: argparse.Namespace, log_dir: Path) -> Iterator[Target]:
    """HAProxy in TCP mode in front of *db* (``--compare haproxy``): as many threads as
    chassis has workers, so both have the same cores to spend."""
    directory = log_dir / "haproxy"
    directory.mkdir()
    lb = HAProxy(directory, [db.address], global_lines=[
        f"nbthread {args.event_threads}", "maxconn 4096"])
    try:
        lb.start()
    except RuntimeError as exc:
        raise BenchError(f"haproxy did not start: {exc}") from None
    try:
        print(f"   haproxy: {find_haproxy()} -db -f {lb.config} (mode tcp,"
              f" nbthread {args.event_threads})", flush=True)
        yield Target(name="haproxy", port=lb.port, pid=lb.pid)
    finally:
        lb.stop()


@contextlib.contextmanager
def uvloop_relay(db: MariaDB, args: argparse.Namespace, log_dir: Path) -> Iterator[Target]:
    """``scripts/uvloop_relay.py`` in front of *db* (``--compare uvloop``): as many worker
    processes as chassis, stopped (its process group) on exit."""
    log = log_dir / "uvloop-relay.log"
    port = free_port()
    cmd = [sys.executable, str(ROOT / "scripts" / "uvloop_relay.py"), f"--listen=127.0.0.1:{port}",
           f"--backend={db.address}", f"--workers={args.event_threads}"]
    proc = _start_answering(cmd, log, port, "the uvloop relay")
    try:
        if proc.poll() is not None:
            raise BenchError(f"the uvloop relay exited with {proc.returncode}; its log:\n"
                             f"{log.read_text(errors='replace')[-2000:]}")
        print(f"   uvloop: {' '.join(cmd)}", flush=True)
        yield Target(name="uvloop", port=port, pgid=proc.pid)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the chassis' process group (main process and workers), SIGKILL if stuck."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Workers may outlive a main process that was killed: sweep the group once more.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def also_lua_targets(stack: contextlib.ExitStack, db: MariaDB, args: argparse.Namespace,
                     log_dir: Path) -> list[Target]:
    """A chassis per ``--also-lua`` script, named ``proxied+lua-<file stem>`` (and with
    ``--baseline``, the baseline's ``baseline+lua-<file stem>`` too)."""
    targets = [stack.enter_context(chassis(db, args, script, log_dir, suffix=f"-{script.stem}"))
               for script in args.also_lua]
    if args.baseline is not None:
        targets += [stack.enter_context(chassis(db, args, script, log_dir, args.baseline, "baseline",
                                                suffix=f"-{script.stem}"))
                    for script in args.also_lua]
    return targets


# -- report ------------------------------------------------------------------------------

#: The most proxy CPU per query a script may cost over the script-less chassis (issue 15):
#: a trivial read_query (scripts/bench-inspect.lua), and one that also reads a field of
#: each buffered result (scripts/bench-result.lua).
SCRIPT_CPU_TARGETS = {"bench-inspect": 1.15, "bench-result": 1.30}


def print_script_cpu_ratios(cpu_of: dict[tuple[str, int, str], float | None],
                            args: argparse.Namespace) -> None:
    """Each scripted chassis' CPU per query over the script-less one's, per cell."""
    scripts = {f"{label}+lua-{p.stem}": p for p in args.also_lua for label in ("proxied", "baseline")}
    if args.lua is not None:
        scripts["proxied+lua"] = scripts["baseline+lua"] = args.lua
    for (workload, threads, name), cpu in cpu_of.items():
        plain = cpu_of.get((workload, threads, name.split("+")[0]))
        if name not in scripts or not cpu or not plain or workload == CONNECT_WORKLOAD:
            continue
        line = (f"{workload} at {threads} threads, {name}: {cpu:.1f} us CPU/query,"
                f" {cpu / plain:.2f}x the script-less {name.split('+')[0]}'s {plain:.1f}")
        goal = SCRIPT_CPU_TARGETS.get(scripts[name].stem)
        if goal is not None:
            line += f" ({'meets' if cpu <= plain * goal else 'misses'} the target of at most {goal:.2f}x)"
        print(line)


def ratios(all_runs: list[Run]) -> dict[tuple[str, int, str], float | None]:
    """proxied/direct per (workload, threads, target): the median over the rounds of
    --repeat of each round's ratio (a round's runs follow each other, so they share the
    machine's mood; the median of those ratios is steadier than a ratio of medians)."""
    direct = {(r.workload, r.threads, r.attempt): r for r in all_runs if r.target == "direct"}
    found: dict[tuple[str, int, str], list[float]] = {}
    for run in all_runs:
        if run.target == "direct":
            continue
        key = (run.workload, run.threads, run.target)
        base = direct.get((run.workload, run.threads, run.attempt))
        ratio = _ratio(run, base) if base else None
        values = found.setdefault(key, [])
        if ratio is not None:
            values.append(ratio)
    return {key: statistics.median(v) if v else None for key, v in found.items()}


def _ratio(run: Run, direct: Run) -> float | None:
    if run.error or direct.error or not direct.qps:
        return None
    return run.qps / direct.qps


def medians(runs: list[Run]) -> list[Run]:
    """One run per (workload, threads, target): the median by QPS of the runs that did
    not fail (the first failure if they all did), in first-seen order."""
    groups: dict[tuple[str, int, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.workload, run.threads, run.target), []).append(run)
    out = []
    for group in groups.values():
        ok = sorted((r for r in group if not r.error), key=lambda r: r.qps)
        out.append(ok[(len(ok) - 1) // 2] if ok else group[0])
    return out


def cpu_medians(all_runs: list[Run]) -> dict[tuple[str, int, str], float | None]:
    """The chassis' CPU microseconds per query per (workload, threads, target): the
    median over the rounds of --repeat."""
    found: dict[tuple[str, int, str], list[float]] = {}
    for run in all_runs:
        cpu = cpu_us_per_query(run)
        values = found.setdefault((run.workload, run.threads, run.target), [])
        if cpu is not None:
            values.append(cpu)
    return {key: statistics.median(v) if v else None for key, v in found.items()}


def print_table(runs: list[Run], targets: list[str],
                ratio_of: dict[tuple[str, int, str], float | None],
                cpu_of: dict[tuple[str, int, str], float | None] | None = None) -> None:
    cpu_of = cpu_of or {}
    by_key = {(r.workload, r.threads, r.target): r for r in runs}
    head = f"{'workload':<18} {'thr':>3} | {'direct QPS':>10} {'p50 ms':>7} {'p95 ms':>7}"
    for t in targets[1:]:
        head += f" | {t + ' QPS':>17} {'p50 ms':>7} {'p95 ms':>7} {'ratio':>5} {'us CPU/q':>8}"
    print(head)
    print("-" * len(head))
    for workload in dict.fromkeys(r.workload for r in runs if r.workload != CONNECT_WORKLOAD):
        for threads in dict.fromkeys(r.threads for r in runs if r.workload == workload):
            direct = by_key[(workload, threads, "direct")]
            line = f"{workload:<18} {threads:>3} | " + _cell(direct, 10)
            for t in targets[1:]:
                run = by_key.get((workload, threads, t))
                if run is None:
                    continue
                ratio = ratio_of.get((workload, threads, t))
                cpu = cpu_of.get((workload, threads, t))
                line += " | " + _cell(run, 17) + (f" {ratio:>5.2f}" if ratio else f" {'-':>5}") \
                    + (f" {cpu:>8.1f}" if cpu else f" {'-':>8}")
            print(line)
    for run in runs:
        if run.error:
            print(f"! {run.workload} {run.threads} threads {run.target}: {run.error}")


def _cell(run: Run, width: int) -> str:
    if run.error:
        return f"{'FAILED':>{width}} {'-':>7} {'-':>7}"
    return f"{run.qps:>{width}.0f} {run.p50_ms:>7.2f} {run.p95_ms:>7.2f}"


def login_rates(all_runs: list[Run]) -> dict[tuple[int, str], float | None]:
    """Logins per second of the connect workload per (threads, target): the median over
    the rounds of --repeat."""
    found: dict[tuple[int, str], list[float]] = {}
    for run in all_runs:
        if run.workload == CONNECT_WORKLOAD:
            values = found.setdefault((run.threads, run.target), [])
            if not run.error and run.seconds:
                values.append(run.events / run.seconds)
    return {key: statistics.median(v) if v else None for key, v in found.items()}


def versus(all_runs: list[Run], reference: str) -> dict[tuple[str, int, str], tuple[float, float | None]]:
    """Each proxy against ``reference`` (HAProxy) per (workload, threads, target): the
    median over the rounds of its events/s ratio and of its CPU-per-event ratio."""
    ref = {(r.workload, r.threads, r.attempt): r for r in all_runs if r.target == reference}
    found: dict[tuple[str, int, str], tuple[list[float], list[float]]] = {}
    for run in all_runs:
        base = ref.get((run.workload, run.threads, run.attempt))
        if run.target in ("direct", reference) or base is None:
            continue
        speeds, cpus = found.setdefault((run.workload, run.threads, run.target), ([], []))
        if not run.error and not base.error and base.tps:
            speeds.append(run.tps / base.tps)
        cpu, cpu_base = cpu_us_per_query(run), cpu_us_per_query(base)
        if cpu and cpu_base:
            cpus.append(cpu / cpu_base)
    return {key: (statistics.median(s), statistics.median(c) if c else None)
            for key, (s, c) in found.items() if s}


def print_logins(runs: list[Run], targets: list[str], all_runs: list[Run],
                 cpu_of: dict[tuple[str, int, str], float | None]) -> None:
    """The connect workload's table: logins/s, against direct and HAProxy, CPU per login."""
    rates = login_rates(all_runs)
    if not rates:
        return
    vs = versus(all_runs, "haproxy") if "haproxy" in targets else {}
    by_key = {(r.threads, r.target): r for r in runs if r.workload == CONNECT_WORKLOAD}
    print(f"\nconnect, SELECT 1, quit ({CONNECT_SCRIPT.name}): logins per second")
    w = max(len(t) for t in targets)
    head = (f"{'target':<{w}} {'thr':>3} | {'logins/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'/direct':>7} {'us CPU/login':>12} | {'/haproxy':>8} {'CPU/haproxy':>11}")
    print(head)
    print("-" * len(head))
    for threads in dict.fromkeys(t for t, _ in rates):
        direct = rates.get((threads, "direct"))
        for target in targets:
            run, rate = by_key.get((threads, target)), rates.get((threads, target))
            if run is None:
                continue
            if rate is None:
                print(f"{target:<{w}} {threads:>3} | {'FAILED':>8}")
                continue
            cpu = cpu_of.get((CONNECT_WORKLOAD, threads, target))
            speed, cpu_ratio = vs.get((CONNECT_WORKLOAD, threads, target), (None, None))
            print(f"{target:<{w}} {threads:>3} | {rate:>8.0f} {run.p50_ms:>7.2f} {run.p95_ms:>7.2f} "
                  + (f"{rate / direct:>7.2f}" if direct else f"{'-':>7}")
                  + (f" {cpu:>12.1f}" if cpu else f" {'-':>12}") + " | "
                  + (f"{speed:>8.2f}" if speed else f"{'-':>8}")
                  + (f" {cpu_ratio:>10.2f}x" if cpu_ratio else f" {'-':>11}"))
    print("(/direct, /haproxy: logins/s ratios, median of each round's; CPU/haproxy: the"
          " proxy's CPU per login over HAProxy's)")


def print_haproxy_targets(all_runs: list[Run], targets: list[str]) -> None:
    """Issue 15's targets, each chassis against HAProxy measured in the same rounds."""
    if "haproxy" not in targets:
        return
    vs = versus(all_runs, "haproxy")
    for workload, threads, cpu_goal, speed_goal in HAPROXY_TARGETS:
        for target in targets:
            found = vs.get((workload, threads, target))
            if found is None:
                continue
            speed, cpu_ratio = found
            unit = "login" if workload == CONNECT_WORKLOAD else "query"
            if target == "uvloop":  # not held to the targets: it shows where Python's floor is
                cpu = f"CPU/{unit} {cpu_ratio:.2f}x HAProxy's; " if cpu_ratio is not None else ""
                print(f"{workload} at {threads} threads, uvloop: {cpu}{unit}s/s {speed:.2f}x"
                      f" HAProxy's (a Python relay that parses nothing: the floor for chassis)")
                continue
            verdicts = []
            if cpu_ratio is not None:
                ok = "meets" if cpu_ratio <= cpu_goal else "misses"
                verdicts.append(f"CPU/{unit} {cpu_ratio:.2f}x HAProxy's ({ok} at most {cpu_goal}x)")
            if speed_goal is not None:
                ok = "meets" if speed >= speed_goal else "misses"
                verdicts.append(f"{unit}s/s {speed:.2f}x HAProxy's ({ok} at least {speed_goal}x)")
            else:
                verdicts.append(f"{unit}s/s {speed:.2f}x HAProxy's")
            print(f"{workload} at {threads} threads, {target}: " + "; ".join(verdicts))


def machine_facts(db: MariaDB, sysbench: str) -> dict[str, object]:
    (version,), = db.sql("SELECT VERSION()")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "chassis",
                            "plugins"], capture_output=True, text=True, check=False).stdout
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mariadb": version,
        "sysbench": subprocess.run([sysbench, "--version"], capture_output=True, text=True,
                                   check=False).stdout.strip(),
        "chassis_commit": commit + ("+dirty" if dirty.strip() else ""),
    }


# -- main --------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="sysbench oltp_point_select and oltp_read_only, direct and through"
                    " chassis, side by side on a throwaway MariaDB.")
    parser.add_argument("--time", type=int, default=10, help="seconds per run [10]")
    parser.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(THREADS), help="comma-separated [1,8,32]")
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS),
                        help="comma-separated sysbench tests, and 'connect' for connect-heavy"
                             " clients (scripts/bench-connect.lua)"
                             " [oltp_point_select,oltp_read_only,connect]")
    parser.add_argument("--compare", action="append", default=[], choices=["haproxy", "uvloop"],
                        help="also measure HAProxy in TCP mode (haproxy: the C relay reference)"
                             " or scripts/uvloop_relay.py (uvloop: a Python relay that parses"
                             " nothing) in front of the same server, in the same rounds"
                             " (repeatable)")
    parser.add_argument("--lua", type=Path, nargs="?", const=INSPECT_SCRIPT, metavar="FILE",
                        help="also run through a chassis with this --proxy-lua-script"
                             " [without FILE: scripts/bench-inspect.lua, a read_query that"
                             " inspects every query]")
    parser.add_argument("--also-lua", type=Path, action="append", default=[], metavar="FILE",
                        help="also run through a chassis with this script (repeatable; e.g."
                             " scripts/bench-result.lua, which reads a field of each result);"
                             " its column is proxied+lua-<file stem>")
    parser.add_argument("--digest-off", action="store_true",
                        help="also run each chassis with --proxy-query-digest=off, to compare"
                             " the CPU per query of query digests on (the default) and off")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per cell, interleaved; the table shows medians [1]")
    parser.add_argument("--event-threads", type=int, default=2, help="chassis workers [2]")
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--table-size", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of unmeasured load per target first [2]")
    parser.add_argument("--direct-only", action="store_true",
                        help="measure MariaDB alone (no chassis)")
    parser.add_argument("--chassis-arg", action="append", default=[],
                        help="extra argument for chassis (repeatable)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--chassis", default=str(Path(sys.executable).parent / "chassis"))
    parser.add_argument("--baseline", metavar="CHASSIS",
                        help="another chassis executable (e.g. an older checkout's"
                             " .venv/bin/chassis) measured in the same run as 'baseline'")
    parser.add_argument("--baseline-arg", action="append", default=[],
                        help="extra argument for the baseline chassis (repeatable; --chassis-arg"
                             " is for the chassis under test only)")
    parser.add_argument("--sysbench", default=shutil.which("sysbench") or "sysbench")
    args = parser.parse_args(argv)
    if args.lua is not None and not args.lua.is_file():
        parser.error(f"--lua {args.lua}: no such file")
    for extra in args.also_lua:
        if not extra.is_file():
            parser.error(f"--also-lua {extra}: no such file")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if "haproxy" in args.compare:
        try:
            find_haproxy()
        except RuntimeError as exc:
            parser.error(f"--compare haproxy: {exc}")
    if shutil.which(args.sysbench) is None:
        parser.error("sysbench not found: install it with apt-get install -y sysbench"
                     " (scripts/bench does that)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    defaults = sysbench_defaults(args.sysbench)
    print("== sysbench defaults kept: "
          + ", ".join(f"--{k}={v}" for k, v in defaults.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="chassis-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        log_dir = Path(tmp)
        print("== starting a throwaway MariaDB", flush=True)
        try:
            db = stack.enter_context(MariaDB(name="bench", buffer_pool="256M"))
        except MariaDBError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"   {db.address}; preparing {args.tables} x {args.table_size} rows", flush=True)
        prepare = [*sysbench_base("oltp_read_only", db.port, args), "prepare"]
        done = subprocess.run(prepare, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"error: sysbench prepare failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 1

        targets = [Target("direct", db.port)]
        try:
            if not args.direct_only:
                targets.append(stack.enter_context(chassis(db, args, None, log_dir)))
                if args.digest_off:
                    targets.append(stack.enter_context(chassis(
                        db, args, None, log_dir, extra=["--proxy-query-digest=off"],
                        suffix="-nodigest")))
                if args.lua is not None:
                    targets.append(stack.enter_context(chassis(db, args, args.lua, log_dir)))
                    if args.digest_off:
                        targets.append(stack.enter_context(chassis(
                            db, args, args.lua, log_dir, extra=["--proxy-query-digest=off"],
                            suffix="-nodigest")))
                targets.extend(also_lua_targets(stack, db, args, log_dir))
                if args.baseline is not None:
                    targets.append(stack.enter_context(
                        chassis(db, args, None, log_dir, args.baseline, "baseline")))
                    if args.lua is not None:
                        targets.append(stack.enter_context(
                            chassis(db, args, args.lua, log_dir, args.baseline, "baseline")))
                if "uvloop" in args.compare:
                    targets.append(stack.enter_context(uvloop_relay(db, args, log_dir)))
                if "haproxy" in args.compare:
                    targets.append(stack.enter_context(haproxy(db, args, log_dir)))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

        if args.warmup > 0:
            print(f"== warming up ({args.warmup} s per target)", flush=True)
            for target in targets:
                run_sysbench(args.workloads[0], max(args.threads), target, args.warmup, args)

        all_runs: list[Run] = []
        for workload in args.workloads:
            for threads in args.threads:
                for attempt in range(args.repeat):
                    for target in targets:
                        run = run_sysbench(workload, threads, target, args.time, args)
                        run.attempt = attempt
                        all_runs.append(run)
                        status = run.error[:80] if run.error else \
                            f"{run.qps:.0f} QPS, p95 {run.p95_ms:.2f} ms"
                        nth = f" #{attempt + 1}" if args.repeat > 1 else ""
                        print(f"   {workload} {threads:>2} threads {target.name:<11}{nth}"
                              f" {status}", flush=True)
        facts = machine_facts(db, args.sysbench)

    runs = medians(all_runs)
    ratio_of = ratios(all_runs)
    cpu_of = cpu_medians(all_runs)
    print()
    if args.repeat > 1:
        print(f"(medians of {args.repeat} runs per cell; ratios: median of each round's ratio)")
    names = [t.name for t in targets]
    if any(r.workload != CONNECT_WORKLOAD for r in runs):
        print_table(runs, names, ratio_of, cpu_of)
        print("(us CPU/q: the proxy's user + system CPU microseconds per query sysbench"
              " counted)")
    print_logins(runs, names, all_runs, cpu_of)
    print()
    print_haproxy_targets(all_runs, names)
    workload, threads, goal = TARGET
    ratio = ratio_of.get((workload, threads, "proxied"))
    if ratio is not None:
        verdict = "meets" if ratio >= goal else "misses"
        print(f"\n{workload} at {threads} threads: proxied/direct {ratio:.2f}"
              f" ({verdict} the target of {goal}; MySQL Proxy 0.8.5 reaches about that)")
    d_workload, d_threads, d_goal = DIGEST_TARGET
    for on, off in (("proxied", "proxied-nodigest"), ("proxied+lua", "proxied+lua-nodigest")):
        cpu_on, cpu_off = cpu_of.get((d_workload, d_threads, on)), cpu_of.get((d_workload, d_threads, off))
        if cpu_on and cpu_off:
            verdict = "meets" if cpu_on <= cpu_off * d_goal else "misses"
            print(f"{d_workload} at {d_threads} threads, {on}: {cpu_on:.1f} us CPU/query with "
                  f"digests on, {cpu_off:.1f} off: {cpu_on / cpu_off:.3f}x ({verdict} the target of "
                  f"at most {d_goal:.2f}x)")
    lua_workload, lua_threads, lua_goal = LUA_TARGET
    lua_ratio = ratio_of.get((lua_workload, lua_threads, "proxied+lua"))
    if lua_ratio is not None:
        script = args.lua.name if args.lua else ""
        if args.lua is not None and args.lua.resolve() == INSPECT_SCRIPT.resolve():
            verdict = "meets" if lua_ratio >= lua_goal else "misses"
            note = f" ({verdict} the target of {lua_goal} for a script inspecting every query)"
        else:
            note = ""
        print(f"{lua_workload} at {lua_threads} threads with {script}: proxied+lua/direct"
              f" {lua_ratio:.2f}{note}")

    print_script_cpu_ratios(cpu_of, args)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"{stamp}.json"
    out.write_text(json.dumps({
        "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": facts,
        "settings": {
            "time": args.time, "threads": args.threads, "workloads": args.workloads,
            "tables": args.tables, "table_size": args.table_size,
            "event_threads": args.event_threads, "lua": str(args.lua) if args.lua else None,
            "chassis_args": args.chassis_arg, "baseline": args.baseline, "warmup": args.warmup, "repeat": args.repeat,
            "digest_off": args.digest_off, "also_lua": [str(p) for p in args.also_lua],
            "compare": args.compare,
            "sysbench_defaults": defaults,
        },
        "runs": [asdict(r) for r in runs],
        "all_runs": [asdict(r) for r in all_runs] if args.repeat > 1 else None,
        "ratios": {f"{w}/{n}/{t}": ratio for (w, n, t), ratio in ratio_of.items()},
        "cpu_us_per_query": {f"{w}/{n}/{t}": cpu for (w, n, t), cpu in cpu_of.items()},
        "logins_per_second": {f"{n}/{t}": rate for (n, t), rate in login_rates(all_runs).items()},
        "vs_haproxy": {f"{w}/{n}/{t}": {"speed": speed, "cpu": cpu}
                       for (w, n, t), (speed, cpu) in versus(all_runs, "haproxy").items()},
    }, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
