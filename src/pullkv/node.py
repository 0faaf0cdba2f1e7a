"""Assembling a server process: an origin, an edge, or both in one (``pullkv serve``).

- origin: the store, a LocalBackend, the REST API and the internal API for edges;
- edge: an EdgeBackend (cache) in front of an UpstreamBackend (HTTP), the same REST API, and
  the internal API over its cache so further edges can stand in front of it;
- serve: the store and a LocalBackend with an EdgeBackend in front of it, in one process:
  clients get the edge's cache behaviour; the internal API answers from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pullkv.auth import ADMIN_TOKEN_ENV, ENV_ADMIN_ID, Authenticator, generate_token, make_record
from pullkv.backend import Backend
from pullkv.crypto import CryptoError, load_master_key, write_secret_file
from pullkv.edge.backend import EdgeBackend
from pullkv.edge.cache import CachePolicy
from pullkv.edge.upstream import UPSTREAM_TOKEN_ENV, UpstreamBackend
from pullkv.errors import KVError
from pullkv.http.app import App
from pullkv.http.hot import HotReads
from pullkv.keyring import KeyringHolder, ensure_keyring
from pullkv.limits import DEFAULT_LIMITS, MIB, Limits
from pullkv.metrics import Metrics
from pullkv.origin.local import LocalBackend
from pullkv.origin.service import KVService
from pullkv.store import open_store, sqlite_path_for
from pullkv.store.base import Store

log = logging.getLogger("pullkv.node")

ADMIN_TOKEN_FILE = "admin-token"
ACCOUNT_SETTING = "default_account_id"
ADMIN_TOKEN_SETTING = "admin_token_id"
PURGE_BATCH = 1000
READY_CACHE_SECONDS = 1.0

Role = Literal["serve", "origin", "edge"]


class NodeError(Exception):
    """A server cannot start with this configuration."""


@dataclass
class EdgeSettings:
    """Where an edge's upstream is and how to reach it."""

    upstream: str
    upstream_ca: Path | None = None
    latency: float = 0.0
    timeout: float = 5.0
    location: str = "edge"


@dataclass
class NodeConfig:
    """What a server process needs to start."""

    data_dir: Path
    role: Role = "serve"
    store_url: str | None = None  # None: the SQLite file in data_dir
    account_id: str | None = None
    limits: Limits = DEFAULT_LIMITS
    group_commit: bool = True
    purge_interval: float = 30.0
    cache_size: int = 256 * MIB
    policy: CachePolicy = field(default_factory=CachePolicy)
    edge: EdgeSettings | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Node:
    """A started node: its ASGI app and what it told the operator."""

    role: Role
    app: App
    metrics: Metrics
    account_id: str | None = None
    admin_token_source: str | None = None
    master_key_source: str | None = None
    upstream: str | None = None
    backend: Backend | None = None


async def ensure_admin_token(
    store: Store,
    data_dir: Path,
    account_id: str,
    environ: Mapping[str, str],
    now: int,
    *,
    shared: bool = False,
) -> str:
    """Make sure an admin token exists; return where the operator finds it.

    ``PULLKV_ADMIN_TOKEN`` wins and is (re)registered on every start. Otherwise the first
    start creates one and writes it to ``<data>/admin-token`` (0600). On a ``shared`` store
    (``--store``: other origins may use it) a missing file next to an active admin token is
    refused rather than replaced, since replacing it would revoke the other origins' token.
    """
    if environ.get(ADMIN_TOKEN_ENV):
        token = environ[ADMIN_TOKEN_ENV]
        await store.add_token(
            make_record(
                token,
                ENV_ADMIN_ID,
                account_id,
                "admin (environment)",
                now=now,
                admin=True,
                edge=True,
            )
        )
        return f"${ADMIN_TOKEN_ENV}"
    path = data_dir / ADMIN_TOKEN_FILE
    known_id = await store.get_setting(ADMIN_TOKEN_SETTING)
    existing = await store.get_token(known_id) if known_id else None
    if existing is not None and existing.revoked_at is None and path.exists():
        return str(path)
    if shared and existing is not None and existing.revoked_at is None:
        raise NodeError(
            f"this store already has an admin token but {path} is missing: copy admin-token "
            f"from the data folder of an origin on this store, or set ${ADMIN_TOKEN_ENV}"
        )
    token_id, token = generate_token()
    await store.add_token(
        make_record(token, token_id, account_id, "admin", now=now, admin=True, edge=True)
    )
    if existing is not None:
        await store.revoke_token(existing.account_id, existing.id, now)
    await store.set_setting(ADMIN_TOKEN_SETTING, token_id)
    if path.exists():
        path.unlink()
    write_secret_file(path, token + "\n")
    return f"{path} (created)"


async def purge_loop(store: Store, clock: Callable[[], float], interval: float) -> None:
    """Delete expired keys in the background, in batches, forever."""
    while True:
        await asyncio.sleep(interval)
        try:
            while await store.purge_expired(int(clock()), PURGE_BATCH) == PURGE_BATCH:
                await asyncio.sleep(0)
        except Exception:
            log.exception("purging expired keys failed; will retry")


