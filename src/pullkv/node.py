"""Assembling a server process: an origin, an edge, or both in one (``pullkv serve``).

- origin: the store, a LocalBackend, the REST API and the internal API for edges;
- edge: an EdgeBackend (cache) in front of an UpstreamBackend (HTTP), the same REST API, and
  the internal API over its cache so further edges can stand in front of it;
- serve: the store and a LocalBackend with an EdgeBackend in front of it, in one process:
  clients get the edge's cache behaviour; the internal API answers from the store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pullkv import datadir
from pullkv.auth import ADMIN_TOKEN_ENV, ENV_ADMIN_ID, Authenticator, generate_token, make_record
from pullkv.backend import Backend
from pullkv.crypto import CryptoError, load_master_key, write_secret_file
from pullkv.datadir import DataDirError, DataDirLock
from pullkv.edge.backend import EdgeBackend
from pullkv.edge.cache import CachePolicy
from pullkv.edge.upstream import UPSTREAM_TOKEN_ENV, UpstreamBackend
from pullkv.errors import KVError, StoreMaintenanceError
from pullkv.feed.log import StoreFeed
from pullkv.feed.policy import FeedPolicy
from pullkv.feed.subscriber import FeedSubscriber, backfill, follow_in_process
from pullkv.http.app import App
from pullkv.http.hot import HotReads
from pullkv.keyring import KeyringHolder, ensure_keyring
from pullkv.limits import DEFAULT_LIMITS, MIB, Limits
from pullkv.metrics import Metrics
from pullkv.nodeinfo import NodeFacts
from pullkv.origin.local import LocalBackend
from pullkv.service import KVService
from pullkv.siblings import Siblings, SiblingsError, WorkerPlace
from pullkv.store import open_store, sqlite_path_for
from pullkv.store.base import Store

log = logging.getLogger("pullkv.node")

ADMIN_TOKEN_FILE = "admin-token"
ACCOUNT_SETTING = "default_account_id"
ADMIN_TOKEN_SETTING = "admin_token_id"
# Names the store's change-feed sequence space: an edge's position means nothing elsewhere.
FEED_SETTING = "feed_id"
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
    feed: FeedPolicy = field(default_factory=FeedPolicy)
    invalidation: bool = True  # an edge follows its upstream's change feed
    feed_loss: float = 0.0  # fraction of feed messages an edge drops (tests and demos)
    # One worker of several (--workers N): the supervisor holds the data folder's lock and
    # made what the workers share.
    worker: WorkerPlace | None = None


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
    siblings: Siblings | None = None


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
    if existing is not None and existing.revoked_at is None:
        if path.exists() and path.read_text().strip():
            return str(path)
        if shared:
            raise NodeError(
                f"this store already has an admin token but {path} is missing: copy admin-token "
                f"from the data folder of an origin on this store, or set ${ADMIN_TOKEN_ENV}"
            )
        # Lost (a power cut before it reached the disk, or deleted). Making a new one would
        # revoke the old, which the operator may still hold: keep it and say what to do.
        log.warning(
            "the admin token file %s is missing, but the store's admin token %s is still "
            "active and was not revoked. If you have that token, put it back in %s. "
            "Otherwise start once with %s set to a new secret, create a lasting admin token "
            "with `PULLKV_TOKEN=<that secret> pullkv token create --admin`, and revoke the "
            "lost one with `pullkv token revoke %s`",
            path,
            existing.id,
            path,
            ADMIN_TOKEN_ENV,
            existing.id,
        )
        return f"{path} is missing: the store's admin token {existing.id} is kept (see the log)"
    token_id, token = generate_token()
    await store.add_token(
        make_record(token, token_id, account_id, "admin", now=now, admin=True, edge=True)
    )
    # The file must be durable before the store names this token as the admin token: after
    # a power cut there is then either no record of it, or a file holding it.
    write_secret_file(path, token + "\n", replace=True)
    await store.set_setting(ADMIN_TOKEN_SETTING, token_id)
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
) -> tuple[Store, LocalBackend, KeyringHolder, str, str, str, DataDirLock | None]:
    try:
        datadir.prepare(config.data_dir)
        # The folder's SQLite store takes one server at a time; a shared --store takes many.
        # A worker's supervisor holds the lock for it (its workers share the store).
        shared = config.store_url is not None or config.worker is not None
        lock = None if shared else DataDirLock.acquire(config.data_dir)
    except DataDirError as exc:
        raise NodeError(str(exc)) from None
    try:
        return await _open_origin_store(config, clock, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


async def _open_origin_store(
    config: NodeConfig, clock: Callable[[], float], lock: DataDirLock | None
) -> tuple[Store, LocalBackend, KeyringHolder, str, str, str, DataDirLock | None]:
    try:
        store = open_store(store_url_for(config), group_commit=config.group_commit)
    except StoreMaintenanceError as exc:
        raise NodeError(str(exc)) from None
    try:
        # A store that already holds data keys needs the master key they were wrapped with:
        # a missing one is refused, never replaced (a new key would read nothing).
        has_keys = bool(await store.data_keys())
        master_key, master_source = _master_key(config, create=not has_keys)
        keyring = await ensure_keyring(store, master_key)
        account_id = await store.setdefault_setting(
            ACCOUNT_SETTING, config.account_id or uuid.uuid4().hex
        )
        if config.account_id and config.account_id != account_id:
            raise NodeError(
                f"this data folder belongs to account {account_id}; "
                f"--account-id {config.account_id} does not match"
            )
        admin_source = await ensure_admin_token(
            store,
            config.data_dir,
            account_id,
            config.environ,
            int(clock()),
            shared=config.store_url is not None,
        )
    except (CryptoError, KVError, OSError) as exc:  # KVError: the store cannot be reached
        await store.close()
        if isinstance(exc, KVError):
            raise NodeError(exc.message) from None
        raise NodeError(str(exc)) from None
    except BaseException:
        await store.close()
        raise
    local = LocalBackend(store, config.limits, clock)
    holder = KeyringHolder(store, master_key, keyring, clock)
    return store, local, holder, account_id, admin_source, master_source, lock


def upstream_ssl(settings: EdgeSettings) -> ssl.SSLContext | bool:
    """TLS verification for the upstream: the given CA, else the system's."""
    if settings.upstream_ca is None:
        return True
    return ssl.create_default_context(cafile=str(settings.upstream_ca))


