"""A live ``/metrics`` to check metric names against (the docs' and the Grafana dashboard's).

One origin, one ``pullkv serve`` and one ``pullkv edge`` are started once per test session
and driven through hits, misses, negative hits, revalidations, writes, deletes and errors (and,
at the edge, a stale serve after its origin dies, the circuit breaker refusing a call and its
probe), so that every labelled series exists before ``/metrics`` is read.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_SERVER_ARGS
from tests.support import EdgeProcess, NodeProcess, ServerProcess

# Short windows so a revalidation and a stale serve happen within seconds.
CACHE_FLAGS = [
    "--default-cache-ttl",
    "30",
    "--min-cache-ttl",
    "1",
    "--refresh-interval",
    "1",
    "--max-stale",
    "60",
]
# Labels Prometheus adds to every series it scrapes; queries may name them.
TARGET_LABELS = frozenset({"job", "instance"})
METRIC_NAME = re.compile(r"\bpullkv_[a-z0-9_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass
class Exposition:
    """The series of one ``/metrics`` answer: sample name -> label name -> values seen."""

    node: str
    samples: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    histograms: set[str] = field(default_factory=set)  # base names of histogram families

    @classmethod
    def parse(cls, node: str, text: str) -> Exposition:
        """Parse Prometheus text exposition."""
        exposition = cls(node)
        for family in text_string_to_metric_families(text):
            if family.type == "histogram":
                exposition.histograms.add(family.name)
            for sample in family.samples:
                labels = exposition.samples.setdefault(sample.name, {})
                for label, value in sample.labels.items():
                    labels.setdefault(label, set()).add(value)
        return exposition

    def exports(self, name: str, *, histogram_base: bool = False) -> bool:
        """Whether a series of this exact name exists (a counter's is its ``_total`` name);
        with ``histogram_base``, a histogram's base name counts too (its ``_bucket``,
        ``_sum`` and ``_count`` series exist)."""
        if name in self.samples:
            return True
        return histogram_base and name in self.histograms and self._has_histogram_series(name)

    def labels(self, name: str) -> set[str]:
        """The label names of a series (a histogram's base name: those of its ``_count``,
        so without ``le``)."""
        if name in self.samples:
            return set(self.samples[name])
        return set(self.samples.get(f"{name}_count", {}))

    def values(self, name: str, label: str) -> set[str]:
        """The values a label of a series takes."""
        return self.samples.get(name, {}).get(label, set())

    def names(self) -> set[str]:
        """Every pullkv sample name."""
        return {name for name in self.samples if name.startswith("pullkv_")}

    def _has_histogram_series(self, base: str) -> bool:
        return all(base + suffix in self.samples for suffix in _HISTOGRAM_SUFFIXES)


def metric_names(text: str) -> set[str]:
    """Every ``pullkv_…`` name in a text (a PromQL query, a Markdown page)."""
    return set(METRIC_NAME.findall(text))


_expositions: dict[str, Exposition] = {}


def live_expositions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exposition]:
    """``/metrics`` of an exercised serve and edge, keyed "serve" and "edge" (made once per
    session; the processes are stopped before this returns)."""
    if not _expositions:
        _expositions.update(_exercise(Path(tmp_path_factory.mktemp("metrics"))))
    return _expositions


def _exercise(base: Path) -> dict[str, Exposition]:
    """Start an origin, a serve and an edge on it, drive them, scrape, stop them."""
    origin = ServerProcess(base / "origin", role="origin", args=TEST_SERVER_ARGS)
    serve = ServerProcess(base / "serve", args=[*TEST_SERVER_ARGS, *CACHE_FLAGS])
    started: list[NodeProcess] = []
    try:
        for process in (origin, serve):
            started.append(process)
            process.start()
        edge = EdgeProcess(
            base,
            origin.url,
            origin.admin_token,
            origin.master_key,
            args=[*CACHE_FLAGS, "--upstream-timeout", "1"],
        )
        started.append(edge)
        edge.start()
        _drive(serve, serve.admin_token)
        edge_ns = _drive(edge, origin.admin_token)
        _lose_upstream(edge, origin, edge_ns)
        return {
            "serve": _scrape(serve, serve.admin_token),
            "edge": _scrape(edge, origin.admin_token),
        }
    finally:
        for node in reversed(started):
            node.stop()


def _drive(node: NodeProcess, token: str) -> str:
    """Writes, hot and ordinary reads, a revalidation and four 4xx answers (one of them the
    upstream's) at one node; returns the namespace used."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=10) as http:
        created = http.post(node.namespaces_url, json={"title": f"m-{uuid.uuid4().hex[:8]}"})
        namespace = str(created.json()["result"]["id"])
        values = f"{node.namespaces_url}/{namespace}/values"
        _expect(http.put(f"{values}/kept", content=b"value"), 200)
        _expect(http.delete(f"{values}/gone"), 200)
        for _ in range(3):
            _expect(http.get(f"{values}/kept"), 200)  # cached by the write: the hot path
        _expect(http.get(f"{values}/absent"), 404)  # miss
        _expect(http.get(f"{values}/absent"), 404)  # negative hit
        _expect(http.get(f"{values}/{'k' * 600}"), 414)
        _expect(http.get(f"{values}/kept", headers={"Authorization": "Bearer nope"}), 401)
        _expect(http.get(f"{node.namespaces_url}/{'0' * 32}/values/kept"), 404)
        # Answered by the upstream (the origin): an upstream call "refused".
        _expect(http.delete(f"{node.api}/accounts/{node.account_id}/tokens/{'0' * 32}"), 404)
        time.sleep(1.2)  # into the refresh window (1 s)
        revalidating = http.get(f"{values}/kept", params={"cache_ttl": "30"})
        assert "revalidating" in revalidating.headers["cache-status"], revalidating.headers
    _wait_for(lambda: _sample(node, token, "pullkv_cache_revalidations_total") > 0)
    return namespace


def _lose_upstream(edge: EdgeProcess, origin: ServerProcess, namespace: str) -> None:
    """Kill the edge's origin: a stale serve, a call refused by the open breaker, probes."""
    headers = {"Authorization": f"Bearer {origin.admin_token}"}
    values = f"{edge.namespaces_url}/{namespace}/values"
    time.sleep(1.2)  # the entry is now older than a cacheTtl of 1 s
    origin.kill9()
    with httpx.Client(headers=headers, timeout=10) as http:
        stale = http.get(f"{values}/kept", params={"cache_ttl": "1"})
        assert "stale-if-error" in stale.headers["cache-status"], stale.headers
        _expect(http.get(f"{values}/never-read"), 503)
    _wait_for(
        lambda: (
            _sample(
                edge,
                origin.admin_token,
                "pullkv_upstream_requests_total",
                operation="probe",
                outcome="unavailable",
            )
            > 0
        )
    )


def _sample(node: NodeProcess, token: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry these labels."""
    exposition = _scrape_text(node, token)
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def _scrape(node: NodeProcess, token: str) -> Exposition:
    return Exposition.parse(node.name, _scrape_text(node, token))


def _scrape_text(node: NodeProcess, token: str) -> str:
    response = httpx.get(
        f"{node.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    _expect(response, 200)
    return response.text


def _expect(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.request.url, response.text)


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the metric never appeared")
        time.sleep(0.1)
