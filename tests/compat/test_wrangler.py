"""The unmodified ``wrangler`` CLI (the version pinned in package.json) against a real pullkv.

Every ``wrangler kv namespace|key|bulk`` command runs with ``--remote`` against the module's
``pullkv serve``, and each result is checked through pullkv's own REST API, so a command that
"succeeds" without doing the right thing fails here.

wrangler is run from ``node_modules/.bin`` (installed by ``./dev test`` with ``npm ci``), in a
sandbox: an empty working folder, its own HOME/XDG/TMPDIR and ``WRANGLER_CACHE_DIR``, and an
environment built from scratch (only PATH is inherited). Telemetry and error reports are off,
and the npm update check is sent to a stub registry on loopback; two tests prove that nothing
leaves 127.0.0.1. Without wrangler installed the tests skip, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
WRANGLER = ROOT / "node_modules" / ".bin" / "wrangler"
COMMAND_TIMEOUT = 60  # seconds per wrangler command; one normally takes about 1 s
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = time.time()  # files wrangler touches after this were written by these tests

# Keys that need percent-encoding (wrangler uses encodeURIComponent, which also encodes ":"),
# or are not ASCII, or both.
SPECIAL_KEYS = [
    "a:b",
    "dir/sub/leaf",
    "with space",
    "100%",
    "q?x=1&y=2",
    "frag#ment",
    "ключ/日本語 😀",
    "a:b/c d%e?f#g ключ",
]


def wrangler_version() -> str:
    package = ROOT / "node_modules" / "wrangler" / "package.json"
    return str(json.loads(package.read_text())["version"])


@pytest.fixture(scope="module", autouse=True)
def wrangler_installed() -> None:
    """Skip the module when wrangler is not installed; under CI=true that is a failure."""
    if WRANGLER.exists() and shutil.which("node"):
        return
    reason = (
        f"wrangler is not installed ({WRANGLER.relative_to(ROOT)} or node missing): "
        "./dev test installs it with `npm ci` from package-lock.json"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# A stub npm registry on loopback: wrangler's update check goes here.


class RegistryStub:
    """An HTTP server that answers ``GET /wrangler`` like the npm registry and logs requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path))
                if self.path.rstrip("/") == "/wrangler":
                    latest = wrangler_version()
                    body = json.dumps({"name": "wrangler", "dist-tags": {"latest": latest}})
                    self._reply(200, body.encode())
                else:
                    self._reply(404, b"{}")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self) -> RegistryStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryStub]:
    with RegistryStub() as stub:
        yield stub


# Running wrangler.


@dataclass
class Result:
    """A finished wrangler command."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """stdout and stderr, without colour codes, for matching messages."""
        return ANSI.sub("", self.text + "\n" + self.stderr)

    def json(self) -> Any:
        """The JSON document stdout starts with (`kv bulk get` prints "Success!" after it)."""
        document, end = json.JSONDecoder().raw_decode(self.text.lstrip())
        assert self.text.lstrip()[end:].strip() in ("", "Success!"), self.describe()
        return document

    def describe(self) -> str:
        return f"wrangler {' '.join(self.args)} -> exit {self.returncode}\n{self.output}"


@dataclass
class Wrangler:
    """wrangler in a sandbox folder, pointed at one pullkv server."""

    server: ServerProcess
    sandbox: Path
    registry: str
    token: str | None = None  # None: the server's admin token
    discover_account: bool = False  # True: no CLOUDFLARE_ACCOUNT_ID

    def __post_init__(self) -> None:
        for name in ("cwd", "home/.config", "home/.cache", "home/.local/share", "tmp", "cache"):
            (self.sandbox / name).mkdir(parents=True, exist_ok=True)

    @property
    def cwd(self) -> Path:
        return self.sandbox / "cwd"

    @property
    def cache_dir(self) -> Path:
        return self.sandbox / "cache"

    def env(self) -> dict[str, str]:
        """The whole environment: nothing of the caller's but PATH (for node)."""
        home = self.sandbox / "home"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "TMPDIR": str(self.sandbox / "tmp"),  # the update check caches its answer here
            "WRANGLER_CACHE_DIR": str(self.cache_dir),  # else node_modules/.cache/wrangler
            "CLOUDFLARE_API_BASE_URL": self.server.api,
            "CLOUDFLARE_API_TOKEN": self.token or self.server.admin_token,
            "WRANGLER_SEND_METRICS": "false",
            "WRANGLER_SEND_ERROR_REPORTS": "false",
            "WRANGLER_HIDE_BANNER": "true",
            "DO_NOT_TRACK": "1",
            "npm_registry": self.registry,  # the update check's registry (read by `rc`)
            "FORCE_COLOR": "0",
        }
        if not self.discover_account:
            env["CLOUDFLARE_ACCOUNT_ID"] = self.server.account_id
        return env

    def run(self, *args: str, check: bool = True, wrap: Sequence[str] = ()) -> Result:
        """Run one command (bounded by COMMAND_TIMEOUT); ``check`` wants exit 0."""
        # bin/wrangler.js runs the CLI in a child node process: on a timeout, kill the group.
        process = subprocess.Popen(
            [*wrap, str(WRANGLER), *args],
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"wrangler {' '.join(args)} took over {COMMAND_TIMEOUT} s")
        result = Result(list(args), process.returncode, stdout, stderr.decode("utf-8", "replace"))
        if check:
            assert result.returncode == 0, result.describe()
        return result

    def run_many(self, commands: Sequence[Sequence[str]], check: bool = True) -> list[Result]:
        """Independent commands, a few at a time (wrangler spends most of a run starting)."""
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(lambda args: self.run(*args, check=check), commands))

    def kv(self, *args: str, namespace_id: str, check: bool = True) -> Result:
        """``wrangler kv <args> --namespace-id N --remote``."""
        return self.run("kv", *args, "--namespace-id", namespace_id, "--remote", check=check)


