"""deploy/grafana/pullkv.json is an importable dashboard whose every query names metrics,
labels and label values that a live, exercised serve and edge export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.metrics_support import TARGET_LABELS, Exposition, live_expositions, metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pullkv.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24
SELECTOR = re.compile(r"(pullkv_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LITERALS = re.compile(r"[A-Za-z0-9_.]+(\|[A-Za-z0-9_.]+)*")
NODES = ["serve", "edge"]


@pytest.fixture(scope="module")
def expositions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exposition]:
    return live_expositions(tmp_path_factory)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[str]:
    """Every PromQL query: the panels' targets and the template variables'."""
    found = [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        query = variable["query"]
        found.append(query["query"] if isinstance(query, dict) else query)
    return found


def family(name: str) -> str:
    """A series' metric family: its name without _total, _bucket, _sum, _count, _created."""
    return re.sub(r"_(bucket|sum|count|total|created)$", "", name)


def test_the_dashboard_has_the_shape_grafana_imports() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["title"] and board["uid"]
    assert board["id"] is None  # an export: Grafana assigns the id on import
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_WIDTH
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}, panel["type"]
        assert panel["title"] and panel["datasource"] == DATASOURCE
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip()
    for variable in board["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE


def test_every_exported_metric_is_charted(expositions: dict[str, Exposition]) -> None:
    charted = {family(name) for query in queries() for name in metric_names(query)}
    exported = {family(name) for name in expositions["edge"].names()}
    assert exported <= charted, exported - charted


@pytest.mark.parametrize("node", NODES)
def test_every_query_names_exported_metrics(expositions: dict[str, Exposition], node: str) -> None:
    exposition = expositions[node]
    for query in queries():
        names = metric_names(query)
        assert names, query
        # Exact series names: in PromQL a counter is its _total series, and a histogram's
        # base name selects nothing.
        unknown = sorted(name for name in names if not exposition.exports(name))
        assert not unknown, f"{node} exports no {unknown} (in {query})"


@pytest.mark.parametrize("node", NODES)
def test_every_label_a_query_names_is_exported(
    expositions: dict[str, Exposition], node: str
) -> None:
    exposition = expositions[node]
    for query in queries():
        available = set(TARGET_LABELS)
        for name in metric_names(query):
            available |= exposition.labels(name)
        for name, matchers in SELECTOR.findall(query):
            for label, _, _ in MATCHER.findall(matchers):
                assert label in exposition.labels(name) | TARGET_LABELS, (label, query)
        for grouping in GROUPING.findall(query):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                assert label in available | {"le"}, (label, query)


def test_every_label_value_a_query_matches_is_exported(
    expositions: dict[str, Exposition],
) -> None:
    """A typo in a value ("cirucit_open") would chart nothing, silently."""
    edge = expositions["edge"]  # the node that saw every outcome, stale serves included
    for query in queries():
        for name, matchers in SELECTOR.findall(query):
            for label, operator, value in MATCHER.findall(matchers):
                if operator not in ("=", "=~") or not LITERALS.fullmatch(value):
                    continue  # a negation, a template variable or a real pattern
                for alternative in value.split("|"):
                    assert alternative in edge.values(name, label), (label, alternative, query)
