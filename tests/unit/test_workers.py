"""The pieces of ``--workers N`` that need no processes: the restart policy, exit statuses,
the metrics merge, the shared version table and a worker's command line."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from pullkv.cli.servers import _worker_argv
from pullkv.metrics import Metrics, merge, samples
from pullkv.siblings import (
    Siblings,
    SiblingsError,
    WorkerPlace,
    WrittenVersions,
    behind,
    encode,
    versions_path,
)
from pullkv.workers import RestartPolicy, describe_exit, hash_seed, restart_delay, runtime_folder

K = ("v", "a" * 32, "b" * 32, "k")


def test_restart_delay_grows_while_a_worker_dies_young() -> None:
    policy = RestartPolicy(first_delay=0.1, factor=2.0, max_delay=1.0)
    assert restart_delay(policy, 0) == 0.0
    assert [restart_delay(policy, n) for n in (1, 2, 3, 4, 5, 9)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]


def test_exit_statuses_say_status_or_signal() -> None:
    assert describe_exit(0) == "status 0"
    assert describe_exit(3) == "status 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-200) == "signal 200"


def test_merge_sums_series_and_takes_the_largest_where_documented() -> None:
    first, second = Metrics(), Metrics()
    first.writes.labels("put").inc(3)
    second.writes.labels("put").inc(4)
    second.writes.labels("delete").inc()
    first.requests.labels("rest").observe(0.1)
    second.requests.labels("rest").observe(0.2)
    first.feed_silence.set(2)
    second.feed_silence.set(5)
    first.feed_position.set(10)
    second.feed_position.set(7)
    first.hot_responses, second.hot_responses = 5, 6
    for metrics in (first, second):
        metrics.worker_restarts = lambda: 3
    node = samples(merge([first.render(), second.render()]))
    assert node[("pullkv_writes_total", (("operation", "put"),))] == 7
    assert node[("pullkv_writes_total", (("operation", "delete"),))] == 1
    assert node[("pullkv_request_duration_seconds_count", (("route", "rest"),))] == 2
    bucket = ("pullkv_request_duration_seconds_bucket", (("le", "0.25"), ("route", "rest")))
    assert node[bucket] == 2
    assert node[("pullkv_hot_responses_total", ())] == 11
    assert node[("pullkv_workers", ())] == 2
    assert node[("pullkv_feed_silence_seconds", ())] == 5
    assert node[("pullkv_feed_position", ())] == 10
    assert node[("pullkv_worker_restarts_total", ())] == 3
    created = ("pullkv_writes_created", (("operation", "put"),))
    alone = samples(first.render())[created]
    assert node[created] == alone, "a series' creation time is the earliest"


def test_merge_of_one_exposition_keeps_it() -> None:
    metrics = Metrics()
    metrics.cache_reads.labels("hit").inc(2)
    assert samples(merge([metrics.render()])) == samples(metrics.render())


def test_a_slot_keeps_the_newest_acknowledged_version(tmp_path: Path) -> None:
    table = WrittenVersions.create(tmp_path / "versions")
    other = WrittenVersions(tmp_path / "versions")  # another worker's mapping
    try:
        assert table.floor(K) == 0
        table.note(K, 100, False)
        other.note(K, 90, True)  # an older acknowledgement arriving late
        assert other.floor(K) == encode(100, False)
        other.note(K, 120, True)
        assert table.floor(K) == encode(120, True)
        assert table.restarts == 0
        table.count_restart()
        assert other.restarts == 1
    finally:
        table.close()
        other.close()


def test_workers_share_one_hash_seed() -> None:
    assert hash_seed({"PYTHONHASHSEED": "1234"}) == 1234
    seeds = {hash_seed({}) for _ in range(5)} | {hash_seed({"PYTHONHASHSEED": "random"})}
    assert len(seeds) > 1 and all(0 < seed < 2**32 for seed in seeds)


def test_a_worker_with_another_hash_seed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    WrittenVersions.create(versions_path(tmp_path), 77).close()
    place = WorkerPlace(1, 2, tmp_path)
    monkeypatch.setenv("PYTHONHASHSEED", "78")
    with pytest.raises(SiblingsError, match="PYTHONHASHSEED=78, not the node's 77"):
        Siblings.open(place)
    monkeypatch.setenv("PYTHONHASHSEED", "77")
    joined = Siblings.open(place)
    assert joined.versions.hash_seed == 77
    joined.versions.close()


@pytest.mark.parametrize(
    ("floor", "version", "absent", "expected"),
    [
        (0, 5, False, False),  # nothing acknowledged
        (encode(10, False), 9, False, True),  # a value older than a put
        (encode(10, False), 10, False, False),
        (encode(10, False), 11, False, False),
        (encode(10, False), 0, True, True),  # "not found" cannot stand for a put
        (encode(10, True), 0, True, False),  # "not found" answers a delete
        (encode(10, True), 9, False, True),  # a value older than a delete
        (encode(10, True), 10, True, False),  # the delete's own tombstone
    ],
)
def test_behind(floor: int, version: int, absent: bool, expected: bool) -> None:
    assert behind(floor, version, absent) is expected


def test_a_worker_gets_the_options_given_on_the_command_line() -> None:
    captured: list[list[str]] = []

    @click.command(name="serve")
    @click.option("--port", type=int, default=8787)
    @click.option("--host", default="127.0.0.1")
    @click.option("--cache-size", default="256MiB")
    @click.option("--no-group-commit", is_flag=True)
    @click.option("--workers", type=int, default=1)
    @click.option("--tls-cert", type=click.Path(path_type=Path), default=None)
    def command(**_: Any) -> None:
        captured.append(_worker_argv(click.get_current_context(), 9000))

    result = CliRunner().invoke(
        command,
        ["--workers", "2", "--no-group-commit", "--tls-cert", "c.pem", "--port", "0"],
        env={},
    )
    assert result.exit_code == 0, result.output
    assert captured == [
        ["serve", "--no-group-commit", "--workers", "2", "--tls-cert", "c.pem", "--port", "9000"]
    ]


def test_runtime_folders_of_dead_supervisors_are_removed() -> None:
    made = runtime_folder()
    try:
        assert made.name.startswith(f"pullkv-workers-{os.getpid()}-")
        # A supervisor killed with SIGKILL left its folder; pids never reach this.
        left = made.parent / "pullkv-workers-999999999-x"
        left.mkdir()
        again = runtime_folder()
        assert not left.exists() and made.exists(), "the live supervisor's folder stays"
        again.rmdir()
    finally:
        made.rmdir()
