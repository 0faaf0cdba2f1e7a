"""pullkv's HTTP server attacked with raw sockets, against real ``pullkv serve`` processes.

Bounded memory (non-reading pipelined clients, the send timeout, request bodies over the
limit, the connection limit), HEAD on every path, header bytes that workerd sends (DEL and
UTF-8 in ``CF-KV-Metadata``), and regressions for what already held: smuggling variants,
oversized heads and slowloris.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

MIB = 1024 * 1024
BIG = 4 * MIB  # one maximal response of the pipelining attack
HEADER_TIMEOUT = 20.0  # HttpConfig.header_timeout, the default every server runs with


# Raw HTTP/1.1 over a socket.


class Conn:
    """A raw client connection that reads HTTP/1.1 responses."""

    def __init__(self, port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # A small receive window: the server's output backs up after a few KiB.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head: bool = False) -> tuple[int, dict[bytes, bytes], bytes, bytes]:
        """(status, headers, body, status line) of the next response."""
        line = self.file.readline()
        assert line, "connection closed before a response"
        headers: dict[bytes, bytes] = {}
        while True:
            header = self.file.readline()
            if header in (b"\r\n", b""):
                break
            name, _, value = header.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if head:
            body = b""
        elif b"content-length" in headers:
            body = self.file.read(int(headers[b"content-length"]))
        else:
            body = self.file.read()
        return int(line.split()[1]), headers, body, line.rstrip(b"\r\n")

    def closed(self) -> bool:
        """Whether the server ends the connection (EOF or reset) within the timeout."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: pullkv"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def vm_rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


# Servers: one for most tests, and one each for the send timeout and the connection limit.


class Node:
    """A ``pullkv serve`` process with a namespace and its admin token."""

    def __init__(self, proc: ServerProcess) -> None:
        self.proc = proc
        self.token = proc.admin_token
        self.auth = {"Authorization": f"Bearer {self.token}"}
        response = httpx.post(
            proc.namespaces_url, headers=self.auth, json={"title": f"adv-{uuid.uuid4().hex}"}
        )
        response.raise_for_status()
        self.namespace = response.json()["result"]["id"]

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def pid(self) -> int:
        assert self.proc.process is not None
        return self.proc.process.pid

    def path(self, key: str) -> str:
        """The REST value path of a key."""
        prefix = self.proc.namespaces_url.removeprefix(self.proc.url)
        return f"{prefix}/{self.namespace}/values/{key}"

    def binding(self) -> dict[str, str]:
        """The headers workerd's external-server settings add to binding requests."""
        return {**self.auth, "X-PullKV-Namespace": self.namespace}

    def put(self, key: str, value: bytes) -> None:
        response = httpx.put(f"{self.proc.url}{self.path(key)}", headers=self.auth, content=value)
        assert response.status_code == 200, response.text

    def hot_responses(self) -> float:
        return self.proc.metric("pullkv_hot_responses_total", self.token)


def start(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str) -> ServerProcess:
    data = Path(tmp_path_factory.mktemp(name)) / "data"
    return ServerProcess(data, args=["--min-expiration-ttl", "1", *args]).start()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    proc = start(tmp_path_factory, "adversarial")
    try:
        yield Node(proc)
    finally:
        proc.stop()


@pytest.fixture
def conn(node: Node) -> Iterator[Conn]:
    client = Conn(node.port)
    yield client
    client.close()


def make_hot(node: Node, key: str, value: bytes) -> None:
    """Write a value and read it until the fast path answers it."""
    node.put(key, value)
    url = f"{node.proc.url}{node.path(key)}"
    for _ in range(2):
        assert httpx.get(url, headers=node.auth).content == value
    before = node.hot_responses()
    assert httpx.get(url, headers=node.auth).content == value
    assert node.hot_responses() == before + 1, "the value is not served on the fast path"


# 2. Bounded memory.


def test_non_reading_pipelined_clients_do_not_grow_the_process(node: Node) -> None:
    value = os.urandom(BIG)
    make_hot(node, "big", value)
    one = request("GET", node.path("big"), node.auth)
    # The same pipelined burst once, read in full: whatever it allocates for good is
    # in the baseline.
    warm = Conn(node.port)
    warm.send(one * 16)
    for _ in range(16):
        assert warm.response()[2] == value
    warm.close()
    time.sleep(0.5)
    baseline = vm_rss(node.pid)
    attackers = [Conn(node.port, rcvbuf=16 * 1024) for _ in range(8)]
    try:
        for attacker in attackers:
            attacker.send(one * 16)
        peak = baseline
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, vm_rss(node.pid))
            time.sleep(0.1)
    finally:
        for attacker in attackers:
            attacker.close()
    growth = peak - baseline
    print(
        f"RSS baseline {baseline / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB, growth "
        f"{growth / MIB:.1f} MiB under 8 x 16 pipelined GETs of {BIG // MIB} MiB"
    )
    assert growth <= 4 * BIG, f"grew by {growth / MIB:.1f} MiB"
    # The server still answers, and the abandoned connections' requests left no trace.
    assert httpx.get(f"{node.proc.url}{node.path('big')}", headers=node.auth).content == value


