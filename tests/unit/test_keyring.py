"""Unit tests for pullkv.keyring: loading, rotating and re-encrypting over a real store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pullkv.crypto import CryptoError, Keyring, key_id_of, new_key, unwrap_key
from pullkv.keyring import KeyringHolder, ensure_keyring, load_keyring, reencrypt, rotate
from pullkv.sealing import part_aad
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import NamespaceRecord, SealedEntry, SealedWrite
from tests.unit.helpers import FakeClock

ACCOUNT = "0" * 32


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture
def master() -> bytes:
    return new_key()


async def make_ns(store: SQLiteStore) -> str:
    namespace = NamespaceRecord(uuid.uuid4().hex, ACCOUNT, uuid.uuid4().hex)
    await store.create_namespace(namespace, 1000)
    return namespace.id


def sealed(keyring: Keyring, ns: str, key: str, value: bytes, meta: bytes | None) -> SealedWrite:
    return SealedWrite(
        key,
        keyring.seal(value, part_aad(ns, key, "value")),
        None if meta is None else keyring.seal(meta, part_aad(ns, key, "metadata")),
        None,
    )


def opened(keyring: Keyring, ns: str, entry: SealedEntry) -> tuple[bytes, bytes | None]:
    value = keyring.open(entry.value, part_aad(ns, entry.key, "value"))
    meta = None
    if entry.metadata is not None:
        meta = keyring.open(entry.metadata, part_aad(ns, entry.key, "metadata"))
    return value, meta


async def test_load_creates_key_1(store: SQLiteStore, master: bytes) -> None:
    keyring = await ensure_keyring(store, master)
    assert keyring.current_id == 1 and keyring.key_ids == [1]
    rows = await store.data_keys()
    assert [key_id for key_id, _ in rows] == [1]
    # Loading again reads the same key instead of making another.
    again = await ensure_keyring(store, master)
    aad = part_aad("n", "k", "value")
    assert again.open(keyring.seal(b"x", aad), aad) == b"x"
    assert len(await store.data_keys()) == 1


async def test_load_without_create(store: SQLiteStore, master: bytes) -> None:
    with pytest.raises(CryptoError, match="no data keys"):
        await load_keyring(store, master)
    assert await store.data_keys() == []
    await ensure_keyring(store, master)
    assert (await load_keyring(store, master)).current_id == 1


async def test_load_with_wrong_master_key(store: SQLiteStore, master: bytes) -> None:
    await ensure_keyring(store, master)
    with pytest.raises(CryptoError, match="does not open with this master key"):
        await ensure_keyring(store, new_key())


async def test_data_keys_are_stored_wrapped(store: SQLiteStore, master: bytes) -> None:
    await ensure_keyring(store, master)
    ((key_id, wrapped),) = await store.data_keys()
    assert len(unwrap_key(master, key_id, wrapped)) == 32
    assert len(wrapped) > 32


async def test_rotate(store: SQLiteStore, master: bytes) -> None:
    first = await ensure_keyring(store, master)
    ns = await make_ns(store)
    await store.put(ns, [sealed(first, ns, "old", b"old value", b'{"m":1}')])
    assert await rotate(store, master) == 2
    second = await ensure_keyring(store, master)
    assert second.current_id == 2 and second.key_ids == [1, 2]
    entry = await store.get(ns, "old", 0)
    assert entry is not None and key_id_of(entry.value) == 1
    assert opened(second, ns, entry) == (b"old value", b'{"m":1}')
    assert await rotate(store, master) == 3
    assert (await ensure_keyring(store, master)).current_id == 3


async def test_rotate_on_an_empty_store_starts_at_2(store: SQLiteStore, master: bytes) -> None:
    assert await rotate(store, master) == 2  # key 1 is created first


async def test_rotate_refuses_a_wrong_master_key(store: SQLiteStore, master: bytes) -> None:
    await ensure_keyring(store, master)
    with pytest.raises(CryptoError):
        await rotate(store, new_key())
    assert len(await store.data_keys()) == 1


async def test_reencrypt_moves_everything_to_the_current_key(
    store: SQLiteStore, master: bytes
) -> None:
    first = await ensure_keyring(store, master)
    ns1, ns2 = await make_ns(store), await make_ns(store)
    originals = {}
    for ns in (ns1, ns2):
        writes = []
        for i in range(25):
            key, value = f"key-{i:02}-é", f"value {i} in {ns}".encode()
            meta = f'{{"i":{i}}}'.encode() if i % 3 else None
            writes.append(sealed(first, ns, key, value, meta))
            originals[(ns, key)] = (value, meta)
        await store.put(ns, writes)
    versions_before = {(n, e.key): e.version for n, e in await store.scan_entries(None, 1000)}
    await rotate(store, master)
    keyring = await ensure_keyring(store, master)
    pages: list[int] = []
    report = await reencrypt(store, keyring, batch=7, progress=pages.append)
    assert (report.scanned, report.resealed, report.skipped_changed) == (50, 50, 0)
    assert sum(pages) == 50 and max(pages) == 7
    entries = await store.scan_entries(None, 1000)
    for ns, entry in entries:
        assert key_id_of(entry.value) == 2
        if entry.metadata is not None:
            assert key_id_of(entry.metadata) == 2
        assert opened(keyring, ns, entry) == originals[(ns, entry.key)]
        assert entry.version == versions_before[(ns, entry.key)]
    # Key 1 is no longer needed to read anything.
    only_current = Keyring({2: unwrap_key(master, 2, dict(await store.data_keys())[2])}, 2)
    for ns, entry in entries:
        assert opened(only_current, ns, entry) == originals[(ns, entry.key)]
    # A second pass has nothing to do.
    again = await reencrypt(store, keyring)
    assert (again.scanned, again.resealed, again.skipped_changed) == (50, 0, 0)


async def test_reencrypt_reseals_metadata_alone(store: SQLiteStore, master: bytes) -> None:
    first = await ensure_keyring(store, master)
    ns = await make_ns(store)
    await rotate(store, master)
    keyring = await ensure_keyring(store, master)
    value = keyring.seal(b"v", part_aad(ns, "k", "value"))
    meta = first.seal(b"{}", part_aad(ns, "k", "metadata"))
    await store.put(ns, [SealedWrite("k", value, meta, None)])
    report = await reencrypt(store, keyring)
    assert report.resealed == 1
    entry = await store.get(ns, "k", 0)
    assert entry is not None and entry.metadata is not None
    assert key_id_of(entry.metadata) == 2
    assert opened(keyring, ns, entry) == (b"v", b"{}")


class RacingStore:
    """A store proxy that rewrites one key just after re-encryption has read its page."""

    def __init__(self, inner: SQLiteStore, keyring: Keyring, ns: str, key: str) -> None:
        self._inner = inner
        self._keyring = keyring
        self._ns = ns
        self._key = key
        self.raced = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def scan_entries(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, SealedEntry]]:
        page = await self._inner.scan_entries(after, limit)
        if not self.raced and any(e.key == self._key for _, e in page):
            self.raced = True
            write = sealed(self._keyring, self._ns, self._key, b"written meanwhile", None)
            await self._inner.put(self._ns, [write])
        return page


async def test_reencrypt_skips_entries_changed_meanwhile(store: SQLiteStore, master: bytes) -> None:
    first = await ensure_keyring(store, master)
    ns = await make_ns(store)
    await store.put(ns, [sealed(first, ns, f"k{i}", b"old", None) for i in range(5)])
    await rotate(store, master)
    keyring = await ensure_keyring(store, master)
    racing = RacingStore(store, keyring, ns, "k2")
    report = await reencrypt(racing, keyring, batch=2)  # type: ignore[arg-type]  # a Store proxy
    assert racing.raced
    assert (report.scanned, report.resealed, report.skipped_changed) == (5, 4, 1)
    entry = await store.get(ns, "k2", 0)
    assert entry is not None
    assert opened(keyring, ns, entry) == (b"written meanwhile", None)
    for ns_id, entry in await store.scan_entries(None, 100):
        assert key_id_of(entry.value) == 2
        if entry.key != "k2":
            assert opened(keyring, ns_id, entry) == (b"old", None)


async def test_reencrypt_empty_store(store: SQLiteStore, master: bytes) -> None:
    keyring = await ensure_keyring(store, master)
    report = await reencrypt(store, keyring)
    assert (report.scanned, report.resealed, report.skipped_changed) == (0, 0, 0)


# KeyringHolder.
async def test_holder_reloads_for_an_unknown_key(store: SQLiteStore, master: bytes) -> None:
    clock = FakeClock()
    holder = KeyringHolder(store, master, await ensure_keyring(store, master), clock)
    # Another process rotates and writes with the new key.
    await rotate(store, master)
    theirs = await ensure_keyring(store, master)
    aad = part_aad("n", "k", "value")
    blob = theirs.seal(b"from elsewhere", aad)
    assert holder.held is not None and not holder.held.has(2)
    keyring = await holder.for_blobs(blob)
    assert keyring.open(blob, aad) == b"from elsewhere"
    assert holder.held.current_id == 2


async def test_holder_refreshes_after_the_interval(store: SQLiteStore, master: bytes) -> None:
    clock = FakeClock()
    holder = KeyringHolder(
        store, master, await ensure_keyring(store, master), clock, refresh_seconds=30
    )
    await rotate(store, master)
    clock.advance(29.9)
    assert (await holder.current()).current_id == 1
    clock.advance(0.1)
    # The refresh runs in the background: this call answers with the keyring held.
    assert (await holder.current()).current_id == 1
    await holder.refreshed()
    assert (await holder.current()).current_id == 2


class _FrozenSource:
    """A key source that never answers until released, then fails like a timeout."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def data_keys(self) -> list[tuple[int, bytes]]:
        self.calls += 1
        await self.release.wait()
        raise OSError("timed out")