async def prepare_workers(
    config: NodeConfig, clock: Callable[[], float] = time.time
) -> DataDirLock | None:
    """Before a supervisor starts its workers: hold the data folder (the embedded store), and
    create once what they all read (master key, keyring, account, admin token, feed id), so
    workers starting together never race to create them. Returns the lock, if any."""
    if config.role == "edge":
        return None
    store, local, _, account_id, admin_source, master_source, lock = await _open_origin(
        config, clock
    )
    try:
        await store.setdefault_setting(FEED_SETTING, uuid.uuid4().hex)
    except BaseException as exc:
        if lock is not None:
            lock.release()
        if isinstance(exc, KVError):
            raise NodeError(exc.message) from None
        raise
    finally:
        await local.close()
    log.info(
        "data folder ready for the workers: account %s, admin token %s, master key %s",
        account_id,
        admin_source,
        master_source,
    )
    return lock


def _join_siblings(config: NodeConfig, metrics: Metrics) -> Siblings | None:
    """A worker's link to its siblings; None for a single process."""
    if config.worker is None:
        return None
    try:
        siblings = Siblings.open(config.worker)
    except SiblingsError as exc:
        raise NodeError(str(exc)) from None
    metrics.worker_restarts = lambda: siblings.versions.restarts
    return siblings


def _with_siblings(node: Node, siblings: Siblings | None) -> Node:
    """Serve this worker's metrics to its siblings; the app merges theirs into /metrics."""
    if siblings is not None:
        node.siblings = node.app.siblings = siblings
        node.app.add_background(lambda: siblings.serve_metrics(node.metrics.render))
        if isinstance(node.backend, EdgeBackend):
            node.backend.written = siblings.versions
    return node


async def start_node(config: NodeConfig, clock: Callable[[], float] = time.time) -> Node:
    """Open what the role needs and assemble the app."""
    metrics = Metrics()
    siblings = _join_siblings(config, metrics)
    if config.role == "edge":
        return _with_siblings(await _start_edge(config, metrics, clock), siblings)
    opened = await _open_origin(config, clock)
    store, local, keyring, account_id, admin_source, master_source, lock = opened
    background: list[Callable[[], Coroutine[Any, Any, None]]] = [
        lambda: purge_loop(store, clock, config.purge_interval)
    ]
    feed = await _open_feed(store, config.feed)
    local.feed = feed
    background.append(feed.run)
    metrics.feed_streams.set_function(lambda: feed.streams)
    if config.role == "origin":
        front: Backend = local
        close: Callable[[], Coroutine[Any, Any, None]] = local.close
    else:
        edge = EdgeBackend(
            local,
            config.policy,
            config.cache_size,
            metrics,
            default_ttl=config.limits.default_cache_ttl,
            epoch=clock,
        )
        front, close = edge, edge.close
        if config.invalidation:
            # Other origins may share the store: their writes reach this cache as changes.
            background.append(lambda: follow_in_process(feed, edge.invalidate, feed.policy.page))
    if lock is not None:
        close = _then_release(close, lock)
    service = KVService(front, keyring, config.limits, clock)
    authenticator = Authenticator(front, clock)
    hot = None
    if isinstance(front, EdgeBackend):
        hot = HotReads(front, keyring, authenticator, config.limits, "pullkv")
    app = App(
        service,
        authenticator,
        metrics,
        internal=local,
        background=background,
        on_shutdown=close,
        hot=hot,
        feed=feed,
    )
    app.facts = NodeFacts(config.role, clock(), cached=config.role == "serve")
    app.clock = clock
    node = Node(config.role, app, metrics, account_id, admin_source, master_source, None, front)
    return _with_siblings(node, siblings)