def test_pipelined_answers_stay_in_order_when_output_backs_up(node: Node) -> None:
    value = os.urandom(256 * 1024)
    make_hot(node, "ordered", value)
    good = request("GET", node.path("ordered"), node.auth)
    missing = request("GET", node.path("absent-" + uuid.uuid4().hex), node.auth)
    keys = request("GET", node.path("").removesuffix("/values/") + "/keys", node.auth)
    client = Conn(node.port, rcvbuf=16 * 1024)
    try:
        client.send(
            good + missing + good + keys + request("HEAD", node.path("ordered"), node.auth) + good
        )
        time.sleep(0.5)  # output backs up behind the first answer before anything is read
        assert client.response()[2] == value
        assert client.response()[0] == 404
        assert client.response()[2] == value
        status, _, body, _ = client.response()
        assert status == 200 and json.loads(body)["success"] is True
        status, headers, _, _ = client.response(head=True)
        assert status == 200 and int(headers[b"content-length"]) == len(value)
        assert client.response()[2] == value
    finally:
        client.close()


def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proc = start(tmp_path_factory, "send-timeout", "--send-timeout", "1")
    try:
        node = Node(proc)
        value = os.urandom(BIG)
        make_hot(node, "big", value)
        client = Conn(node.port, timeout=15, rcvbuf=16 * 1024)
        try:
            client.send(request("GET", node.path("big"), node.auth))
            time.sleep(4)  # the timeout, a tick, and margin for a busy machine
            received = 0
            try:
                while chunk := client.sock.recv(MIB):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            # The connection ended before the response did.
            assert received < BIG
        finally:
            client.close()
        assert "--send-timeout" in proc.log()
        assert httpx.get(f"{proc.url}/healthz").status_code == 200
    finally:
        proc.stop()


