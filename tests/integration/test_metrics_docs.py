"""docs/operations.md names the metrics ``/metrics`` really exports, with their labels, and
every metric exported is documented there (checked against a live, exercised serve and edge)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.metrics_support import Exposition, live_expositions, metric_names

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
# A documented metric: `name` or `name{label,label}` (a label may say its values:
# `{result=hit|miss}`).
DOCUMENTED = re.compile(r"`(pullkv_[a-z0-9_]+)(?:\{([^}`]*)\})?`")
NODES = ["serve", "edge"]


@pytest.fixture(scope="module")
def expositions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exposition]:
    return live_expositions(tmp_path_factory)


def documented() -> dict[str, set[str] | None]:
    """Each metric docs/operations.md names -> the label names it gives (None: none given)."""
    found: dict[str, set[str] | None] = {}
    for name, labels in DOCUMENTED.findall(OPERATIONS.read_text()):
        if labels:
            found[name] = {part.split("=")[0].strip() for part in labels.split(",")}
        else:
            found.setdefault(name, None)
    return found


def test_the_page_names_metrics_in_code_spans() -> None:
    names = documented()
    assert len(names) >= 10, names
    # A name outside a code span would escape the checks below.
    assert metric_names(OPERATIONS.read_text()) == set(names)


@pytest.mark.parametrize("node", NODES)
def test_every_documented_metric_is_exported(expositions: dict[str, Exposition], node: str) -> None:
    exposition = expositions[node]
    missing = sorted(n for n in documented() if not exposition.exports(n, histogram_base=True))
    assert not missing, f"docs/operations.md names metrics {node} does not export: {missing}"


@pytest.mark.parametrize("node", NODES)
def test_documented_labels_are_the_exported_ones(
    expositions: dict[str, Exposition], node: str
) -> None:
    exposition = expositions[node]
    for name, labels in documented().items():
        if labels is not None:
            assert labels == exposition.labels(name), name


@pytest.mark.parametrize("node", NODES)
def test_every_exported_metric_is_documented(expositions: dict[str, Exposition], node: str) -> None:
    exposition = expositions[node]
    names = set(documented())
    undocumented = []
    for name in sorted(exposition.names()):
        if name.endswith("_created"):  # prometheus_client's creation time of a counter
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in names and not (base in exposition.histograms and base in names):
            undocumented.append(name)
    assert not undocumented, f"{node} exports metrics docs/operations.md does not name"


def test_the_exercise_made_every_labelled_series(expositions: dict[str, Exposition]) -> None:
    """The checks above saw labelled series, not just the families' HELP lines."""
    edge = expositions["edge"]
    assert edge.values("pullkv_cache_reads_total", "result") == {
        "hit",
        "negative_hit",
        "miss",
        "stale",
    }
    assert edge.values("pullkv_cache_revalidations_total", "outcome")
    assert edge.values("pullkv_writes_total", "operation") == {"put", "delete"}
    assert {"401", "404", "414", "503"} <= edge.values("pullkv_errors_total", "status")
    outcomes = edge.values("pullkv_upstream_requests_total", "outcome")
    assert {"ok", "refused", "unavailable", "circuit_open"} <= outcomes
    assert "probe" in edge.values("pullkv_upstream_requests_total", "operation")
    for exposition in expositions.values():
        assert exposition.exports("pullkv_hot_responses_total")
        assert "get_value" in exposition.values("pullkv_request_duration_seconds_count", "route")
