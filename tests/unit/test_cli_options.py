"""Unit tests for pullkv.cli.options: the shared options, and ``cluster up`` handing its cache
options to the edges it starts."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

import pullkv.cluster
from pullkv.cli import main
from pullkv.cli.options import CACHE_OPTIONS, cache_flags, parse_size
from pullkv.cli.servers import cluster, edge, serve
from pullkv.cluster import ClusterSpec


def _param_names(command: click.Command) -> set[str]:
    return {param.name for param in command.params if param.name is not None}


def test_cache_options_are_the_same_on_serve_edge_and_cluster_up() -> None:
    up = cluster.commands["up"]
    for command in (serve, edge, up):
        assert set(CACHE_OPTIONS) <= _param_names(command), command.name
    assert CACHE_OPTIONS["max_stale"] == "--max-stale"


def test_cache_flags_parse_back_to_the_same_values_on_an_edge() -> None:
    given: dict[str, Any] = {
        "cache_size": "64MiB",
        "default_cache_ttl": 90,
        "min_cache_ttl": 1,
        "refresh_interval": 0.25,
        "max_stale": 5.0,
        "auth_max_stale": 0.0,
        "token_refresh": 0.5,
        "token_max_age": 2.0,
        "upstream": "not a cache option",
    }
    flags = cache_flags(given)
    assert "not a cache option" not in flags
    parsed = edge.make_context("edge", ["--upstream", "http://origin", *flags]).params
    assert {name: parsed[name] for name in CACHE_OPTIONS} == {
        name: given[name] for name in CACHE_OPTIONS
    }


def test_cache_flags_leave_out_options_not_given() -> None:
    assert cache_flags({"cache_size": "256MiB", "max_stale": None}) == ["--cache-size", "256MiB"]


def test_cluster_up_passes_its_cache_options_to_the_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[ClusterSpec] = []
    monkeypatch.setattr(pullkv.cluster, "run_cluster", lambda spec, echo: started.append(spec))
    result = CliRunner().invoke(
        main, ["cluster", "up", "--edges", "2", "--max-stale", "5", "--min-cache-ttl", "1"]
    )
    assert result.exit_code == 0, result.output
    (spec,) = started
    assert spec.edges == 2
    assert spec.edge_args == (
        "--cache-size",
        "256MiB",
        "--min-cache-ttl",
        "1",
        "--max-stale",
        "5.0",
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("64MiB", 64 * 1024**2), ("512k", 512 * 1024), ("1GB", 10**9)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_refuses_other_text() -> None:
    with pytest.raises(click.BadParameter):
        parse_size("lots")