async def test_holder_refresh_never_waits_for_a_frozen_source(
    store: SQLiteStore, master: bytes
) -> None:
    clock = FakeClock()
    held = await ensure_keyring(store, master)
    source = _FrozenSource()
    holder = KeyringHolder(source, master, held, clock, refresh_seconds=30)
    clock.advance(30)
    # Each call answers at once (a frozen source would otherwise hold it forever).
    assert await asyncio.wait_for(holder.current(), 1) is held
    assert await asyncio.wait_for(holder.current(), 1) is held
    await asyncio.sleep(0)
    assert source.calls == 1  # one refresh at a time
    source.release.set()
    await asyncio.sleep(0.01)
    assert holder.held is held  # the failed refresh kept the keyring
    clock.advance(30)
    assert await asyncio.wait_for(holder.current(), 1) is held
    await asyncio.sleep(0)
    assert source.calls == 2  # retried an interval later


async def test_holder_for_a_known_key_does_not_reload(store: SQLiteStore, master: bytes) -> None:
    clock = FakeClock()
    holder = KeyringHolder(store, master, await ensure_keyring(store, master), clock)
    aad = part_aad("n", "k", "value")
    assert holder.held is not None
    blob = holder.held.seal(b"x", aad)
    await rotate(store, master)
    assert (await holder.for_blobs(blob)).current_id == 1
    # A key id that no one holds stays unknown after the reload, and opening fails clearly.
    foreign = Keyring({9: new_key()}, 9).seal(b"x", aad)
    keyring = await holder.for_blobs(foreign)
    with pytest.raises(CryptoError, match="data key 9"):
        keyring.open(foreign, aad)
