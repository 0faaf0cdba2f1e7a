"""Assembling a server process: data folder, master key, keyring, account, admin token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pullkv.auth import (
    ADMIN_TOKEN_ENV,
    ENV_ADMIN_ID,
    Authenticator,
    generate_token,
    make_record,
)
from pullkv.crypto import CryptoError, load_master_key, write_secret_file
from pullkv.http.app import App
from pullkv.keyring import KeyringHolder, ensure_keyring
from pullkv.limits import DEFAULT_LIMITS, Limits
from pullkv.origin.local import LocalBackend
from pullkv.origin.service import KVService
from pullkv.store import open_store, sqlite_path_for
from pullkv.store.base import Store

log = logging.getLogger("pullkv.node")

ADMIN_TOKEN_FILE = "admin-token"
ACCOUNT_SETTING = "default_account_id"
ADMIN_TOKEN_SETTING = "admin_token_id"
PURGE_BATCH = 1000


class NodeError(Exception):
    """A server cannot start with this configuration."""


@dataclass
class NodeConfig:
    """What a server process needs to start."""

    data_dir: Path
    account_id: str | None = None
    limits: Limits = DEFAULT_LIMITS
    group_commit: bool = True
    purge_interval: float = 30.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Node:
    """A started origin: its store, service, ASGI app and what it told the operator."""

    store: Store
    service: KVService
    app: App
    account_id: str
    admin_token_source: str
    master_key_source: str


async def ensure_admin_token(
    store: Store, data_dir: Path, account_id: str, environ: Mapping[str, str], now: int
) -> str:
    """Make sure an admin token exists; return where the operator finds it.

    ``PULLKV_ADMIN_TOKEN`` wins and is (re)registered on every start. Otherwise the first
    start creates one and writes it to ``<data>/admin-token`` (0600).
    """
    if environ.get(ADMIN_TOKEN_ENV):
        token = environ[ADMIN_TOKEN_ENV]
        await store.add_token(
            make_record(token, ENV_ADMIN_ID, account_id, "admin (environment)", now=now, admin=True)
        )
        return f"${ADMIN_TOKEN_ENV}"
    path = data_dir / ADMIN_TOKEN_FILE
    known_id = await store.get_setting(ADMIN_TOKEN_SETTING)
    existing = await store.get_token(known_id) if known_id else None
    if existing is not None and existing.revoked_at is None and path.exists():
        return str(path)
    token_id, token = generate_token()
    await store.add_token(make_record(token, token_id, account_id, "admin", now=now, admin=True))
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


async def start_node(config: NodeConfig, clock: Callable[[], float] = time.time) -> Node:
    """Open the store in the data folder and assemble the origin app."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        config.data_dir.chmod(0o700)
    try:
        master_key, master_source = load_master_key(config.data_dir, config.environ, create=True)
    except CryptoError as exc:
        raise NodeError(str(exc)) from None
    store = open_store(
        f"sqlite://{sqlite_path_for(config.data_dir)}", group_commit=config.group_commit
    )
    try:
        keyring = await ensure_keyring(store, master_key)
    except CryptoError as exc:
        await store.close()
        raise NodeError(str(exc)) from None
    account_id = await store.setdefault_setting(
        ACCOUNT_SETTING, config.account_id or uuid.uuid4().hex
    )
    if config.account_id and config.account_id != account_id:
        await store.close()
        raise NodeError(
            f"this data folder belongs to account {account_id}; "
            f"--account-id {config.account_id} does not match"
        )
    admin_source = await ensure_admin_token(
        store, config.data_dir, account_id, config.environ, int(clock())
    )
    backend = LocalBackend(store, config.limits, clock)
    service = KVService(
        backend, KeyringHolder(store, master_key, keyring, clock), config.limits, clock
    )
    app = App(
        service,
        Authenticator(backend, clock),
        background=[lambda: purge_loop(store, clock, config.purge_interval)],
        on_shutdown=store.close,
    )
    return Node(store, service, app, account_id, admin_source, master_source)
