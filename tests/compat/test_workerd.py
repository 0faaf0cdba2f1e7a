"""A real Worker in workerd whose KV binding is served by a running pullkv.

Every binding method is exercised from inside the Worker; the limit errors are checked as
the Worker sees them (workerd builds them from the status and the reason phrase).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from tests.support import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
WORKERD = ROOT / "node_modules" / ".bin" / "workerd"
SUITE = Path(__file__).parent / "workerd" / "kv-suite.js"

CONFIG = """using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .suite),
    (name = "pullkv", external = (
      address = "127.0.0.1:{pullkv_port}",
      http = (injectRequestHeaders = [
        (name = "Authorization", value = "Bearer {token}"),
        (name = "X-PullKV-Namespace", value = "{namespace}"),
      ]),
    )),
  ],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")],
);

const suite :Workerd.Worker = (
  modules = [(name = "worker", esModule = embed "kv-suite.js")],
  compatibilityDate = "2025-01-01",
  bindings = [(name = "KV", kvNamespace = "pullkv")],
);
"""


def _require_workerd() -> None:
    if WORKERD.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("node_modules/.bin/workerd is missing: ./dev test installs it with npm ci")
    pytest.skip("workerd is not installed (run ./dev test, which runs npm ci)")


@pytest.fixture(scope="module")
def pullkv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A pullkv with Workers KV's default floors (60 s expiration, 30 s cacheTtl)."""
    _require_workerd()
    data = Path(tmp_path_factory.mktemp("workerd-pullkv")) / "data"
    proc = ServerProcess(data).start()
    yield proc
    proc.stop()


class BindingNode(Protocol):
    """The node serving a Worker's KV binding: where it listens, and a token for it."""

    @property
    def port(self) -> int: ...

    @property
    def admin_token(self) -> str: ...