def test_connections_past_the_limit_get_a_fast_503(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proc = start(tmp_path_factory, "max-connections", "--max-connections", "5")
    held = [Conn(proc.port) for _ in range(5)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        extra = Conn(proc.port)
        try:
            extra.send(request("GET", "/healthz"))
            status, headers, body, _ = extra.response()
            elapsed = time.monotonic() - started
            assert status == 503
            assert headers[b"connection"] == b"close"
            envelope = json.loads(body)
            assert envelope["success"] is False
            assert "--max-connections" in envelope["errors"][0]["message"]
            assert extra.closed()
            assert elapsed < 2
        finally:
            extra.close()
        # A place freed is a place taken.
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            try:
                if httpx.get(f"{proc.url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no connection accepted after one closed"
            time.sleep(0.1)
    finally:
        for client in held:
            client.close()
        proc.stop()


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(
    node: Node, conn: Conn
) -> None:
    conn.send(
        request("PUT", node.path("too-big"), {**node.auth, "Content-Length": str(30 * MIB)})
        + b"x" * 65536
    )
    status, headers, body, _ = conn.response()
    assert status == 413
    assert headers[b"connection"] == b"close"
    assert json.loads(body)["errors"][0]["code"] == 10025
    assert conn.closed()


def _send_endlessly(conn: Conn, head: bytes, budget: int) -> tuple[int, int]:
    """Send a chunked body until the server answers or ends the connection; returns
    (bytes of body sent, status of the answer or 0 if none came)."""
    conn.send(head)
    chunk = b"%x\r\n%s\r\n" % (65536, b"v" * 65536)
    sent = 0
    while sent < budget:
        readable, _, _ = select.select([conn.sock], [], [], 0)
        if readable:
            break
        try:
            conn.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 65536
    try:
        return sent, conn.response()[0]
    except (AssertionError, ConnectionResetError):
        return sent, 0


def test_an_endless_chunked_body_is_refused_once_past_the_limit(node: Node, conn: Conn) -> None:
    head = request("PUT", node.path("endless"), {**node.auth, "Transfer-Encoding": "chunked"})
    sent, status = _send_endlessly(conn, head, budget=200 * MIB)
    assert status == 413
    assert sent < 40 * MIB  # refused at the 25 MiB limit, not at the end of the budget
    assert conn.closed()


def test_an_endless_chunked_json_body_is_refused(node: Node, conn: Conn) -> None:
    target = node.path("").removesuffix("/values/") + "/bulk/get"
    head = request("POST", target, {**node.auth, "Transfer-Encoding": "chunked"})
    sent, status = _send_endlessly(conn, head, budget=64 * MIB)
    assert status == 413
    assert sent < 8 * MIB
    assert conn.closed()


def test_an_endless_chunked_binding_put_is_refused(node: Node, conn: Conn) -> None:
    head = request(
        "PUT", "/endless?urlencoded=true", {**node.binding(), "Transfer-Encoding": "chunked"}
    )
    sent, status = _send_endlessly(conn, head, budget=200 * MIB)
    assert status == 413
    assert sent < 40 * MIB


# 6. HEAD on every path.


def test_head_answers_like_get_without_a_body(node: Node) -> None:
    value = b"head-value"
    make_hot(node, "head-hot", value)
    node.put("head-cold", value)
    absent = "absent-" + uuid.uuid4().hex
    keys = node.path("").removesuffix("/values/") + "/keys"
    client = Conn(node.port)
    try:
        # Hot, then cold (missing, present), then queued behind a slower request.
        for key, status in (("head-hot", 200), (absent, 404), ("head-cold", 200)):
            client.send(request("HEAD", node.path(key), node.auth))
            got, headers, _, _ = client.response(head=True)
            assert got == status, key
            if status == 200:
                assert int(headers[b"content-length"]) == len(value)
        client.send(
            request("GET", keys, node.auth)
            + request("HEAD", node.path("head-hot"), node.auth)
            + request("HEAD", node.path(absent), node.auth)
            + request("HEAD", keys, node.auth)
            + request("GET", node.path("head-hot"), node.auth)
        )
        assert client.response()[0] == 200
        assert client.response(head=True)[0] == 200
        assert client.response(head=True)[0] == 404
        assert client.response(head=True)[0] == 200
        # Had any HEAD answer carried a body, this would not parse as the value.
        status, _, body, _ = client.response()
        assert (status, body) == (200, value)
    finally:
        client.close()


def test_head_on_binding_routes(node: Node) -> None:
    value = b"bound"
    node.put("bind-head", value)
    client = Conn(node.port)
    try:
        for _ in range(3):  # the later ones hot
            client.send(request("HEAD", "/bind-head?urlencoded=true", node.binding()))
            status, headers, _, _ = client.response(head=True)
            assert status == 200 and int(headers[b"content-length"]) == len(value)
        client.send(
            request("GET", "/?key_count_limit=10", node.binding())
            + request("HEAD", "/bind-head?urlencoded=true", node.binding())
            + request("HEAD", "/nope-" + uuid.uuid4().hex + "?urlencoded=true", node.binding())
            + request("HEAD", "/?key_count_limit=10", node.binding())
            + request("GET", "/bind-head?urlencoded=true", node.binding())
        )
        assert client.response()[0] == 200
        assert client.response(head=True)[0] == 200
        assert client.response(head=True)[0] == 404
        assert client.response(head=True)[0] == 200
        assert client.response()[2] == value
    finally:
        client.close()


# 6. Header bytes workerd sends.


@pytest.mark.parametrize(
    "metadata",
    [
        {"text": "a\x7fb"},
        {"text": "caf\u00e9 \u2603 \U0001f600", "n": 1},
        {"both": "\x7f\u00e9\x7f", "nested": ["\x7f", {"k": "\u00ff"}]},
        "\x7f",
    ],
)
def test_metadata_round_trips_through_the_binding(node: Node, metadata: object) -> None:
    # JSON.stringify's output: DEL and non-ASCII characters left as they are, in UTF-8.
    raw = json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()
    key = "meta-" + uuid.uuid4().hex
    head = request("PUT", f"/{key}?urlencoded=true", node.binding(), b"v").replace(
        b"\r\n\r\n", b"\r\nCF-KV-Metadata: " + raw + b"\r\n\r\n", 1
    )
    client = Conn(node.port)
    try:
        client.send(head)
        status, _, _, line = client.response()
        assert status == 200, line
        for _ in range(3):  # ordinary path, then hot
            client.send(request("GET", f"/{key}?urlencoded=true", node.binding()))
            status, headers, body, _ = client.response()
            assert (status, body) == (200, b"v")
            assert json.loads(headers[b"cf-kv-metadata"]) == metadata
            assert b"\x7f" not in headers[b"cf-kv-metadata"]  # escaped: strict clients accept
    finally:
        client.close()
    # The REST API, through a strict client, says the same.
    url = f"{node.proc.url}{node.path(key)}".replace("/values/", "/metadata/")
    assert httpx.get(url, headers=node.auth).json()["result"] == metadata


def test_metadata_with_del_behind_a_pipelined_put(node: Node, conn: Conn) -> None:
    raw = b'{"x":"\x7f"}'
    put = request("PUT", "/del-a?urlencoded=true", node.binding(), b"v\x7fv")
    put_meta = request("PUT", "/del-b?urlencoded=true", node.binding(), b"w").replace(
        b"\r\n\r\n", b"\r\nCF-KV-Metadata: " + raw + b"\r\n\r\n", 1
    )
    conn.send(put + put_meta)
    assert conn.response()[0] == 200
    assert conn.response()[0] == 200
    conn.send(request("GET", "/del-a?urlencoded=true", node.binding()))
    assert conn.response()[2] == b"v\x7fv"
    conn.send(request("GET", "/del-b?urlencoded=true", node.binding()))
    assert json.loads(conn.response()[1][b"cf-kv-metadata"]) == {"x": "\x7f"}


@pytest.mark.parametrize("bad", [b"a\x00b", b"a\rb", b"a\x01b", b"a\x1bb"])
def test_control_bytes_in_header_values_are_still_refused(
    node: Node, conn: Conn, bad: bytes
) -> None:
    conn.send(
        b"GET /k?urlencoded=true HTTP/1.1\r\nHost: pullkv\r\nCF-KV-Metadata: "
        + bad
        + b"\x7f\r\n\r\n"
    )
    assert conn.response()[0] == 400
    assert conn.closed()


def test_del_outside_header_values_is_still_refused(node: Node) -> None:
    for raw in (
        b"GET /a\x7fb HTTP/1.1\r\nHost: pullkv\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: pullkv\r\nX-A\x7f: b\r\n\r\n",
    ):
        client = Conn(node.port)
        try:
            client.send(raw)
            assert client.response()[0] == 400, raw
        finally:
            client.close()


# Regressions: what held up when the server was first attacked.


@pytest.mark.parametrize(
    "raw",
    [
        # CL + TE
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        # TE + CL
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n0\r\n\r\n",
        # duplicate CL, different and equal values
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        # obs-fold
        b"GET /healthz HTTP/1.1\r\nHost: p\r\nX-A: b\r\n c\r\n\r\n",
        # a space before the colon
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        # chunked, then another coding
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        # bare LF and bare CR line ends
        b"GET /healthz HTTP/1.1\nHost: p\n\n",
        b"GET /healthz HTTP/1.1\r\nHost: p\rX: y\r\n\r\n",
        # a signed or non-numeric length
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nContent-Length: +4\r\n\r\nabcd",
        b"POST /healthz HTTP/1.1\r\nHost: p\r\nContent-Length: 0x4\r\n\r\nabcd",
    ],
)
def test_smuggling_variants_are_refused(node: Node, conn: Conn, raw: bytes) -> None:
    conn.send(raw)
    status, headers, _, _ = conn.response()
    assert status == 400
    assert headers[b"connection"] == b"close"
    assert conn.closed()


def test_oversized_heads_are_refused(node: Node) -> None:
    cases = [
        (request("GET", "/healthz", {"X-Big": "a" * 100_000}), 431),
        (request("GET", "/healthz", {f"X-{i}": "v" for i in range(300)}), 431),
        (request("GET", "/" + "a" * 100_000), 414),
    ]
    for raw, status in cases:
        client = Conn(node.port)
        try:
            client.send(raw)
            assert client.response()[0] == status
            assert client.closed()
        finally:
            client.close()


def test_slowloris_is_cut_off_at_the_head_timeout(node: Node) -> None:
    """A head trickled in a byte at a time gets 408 once the head timeout has passed."""
    client = Conn(node.port, timeout=HEADER_TIMEOUT + 15)
    try:
        started = time.monotonic()
        head = request("GET", node.path("slow"), {**node.auth, "X-Pad": "p" * 1000})
        ended = False
        for byte in head[:-2]:
            try:
                client.sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                ended = True
                break
            readable, _, _ = select.select([client.sock], [], [], 0.25)
            if readable:
                break
            assert time.monotonic() - started < HEADER_TIMEOUT + 10, "never cut off"
        elapsed = time.monotonic() - started
        if not ended:
            assert client.response()[0] == 408
        assert HEADER_TIMEOUT - 1 <= elapsed <= HEADER_TIMEOUT + 10
    finally:
        client.close()
