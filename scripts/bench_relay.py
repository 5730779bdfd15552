"""The relay's per-query Python work, in-process, with query digests on and off.

``scripts/bench`` measures the whole proxy under sysbench; this measures only what the
relay legs do per buffer (the part query digests add to), replaying a real sysbench
conversation recorded once, so that the figures are repeatable (run it under
``valgrind --tool=callgrind`` for instruction counts that a loaded machine does not move).

    .venv/bin/python scripts/bench_relay.py capture [--workload oltp_point_select]
    .venv/bin/python scripts/bench_relay.py run [--mode on|off|both] [--rounds N]

``capture`` starts a throwaway MariaDB, runs sysbench (1 thread, a few thousand events)
through a recording forwarder and keeps every buffer each side's ``recv`` returned, in
order, with the capabilities the login negotiated (``bench-results/relay-capture.json``).
``run`` feeds the buffers after the login to the relay's legs (transports that drop what
they are given) ``--rounds`` times and prints the microseconds per client command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "plugins"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

CAPTURE = ROOT / "bench-results" / "relay-capture.json"


# -- capture ------------------------------------------------------------------------------

async def _record(listen_port: int, backend_port: int, chunks: list[tuple[str, bytes]],
                  ready: asyncio.Event, done: asyncio.Event) -> None:
    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: str) -> None:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                writer.close()
                return
            chunks.append((tag, data))
            writer.write(data)

    async def accept(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", backend_port)
        await asyncio.gather(pump(c_reader, s_writer, "c"), pump(s_reader, c_writer, "s"))
        done.set()

    server = await asyncio.start_server(accept, "127.0.0.1", listen_port, limit=1 << 16)
    ready.set()
    await done.wait()
    server.close()


def capture(args: argparse.Namespace) -> int:
    from tests.support.mariadb import MariaDB, free_port

    with MariaDB(name="bench-relay") as db:
        base = ["sysbench", args.workload, "--db-driver=mysql", "--mysql-host=127.0.0.1",
                "--mysql-user=root", "--mysql-password=", "--mysql-db=sbtest", "--tables=1",
                "--table-size=1000"]
        db.sql("CREATE DATABASE IF NOT EXISTS sbtest")
        subprocess.run([*base, f"--mysql-port={db.port}", "prepare"], check=True,
                       capture_output=True)
        port = free_port()
        chunks: list[tuple[str, bytes]] = []

        async def main() -> None:
            ready, done = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(_record(port, db.port, chunks, ready, done))
            await ready.wait()
            proc = await asyncio.create_subprocess_exec(
                *base, f"--mysql-port={port}", "--threads=1", f"--events={args.events}",
                "--time=0", "run", stdout=asyncio.subprocess.DEVNULL)
            await proc.wait()
            await asyncio.wait_for(task, 10)

        asyncio.run(main())
    from chassis_mysql.handshake import HandshakeResponse41, HandshakeV10

    server_caps = int(HandshakeV10.parse(chunks[0][1][4:]).capabilities)
    client_caps = int(HandshakeResponse41.parse(chunks[1][1][4:]).capabilities)
    out = {"workload": args.workload, "capabilities": server_caps & client_caps,
           "chunks": [[tag, data.hex()] for tag, data in chunks]}
    args.file.parent.mkdir(parents=True, exist_ok=True)
    args.file.write_text(json.dumps(out))
    print(f"{len(chunks)} buffers recorded in {args.file}")
    return 0


# -- run ----------------------------------------------------------------------------------

class Sink(asyncio.Transport):
    """A transport that drops what it is given."""

    def write(self, data: Any) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass


class FakeBackend:
    def __init__(self) -> None:
        from chassis_proxy.stats import Counters
        self.stats = Counters()
        self.addr = "127.0.0.1:3306"
        self.address = self  # AddressInfo's name: str(addr)
        self.name = self.addr


def conversation(file: Path) -> tuple[int, list[tuple[str, bytes]]]:
    """The capabilities and the buffers after the login (from the first command on)."""
    data = json.loads(file.read_text())
    chunks = [(tag, bytes.fromhex(h)) for tag, h in data["chunks"]]
    start = next(i for i, (tag, buf) in enumerate(chunks)
                 if i > 1 and tag == "c" and buf[3] == 0)
    return data["capabilities"], chunks[start:]


def replay(mode: str, capabilities: int, chunks: list[tuple[str, bytes]], rounds: int) -> float:
    """Seconds per client command over ``rounds`` replays (a new relay each round)."""
    from chassis_proxy import relay
    from chassis_proxy.digests import DigestTable
    from chassis_proxy.queries import QueryRecorder
    from chassis_proxy.state import ConnectionState

    recorder = QueryRecorder(DigestTable(), None) if mode == "on" else None
    client, server = Sink(), Sink()
    commands = sum(1 for tag, buf in chunks if tag == "c" and buf[3] == 0)
    elapsed = 0.0
    for _ in range(rounds):
        state = ConnectionState.__new__(ConnectionState)
        state.backend = FakeBackend()  # type: ignore[assignment]
        state.client = _Client()  # type: ignore[assignment]
        queries = recorder.connection(state) if recorder is not None else None
        legs = relay.start(lambda leg, exc: None, client, server, b"", b"", queries, capabilities)
        feed = {"c": legs[0].data_received, "s": legs[1].data_received}
        steps = [(feed[tag], buf) for tag, buf in chunks]
        t0 = time.perf_counter()
        for fn, buf in steps:
            fn(buf)
        elapsed += time.perf_counter() - t0
    if recorder is not None and recorder.digests is not None:
        rows = recorder.digests.as_rows()
        assert sum(r["count"] for r in rows) > 0, "nothing recorded"
    return elapsed / (rounds * commands)


class _Client:
    username = "root"
    default_db = "sbtest"
    src = None


def run(args: argparse.Namespace) -> int:
    capabilities, chunks = conversation(args.file)
    modes = ("off", "on") if args.mode == "both" else (args.mode,)
    results = {}
    for mode in modes:
        results[mode] = min(replay(mode, capabilities, chunks, args.rounds)
                            for _ in range(args.repeat))
        print(f"{mode:>3}: {results[mode] * 1e6:.3f} us per command")
    if len(modes) == 2:
        print(f"on - off: {(results['on'] - results['off']) * 1e6:.3f} us per command")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_relay.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--workload", default="oltp_point_select")
    cap.add_argument("--events", type=int, default=500)
    cap.add_argument("--file", type=Path, default=CAPTURE)
    rn = sub.add_parser("run")
    rn.add_argument("--mode", choices=("on", "off", "both"), default="both")
    rn.add_argument("--rounds", type=int, default=20)
    rn.add_argument("--repeat", type=int, default=5, help="best of [5]")
    rn.add_argument("--file", type=Path, default=CAPTURE)
    args = parser.parse_args(argv)
    return capture(args) if args.what == "capture" else run(args)


if __name__ == "__main__":
    sys.exit(main())
