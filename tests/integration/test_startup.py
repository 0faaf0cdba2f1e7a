"""Bad state at start fails clearly and changes nothing; the CLI never prints a traceback
for an expected failure (a server that is not there, a rejected token, a TLS mismatch)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ACCOUNT_ID, EdgeProcess, ServerProcess, free_port


def pullkv(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (a server start that should fail, or a client command)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PULLKV_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pullkv", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def serve_args(data: Path) -> list[str]:
    return ["serve", "--data", str(data), "--port", str(free_port()), "--account-id", ACCOUNT_ID]


def assert_one_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("running")) / "data").start()
    yield proc
    proc.stop()


def test_second_server_on_a_data_folder_is_refused(running: ServerProcess) -> None:
    assert running.process is not None
    before = sorted(p.name for p in running.data_dir.iterdir())
    result = pullkv(*serve_args(running.data_dir))
    assert_one_clean_error(result, f"in use by pid {running.process.pid}", str(running.data_dir))
    assert sorted(p.name for p in running.data_dir.iterdir()) == before
    assert httpx.get(f"{running.url}/healthz").status_code == 200


def _stopped_store(tmp_path: Path) -> ServerProcess:
    proc = ServerProcess(tmp_path / "data").start()
    proc.stop()
    return proc


def test_store_without_its_master_key_is_refused_and_no_key_is_made(tmp_path: Path) -> None:
    proc = _stopped_store(tmp_path)
    (proc.data_dir / "master.key").unlink()
    result = pullkv(*serve_args(proc.data_dir))
    assert_one_clean_error(result, "master.key is missing", "PULLKV_MASTER_KEY")
    assert not (proc.data_dir / "master.key").exists()


def test_store_with_an_emptied_master_key_is_refused(tmp_path: Path) -> None:
    proc = _stopped_store(tmp_path)
    (proc.data_dir / "master.key").write_text("")
    result = pullkv(*serve_args(proc.data_dir))
    assert_one_clean_error(result, "is empty", "restore master.key")
    assert (proc.data_dir / "master.key").read_text() == ""


def test_lost_admin_token_file_keeps_the_token_and_says_what_to_do(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    token = proc.admin_token
    proc.stop()
    (proc.data_dir / "admin-token").unlink()
    restarted = ServerProcess(proc.data_dir).start()
    try:
        assert not (proc.data_dir / "admin-token").exists()  # not silently replaced
        log = restarted.log()
        assert "was not revoked" in log
        assert "pullkv token create --admin" in log
        response = httpx.get(restarted.namespaces_url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text  # the operator's token still works
    finally:
        restarted.stop()


def test_corrupt_store_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "pullkv.sqlite3").write_bytes(os.urandom(8192))
    result = pullkv(*serve_args(data))
    assert_one_clean_error(result, str(data / "pullkv.sqlite3"), "pullkv store backup")
    assert not (data / "master.key").exists()


def test_impossible_data_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = pullkv(*serve_args(tmp_path / "file" / "data"))
    assert_one_clean_error(result, "cannot use the data folder", str(tmp_path / "file" / "data"))


def test_edge_with_the_wrong_master_key_refuses_to_start(
    running: ServerProcess, tmp_path: Path
) -> None:
    wrong = "A" * 43 + "="  # 32 zero-ish bytes, valid base64, not the origin's key
    edge = EdgeProcess(tmp_path, running.url, running.admin_token, wrong)
    result = pullkv(*edge.command(), env=edge.env)
    assert_one_clean_error(result, "does not open the keyring", running.url)


def test_edge_with_a_rejected_token_refuses_to_start(
    running: ServerProcess, tmp_path: Path
) -> None:
    edge = EdgeProcess(
        tmp_path, running.url, "pkv_0000000000000000_" + "x" * 30, running.master_key
    )
    result = pullkv(*edge.command(), env=edge.env)
    assert_one_clean_error(result, "refused this edge's token", "PULLKV_UPSTREAM_TOKEN")


def test_cli_without_a_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = pullkv("--url", url, "--token", "t", "namespace", "list")
    assert_one_clean_error(result, f"cannot connect to {url}", "is the server running")


def test_cli_with_a_rejected_token_names_server_and_variable(running: ServerProcess) -> None:
    result = pullkv("--url", running.url, "--token", "wrong", "namespace", "list")
    assert_one_clean_error(result, f"{running.url} rejected the token", "PULLKV_TOKEN")


def test_cli_tls_mismatch_is_one_line(running: ServerProcess) -> None:
    url = running.url.replace("http://", "https://")
    result = pullkv("--url", url, "--token", "t", "namespace", "list")
    assert_one_clean_error(result, f"TLS error talking to {url}")
