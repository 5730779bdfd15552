"""Instructions per login, or per query, through chassis, counted by callgrind.

Callgrind counts are repeatable on a busy machine.

Issue 15 item 3 measures logins with sysbench's connect workload (connect, ``SELECT 1``,
quit). Wall-clock CPU figures need a quiet machine; instruction counts do not. This runs
one chassis (``--event-threads=1``: a single process, no angel) under
``valgrind --tool=callgrind`` twice, once doing N such logins with
``sysbench scripts/bench-connect.lua --events=N --threads=1`` and once doing none, and
prints (instructions of the first - instructions of the second) / N, both counted from
the chassis' readiness (``callgrind_control --zero``) to its exit after SIGTERM::

    PYTHONPATH=$PWD:$PWD/plugins .venv/bin/python scripts/bench_login.py            # no script
    PYTHONPATH=$PWD:$PWD/plugins .venv/bin/python scripts/bench_login.py \\
        --lua scripts/bench-inspect.lua --logins 300 --keep /tmp/cg.login

The chassis is the tree on ``PYTHONPATH`` (exported to the child), in front of the MariaDB
at ``--backend`` (root, no password). ``--keep DIR`` leaves the callgrind files there for
``callgrind_annotate``. Readiness is the chassis' ``READY=1`` (no probing login).

``--workload oltp_point_select`` (or another sysbench oltp test) counts per query instead:
one sysbench thread, 100 events of warm-up before the count starts (the login, the
digest slots learnt), then N events (``--logins``) or none; the backend gets an
``sbtest`` database with one table of 1000 rows if it has none::

    PYTHONPATH=$PWD:$PWD/plugins .venv/bin/python scripts/bench_login.py \
        --workload oltp_point_select --logins 2000 --lua scripts/bench-inspect.lua
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.chassis_proc import ChassisProcess  # noqa: E402
from tests.support.mariadb import free_port  # noqa: E402


def instructions(out: Path) -> int:
    """The total ``Ir`` of one callgrind file."""
    match = re.search(r"^(?:summary|totals):\s*(\d+)", out.read_text(errors="replace"), re.M)
    if match is None:
        raise SystemExit(f"no totals in {out}")
    return int(match.group(1))


def run(logins: int, args: argparse.Namespace, out_dir: Path) -> int:
    """One chassis under callgrind doing ``logins`` logins: its instruction count."""
    port = free_port()
    out = out_dir / f"cg.{logins}"
    chassis_args = ["--plugins=proxy", f"--proxy-backend-addresses={args.backend}",
                    f"--proxy-address=127.0.0.1:{port}", "--event-threads=1", *args.chassis_arg]
    if args.lua:
        chassis_args.append(f"--proxy-lua-script={Path(args.lua).resolve()}")
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    env = {"PYTHONHASHSEED": "0", "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    proc = ChassisProcess(chassis_args, env=env, prefix=prefix)
    connect = args.workload == "connect"
    test = str(ROOT / "scripts" / "bench-connect.lua") if connect else args.workload
    sysbench = ["sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1",
                f"--mysql-port={port}", "--mysql-user=root", "--mysql-password=", "--threads=1",
                "--time=0", *([] if connect else ["--mysql-db=sbtest", "--tables=1",
                                                  "--table-size=1000"])]
    try:
        proc.wait_ready(timeout=120)
        if not connect:  # one connection: its login and first queries before the count
            subprocess.run([*sysbench, "--events=100", "run"], check=True,
                           stdout=subprocess.DEVNULL)
        # Start-up costs vary (it reads /proc/net/tcp, as long as the machine's TIME_WAIT
        # list): count from here on.
        subprocess.run(["callgrind_control", "--zero", str(proc.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if logins:
            subprocess.run([*sysbench, f"--events={logins}", "run"], check=True,
                           stdout=subprocess.DEVNULL)
        os.kill(proc.proc.pid, signal.SIGTERM)
        proc.proc.wait(timeout=120)
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
    return instructions(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=300, help="logins, or queries [300]")
    parser.add_argument("--workload", default="connect",
                        help="connect (per login) or a sysbench oltp test (per query) [connect]")
    parser.add_argument("--lua", help="--proxy-lua-script for the chassis")
    parser.add_argument("--backend", default="127.0.0.1:3306")
    parser.add_argument("--chassis-arg", action="append", default=[])
    parser.add_argument("--keep", help="directory for the callgrind files (default: a temp one)")
    args = parser.parse_args()
    out_dir = Path(args.keep or tempfile.mkdtemp(prefix="bench-login-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    unit = "login" if args.workload == "connect" else "query"
    if unit == "query":
        prepare(args)
    base = run(0, args, out_dir)
    total = run(args.logins, args, out_dir)
    units = "logins" if unit == "login" else "queries"
    print(f"{(total - base) / args.logins:,.0f} instructions per {unit} "
          f"({total:,} with {args.logins} {units}, {base:,} with none; files in {out_dir})")


def prepare(args: argparse.Namespace) -> None:
    """The sbtest table the oltp workloads read, on the backend, if it has none."""
    host, _, port = args.backend.rpartition(":")
    base = ["--db-driver=mysql", f"--mysql-host={host}", f"--mysql-port={port}",
            "--mysql-user=root", "--mysql-password="]
    subprocess.run(["mariadb", "-h", host, "-P", port, "-uroot", "-e",
                    "CREATE DATABASE IF NOT EXISTS sbtest"], check=True)
    probe = subprocess.run(["mariadb", "-h", host, "-P", port, "-uroot", "-N", "-e",
                            "SELECT COUNT(*) FROM information_schema.tables "
                            "WHERE table_schema='sbtest' AND table_name='sbtest1'"],
                           check=True, capture_output=True, text=True)
    if probe.stdout.strip() == "0":
        subprocess.run(["sysbench", args.workload, *base, "--mysql-db=sbtest", "--tables=1",
                        "--table-size=1000", "prepare"], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
