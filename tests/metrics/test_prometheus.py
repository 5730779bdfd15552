"""A real Prometheus scrapes a real chassis (2 workers) and sees what the test sent."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import Proxy, StartProxy
from tests.support.chassis_proc import free_port, wait_for
from tests.support.mariadb import MariaDB

CONNECTIONS = 4
QUERIES_EACH = 5
#: A script that lets every command through: the scripted path, which times commands.
PASS_THROUGH = "function read_query(packet) end\n"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = _get(f"http://{address}/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def run_queries(proxy: Proxy) -> None:
    for _ in range(CONNECTIONS):
        with proxy.connect(autocommit=None) as conn, conn.cursor() as cur:
            for i in range(QUERIES_EACH):
                cur.execute("SELECT %s", (i,))
                assert cur.fetchone() == (i,)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``(config file, API address)``; the test writes the config, then starts it."""
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus package is not installed (scripts/test installs it)")
    yield tmp_path / "prometheus.yml", f"127.0.0.1:{free_port()}"


def start_prometheus(config: Path, api: str, target: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    config.write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
        "scrape_configs:\n  - job_name: chassis\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    log = (tmp_path / "prometheus.log").open("wb")
    return subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={api}", "--storage.tsdb.retention.time=1h",
         "--query.lookback-delta=30s", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def query(api: str, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    """An instant query: value per label set (without the job's own labels)."""
    url = f"http://{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        status, text = _get(url)
    except OSError:
        return {}
    if status != 200:
        return {}
    data = json.loads(text)["data"]["result"]
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "job", "instance"))):
            float(r["value"][1]) for r in data}


def test_prometheus_scrapes_the_series_and_they_agree_with_what_was_sent(
        start_proxy: StartProxy, mariadb: MariaDB, prometheus: tuple[Path, str], tmp_path: Path) -> None:
    metrics_address = f"127.0.0.1:{free_port()}"
    script = tmp_path / "pass.lua"
    script.write_text(PASS_THROUGH)
    proxy = start_proxy([mariadb.address], ["--event-threads=2", f"--metrics-address={metrics_address}",
                                            f"--proxy-lua-script={script}"])
    assert _get(f"http://{metrics_address}/healthz")[0] == 200
    assert _get(f"http://{metrics_address}/readyz") == (200, "ready\n")
    config, api = prometheus
    prom = start_prometheus(config, api, metrics_address, tmp_path)
    try:
        backend = (("backend", mariadb.address),)
        # What the client library sends by itself (SET NAMES, COM_QUIT): one bare connection
        with proxy.connect(autocommit=None):
            pass
        bare = wait_for(lambda: (m := scrape(metrics_address)).get(
            ("chassis_proxy_client_connections", ())) == 0 and m, message="the bare client to close")
        own_commands = bare["chassis_proxy_queries_total", backend]
        own_timed = bare["chassis_proxy_query_duration_seconds_count", backend]
        assert 1 <= own_commands <= 3 and own_timed < own_commands  # COM_QUIT has no answer
        by_query = (*backend, ("command", "query"))
        own_queries = bare.get(("chassis_proxy_commands_total", by_query), 0)
        run_queries(proxy)
        sent = CONNECTIONS * QUERIES_EACH
        clients = CONNECTIONS + 1
        expected = {
            "chassis_proxy_queries_total": {backend: sent + clients * own_commands},
            "chassis_proxy_query_duration_seconds_count": {backend: sent + clients * own_timed},
            "chassis_proxy_client_connections_total": {(): clients},
            "chassis_proxy_backend_connections_total": {backend: clients},
            "chassis_proxy_client_connections": {(): 0},
            # read_query runs for every command, COM_QUIT included
            'chassis_proxy_lua_hook_calls_total{hook="read_query"}': {
                (("hook", "read_query"),): sent + clients * own_commands},
            # the script's top level: once per connection
            'chassis_proxy_lua_hook_calls_total{hook="script"}': {(("hook", "script"),): clients},
            'chassis_proxy_commands_total{command="query"}': {by_query: sent + clients * own_queries},
            "chassis_proxy_server_errors_total": {backend: 0},
            # the top digests: SELECT %s is one shape
            'chassis_proxy_digest_queries_total{digest_text="select ?"}': {
                (("digest", "0x" + hashlib.md5(b"select ?").hexdigest().upper()),
                 ("digest_text", "select ?")): sent},
            'chassis_workers{state="answered"}': {(("state", "answered"),): 2},
            "chassis_worker_restarts_total": {(("worker", "1"),): 0, (("worker", "2"),): 0},
        }
        for promql, want in expected.items():
            last: list[object] = []

            def agrees(promql: str = promql, want: object = want, last: list[object] = last) -> bool:
                last[:] = [query(api, promql)]
                return last[0] == want

            try:
                wait_for(agrees, timeout=60, interval=0.25)
            except AssertionError:
                raise AssertionError(f"Prometheus: {promql} is {last[0]}, not {want}; the chassis "
                                     f"says {scrape(metrics_address)}") from None
        received = query(api, "chassis_proxy_received_bytes_total")[backend]
        assert received > sent * len("SELECT 0")  # the queries' text at least
        assert query(api, "chassis_proxy_query_duration_seconds_sum")[backend] > 0
        started = query(api, "chassis_start_time_seconds")[()]
        assert started <= min(query(api, "chassis_process_start_time_seconds").values())
        assert query(api, 'chassis_proxy_backend_state{state="up"}') == {
            (("backend", mariadb.address), ("state", "up")): 2}
    finally:
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
