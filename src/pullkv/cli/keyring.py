"""``pullkv keyring``: list, rotate and re-encrypt under the data keys of a data folder.

Local, not through a server: the master key that unlocks the keyring never leaves the machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pullkv import errors
from pullkv.cli.context import Context, pass_context
from pullkv.cli.options import data_option, store_option

_store_option = store_option(
    "Store URL (PULLKV_STORE), when the data folder's server runs with --store."
)


@click.group()
def keyring() -> None:
    """Inspect and rotate the encryption keys of a data folder (and its --store)."""


def _with_store(
    data_dir: Path, job: Callable[[Any, bytes], Any], store_url: str | None = None
) -> Any:
    from pullkv.crypto import CryptoError, load_master_key
    from pullkv.store import open_store, sqlite_path_for

    if store_url is None:
        db = sqlite_path_for(data_dir)
        if not db.exists():
            raise click.ClickException(f"no pullkv store in {data_dir}")
        store_url = f"sqlite://{db}"

    async def main() -> Any:
        store = open_store(store_url)
        try:
            master_key, _ = load_master_key(data_dir, os.environ, create=False)
            return await job(store, master_key)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except CryptoError as exc:
        raise click.ClickException(str(exc)) from None
    except errors.KVError as exc:
        raise click.ClickException(exc.message) from None


@keyring.command("list")
@data_option()
@_store_option
@pass_context
def keyring_list(ctx: Context, data_dir: Path, store_url: str | None) -> None:
    """Show the data keys; the newest is current."""
    from pullkv.keyring import load_keyring

    async def job(store: Any, master_key: bytes) -> dict[str, Any]:
        ring = await load_keyring(store, master_key)
        return {"keys": ring.key_ids, "current": ring.current_id}

    result = _with_store(data_dir, job, store_url)
    ctx.emit(
        result,
        lambda r: "\n".join(
            f"key {k}{'  (current)' if k == r['current'] else ''}" for k in r["keys"]
        ),
    )


@keyring.command("rotate")
@data_option()
@_store_option
@pass_context
def keyring_rotate(ctx: Context, data_dir: Path, store_url: str | None) -> None:
    """Add a new data key; new writes use it, old data stays readable."""
    from pullkv.keyring import rotate

    key_id = _with_store(data_dir, rotate, store_url)
    ctx.emit(
        {"current": key_id},
        lambda _: (
            f"Added data key {key_id}; running servers switch to it within 30 s. "
            "Run 'pullkv keyring reencrypt' to move old data to it."
        ),
    )


@keyring.command("reencrypt")
@data_option()
@_store_option
@pass_context
def keyring_reencrypt(ctx: Context, data_dir: Path, store_url: str | None) -> None:
    """Re-seal every value and metadata under the current data key (safe while serving)."""
    from pullkv.keyring import load_keyring, reencrypt

    async def job(store: Any, master_key: bytes) -> Any:
        ring = await load_keyring(store, master_key)
        with click.progressbar(length=0, label="Re-encrypting", file=sys.stderr) as bar:
            return await reencrypt(store, ring, progress=bar.update)

    report = _with_store(data_dir, job, store_url)
    summary = {
        "scanned": report.scanned,
        "resealed": report.resealed,
        "skipped_changed": report.skipped_changed,
    }
    ctx.emit(
        summary,
        lambda s: (
            f"Scanned {s['scanned']} entries, re-encrypted {s['resealed']}"
            f" ({s['skipped_changed']} changed meanwhile and already use the current key)"
        ),
    )
