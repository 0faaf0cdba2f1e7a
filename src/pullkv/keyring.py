"""The keyring's life cycle on a store: load, create, rotate and re-encrypt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pullkv.backend import KeySource
from pullkv.crypto import CryptoError, Keyring, key_id_of, new_key, part_aad, unwrap_key, wrap_key
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
            needs_value = key_id_of(entry.value) != keyring.current_id
            needs_meta = (
                entry.metadata is not None and key_id_of(entry.metadata) != keyring.current_id
            )
            if not (needs_value or needs_meta):
                continue
            value_aad = part_aad(namespace_id, entry.key, "value")
            value = keyring.seal(keyring.open(entry.value, value_aad), value_aad)
            metadata = None
            if entry.metadata is not None:
                meta_aad = part_aad(namespace_id, entry.key, "metadata")
                metadata = keyring.seal(keyring.open(entry.metadata, meta_aad), meta_aad)
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
        keyring: Keyring | None,
        clock: Callable[[], float],
        *,
        refresh_seconds: float = 30.0,
    ) -> None:
        self._source = source
        self._master_key = master_key
        self.keyring = keyring
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._loaded_at = clock()
        self._refreshing: asyncio.Task[None] | None = None

    async def current(self) -> Keyring:
        """The keyring for sealing new writes, refreshed now and then in the background."""
        if self.keyring is None:
            return await self.reload()
        if self._clock() - self._loaded_at >= self._refresh_seconds and self._refreshing is None:
            self._loaded_at = self._clock()  # a failed refresh is retried an interval later
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return self.keyring

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

    async def for_blob(self, blob: bytes) -> Keyring:
        """A keyring that holds the key ``blob`` names, reloading once if needed."""
        if self.keyring is None or not self.keyring.has(key_id_of(blob)):
            return await self.reload()
        return self.keyring

    async def reload(self) -> Keyring:
        """Read the keyring from its source again."""
        self.keyring = await load_keyring(self._source, self._master_key)
        self._loaded_at = self._clock()
        return self.keyring
