"""The keyring's life cycle on a store: load, create, rotate and re-encrypt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pullkv.backend import KeySource
from pullkv.crypto import CryptoError, Keyring, key_id_of, new_key, unwrap_key, wrap_key
from pullkv.sealing import reseal, sealed_with_current
from pullkv.store.base import Store

log = logging.getLogger("pullkv.keyring")


async def load_keyring(source: KeySource, master_key: bytes) -> Keyring:
    """The keyring from ``source``, unwrapped with the master key; the newest key is current."""
    rows = await source.data_keys()
    if not rows:
        raise CryptoError("the store has no data keys yet")
    keys = {key_id: unwrap_key(master_key, key_id, wrapped) for key_id, wrapped in rows}
    return Keyring(keys, max(keys))


async def ensure_keyring(store: Store, master_key: bytes) -> Keyring:
    """The store's keyring, giving a store with no data key its first one."""
    if not await store.data_keys():
        await store.add_data_key(1, wrap_key(master_key, 1, new_key()))
    return await load_keyring(store, master_key)


async def rotate(store: Store, master_key: bytes) -> int:
    """Add a new data key, which becomes current for new writes; return its id."""
    await ensure_keyring(store, master_key)  # proves the master key opens the existing keys
    while True:
        rows = await store.data_keys()
        key_id = max((k for k, _ in rows), default=0) + 1
        if await store.add_data_key(key_id, wrap_key(master_key, key_id, new_key())):
            return key_id


@dataclass(frozen=True, slots=True)
class ReencryptReport:
    """What a re-encryption pass did."""

    scanned: int
    resealed: int
    skipped_changed: int


async def reencrypt(
    store: Store,
    keyring: Keyring,
    *,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ReencryptReport:
    """Re-seal every entry not under the current key with the current key.

    Runs beside a live server: an entry rewritten meanwhile is skipped (it already carries the
    current key), because each re-seal only applies if the entry's version is unchanged.
    """
    scanned = resealed = skipped = 0
    after: tuple[str, str] | None = None
    while True:
        page = await store.scan_entries(after, batch)
        if not page:
            break
        for namespace_id, entry in page:
            scanned += 1
            if sealed_with_current(keyring, entry):
                continue
            value, metadata = reseal(keyring, namespace_id, entry)
            if await store.reseal(namespace_id, entry.key, entry.version, value, metadata):
                resealed += 1
            else:
                skipped += 1
        after = (page[-1][0], page[-1][1].key)
        if progress is not None:
            progress(len(page))
    return ReencryptReport(scanned, resealed, skipped)


class KeyringHolder:
    """The keyring a server uses, reloaded when a ciphertext names a key it does not hold
    or when the refresh interval has passed (another process may have rotated).

    An edge starts without a keyring and loads it from its upstream on first use. The periodic
    refresh runs in the background while a keyring is held, so no request waits for it (the
    upstream may be slow or down for a while); a failed refresh keeps the keyring it has.
    """

    def __init__(
        self,
        source: KeySource,
        master_key: bytes,
        held: Keyring | None,
        clock: Callable[[], float],
        *,
        refresh_seconds: float = 30.0,
    ) -> None:
        self._source = source
        self._master_key = master_key
        self.held = held  # None until first loaded (an edge loads it from its upstream)
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._loaded_at = clock()
        self._refreshing: asyncio.Task[None] | None = None

    async def current(self) -> Keyring:
        """The keyring for sealing new writes, refreshed now and then in the background."""
        if self.held is None:
            return await self.reload()
        if self._clock() - self._loaded_at >= self._refresh_seconds and self._refreshing is None:
            self._loaded_at = self._clock()  # a failed refresh is retried an interval later
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return self.held

    async def refreshed(self) -> None:
        """Wait for the background refresh under way, if any, to finish."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.warning("keyring refresh failed; keeping the keyring held", exc_info=True)
        finally:
            self._refreshing = None

    async def for_blobs(self, *blobs: bytes | None) -> Keyring:
        """A keyring that holds every key the ``blobs`` name, reloading once if needed."""
        held = self.held
        if held is None or not all(_holds(held, blob) for blob in blobs):
            return await self.reload()
        return held

    async def reload(self) -> Keyring:
        """Read the keyring from its source again."""
        self.held = await load_keyring(self._source, self._master_key)
        self._loaded_at = self._clock()
        return self.held


def _holds(keyring: Keyring, blob: bytes | None) -> bool:
    # Not a ciphertext at all: reloading would not help, and opening it says why.
    try:
        return blob is None or keyring.has(key_id_of(blob))
    except CryptoError:
        return True