class Worker:
    """A workerd process running kv-suite.js against one namespace."""

    def __init__(self, folder: Path, pullkv: BindingNode, namespace: str) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SUITE, folder / "kv-suite.js")
        config = CONFIG.format(
            pullkv_port=pullkv.port, token=pullkv.admin_token, namespace=namespace, port=self.port
        )
        (folder / "config.capnp").write_text(config)
        self.log = (folder / "workerd.log").open("ab")
        self.process = subprocess.Popen(
            [str(WORKERD), "serve", "config.capnp"],
            cwd=folder,
            stdout=self.log,
            stderr=self.log,
        )
        self.folder = folder
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((folder / "workerd.log").read_text())
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/none", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("workerd did not start")

    def run(self, scenario: str) -> Any:
        response = httpx.get(f"http://127.0.0.1:{self.port}/{scenario}", timeout=60)
        body = response.json()
        assert body["ok"], body.get("error")
        return body["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def worker(pullkv: ServerProcess, tmp_path: Path) -> Iterator[tuple[Worker, str]]:
    namespace = httpx.post(
        pullkv.namespaces_url,
        json={"title": f"workerd-{uuid.uuid4().hex[:8]}"},
        headers=pullkv.headers(),
    ).json()["result"]["id"]
    made = Worker(tmp_path / "worker", pullkv, namespace)
    yield made, namespace
    made.stop()


def test_get_of_each_type(worker: tuple[Worker, str]) -> None:
    result = worker[0].run("get_types")
    assert result["text"] == result["textOption"] == "héllo wörld"
    assert result["json"] == {"a": [1, 2], "b": "c"}
    assert result["arrayBuffer"] == result["stream"] == [0, 1, 2, 127, 128, 254, 255]
    assert result["empty"] == ""
    assert result["missing"] is None
    assert result["withCacheTtl"] == "héllo wörld"
    assert result["encodedKey"] == "odd"


def test_get_with_metadata(worker: tuple[Worker, str]) -> None:
    result = worker[0].run("with_metadata")
    assert result["meta"]["value"] == "value"
    assert result["meta"]["metadata"] == {"testing": True, "n": 1}
    assert result["meta"]["cacheStatus"] == "HIT"  # written through this node: cached
    assert result["plain"]["metadata"] is None
    assert result["scalar"]["metadata"] == "example"
    assert result["missing"] == {"value": None, "metadata": None, "cacheStatus": "MISS"}
    assert result["asJson"]["metadata"] == {"testing": True, "n": 1}
    assert result["asBuffer"] == list(b"v")


def test_bulk_get(worker: tuple[Worker, str]) -> None:
    result = worker[0].run("bulk")
    assert result["text"] == {"k1": "v1", "k2": '{"x":1}', "nope": None}
    assert result["json"] == {"k2": {"x": 1}, "k3": 0}
    assert result["textWithMetadata"] == {
        "k1": {"value": "v1", "metadata": None},
        "k2": {"value": '{"x":1}', "metadata": {"m": 2}},
        "nope": None,
    }
    assert result["jsonWithMetadata"] == {"k2": {"value": {"x": 1}, "metadata": {"m": 2}}}


def test_put_options_and_streams(worker: tuple[Worker, str], pullkv: ServerProcess) -> None:
    result = worker[0].run("put_options")
    keys = {k["name"]: k for k in result["keys"]}
    now = result["now"]
    assert abs(keys["opt/ttl"]["expiration"] - (now + 300)) <= 2
    assert keys["opt/abs"]["expiration"] == now + 600
    assert keys["opt/meta"]["metadata"] == {"a": 1}
    assert "expiration" not in keys["opt/stream"] and "metadata" not in keys["opt/stream"]
    assert result["streamed"] == "streamed body"
    # The same data through pullkv's REST API.
    namespace = worker[1]
    rest = httpx.get(
        f"{pullkv.namespaces_url}/{namespace}/metadata/opt%2Fmeta", headers=pullkv.headers()
    )
    assert rest.json()["result"] == {"a": 1}


def test_delete(worker: tuple[Worker, str]) -> None:
    assert worker[0].run("delete") == {"before": "x", "after": None}


def test_list_paging_to_the_end(worker: tuple[Worker, str]) -> None:
    result = worker[0].run("list_paging")
    assert result["names"] == [f"page/{i:02d}" for i in range(25)]
    assert result["pages"] == [
        {"count": 10, "complete": False, "hasCursor": True},
        {"count": 10, "complete": False, "hasCursor": True},
        {"count": 5, "complete": True, "hasCursor": False},
    ]
    assert result["firstKey"] == {"name": "page/00", "metadata": {"i": 0}}
    assert result["total"] == 26


def test_limit_errors_as_the_worker_sees_them(worker: tuple[Worker, str]) -> None:
    errors = worker[0].run("limit_errors")
    assert (
        "KV GET failed: 414 UTF-8 encoded length of 513 exceeds key length limit of 512."
        in (errors["keyTooLong"])
    )
    assert errors["valueTooLarge"] == (
        "KV PUT failed: 413 Value length of 26214401 exceeds limit of 26214400."
    )
    assert errors["metadataTooLarge"].startswith("KV PUT failed: 413 Metadata length of ")
    assert errors["metadataTooLarge"].endswith(" exceeds limit of 1024.")
    assert errors["expirationTtlUnderFloor"] == (
        "KV PUT failed: 400 Invalid expiration_ttl of 30. Expiration TTL must be at least 60."
    )
    assert errors["expirationTooSoon"].startswith("KV PUT failed: 400 Invalid expiration of ")
    assert errors["expirationTooSoon"].endswith(
        "Expiration times must be at least 60 seconds in the future."
    )
    assert errors["cacheTtlUnderFloor"] == (
        "KV GET failed: 400 Invalid cache_ttl of 10. Cache TTL must be at least 30."
    )
    assert errors["bulkCacheTtlUnderFloor"] == (
        "KV GET_BULK failed: 400 Invalid cache_ttl of 10. Cache TTL must be at least 30."
    )
    assert errors["bulkTooMany"] == (
        "KV GET_BULK failed: 400 You can request a maximum of 100 keys"
    )
    assert errors["listLimitTooHigh"].startswith(
        "KV GET failed: 400 Invalid key_count_limit of 1001"
    )
    assert errors["nothingWritten"] is None


def test_writes_from_the_worker_are_visible_over_rest(
    worker: tuple[Worker, str], pullkv: ServerProcess
) -> None:
    worker[0].run("delete")
    namespace = worker[1]
    listing = httpx.get(f"{pullkv.namespaces_url}/{namespace}/keys", headers=pullkv.headers())
    assert json.loads(listing.text)["result"] == []


def test_example_recipe_runs(pullkv: ServerProcess, tmp_path: Path) -> None:
    """examples/workerd works as its README says."""
    example = ROOT / "examples" / "workerd"
    folder = tmp_path / "example"
    shutil.copytree(example, folder, ignore=shutil.ignore_patterns("config.capnp"))
    namespace = httpx.post(
        pullkv.namespaces_url, json={"title": "flags"}, headers=pullkv.headers()
    ).json()["result"]["id"]
    port = free_port()
    env = {**os.environ, "PULLKV_TOKEN": pullkv.admin_token}
    subprocess.run(
        [str(folder / "render-config.sh"), f"127.0.0.1:{pullkv.port}", namespace],
        check=True,
        env=env,
        capture_output=True,
        timeout=30,
    )
    config = folder / "config.capnp"
    config.write_text(config.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    process = subprocess.Popen(
        [str(WORKERD), "serve", "config.capnp"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                saved = httpx.put(f"http://127.0.0.1:{port}/checkout", json={"new_flow": True})
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "workerd did not start"
                time.sleep(0.1)
        assert saved.text == "saved\n"
        shown = httpx.get(f"http://127.0.0.1:{port}/checkout").json()
        assert shown["flags"] == {"new_flow": True} and shown["cacheStatus"] == "HIT"
        assert httpx.get(f"http://127.0.0.1:{port}/nothing").status_code == 404
        stored = httpx.get(
            f"{pullkv.namespaces_url}/{namespace}/values/flags%2Fcheckout", headers=pullkv.headers()
        )
        assert stored.json() == {"new_flow": True}
    finally:
        process.terminate()
        process.wait(10)


def test_hot_binding_reads_take_the_fast_path(
    worker: tuple[Worker, str], pullkv: ServerProcess
) -> None:
    running, namespace = worker
    httpx.put(
        f"{pullkv.namespaces_url}/{namespace}/values/hot",
        content=b"x" * 1024,
        headers=pullkv.headers(),
    )
    url = f"http://127.0.0.1:{running.port}/hot"
    assert httpx.get(url).content == b"x" * 1024  # fills the cache and the token cache
    before = pullkv.metric("pullkv_hot_responses_total", pullkv.admin_token)
    for _ in range(5):
        assert httpx.get(url).content == b"x" * 1024
    assert pullkv.metric("pullkv_hot_responses_total", pullkv.admin_token) == before + 5
