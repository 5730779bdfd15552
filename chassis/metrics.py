"""Metrics any plugin contributes, merged over every worker and written in Prometheus' format.

A plugin implements the ``chassis_metrics(runtime)`` hook and returns a list of plain
:data:`Metric` dicts (JSON, so that they cross the control channel as they are): a name,
a help line, a type (``counter``, ``gauge`` or ``histogram``) and samples, each with its
labels and a value, or cumulative buckets for a histogram. The helpers :func:`counter`,
:func:`gauge` and :func:`histogram` build them. Nothing is kept between scrapes: a plugin
reads its plain counters when asked, so the hot path only increments integers.

The worker that gets the scrape asks every worker (:mod:`chassis.metrics_http`) and
:func:`merge` folds the answers: counters and histograms with the same labels are summed
(each worker counts its own clients), gauges too, unless the metric says otherwise:
``aggregate="worker"`` (a backend's state as one worker sees it, a worker's start time:
a sum means nothing) keeps each worker's sample with a ``worker`` label, and
``aggregate="max"`` keeps the largest (a fact every worker reports alike).
:func:`exposition` turns the result into the text format with ``prometheus_client``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

log = logging.getLogger("chassis.metrics")

MetricType = Literal["counter", "gauge", "histogram"]
Aggregate = Literal["sum", "max", "worker"]


class Sample(TypedDict):
    """One series: ``value`` for counters and gauges; ``buckets`` (cumulative counts per
    upper bound, +Inf left out), ``count`` and ``sum`` for histograms."""

    labels: dict[str, str]
    value: NotRequired[float]
    buckets: NotRequired[list[list[float]]]
    count: NotRequired[float]
    sum: NotRequired[float]


class Metric(TypedDict):
    name: str
    help: str
    type: MetricType
    samples: list[Sample]
    aggregate: NotRequired[Aggregate]


#: Label added to the samples of ``aggregate="worker"`` metrics (1-based, as the logs say).
WORKER_LABEL = "worker"


def _labels(labels: Mapping[str, object] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (labels or {}).items()}


def counter(name: str, help: str, samples: Iterable[tuple[Mapping[str, object], float]],
            aggregate: Aggregate = "sum") -> Metric:
    """A counter (``name`` ends in ``_total``) from ``(labels, value)`` pairs."""
    return {"name": name, "help": help, "type": "counter", "aggregate": aggregate,
            "samples": [{"labels": _labels(lb), "value": v} for lb, v in samples]}


def gauge(name: str, help: str, samples: Iterable[tuple[Mapping[str, object], float]],
          aggregate: Aggregate = "sum") -> Metric:
    """A gauge; ``aggregate="worker"`` keeps one series per worker instead of a sum,
    ``"max"`` the largest value (the same fact seen by every worker)."""
    return {"name": name, "help": help, "type": "gauge", "aggregate": aggregate,
            "samples": [{"labels": _labels(lb), "value": v} for lb, v in samples]}


def histogram(name: str, help: str, bounds: Sequence[float],
              samples: Iterable[tuple[Mapping[str, object], Sequence[int], float]]) -> Metric:
    """A histogram from ``(labels, counts, sum)``: ``counts`` has one entry per bound
    (observations <= that bound and above the previous one) and one more for the rest."""
    out: list[Sample] = []
    for lb, counts, total in samples:
        running = 0
        buckets: list[list[float]] = []
        for bound, n in zip(bounds, counts):
            running += n
            buckets.append([float(bound), running])
        out.append({"labels": _labels(lb), "buckets": buckets, "count": sum(counts), "sum": total})
    return {"name": name, "help": help, "type": "histogram", "samples": out}


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def merge(replies: Iterable[tuple[int, Sequence[Metric]]]) -> list[Metric]:
    """Fold the metrics of every worker (``(worker_id, metrics)``) into one list.

    A name seen with another type (two plugins disagree) keeps the first and logs the
    rest; histograms with other bucket bounds than the first are left out the same way.
    """
    merged: dict[str, Metric] = {}
    series: dict[str, dict[tuple[tuple[str, str], ...], Sample]] = {}
    for worker_id, metrics in replies:
        for metric in metrics:
            name = metric["name"]
            first = merged.get(name)
            if first is None:
                first = merged[name] = {"name": name, "help": metric["help"], "type": metric["type"],
                                        "samples": [], "aggregate": metric.get("aggregate", "sum")}
                series[name] = {}
            elif first["type"] != metric["type"]:
                log.warning("metric %s: %s from one plugin, %s from another; keeping the first",
                            name, first["type"], metric["type"])
                continue
            how = metric.get("aggregate", "sum")
            for sample in metric["samples"]:
                labels = dict(sample["labels"])
                if how == "worker":
                    labels[WORKER_LABEL] = str(worker_id + 1)
                _add(name, series[name], labels, sample, largest=how == "max")
    for name, metric in merged.items():
        metric["samples"] = list(series[name].values())
    return list(merged.values())


def _add(name: str, into: dict[tuple[tuple[str, str], ...], Sample], labels: dict[str, str],
         sample: Sample, largest: bool = False) -> None:
    key = _key(labels)
    have = into.get(key)
    if have is None:
        copy: Sample = {"labels": labels}
        if "buckets" in sample:
            copy["buckets"] = [list(b) for b in sample["buckets"]]
            copy["count"] = sample.get("count", 0)
            copy["sum"] = sample.get("sum", 0)
        else:
            copy["value"] = sample.get("value", 0)
        into[key] = copy
        return
    if "buckets" in have:
        theirs = sample.get("buckets", [])
        if [b[0] for b in theirs] != [b[0] for b in have["buckets"]]:
            log.warning("metric %s%s: bucket bounds differ between workers; one left out", name, labels)
            return
        for mine, other in zip(have["buckets"], theirs):
            mine[1] += other[1]
        have["count"] = have.get("count", 0) + sample.get("count", 0)
        have["sum"] = have.get("sum", 0) + sample.get("sum", 0)
    elif largest:
        have["value"] = max(have.get("value", 0), sample.get("value", 0))
    else:
        have["value"] = have.get("value", 0) + sample.get("value", 0)


def families(metrics: Iterable[Metric]) -> Iterator[Any]:
    """``prometheus_client`` metric families of merged metrics (one collector's output)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    for metric in metrics:
        names = sorted({k for s in metric["samples"] for k in s["labels"]})
        family: Any
        if metric["type"] == "counter":
            family = CounterMetricFamily(metric["name"], metric["help"], labels=names)
        elif metric["type"] == "gauge":
            family = GaugeMetricFamily(metric["name"], metric["help"], labels=names)
        else:
            family = HistogramMetricFamily(metric["name"], metric["help"], labels=names)
        for s in metric["samples"]:
            values = [s["labels"].get(n, "") for n in names]
            if metric["type"] == "histogram":
                buckets = [(_bound(b), c) for b, c in s.get("buckets", [])]
                buckets.append(("+Inf", s.get("count", 0)))
                family.add_metric(values, buckets=buckets, sum_value=s.get("sum", 0))
            else:
                family.add_metric(values, s.get("value", 0))
        yield family


def _bound(value: float) -> str:
    """Bucket bounds as ``prometheus_client`` writes them (``0.005``, ``1.0``)."""
    return repr(float(value))


class _Collected:
    """A one-shot collector: what a registry needs to write merged metrics."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return families(self.metrics)


def exposition(metrics: list[Metric], accept: str = "") -> tuple[bytes, str]:
    """The scrape's body and content type; OpenMetrics when ``accept`` asks for it."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(metrics))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
