"""Property-based fuzzing of the REST API with schemathesis, against a real ``pullkv serve``.

The description is the one the server publishes at ``/client/v4/openapi.json``. For every
operation, schema-valid (positive) and schema-violating (negative) requests are generated;
no answer may be a 5xx, and every answer must match the description (status, content type,
headers, body schema). Runs are bounded and derandomized, so CI sees the same cases each time:
1,400 cases per store engine (14 operations x 2 modes x 50), about 15 s each; run with ``-s``
to see the count per operation and the statuses they got.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.pg import parametrize_server
from tests.support import ServerProcess


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_server(metafunc)  # on SQLite and on PostgreSQL (64-bit integers in both)


pytestmark = pytest.mark.timeout(600)

# Per operation and generation mode. 15 operations x 2 modes x 50 = up to 1,500 cases.
MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# The library's own operation type leaves its parameter types open.
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
FuzzCase = schemathesis.Case[Operation]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
# Keys the fuzzer may land on: plain text, JSON, metadata at the size limit, an expiring key.
SEEDED = {
    "plain": ("hello", None),
    "json-value": ('{"a":[1,2,{"b":null}]}', {"kind": "json"}),
    "deep-meta": ("x", json.loads("[" * 512 + "]" * 512)),
    "has/slash": ("s", {"k": "v" * 900}),
}


@pytest.fixture(scope="module")
def seeded(server: ServerProcess) -> Iterator[dict[str, str]]:
    """A namespace with known keys, and one namespace for the fuzzer to delete."""
    with httpx.Client(base_url=server.namespaces_url, headers=server.headers()) as http:
        ids = {}
        for name in ("main", "doomed"):
            made = http.post("", json={"title": f"fuzz-{name}-{uuid.uuid4().hex[:8]}"})
            assert made.status_code == 200, made.text
            ids[name] = made.json()["result"]["id"]
        items = [
            {"key": key, "value": value, "metadata": metadata, "expiration_ttl": 3600}
            for key, (value, metadata) in SEEDED.items()
        ]
        written = http.put(f"{ids['main']}/bulk", json=items)
        assert written.status_code == 200, written.text
        yield ids


def _strategy(
    operation: Operation, mode: schemathesis.GenerationMode, ids: dict[str, str], account_id: str
) -> st.SearchStrategy[FuzzCase]:
    """Cases for one operation: ids fixed to real ones so requests get past routing and
    authorisation, keys either generated or one of the seeded keys."""
    names = {p.name for p in operation.path_parameters}
    fixed = {"account_id": account_id}
    if "namespace_id" in names:
        doomed = operation.method.upper() == "DELETE" and "key_name" not in names
        fixed["namespace_id"] = ids["doomed" if doomed else "main"]
    if "key_name" not in names:
        return operation.as_strategy(generation_mode=mode, path_parameters=fixed)
    return st.one_of(
        operation.as_strategy(generation_mode=mode, path_parameters=fixed),
        *(
            operation.as_strategy(generation_mode=mode, path_parameters={**fixed, "key_name": k})
            for k in SEEDED
        ),
    )


def _fuzz(strategy: st.SearchStrategy[FuzzCase], call: Callable[[FuzzCase], None]) -> int:
    """Run one operation's cases; return how many ran."""
    ran = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: FuzzCase) -> None:
        nonlocal ran
        ran += 1
        call(case)

    run()
    return ran


def test_rest_api_fuzz(server: ServerProcess, seeded: dict[str, str]) -> None:
    """No 5xx and no response outside the description, for any generated request."""
    schema = schemathesis.openapi.from_url(f"{server.api}/openapi.json")
    counts: dict[str, int] = {}
    failures: dict[str, str] = {}
    statuses: dict[int, int] = {}
    started = time.monotonic()
    with requests.Session() as session:

        def call(case: FuzzCase) -> None:
            response = case.call_and_validate(
                base_url=server.api, session=session, headers=server.headers(), checks=CHECKS
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operation = result.ok()
            for mode in MODES:
                label = f"{operation.label} [{mode.value}]"
                strategy = _strategy(operation, mode, seeded, server.account_id)
                try:
                    counts[label] = _fuzz(strategy, call)
                except BaseException as exc:  # schemathesis failures are BaseExceptionGroups
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    failures[label] = str(exc)[:3000]
    total = sum(counts.values())
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {total} cases over {len(counts)} operation/modes in {elapsed:.1f}s")
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    for label, count in sorted(counts.items()):
        print(f"  {count:4d}  {label}")
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert len(counts) >= 28, sorted(counts)  # 14+ operations x 2 modes
    assert total >= 10 * len(counts)
    # Not just refusals: a good share of the generated requests did what they asked.
    assert statuses.get(200, 0) >= total // 10, statuses
    # The server survived it all and still answers.
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_description_is_served_without_a_token(server: ServerProcess) -> None:
    """The description is public (it holds no data) and lists only routes pullkv serves."""
    response = httpx.get(f"{server.api}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = set(document["paths"])
    assert "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/bulk/get" in paths
    assert all(p.startswith("/accounts/{account_id}/storage/kv/namespaces") for p in paths)
    assert httpx.post(f"{server.api}/openapi.json").status_code == 405
