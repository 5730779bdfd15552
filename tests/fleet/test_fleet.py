"""A fleet under load: sysbench through a real HAProxy while one chassis of two is
reloaded, upgraded or stopped (fixtures and the picture: conftest.py).

What each case pins, beyond sysbench's own figures: HAProxy's view of the two servers
(its stats socket), the chassis' log lines, and MariaDB's processlist, which shows each
client's own address and port throughout (sysbench's sockets' ports; 127.0.0.2 for a
client bound there, whose account is granted from that address only).
"""

from __future__ import annotations

import signal
from typing import Any

import pymysql

from tests.fleet.conftest import LOST_CONNECTIONS, Fleet, Instance, StartSysbench
from tests.support.chassis_proc import is_alive, wait_for

WHO_ON_SERVER = ("SELECT CURRENT_USER(), (SELECT HOST FROM information_schema.PROCESSLIST "
                 "WHERE ID = CONNECTION_ID()), CONNECTION_ID()")


def who(conn: pymysql.Connection[Any]) -> tuple[str, str, int]:
    with conn.cursor() as cur:
        cur.execute(WHO_ON_SERVER)
        user, host, thread = cur.fetchone()
    return user, host, thread


def idle_client(fleet: Fleet) -> tuple[pymysql.Connection[Any], Instance, tuple[str, str, int]]:
    """A client from 127.0.0.2 (account from2, granted from there only), the chassis
    it landed on, and what the server says about it."""
    conn, name = fleet.connect("from2", "pw2", bind_address="127.0.0.2")
    port = conn._sock.getsockname()[1]  # type: ignore[union-attr]
    seen = who(conn)
    assert seen[:2] == ("from2@127.0.0.2", f"127.0.0.2:{port}")
    return conn, fleet.instance(name), seen


def test_a_reload_with_a_new_backend_list_loses_no_query(
        fleet: Fleet, start_sysbench: StartSysbench) -> None:
    """The reloaded chassis swaps its backend (the same MariaDB, now named localhost):
    clients on the old one finish there, new ones go to the new one, nobody errs."""
    idle, target, seen = idle_client(fleet)
    bench = start_sysbench(threads=8, seconds=5)
    held = fleet.wait_sessions(9)
    assert len(fleet.clients_seen_by_server(bench)) == 8

    db = fleet.db
    log = target.reload([f"localhost:{db.port}"])
    assert f"backend {db.address} removed; {held[target.name]} client(s) on it finish there" in log
    assert f"backend localhost:{db.port} added as #1" in log

    # new clients through HAProxy until one lands on the reloaded chassis: the new backend
    new = []
    while not any(name == target.name for _, name in new):
        assert len(new) < 12, f"no new client reached {target.name}: {new}"
        new.append(fleet.connect("either", "pwe"))  # not sysbench's user: see clients_seen_by_server
    target.wait_log(f"logged in as 'either' via localhost:{db.port}")
    for conn, _ in new:
        assert who(conn)[1] == f"localhost:{conn._sock.getsockname()[1]}"  # type: ignore[union-attr]
        conn.close()

    assert bench.running(), "sysbench ended before the reload was done: give it more --time"
    assert len(fleet.clients_seen_by_server(bench)) == 8
    report = bench.finish()
    assert (report["errors"], report["reconnects"]) == (0, 0)
    assert who(idle) == seen  # idle across the reload, same server connection
    assert fleet.lb.servers_state()[target.name]["chkdown"] == "0"


def test_an_upgrade_loses_no_query_and_keeps_an_idle_client(
        fleet: Fleet, start_sysbench: StartSysbench) -> None:
    """SIGUSR2 to the chassis holding an idle client: a successor takes over the pid file
    and the listener, the old process hands over or drains and exits; sysbench sees no
    error, HAProxy never sees the server down, the idle client keeps its server thread."""
    idle, target, seen = idle_client(fleet)
    bench = start_sysbench(threads=8, seconds=30)  # a new chassis starts in 3-12 s on a loaded machine
    fleet.wait_sessions(9)
    assert target.process is not None
    old = target.process.pid
    assert target.pid_in_file() == old

    target.process.signal(signal.SIGUSR2)

    def upgraded() -> int | None:
        if "received SIGUSR2: nothing to do" in target.log_text():
            raise AssertionError("this chassis does not upgrade on SIGUSR2")
        new = target.pid_in_file()
        if new is not None and new != old and not is_alive(old):
            return new
        if not is_alive(old) and (new is None or new == old):
            raise AssertionError(f"pid {old} exited without a successor:\n{target.log_text()[-3000:]}")
        return None

    new = wait_for(upgraded, 20, "the successor in the pid file and the old process gone")
    assert is_alive(new)
    assert bench.running(), "sysbench ended before the upgrade was done: give it more --time"
    fleet.wait_sessions(9)  # nobody was dropped
    assert len(fleet.clients_seen_by_server(bench)) == 8
    report = bench.finish()
    assert (report["errors"], report["reconnects"]) == (0, 0)
    assert who(idle) == seen  # handed over: same server connection, same address
    assert fleet.lb.servers_state()[target.name]["chkdown"] == "0"


def test_a_stopped_instance_fails_only_its_own_clients(
        fleet: Fleet, start_sysbench: StartSysbench) -> None:
    """SIGTERM to one chassis: exactly the sysbench threads HAProxy had sent there lose
    their connection, once each, and connect again (lost_connections.lua counts them);
    HAProxy marks the stopped one DOWN (/readyz, then refused) and every new connection
    goes to the other. The stopped chassis closes each client between two commands (no
    answer is cut) and exits without waiting for --shutdown-timeout."""
    threads = 16
    bench = start_sysbench(threads=threads, seconds=8, test=str(LOST_CONNECTIONS))
    held = fleet.wait_sessions(threads)
    assert len(fleet.clients_seen_by_server(bench)) == threads
    victim, survivor = fleet.instances[1], fleet.instances[0]
    on_victim = held[victim.name]
    assert 0 < on_victim < threads, held  # leastconn shares them

    assert victim.process is not None
    victim.process.signal(signal.SIGTERM)
    victim.process.wait(5)  # well within --shutdown-timeout (30 s)
    log = victim.log_text()
    assert f"waiting for {on_victim} client connection(s) to finish" in log
    assert log.count("closing: proxy is shutting down") == on_victim
    assert "still open at the shutdown deadline" not in log
    fleet.lb.wait_status(victim.name, "DOWN")
    # the victim's threads connected again, all to the survivor
    wait_for(lambda: fleet.lb.sessions() == {survivor.name: threads, victim.name: 0}, 15,
             f"every sysbench thread on {survivor.name}")
    assert bench.running(), "sysbench ended before the stop was done: give it more --time"
    assert len(fleet.clients_seen_by_server(bench)) == threads
    conn, landed = fleet.connect()
    assert landed == survivor.name
    conn.close()

    report = bench.finish()
    lost = bench.lost_per_thread()
    assert len(lost) == threads, bench.output()
    assert sorted(lost.values()) == [0] * (threads - on_victim) + [1] * on_victim, bench.output()
    assert report["errors"] == on_victim
    assert fleet.lb.servers_state()[survivor.name]["chkdown"] == "0"