async def _open_feed(store: Store, policy: FeedPolicy) -> StoreFeed:
    """The store's change feed, from its current end."""
    try:
        feed_id = await store.setdefault_setting(FEED_SETTING, uuid.uuid4().hex)
        feed = StoreFeed(store, feed_id, policy)
        await feed.open()
    except KVError as exc:
        await store.close()
        raise NodeError(exc.message) from None
    return feed


def _then_release(
    close: Callable[[], Coroutine[Any, Any, None]], lock: DataDirLock
) -> Callable[[], Coroutine[Any, Any, None]]:
    """``close``, then let another server have the data folder."""

    async def close_and_release() -> None:
        try:
            await close()
        finally:
            lock.release()

    return close_and_release


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
    edge = EdgeBackend(
        upstream,
        config.policy,
        config.cache_size,
        metrics,
        default_ttl=config.limits.default_cache_ttl,
        epoch=clock,
        upstream_name=settings.upstream,
        feed_policy=config.feed if config.invalidation else None,
    )
    keyring = KeyringHolder(edge, master_key, None, clock)
    await _check_master_key(keyring, edge, settings, master_source)
    service = KVService(edge, keyring, config.limits, clock)
    ready = _cached_probe(lambda: edge.ready(upstream.probe))
    authenticator = Authenticator(edge, clock)
    cache_name = f"pullkv-{settings.location}"
    background: list[Callable[[], Coroutine[Any, Any, None]]] = [lambda: _prefetch_keyring(keyring)]
    relay = edge.feed
    if relay is not None:
        relay.backfill = functools.partial(backfill, upstream.changes, timeout=config.feed.silence)
        metrics.feed_streams.set_function(lambda: relay.streams)
        subscriber = FeedSubscriber(
            upstream.changes,
            relay,
            edge.invalidate,
            edge.invalidate_all,
            config.feed,
            metrics,
            loss=config.feed_loss,
            # One way of the simulated round trip (--upstream-latency-ms).
            delay=settings.latency / 2,
        )
        background.append(subscriber.run)
    app = App(
        service,
        authenticator,
        metrics,
        internal=edge,
        ready=ready,
        cache_name=cache_name,
        background=background,
        on_shutdown=edge.close,
        hot=HotReads(edge, keyring, authenticator, config.limits, cache_name),
        feed=relay,
    )
    app.facts = NodeFacts("edge", clock(), settings.location, settings.upstream, cached=True)
    app.clock = clock
    return Node("edge", app, metrics, None, None, master_source, settings.upstream, edge)


async def _check_master_key(
    keyring: KeyringHolder, edge: EdgeBackend, settings: EdgeSettings, master_source: str
) -> None:
    """Refuse to start with a master key that cannot open the upstream's keyring.

    Such an edge would report ready and answer 500 to every read. An upstream that cannot be
    reached yet is not a reason to refuse: the keyring is then loaded in the background.
    """
    try:
        await asyncio.wait_for(keyring.reload(), settings.timeout)
    except CryptoError as exc:
        await edge.close()
        raise NodeError(
            f"the master key ({master_source}) does not open the keyring of the upstream "
            f"{settings.upstream}: give this edge its origin's master key ({exc})"
        ) from None
    except KVError as exc:
        if exc.status in (401, 403):
            await edge.close()
            raise NodeError(
                f"the upstream {settings.upstream} refused this edge's token "
                f"(${UPSTREAM_TOKEN_ENV}): {exc.message}"
            ) from None
        log.warning("the upstream %s is not reachable yet: %s", settings.upstream, exc.message)
    except (TimeoutError, OSError) as exc:
        log.warning("the upstream %s is not reachable yet: %s", settings.upstream, exc)


async def _prefetch_keyring(keyring: KeyringHolder) -> None:
    """Load the keyring from the upstream at start, so the first read does not wait for it."""
    for delay in (0.0, 1.0, 2.0, 5.0, 10.0):
        if keyring.held is not None:
            return
        await asyncio.sleep(delay)
        try:
            await keyring.reload()
            return
        except CryptoError:
            log.error(
                "the master key does not open the upstream's keyring: every read will fail "
                "until this edge is given its origin's master key"
            )
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
