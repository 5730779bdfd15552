"""proxy.balance: idle_failsafe_rw() and idle_ro() over proxy.global.backends and their pools."""

from __future__ import annotations

from chassis_proxy.hooks import BackendState, BackendType

from tests.lualib.harness import EVAL, Backend, Env, Pool, tcp

RW, RO = BackendType.RW, BackendType.RO
UP, DOWN, OFFLINE, UNKNOWN = BackendState.UP, BackendState.DOWN, BackendState.OFFLINE, BackendState.UNKNOWN


def backend(port: int, kind: BackendType, state: BackendState, clients: int = 0, **idle: int) -> Backend:
    return Backend(tcp("127.0.0.1", port), kind, state, connected_clients=clients, pool=Pool(idle=dict(idle)))


def choose(env: Env, backends: list[Backend], expr: str) -> int:
    c = env.connect(env.host(EVAL), backend_list=backends)
    return int(c.eval(f"return {expr}"))


def test_idle_failsafe_rw_takes_the_first_rw_backend_with_idle_connections_for_the_user(env: Env) -> None:
    backends = [
        backend(3306, RW, DOWN, app=3),  # down
        backend(3307, RO, UP, app=3),  # read-only
        backend(3308, RW, UP, other=2),  # idle, but for another user
        backend(3309, RW, UNKNOWN, app=1),  # this one
        backend(3310, RW, UP, app=5),  # later
    ]
    assert choose(env, backends, "balance.idle_failsafe_rw()") == 4


def test_idle_failsafe_rw_is_0_without_idle_connections(env: Env) -> None:
    backends = [backend(3306, RW, UP), backend(3307, RW, OFFLINE, app=2)]
    assert choose(env, backends, "balance.idle_failsafe_rw()") == 0


def test_idle_ro_takes_the_least_busy_ro_backend_with_idle_connections(env: Env) -> None:
    backends = [
        backend(3306, RW, UP, clients=0, app=4),  # read-write
        backend(3307, RO, UP, clients=5, app=1),
        backend(3308, RO, UP, clients=2, app=1),  # this one
        backend(3309, RO, UP, clients=1),  # nothing idle
        backend(3310, RO, DOWN, clients=0, app=1),  # down
        backend(3311, RO, UP, clients=2, app=1),  # tie: the lower index wins
    ]
    assert choose(env, backends, "balance.idle_ro()") == 3


def test_idle_ro_is_0_when_no_ro_backend_has_idle_connections(env: Env) -> None:
    backends = [backend(3306, RW, UP, app=4), backend(3307, RO, UP, other=1)]
    assert choose(env, backends, "balance.idle_ro()") == 0


def test_an_explicit_username_is_looked_up_instead_of_the_clients(env: Env) -> None:
    backends = [backend(3306, RW, UP, other=1), backend(3307, RO, UP, other=1)]
    assert choose(env, backends, "balance.idle_failsafe_rw('other') * 10 + balance.idle_ro('other')") == 12


def test_connect_server_routes_to_the_backend_balance_picks(env: Env) -> None:
    host = env.host(
        """
        local lb = require("proxy.balance")
        function connect_server()
          -- no username yet at connect time: "" asks the pool for any user's idle connection
          local ndx = lb.idle_ro()
          if ndx > 0 then proxy.connection.backend_ndx = ndx end
        end
        """
    )
    busy = [backend(3306, RW, UP), backend(3307, RO, UP, clients=3, app=1), backend(3308, RO, UP, clients=1, x=1)]
    c = env.connect(host, backend_list=busy)
    c.conn.client.username = ""
    c.hooks.connect_server()
    assert c.conn.backend_ndx == 3

    idle_none = [backend(3306, RW, UP), backend(3307, RO, UP)]
    d = env.connect(host, backend_list=idle_none)
    d.hooks.connect_server()
    assert d.conn.backend_ndx == 0
