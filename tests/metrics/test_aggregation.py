"""The merge of every worker's metrics and their Prometheus text (no process started)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from chassis import metrics
from chassis.metrics import counter, gauge, histogram, merge


def _parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_counters_with_the_same_labels_are_summed_over_workers() -> None:
    w0 = [counter("chassis_x_queries_total", "q", [({"backend": "a"}, 3), ({"backend": "b"}, 1)])]
    w1 = [counter("chassis_x_queries_total", "q", [({"backend": "a"}, 4)])]
    (merged,) = merge([(0, w0), (1, w1)])
    values = {s["labels"]["backend"]: s.get("value") for s in merged["samples"]}
    assert values == {"a": 7, "b": 1}


def test_gauges_sum_unless_they_ask_for_one_series_per_worker_or_the_largest() -> None:
    def worker(n: int) -> list[metrics.Metric]:
        return [gauge("chassis_x_open", "o", [({}, n)]),
                gauge("chassis_x_up", "u", [({"backend": "a"}, n % 2)], aggregate="worker"),
                gauge("chassis_x_started", "s", [({}, 100 + n)], aggregate="max")]

    merged = {m["name"]: m for m in merge([(0, worker(2)), (1, worker(3))])}
    assert [s.get("value") for s in merged["chassis_x_open"]["samples"]] == [5]
    assert sorted((s["labels"]["worker"], s.get("value")) for s in merged["chassis_x_up"]["samples"]) == \
        [("1", 0), ("2", 1)]
    assert [s.get("value") for s in merged["chassis_x_started"]["samples"]] == [103]


def test_histograms_add_bucket_by_bucket() -> None:
    bounds = (0.1, 1.0)
    w0 = [histogram("chassis_x_seconds", "h", bounds, [({"backend": "a"}, [1, 2, 0], 1.5)])]
    w1 = [histogram("chassis_x_seconds", "h", bounds, [({"backend": "a"}, [0, 1, 3], 9.0)])]
    text, content_type = metrics.exposition(merge([(0, w0), (1, w1)]))
    assert content_type.startswith("text/plain")
    values = _parse(text)
    a = ("backend", "a")
    assert values["chassis_x_seconds_bucket", (a, ("le", "0.1"))] == 1
    assert values["chassis_x_seconds_bucket", (a, ("le", "1.0"))] == 4
    assert values["chassis_x_seconds_bucket", (a, ("le", "+Inf"))] == 7
    assert values["chassis_x_seconds_count", (a,)] == 7
    assert values["chassis_x_seconds_sum", (a,)] == 10.5


def test_histograms_with_other_bounds_and_types_that_disagree_keep_the_first() -> None:
    w0 = [histogram("chassis_x_seconds", "h", (0.1,), [({}, [1, 0], 0.05)]),
          counter("chassis_x_total", "c", [({}, 1)])]
    w1 = [histogram("chassis_x_seconds", "h", (0.2,), [({}, [1, 0], 0.05)]),
          gauge("chassis_x_total", "g", [({}, 5)])]
    merged = {m["name"]: m for m in merge([(0, w0), (1, w1)])}
    assert merged["chassis_x_seconds"]["samples"][0].get("count") == 1
    assert merged["chassis_x_total"]["type"] == "counter"
    assert merged["chassis_x_total"]["samples"][0].get("value") == 1


def test_exposition_follows_prometheus_conventions_and_openmetrics_on_request() -> None:
    merged = merge([(0, [counter("chassis_x_requests_total", "Requests.", [({"code": "200"}, 2)])])])
    text, _ = metrics.exposition(merged)
    assert b"# TYPE chassis_x_requests_total counter" in text
    assert b'chassis_x_requests_total{code="200"} 2.0' in text
    text, content_type = metrics.exposition(merged, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith(b"# EOF\n")


def test_the_samples_are_plain_json() -> None:
    import json

    bounds = (0.5,)
    metric = histogram("chassis_x_seconds", "h", bounds, [({"backend": 1}, [2, 1], 0.7)])
    assert json.loads(json.dumps(metric)) == metric
    assert metric["samples"][0]["labels"] == {"backend": "1"}
