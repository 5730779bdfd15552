"""What a monitor report means (chassis_proxy.replication): plain values, no server."""

from __future__ import annotations

from typing import Any

import pytest
from chassis_proxy.hooks import UNMONITORED, BackendType, ReplicationInfo
from chassis_proxy.replication import ServerReport, judge, role, summarise_channels

RUNNING = {"Slave_IO_Running": "Yes", "Slave_SQL_Running": "Yes", "Seconds_Behind_Master": "0",
           "Last_IO_Error": "", "Last_SQL_Error": ""}


def report(**fields: Any) -> ServerReport:
    return ServerReport(address="db:3306", read_only=True, **fields)


def test_channels_summarise_to_the_worst_one() -> None:
    late = {**RUNNING, "Seconds_Behind_Master": "12"}
    stopped = {**RUNNING, "Slave_SQL_Running": "No", "Seconds_Behind_Master": None,
               "Last_SQL_Error": "Duplicate entry"}
    assert summarise_channels([]) == {"replica": False}
    assert summarise_channels([RUNNING, late]) == {
        "replica": True, "io_running": "Yes", "sql_running": "Yes", "lag": 12.0, "last_error": ""}
    worst = summarise_channels([late, stopped])
    assert worst["sql_running"] == "No" and worst["lag"] is None
    assert worst["last_error"] == "Duplicate entry"


def test_mysql_replica_status_columns_are_read_too() -> None:
    mysql = {"Replica_IO_Running": "Connecting", "Replica_SQL_Running": "Yes",
             "Seconds_Behind_Source": None}
    assert summarise_channels([mysql])["io_running"] == "Connecting"


@pytest.mark.parametrize(("channels", "max_lag", "state", "stale"), [
    ([], 5.0, "none", False),
    ([RUNNING], 5.0, "running", False),
    ([{**RUNNING, "Seconds_Behind_Master": "6"}], 5.0, "lagging", True),
    ([{**RUNNING, "Seconds_Behind_Master": "6"}], None, "running", False),  # no limit: no effect
    ([{**RUNNING, "Slave_SQL_Running": "No", "Seconds_Behind_Master": None}], 5.0, "stopped", True),
    ([{**RUNNING, "Slave_SQL_Running": "No", "Last_SQL_Error": "boom"}], 5.0, "broken", True),
    ([{**RUNNING, "Slave_IO_Running": "Connecting", "Seconds_Behind_Master": None}], 5.0,
     "connecting", True),
    ([{**RUNNING, "Seconds_Behind_Master": None}], 5.0, "lagging", True),  # lag unknown
])
def test_replication_states(channels: list[dict[str, str | None]], max_lag: float | None,
                            state: str, stale: bool) -> None:
    info = judge(report(**summarise_channels(channels)), max_lag)
    assert (info.state, info.stale) == (state, stale)


def test_galera_node_is_fresh_only_when_synced_and_ready() -> None:
    assert judge(report(galera_ready=True, galera_state=4), 1.0).state == "synced"
    donor = judge(report(galera_ready=True, galera_state=2), 1.0)
    assert (donor.state, donor.stale) == ("desynced", True)
    assert judge(report(galera_ready=False, galera_state=4), 1.0).stale


def test_a_failed_probe_keeps_what_was_known() -> None:
    stopped = ReplicationInfo(state="stopped", lag=None, stale=True)
    failed = ServerReport(address="db:3306", error="login refused")
    assert judge(failed, 5.0, stopped) == ReplicationInfo("unknown", None, True, "login refused")
    assert not judge(failed, 5.0, UNMONITORED).stale  # never probed: clients as today
    assert role(failed) is None


def test_role_follows_read_only() -> None:
    assert role(ServerReport(address="db:3306", read_only=False)) == BackendType.RW
    assert role(ServerReport(address="db:3306", read_only=True)) == BackendType.RO


def test_reports_cross_workers_as_json_dicts() -> None:
    r = report(replica=True, lag=3.0)
    assert ServerReport.from_dict({**r.as_dict(), "from_a_newer_worker": 1}) == r
