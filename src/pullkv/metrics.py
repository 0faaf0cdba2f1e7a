"""Prometheus metrics of one server process, served as text at ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


FEED_INVALIDATION_OUTCOMES = ("invalidated", "ignored", "namespace", "reset")
FEED_MESSAGE_KINDS = ("change", "beat", "reset", "gap", "dropped", "silence")


class Metrics:
    """Every metric a node reports; each process has its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cache_reads = Counter(
            "pullkv_cache_reads",
            "Cached reads by result: hit, negative_hit, miss, stale.",
            ["result"],
            registry=r,
        )
        self.revalidations = Counter(
            "pullkv_cache_revalidations",
            "Background revalidations by outcome: changed, not_modified, failed.",
            ["outcome"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "pullkv_upstream_requests",
            "Requests to the upstream by operation and outcome.",
            ["operation", "outcome"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "pullkv_upstream_latency_seconds",
            "Upstream round trips by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Histogram(
            "pullkv_request_duration_seconds",
            "Requests served, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.writes = Counter(
            "pullkv_writes",
            "Keys written or deleted through this node, by operation.",
            ["operation"],
            registry=r,
        )
        self.errors = Counter(
            "pullkv_errors",
            "Error responses by HTTP status and error code.",
            ["status", "code"],
            registry=r,
        )
        # Counted in a plain int: the hot path is a few microseconds, and a locked
        # prometheus_client increment would be a tenth of it.
        self.hot_responses = 0
        r.register(_HotResponses(self))
        self.cache_bytes = Gauge("pullkv_cache_bytes", "Bytes charged to the cache.", registry=r)
        self.cache_entries = Gauge("pullkv_cache_entries", "Items in the cache.", registry=r)
        self.cache_evictions = Gauge(
            "pullkv_cache_evictions", "Items evicted from the cache since start.", registry=r
        )

        # The change feed.
        self.feed_invalidations = Counter(
            "pullkv_feed_invalidations",
            "Feed changes applied to the cache: invalidated, ignored (not newer than the "
            "entry held, or nothing held), namespace (a namespace deleted), reset.",
            ["outcome"],
            registry=r,
        )
        self.feed_messages = Counter(
            "pullkv_feed_messages",
            "Feed messages from the upstream by kind: change, beat, reset; and gap, dropped "
            "(--feed-loss), silence (no message in time).",
            ["kind"],
            registry=r,
        )
        self.feed_subscriptions = Counter(
            "pullkv_feed_subscriptions",
            "Subscriptions to the upstream's feed by outcome: opened, failed.",
            ["outcome"],
            registry=r,
        )
        # Every series exists from the start (at 0), so rates and alerts work before the
        # first event, and on nodes that never follow a feed (an origin, serve).
        for outcome in FEED_INVALIDATION_OUTCOMES:
            self.feed_invalidations.labels(outcome)
        for kind in FEED_MESSAGE_KINDS:
            self.feed_messages.labels(kind)
        for outcome in ("opened", "failed"):
            self.feed_subscriptions.labels(outcome)
        self.feed_position = Gauge(
            "pullkv_feed_position", "The last feed sequence number this edge has.", registry=r
        )
        self.feed_silence = Gauge(
            "pullkv_feed_silence_seconds",
            "Seconds since the upstream's feed was last heard.",
            registry=r,
        )
        self.feed_streams = Gauge(
            "pullkv_feed_streams", "Feed streams this node is serving.", registry=r
        )

        # --workers N: every worker reports 1, so the node's sum counts those that answered.
        self.workers = Gauge(
            "pullkv_workers",
            "Worker processes of this node that answered this scrape (1 without --workers).",
            registry=r,
        )
        self.workers.set(1)
        # Read at scrape time from the supervisor's count (siblings.WrittenVersions).
        self.worker_restarts: Callable[[], float] = lambda: 0
        r.register(_WorkerRestarts(self))

    def watch_cache(
        self,
        size: Callable[[], float],
        entries: Callable[[], float],
        evictions: Callable[[], float],
    ) -> None:
        """Report the cache's size from callbacks, read at scrape time."""
        self.cache_bytes.set_function(size)
        self.cache_entries.set_function(entries)
        self.cache_evictions.set_function(evictions)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _WorkerRestarts(Collector):
    """Reports the node's worker restarts at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "pullkv_worker_restarts",
            "Worker processes the supervisor started again after one died (--workers N).",
            value=self._metrics.worker_restarts(),
        )


class _HotResponses(Collector):
    """Reports Metrics.hot_responses at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "pullkv_hot_responses",
            "Reads answered on the hot path (a fresh cached value, no task and no I/O); "
            "not counted again in pullkv_cache_reads.",
            value=self._metrics.hot_responses,
        )


# Families whose node-wide value is the largest of the workers', not their sum: the longest
# silence, the furthest feed position, and a count every worker reads from the same place.
MERGED_BY_MAX = frozenset(
    {"pullkv_feed_silence_seconds", "pullkv_feed_position", "pullkv_worker_restarts"}
)

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class _Merged(Collector):
    """Yields already merged families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge(expositions: Iterable[bytes]) -> bytes:
    """One exposition for the node from its workers' (the first one's order and help):
    samples with the same name and labels are summed (counters, histograms' buckets, sums and
    counts, and gauges), except the families of ``MERGED_BY_MAX``; ``_created`` times take the
    earliest."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[SeriesKey, float]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text.decode()):
            if family.name not in families:
                families[family.name] = family
                values[family.name] = {}
            merged = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                held = merged.get(key)
                if held is None:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(held, sample.value)
                elif family.name in MERGED_BY_MAX:
                    merged[key] = max(held, sample.value)
                else:
                    merged[key] = held + sample.value
    out = []
    for name, family in families.items():
        combined = Metric(family.name, family.documentation, family.type, family.unit)
        combined.samples = [
            Sample(sample_name, dict(labels), value)
            for (sample_name, labels), value in values[name].items()
        ]
        out.append(combined)
    registry = CollectorRegistry()
    registry.register(_Merged(out))
    return generate_latest(registry)


def samples(exposition: bytes) -> Mapping[SeriesKey, float]:
    """Every sample of an exposition by name and sorted labels (to read a merged one)."""
    found: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found