@pytest.fixture(scope="module")
def wrangler(
    server: ServerProcess, registry: RegistryStub, tmp_path_factory: pytest.TempPathFactory
) -> Wrangler:
    return Wrangler(server, tmp_path_factory.mktemp("wrangler"), registry.url)


# Checking through pullkv's own API.


def value_url(key: str) -> str:
    return f"values/{quote(key, safe='')}"


def api_value(http: httpx.Client, namespace_id: str, key: str) -> bytes | None:
    response = http.get(f"{namespace_id}/{value_url(key)}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.content


def api_keys(http: httpx.Client, namespace_id: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every key (name, expiration?, metadata?) under a prefix, following the cursor."""
    keys: list[dict[str, Any]] = []
    cursor = ""
    while True:
        params = {"prefix": prefix, "cursor": cursor} if cursor else {"prefix": prefix}
        body = http.get(f"{namespace_id}/keys", params=params).json()
        assert body["success"] is True, body
        keys += body["result"]
        cursor = body["result_info"]["cursor"]
        if not cursor:
            return keys


def api_bulk_put(http: httpx.Client, namespace_id: str, items: list[dict[str, Any]]) -> None:
    response = http.put(f"{namespace_id}/bulk", json=items)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["unsuccessful_keys"] == []


def requests_to(server: ServerProcess, route: str) -> int:
    """How many requests a REST route has served (from /metrics)."""
    return int(
        server.metric("pullkv_request_duration_seconds_count", server.admin_token, route=route)
    )


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# Namespaces (always remote).


def test_namespace_create_list_rename_delete(
    wrangler: Wrangler, http: httpx.Client, server: ServerProcess
) -> None:
    title = f"wr-{uuid.uuid4().hex[:10]}"
    created = wrangler.run("kv", "namespace", "create", title)
    match = re.search(r'"id": "([0-9a-f]{32})"', created.text)
    assert match, created.describe()
    namespace_id = match.group(1)
    assert http.get(namespace_id).json()["result"]["title"] == title

    preview = wrangler.run("kv", "namespace", "create", title, "--preview")
    match = re.search(r'"preview_id": "([0-9a-f]{32})"', preview.text)
    assert match, preview.describe()
    preview_id = match.group(1)
    assert http.get(preview_id).json()["result"]["title"] == f"{title}_preview"

    listing = wrangler.run("kv", "namespace", "list").json()
    by_id = {item["id"]: item for item in listing}
    assert by_id[namespace_id]["title"] == title
    assert by_id[preview_id]["title"] == f"{title}_preview"
    titles = [item["title"] for item in listing]
    assert titles == sorted(titles), "wrangler asks for order=title&direction=asc"

    renamed = f"{title}-renamé ✓"
    wrangler.run("kv", "namespace", "rename", "--namespace-id", namespace_id, "--new-name", renamed)
    assert http.get(namespace_id).json()["result"]["title"] == renamed
    # By name: wrangler lists namespaces to find the id.
    wrangler.run("kv", "namespace", "rename", f"{title}_preview", "--new-name", f"{title}-p2")
    assert http.get(preview_id).json()["result"]["title"] == f"{title}-p2"

    wrangler.run("kv", "namespace", "delete", f"{title}-p2", "--skip-confirmation")
    wrangler.run("kv", "namespace", "delete", "--namespace-id", namespace_id, "--skip-confirmation")
    for gone in (namespace_id, preview_id):
        assert http.get(gone).status_code == 404

    missing = wrangler.run(
        "kv", "namespace", "delete", "--namespace-id", namespace_id, "-y", check=False
    )
    assert missing.returncode != 0
    assert "namespace not found' [code: 10013]" in missing.output, missing.describe()


def test_namespace_create_duplicate_title_fails(wrangler: Wrangler, http: httpx.Client) -> None:
    title = f"wr-dup-{uuid.uuid4().hex[:10]}"
    wrangler.run("kv", "namespace", "create", title)
    again = wrangler.run("kv", "namespace", "create", title, check=False)
    assert again.returncode != 0
    assert f'A KV namespace with the title "{title}" already exists' in again.output, (
        again.describe()
    )
    titles = [n["title"] for n in http.get("", params={"per_page": 1000}).json()["result"]]
    assert titles.count(title) == 1


# Single keys.


def test_key_put_inline_value_and_get(
    wrangler: Wrangler, http: httpx.Client, namespace_id: str
) -> None:
    text = 'héllo wörld ✓ {"json": true}'
    wrangler.kv("key", "put", "greeting", text, namespace_id=namespace_id)
    assert api_value(http, namespace_id, "greeting") == text.encode()

    raw, decoded = wrangler.run_many(
        [
            ["kv", "key", "get", "greeting", "--namespace-id", namespace_id, "--remote"],
            ["kv", "key", "get", "greeting", "--namespace-id", namespace_id, "--remote", "--text"],
        ]
    )
    assert raw.stdout == text.encode(), "without --text the bytes go to stdout as they are"
    assert decoded.text == text + "\n"


def test_key_put_path_binary_round_trip(
    wrangler: Wrangler, http: httpx.Client, namespace_id: str, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 8 + os.urandom(2 * 1024 * 1024)  # every byte value, 2 MiB+
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    wrangler.run_many(
        [
            [
                "kv",
                "key",
                "put",
                key,
                "--path",
                str(path),
                "--namespace-id",
                namespace_id,
                "--remote",
            ]
            for key, path in (("blob", source), ("empty", empty))
        ]
    )
    assert api_value(http, namespace_id, "blob") == payload
    assert api_value(http, namespace_id, "empty") == b""

    blob, nothing = wrangler.run_many(
        [
            ["kv", "key", "get", key, "--namespace-id", namespace_id, "--remote"]
            for key in ("blob", "empty")
        ]
    )
    assert blob.stdout == payload
    assert nothing.stdout == b""


def test_key_put_metadata_ttl_expiration(
    wrangler: Wrangler, http: httpx.Client, namespace_id: str, tmp_path: Path
) -> None:
    now = int(time.time())
    at = now + 7200
    metadata = {"owner": "wrangler", "n": 1, "nested": {"ü": ["✓", None]}}
    binary = bytes(range(256)) + b"\r\n--boundary-like--\r\n" + os.urandom(4096)
    (tmp_path / "binary").write_bytes(binary)
    wrangler.run_many(
        [
            [*args, "--namespace-id", namespace_id, "--remote"]
            for args in (
                ["kv", "key", "put", "meta", "with metadata", "--metadata", json.dumps(metadata)],
                ["kv", "key", "put", "ttl", "short-lived", "--ttl", "600"],
                ["kv", "key", "put", "at", "until then", "--expiration", str(at)],
                ["kv", "key", "put", "both", "x", "--metadata", '{"a":1}', "--ttl", "900"],
                # A file with --metadata: multipart whose value part is binary.
                ["kv", "key", "put", "bin", "--path", str(tmp_path / "binary"), "--metadata", "{}"],
            )
        ]
    )
    keys = {k["name"]: k for k in api_keys(http, namespace_id)}
    assert set(keys) == {"meta", "ttl", "at", "both", "bin"}

    assert api_value(http, namespace_id, "meta") == b"with metadata"
    assert http.get(f"{namespace_id}/metadata/meta").json()["result"] == metadata
    assert keys["meta"]["metadata"] == metadata
    assert "expiration" not in keys["meta"]

    assert api_value(http, namespace_id, "ttl") == b"short-lived"
    assert now + 600 - 5 <= keys["ttl"]["expiration"] <= int(time.time()) + 600 + 5
    assert "metadata" not in keys["ttl"]

    assert api_value(http, namespace_id, "at") == b"until then"
    assert keys["at"]["expiration"] == at

    assert api_value(http, namespace_id, "both") == b"x"
    assert keys["both"]["metadata"] == {"a": 1}
    assert now + 900 - 5 <= keys["both"]["expiration"] <= int(time.time()) + 900 + 5

    assert api_value(http, namespace_id, "bin") == binary
    assert keys["bin"]["metadata"] == {}

    listed = {k["name"]: k for k in wrangler.kv("key", "list", namespace_id=namespace_id).json()}
    assert listed == keys


def test_key_commands_with_a_config_binding(
    wrangler: Wrangler, http: httpx.Client, namespace_id: str, tmp_path: Path
) -> None:
    # --binding resolves the namespace from a wrangler config file: "id", or "preview_id"
    # with --preview.
    preview = http.post("", json={"title": f"wr-preview-{uuid.uuid4().hex[:10]}"})
    preview_id = preview.json()["result"]["id"]
    config = write_json(
        tmp_path / "wrangler.json",
        {
            "name": "pullkv-compat",
            "kv_namespaces": [{"binding": "CACHE", "id": namespace_id, "preview_id": preview_id}],
        },
    )
    common = ["--binding", "CACHE", "--config", str(config), "--remote"]
    wrangler.run_many(
        [
            ["kv", "key", "put", "where", "production", *common, "--preview", "false"],
            ["kv", "key", "put", "where", "preview", *common, "--preview"],
        ]
    )
    assert api_value(http, namespace_id, "where") == b"production"
    assert api_value(http, preview_id, "where") == b"preview"
    got = wrangler.run("kv", "key", "get", "where", *common, "--preview")
    assert got.stdout == b"preview"


def test_key_get_missing_key_fails(wrangler: Wrangler, namespace_id: str) -> None:
    missing = wrangler.kv("key", "get", "no-such-key", namespace_id=namespace_id, check=False)
    assert missing.returncode != 0
    assert "If you think this is a bug" in missing.text, "no value, only wrangler's hint"
    assert "404: Not Found" in missing.output, missing.describe()


def test_dot_dot_key_never_reads_or_writes_the_namespace(
    wrangler: Wrangler, http: httpx.Client, namespace_id: str
) -> None:
    # URL parsing turns ".../values/.." into ".../namespaces/{id}/": that must not be served
    # as a value, nor accept a write.
    got, put = wrangler.run_many(
        [
            ["kv", "key", "get", "..", "--namespace-id", namespace_id, "--remote"],
            ["kv", "key", "put", "..", "v", "--namespace-id", namespace_id, "--remote"],
        ],
        check=False,
    )
    assert got.returncode != 0, got.describe()
    assert b"success" not in got.stdout and namespace_id.encode() not in got.stdout
    assert put.returncode != 0, put.describe()
    assert "[code: 7000]" in put.output, put.describe()
    assert api_keys(http, namespace_id) == []


def test_special_keys_round_trip(wrangler: Wrangler, http: httpx.Client, namespace_id: str) -> None:
    values = {key: f"value of {key}" for key in SPECIAL_KEYS}
    wrangler.run_many(
        [
            ["kv", "key", "put", key, value, "--namespace-id", namespace_id, "--remote"]
            for key, value in values.items()
        ]
    )
    names = [k["name"] for k in api_keys(http, namespace_id)]
    assert sorted(names) == sorted(SPECIAL_KEYS)
    for key, value in values.items():
        assert api_value(http, namespace_id, key) == value.encode(), key

    got = wrangler.run_many(
        [
            ["kv", "key", "get", key, "--namespace-id", namespace_id, "--remote"]
            for key in SPECIAL_KEYS
        ]
    )
    assert {key: r.text for key, r in zip(SPECIAL_KEYS, got, strict=True)} == values

    listed = [k["name"] for k in wrangler.kv("key", "list", namespace_id=namespace_id).json()]
    assert listed == sorted(SPECIAL_KEYS, key=lambda k: k.encode())
    prefixed = wrangler.kv("key", "list", "--prefix", "a:b/", namespace_id=namespace_id).json()
    assert [k["name"] for k in prefixed] == ["a:b/c d%e?f#g ключ"]

    doomed = ["a:b/c d%e?f#g ключ", "ключ/日本語 😀", "100%"]
    wrangler.run_many(
        [["kv", "key", "delete", key, "--namespace-id", namespace_id, "--remote"] for key in doomed]
    )
    left = {k["name"] for k in api_keys(http, namespace_id)}
    assert left == set(SPECIAL_KEYS) - set(doomed)


def test_key_list_follows_cursor_and_prefix(
    wrangler: Wrangler, http: httpx.Client, server: ServerProcess, namespace_id: str
) -> None:
    expiration = int(time.time()) + 3600
    many = [{"key": f"many/{i:05d}", "value": str(i)} for i in range(2345)]
    few: list[dict[str, Any]] = [
        {"key": "other/a", "value": "a", "metadata": {"i": 1}},
        {"key": "other/b", "value": "b", "expiration": expiration},
    ]
    api_bulk_put(http, namespace_id, many + few)

    before = requests_to(server, "list_keys")
    everything = wrangler.kv("key", "list", namespace_id=namespace_id).json()
    assert requests_to(server, "list_keys") - before == 3, "1,000 keys a page: three pages"
    assert [k["name"] for k in everything] == [i["key"] for i in many + few]
    assert everything[-2:] == [
        {"name": "other/a", "metadata": {"i": 1}},
        {"name": "other/b", "expiration": expiration},
    ]

    prefixed = wrangler.kv("key", "list", "--prefix", "other/", namespace_id=namespace_id)
    assert [k["name"] for k in prefixed.json()] == ["other/a", "other/b"]
    none = wrangler.kv("key", "list", "--prefix", "nothing-here", namespace_id=namespace_id)
    assert none.json() == []


def test_key_delete(wrangler: Wrangler, http: httpx.Client, namespace_id: str) -> None:
    api_bulk_put(http, namespace_id, [{"key": "gone", "value": "1"}, {"key": "kept", "value": "2"}])
    wrangler.run_many(
        [
            ["kv", "key", "delete", key, "--namespace-id", namespace_id, "--remote"]
            for key in ("gone", "never-existed")
        ]
    )
    assert [k["name"] for k in api_keys(http, namespace_id)] == ["kept"]
    assert api_value(http, namespace_id, "gone") is None


def test_writes_of_a_key_being_written_succeed(
    wrangler: Wrangler, server: ServerProcess, namespace_id: str
) -> None:
    # No same-key write rate by default: while the API writes the key every 50 ms (Workers
    # KV, or --same-key-write-rate 1, would answer 429), wrangler's put and delete succeed.
    stop = threading.Event()
    statuses: list[int] = []

    def keep_writing() -> None:
        with httpx.Client(base_url=server.namespaces_url, headers=server.headers()) as c:
            while not stop.is_set():
                statuses.append(c.put(f"{namespace_id}/values/busy", content=b"api").status_code)
                stop.wait(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        wrangler.kv("key", "put", "busy", "wrangler", namespace_id=namespace_id)
        wrangler.kv("key", "delete", "busy", namespace_id=namespace_id)
    finally:
        stop.set()
        writer.join()
    assert len(statuses) > 2 and set(statuses) == {200}


# Bulk.


def test_bulk_put_batches_base64_metadata_ttl(
    wrangler: Wrangler,
    http: httpx.Client,
    server: ServerProcess,
    namespace_id: str,
    tmp_path: Path,
) -> None:
    now = int(time.time())
    binary = bytes(range(256)) + os.urandom(1000)
    plain = [{"key": f"bulk/{i:05d}", "value": f"value {i}"} for i in range(2400)]
    special = [{"key": key, "value": f"special {key}"} for key in SPECIAL_KEYS]
    extra: list[dict[str, Any]] = [
        {"key": "b64", "value": base64.b64encode(binary).decode(), "base64": True},
        {"key": "meta", "value": "m", "metadata": {"tags": ["x", "ü"], "n": 2}},
        {"key": "ttl", "value": "t", "expiration_ttl": 300},
        {"key": "at", "value": "e", "expiration": now + 5000, "metadata": {"at": True}},
    ]
    items = plain + special + extra
    before = requests_to(server, "bulk_put")
    result = wrangler.kv(
        "bulk", "put", str(write_json(tmp_path / "put.json", items)), namespace_id=namespace_id
    )
    assert requests_to(server, "bulk_put") - before == 3, "wrangler sends 1,000 items a batch"
    assert "Success!" in result.output

    keys = {k["name"]: k for k in api_keys(http, namespace_id)}
    assert set(keys) == {item["key"] for item in items}
    for item in plain[::397] + plain[-1:] + special:
        assert api_value(http, namespace_id, item["key"]) == item["value"].encode()
    assert api_value(http, namespace_id, "b64") == binary
    assert keys["meta"]["metadata"] == {"tags": ["x", "ü"], "n": 2}
    assert now + 300 - 5 <= keys["ttl"]["expiration"] <= int(time.time()) + 300 + 5
    assert keys["at"] == {"name": "at", "expiration": now + 5000, "metadata": {"at": True}}
    assert "expiration" not in keys["bulk/00000"] and "metadata" not in keys["bulk/00000"]


def test_bulk_get(
    wrangler: Wrangler, http: httpx.Client, namespace_id: str, tmp_path: Path
) -> None:
    api_bulk_put(
        http,
        namespace_id,
        [{"key": "text", "value": "plain ✓"}, {"key": "json", "value": '{"a": [1, 2]}'}]
        + [{"key": key, "value": f"special {key}"} for key in SPECIAL_KEYS],
    )
    # Key names as strings, or objects with a "name" (the output of `kv key list`).
    wanted: list[Any] = ["text", {"name": "json"}, "missing", *SPECIAL_KEYS]
    got = wrangler.kv(
        "bulk", "get", str(write_json(tmp_path / "get.json", wanted)), namespace_id=namespace_id
    ).json()
    assert got == {
        "text": "plain ✓",
        "json": '{"a": [1, 2]}',
        "missing": None,
        **{key: f"special {key}" for key in SPECIAL_KEYS},
    }


def test_bulk_get_over_100_keys_is_refused_cleanly(
    wrangler: Wrangler, namespace_id: str, tmp_path: Path
) -> None:
    # wrangler sends every key in one request; Workers KV allows 100, and so does pullkv.
    keys = [f"k{i}" for i in range(101)]
    result = wrangler.kv(
        "bulk",
        "get",
        str(write_json(tmp_path / "get.json", keys)),
        namespace_id=namespace_id,
        check=False,
    )
    assert result.returncode != 0
    assert "maximum of 100 keys [code: 10029]" in result.output, result.describe()


def test_bulk_delete_force_batches(
    wrangler: Wrangler,
    http: httpx.Client,
    server: ServerProcess,
    namespace_id: str,
    tmp_path: Path,
) -> None:
    items = [{"key": f"del/{i:05d}", "value": "x"} for i in range(1500)]
    items += [{"key": key, "value": "x"} for key in SPECIAL_KEYS]
    items += [{"key": "survivor", "value": "still here"}]
    api_bulk_put(http, namespace_id, items)

    # Strings and {"name"} objects may be mixed; a missing key is no error.
    doomed: list[Any] = [f"del/{i:05d}" for i in range(1500)]
    doomed += [{"name": key} for key in SPECIAL_KEYS] + ["never-existed"]
    before = requests_to(server, "bulk_delete")
    result = wrangler.kv(
        "bulk",
        "delete",
        str(write_json(tmp_path / "delete.json", doomed)),
        "--force",
        namespace_id=namespace_id,
    )
    assert requests_to(server, "bulk_delete") - before == 2, "1,000 keys a batch"
    assert "Success!" in result.output
    assert api_keys(http, namespace_id) == [{"name": "survivor"}]
    assert api_value(http, namespace_id, "survivor") == b"still here"


# Errors, account discovery, and staying on loopback.


def test_bad_token_reports_authentication_error(
    server: ServerProcess, registry: RegistryStub, tmp_path: Path, namespace_id: str
) -> None:
    intruder = Wrangler(server, tmp_path, registry.url, token="pkv_not_a_real_token")
    result = intruder.kv("key", "list", namespace_id=namespace_id, check=False)
    assert result.returncode != 0
    assert "Authentication error [code: 10000]" in result.output, result.describe()


def test_account_discovery_without_account_id(
    server: ServerProcess,
    registry: RegistryStub,
    tmp_path: Path,
    namespace_id: str,
    http: httpx.Client,
) -> None:
    # No CLOUDFLARE_ACCOUNT_ID: wrangler asks /memberships and /accounts, then caches the id
    # in WRANGLER_CACHE_DIR (never in the repository's node_modules/.cache).
    api_bulk_put(http, namespace_id, [{"key": "found", "value": "1"}])
    discovering = Wrangler(server, tmp_path, registry.url, discover_account=True)
    listed = discovering.kv("key", "list", namespace_id=namespace_id).json()
    assert listed == [{"name": "found"}]
    cached = json.loads((discovering.cache_dir / "wrangler-account.json").read_text())
    assert cached["account"]["id"] == server.account_id


def test_update_check_goes_to_the_loopback_registry(
    server: ServerProcess, registry: RegistryStub, tmp_path: Path, namespace_id: str
) -> None:
    # A failing command runs the update check even with the banner hidden; with a fresh
    # TMPDIR there is no cached answer, so the request must arrive at the stub.
    fresh = Wrangler(server, tmp_path, registry.url)
    registry.requests.clear()
    result = fresh.kv("key", "get", "missing", namespace_id=namespace_id, check=False)
    assert result.returncode != 0
    assert ("GET", "/wrangler") in registry.requests, registry.requests


def connect_targets(trace: str) -> list[tuple[str, int]]:
    """(address, port) of every IPv4/IPv6 connect() in an ``strace -e trace=connect`` log."""
    targets = []
    for line in trace.splitlines():
        if "connect(" not in line:
            continue
        port = re.search(r"sin6?_port=htons\((\d+)\)", line)
        v4 = re.search(r'sin_addr=inet_addr\("([^"]+)"\)', line)
        v6 = re.search(r'inet_pton\(AF_INET6, "([^"]+)"', line)
        address = v4.group(1) if v4 else v6.group(1) if v6 else None
        if address is not None and port is not None:
            targets.append((address, int(port.group(1))))
        elif "AF_UNIX" not in line and "sa_family=" in line:
            targets.append((line, 0))  # an unexpected family: reported as a failure
    return targets


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def test_no_connection_leaves_loopback(
    server: ServerProcess, registry: RegistryStub, tmp_path: Path, namespace_id: str
) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip(
            "strace is not installed; test_update_check_goes_to_the_loopback_registry "
            "covers the update check"
        )
    traced = Wrangler(server, tmp_path, registry.url)
    log = tmp_path / "connect.trace"
    wrap = [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(log)]
    put = traced.run(
        "kv", "key", "put", "k", "v", "--namespace-id", namespace_id, "--remote", wrap=wrap
    )
    assert put.returncode == 0, put.describe()
    trace = log.read_text()
    failed = traced.run(
        "kv",
        "key",
        "get",
        "missing",
        "--namespace-id",
        namespace_id,
        "--remote",
        wrap=wrap,
        check=False,
    )
    assert failed.returncode != 0
    trace += log.read_text()
    targets = connect_targets(trace)
    registry_port = int(registry.url.rsplit(":", 1)[1].strip("/"))
    assert (("127.0.0.1", server.port)) in targets, trace
    assert ("127.0.0.1", registry_port) in targets, trace
    assert [t for t in targets if not is_loopback(t[0])] == [], trace


def test_wrangler_state_stays_in_the_sandbox(wrangler: Wrangler) -> None:
    # Runs last in the module: by now every command above has run in this sandbox.
    assert (wrangler.cache_dir / "wrangler-account.json").exists()
    assert list(wrangler.cwd.iterdir()) == [], "wrangler wrote into its working folder"
    repo_cache = ROOT / "node_modules" / ".cache" / "wrangler"
    if repo_cache.exists():
        stale = [p for p in repo_cache.iterdir() if p.stat().st_mtime > STARTED]
        assert stale == [], "wrangler wrote into the repository's node_modules/.cache"


def test_whoami(wrangler: Wrangler, server: ServerProcess) -> None:
    result = wrangler.run("whoami")
    assert server.account_id in result.output, result.describe()
    assert "pullkv.invalid" in result.output, result.describe()