def _master_key(config: NodeConfig, *, create: bool) -> tuple[bytes, str]:
    try:
        return load_master_key(config.data_dir, config.environ, create=create)
    except CryptoError as exc:
        raise NodeError(str(exc)) from None


def store_url_for(config: NodeConfig) -> str:
    """The store an origin uses: ``--store``, else the SQLite file in the data folder."""
    return config.store_url or f"sqlite://{sqlite_path_for(config.data_dir)}"


async def _open_origin(
    config: NodeConfig, clock: Callable[[], float]
) -> tuple[Store, LocalBackend, KeyringHolder, str, str, str]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        config.data_dir.chmod(0o700)
    master_key, master_source = _master_key(config, create=True)
    store = open_store(store_url_for(config), group_commit=config.group_commit)
    try:
        keyring = await ensure_keyring(store, master_key)
    except (CryptoError, KVError) as exc:  # KVError: the store cannot be reached or used
        await store.close()
        raise NodeError(exc.message if isinstance(exc, KVError) else str(exc)) from None
    account_id = await store.setdefault_setting(
        ACCOUNT_SETTING, config.account_id or uuid.uuid4().hex
    )
    if config.account_id and config.account_id != account_id:
        await store.close()
        raise NodeError(
            f"this data folder belongs to account {account_id}; "
            f"--account-id {config.account_id} does not match"
        )
    try:
        admin_source = await ensure_admin_token(
            store,
            config.data_dir,
            account_id,
            config.environ,
            int(clock()),
            shared=config.store_url is not None,
        )
    except NodeError:
        await store.close()
        raise
    local = LocalBackend(store, config.limits, clock)
    keys = KeyringHolder(store, master_key, keyring, clock)
    return store, local, keys, account_id, admin_source, master_source


def upstream_ssl(settings: EdgeSettings) -> ssl.SSLContext | bool:
    """TLS verification for the upstream: the given CA, else the system's."""
    if settings.upstream_ca is None:
        return True
    return ssl.create_default_context(cafile=str(settings.upstream_ca))


async def start_node(config: NodeConfig, clock: Callable[[], float] = time.time) -> Node:
    """Open what the role needs and assemble the app."""
    metrics = Metrics()
    if config.role == "edge":
        return await _start_edge(config, metrics, clock)
    store, local, keys, account_id, admin_source, master_source = await _open_origin(config, clock)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = [
        lambda: purge_loop(store, clock, config.purge_interval)
    ]
    if config.role == "origin":
        front: Backend = local
        close: Callable[[], Coroutine[Any, Any, None]] = local.close
    else:
        edge = EdgeBackend(local, config.policy, config.cache_size, metrics, epoch=clock)
        front, close = edge, edge.close
    service = KVService(front, keys, config.limits, clock)
    authenticator = Authenticator(front, clock)
    hot = None
    if isinstance(front, EdgeBackend):
        hot = HotReads(front, keys, authenticator, config.limits, "pullkv")
    app = App(
        service,
        authenticator,
        metrics,
        internal=local,
        background=background,
        on_shutdown=close,
        hot=hot,
    )
    return Node(config.role, app, metrics, account_id, admin_source, master_source, None, front)


async def _start_edge(config: NodeConfig, metrics: Metrics, clock: Callable[[], float]) -> Node:
    settings = config.edge
    if settings is None:
        raise NodeError("an edge needs --upstream")
    token = config.environ.get(UPSTREAM_TOKEN_ENV)
    if not token:
        raise NodeError(f"an edge needs an edge token for its upstream in ${UPSTREAM_TOKEN_ENV}")
    master_key, master_source = _master_key(config, create=False)
    upstream = UpstreamBackend(
        settings.upstream,
        token,
        timeout=settings.timeout,
        latency=settings.latency,
        verify=upstream_ssl(settings),
    )
    edge = EdgeBackend(upstream, config.policy, config.cache_size, metrics, epoch=clock)
    keys = KeyringHolder(edge, master_key, None, clock)
    service = KVService(edge, keys, config.limits, clock)
    ready = _cached_probe(upstream.probe)
    authenticator = Authenticator(edge, clock)
    cache_name = f"pullkv-{settings.location}"
    app = App(
        service,
        authenticator,
        metrics,
        internal=edge,
        ready=ready,
        cache_name=cache_name,
        background=[lambda: _prefetch_keyring(keys)],
        on_shutdown=edge.close,
        hot=HotReads(edge, keys, authenticator, config.limits, cache_name),
    )
    return Node("edge", app, metrics, None, None, master_source, settings.upstream, edge)


async def _prefetch_keyring(keys: KeyringHolder) -> None:
    """Load the keyring from the upstream at start, so the first read does not wait for it."""
    for delay in (0.0, 1.0, 2.0, 5.0, 10.0):
        await asyncio.sleep(delay)
        try:
            await keys.reload()
            return
        except Exception:
            log.info("keyring not loaded from the upstream yet; will retry", exc_info=True)


def _cached_probe(probe: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    """A readiness check that asks the upstream at most once a second."""
    checked_at = 0.0
    answer = False

    async def ready() -> bool:
        nonlocal checked_at, answer
        now = time.monotonic()
        if now - checked_at >= READY_CACHE_SECONDS:
            answer = await probe()
            checked_at = now
        return answer

    return ready
