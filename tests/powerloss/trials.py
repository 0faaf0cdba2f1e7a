"""Power-loss trials of ``pullkv serve`` (and ``pullkv origin`` on PostgreSQL) on lazyfs.

One trial: mount lazyfs, start a server with its data folder on the mount (a fresh folder, or
one that has already run and holds keys), write under load, kill -9 the server at a random
moment (sometimes while it is still starting), crash the file system (everything not fsynced
is dropped), remount it, start the server again and check that it starts and that every
acknowledged write reads back with its value. Used by the CI tests and by
``bench/bench_powerloss.py`` for longer runs.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.powerloss.harness import LazyMount
from tests.support import ServerProcess, write_until_killed

ENV_ADMIN_TOKEN = "pkv-powerloss-operator-secret-0123456789"
BULK_GET_KEYS = 100
SEASONING_KEYS = 200


@dataclass(frozen=True)
class TrialPlan:
    """What one trial does; drawn from a seeded generator so a failure can be replayed."""

    seed: int
    seasoned: bool  # the data folder ran (and stopped cleanly) before this start
    env_admin: bool  # PULLKV_ADMIN_TOKEN set, so no admin-token file is written
    crash_during_start: bool  # kill -9 before the server has answered at all
    delay: float  # seconds: of writing (or of starting) before the kill
    store_args: tuple[str, ...] = ()  # e.g. ("--store", url) for PostgreSQL


@dataclass
class TrialResult:
    """What a trial found after the restart."""

    plan: TrialPlan
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    restarted: bool = False
    token_works: bool = False
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No acknowledged write lost or changed, and the server came back with its token."""
        return (
            self.restarted and self.token_works and not self.lost and not self.wrong
        ) and not self.error


def plans(count: int, seed: int, store_args: Sequence[str] = ()) -> list[TrialPlan]:
    """``count`` trials covering every combination in turn, with random timing."""
    rng = random.Random(seed)
    made = []
    for number in range(count):
        crash_during_start = number % 5 == 4
        made.append(
            TrialPlan(
                seed=rng.randrange(2**32),
                seasoned=number % 2 == 1,
                env_admin=(number // 2) % 2 == 1,
                crash_during_start=crash_during_start,
                delay=rng.uniform(0.0, 1.0) if crash_during_start else rng.uniform(0.05, 2.5),
                store_args=tuple(store_args),
            )
        )
    return made


def _server(data: Path, logs: Path, plan: TrialPlan) -> ServerProcess:
    env = {"PULLKV_ADMIN_TOKEN": ENV_ADMIN_TOKEN} if plan.env_admin else {}
    role = "origin" if plan.store_args else "serve"
    proc = ServerProcess(
        data,
        args=list(plan.store_args),
        env=env,
        role=role,
    )
    proc.log_dir = logs  # never on the mount: the log must outlive the crash
    return proc


def _create_namespace(proc: ServerProcess, title: str) -> str:
    response = httpx.post(
        proc.namespaces_url, json={"title": title}, headers=proc.headers(), timeout=30
    )
    response.raise_for_status()
    return str(response.json()["result"]["id"])


def _season(proc: ServerProcess, acked: dict[tuple[str, str], bytes]) -> str:
    """Run the folder for a while and stop cleanly: keys the later trial must keep."""
    proc.start()
    try:
        namespace_id = _create_namespace(proc, "seasoning")
        with httpx.Client(
            base_url=proc.namespaces_url + "/", headers=proc.headers(), timeout=30
        ) as http:
            for number in range(SEASONING_KEYS):
                value = f"old-{number}".encode()
                response = http.put(f"{namespace_id}/values/old{number:04d}", content=value)
                response.raise_for_status()
                acked[(namespace_id, f"old{number:04d}")] = value
    finally:
        proc.stop()
    return namespace_id


def _check(proc: ServerProcess, acked: dict[tuple[str, str], bytes], result: TrialResult) -> None:
    headers = {"Authorization": f"Bearer {proc.admin_token}"}
    with httpx.Client(base_url=proc.namespaces_url + "/", headers=headers, timeout=30) as http:
        listed = http.get("")
        result.token_works = listed.status_code == 200
        if not result.token_works:
            result.error = f"the admin token no longer works: {listed.status_code} {listed.text}"
            return
        by_namespace: dict[str, list[str]] = {}
        for namespace_id, key in acked:
            by_namespace.setdefault(namespace_id, []).append(key)
        for namespace_id, keys in by_namespace.items():
            for start in range(0, len(keys), BULK_GET_KEYS):
                batch = keys[start : start + BULK_GET_KEYS]
                response = http.post(f"{namespace_id}/bulk/get", json={"keys": batch})
                if response.status_code != 200:
                    result.error = f"bulk get failed: {response.status_code} {response.text}"
                    return
                values = response.json()["result"]["values"]
                for key in batch:
                    found = values.get(key)
                    if found is None:
                        result.lost.append(key)
                    elif found.encode() != acked[(namespace_id, key)]:
                        result.wrong.append(key)


def run_trial(plan: TrialPlan, workdir: Path) -> TrialResult:
    """Run one trial in ``workdir`` (its backing folder and logs go there)."""
    result = TrialResult(plan)
    started = time.monotonic()
    backing, logs = workdir / "backing", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    acked: dict[tuple[str, str], bytes] = {}
    with LazyMount(backing) as mount:
        data = mount.path / "data"
        proc = _server(data, logs, plan)
        try:
            if plan.seasoned:
                _season(proc, acked)
                mount.remount()  # a clean shutdown and reboot: all of it durable
                proc = _server(mount.path / "data", logs, plan)
            if plan.crash_during_start:
                _start_and_kill(proc, plan.delay)
            else:
                proc.start()
                namespace_id = _create_namespace(proc, "load")
                loaded = asyncio.run(write_until_killed(proc, namespace_id, plan.delay * 2))
                acked.update({(namespace_id, key): value for key, value in loaded.items()})
        finally:
            proc.stop()  # kill -9 happened already; this only cleans up after a failure
        result.acknowledged = len(acked)
        mount.crash()
        mount.remount()
        proc = _server(mount.path / "data", logs, plan)
        try:
            proc.start(timeout=30)
            result.restarted = True
            _check(proc, acked, result)
        except RuntimeError as exc:
            result.error = str(exc)[-2000:]
        finally:
            proc.stop()
    result.seconds = time.monotonic() - started
    return result


def _start_and_kill(proc: ServerProcess, delay: float) -> None:
    """Start the server and kill -9 it after ``delay`` seconds, whether it is ready or not."""
    proc.log_dir.mkdir(parents=True, exist_ok=True)
    proc.log_path = proc.log_dir / f"{proc.name}-{proc.port}.log"
    env = {k: v for k, v in os.environ.items() if k != "PULLKV_ADMIN_TOKEN"}
    with proc.log_path.open("ab") as log:
        proc.process = subprocess.Popen(
            [sys.executable, "-m", "pullkv", *proc.command()],
            stdout=log,
            stderr=log,
            env={**env, **proc.env},
        )
    time.sleep(delay)
    proc.kill9()
