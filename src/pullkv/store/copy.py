"""Moving a whole store to another, between any two engines: ``pullkv store copy``.

What goes across: data keys, settings, namespaces, tokens, then every entry in (namespace, key)
order, a page at a time, with its version and expiration. Ciphertext is copied as it is, so
no key is needed and the destination opens with the same master key. Every write replaces by
primary key, and later writes on the destination get versions above everything the source
ever handed out, so edges that cached from the old store stay consistent with the new one.

Resumable: the destination keeps a progress record (a setting) naming the source and the last
entry copied, written after each page. Running the same copy again continues after it;
re-copying a page that was cut short is harmless, since writes replace by primary key. A
destination that is neither empty nor an earlier copy of this source is refused.

Verified: at the end both stores are read again and compared, table by table: row counts and
a SHA-256 over every row (for entries: namespace, key, version, expiration and the SHA-256 of
the value and metadata ciphertext). Copy from a store whose origins are stopped: writes made
during the copy would show up as a mismatch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pullkv.errors import StoreMaintenanceError
from pullkv.store.base import Store
from pullkv.types import SealedEntry

PROGRESS_SETTING = "copy_progress"
PAGE_BYTES = 32 * 1024 * 1024  # aim for pages of about this much ciphertext
MAX_PAGE = 5000
FIRST_PAGE = 200
SMALL_PAGE = 1000  # namespaces and tokens


@dataclass(frozen=True, slots=True)
class TableDigest:
    """A table's row count and SHA-256 over its rows in scan order."""

    rows: int
    sha256: str


@dataclass(frozen=True, slots=True)
class StoreDigest:
    """What verification compares: one digest per table."""

    tables: dict[str, TableDigest]

    def differences(self, other: StoreDigest) -> list[str]:
        """The tables whose count or checksum differ, described for people."""
        found = []
        for name, mine in self.tables.items():
            theirs = other.tables.get(name)
            if theirs != mine:
                found.append(f"{name}: {mine.rows} rows {mine.sha256[:12]} vs {theirs}")
        return found


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy did and what it verified."""

    entries_copied: int
    resumed_after: tuple[str, str] | None
    digest: StoreDigest
    seconds: float
    already_complete: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def _feed(hasher: hashlib._Hash, *fields: bytes) -> None:
    # Length-prefixed, so no two different rows feed the same bytes.
    for part in fields:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)


def _int(value: int | None) -> bytes:
    return b"-" if value is None else str(value).encode()


def _entry_fields(namespace_id: str, entry: SealedEntry) -> tuple[bytes, ...]:
    metadata = b"-" if entry.metadata is None else hashlib.sha256(entry.metadata).digest()
    return (
        namespace_id.encode(),
        entry.key.encode("utf-8"),
        _int(entry.version),
        _int(entry.expiration),
        hashlib.sha256(entry.value).digest(),
        metadata,
    )


async def digest_store(store: Store, page: int = MAX_PAGE) -> StoreDigest:
    """Counts and checksums of every table (the copy progress record left out)."""
    tables: dict[str, TableDigest] = {}

    hasher = hashlib.sha256()
    keys = await store.data_keys()
    for key_id, wrapped in keys:
        _feed(hasher, _int(key_id), wrapped)
    tables["data_keys"] = TableDigest(len(keys), hasher.hexdigest())

    hasher = hashlib.sha256()
    settings = await _settings(store)
    for name in sorted(settings):
        _feed(hasher, name.encode(), settings[name].encode())
    tables["settings"] = TableDigest(len(settings), hasher.hexdigest())

    hasher = hashlib.sha256()
    count = 0
    after: str | None = None
    while namespaces := await store.scan_namespaces(after, SMALL_PAGE):
        for ns in namespaces:
            _feed(hasher, repr((ns.id, ns.account_id, ns.title, ns.jurisdiction)).encode())
        count += len(namespaces)
        after = namespaces[-1].id
    tables["namespaces"] = TableDigest(count, hasher.hexdigest())

    hasher = hashlib.sha256()
    count = 0
    after = None
    while tokens := await store.scan_tokens(after, SMALL_PAGE):
        for t in tokens:
            row = (t.id, t.account_id, t.name, t.salt, t.secret_hash, t.namespaces)
            flags = (t.read_only, t.admin, t.edge, t.created_at, t.revoked_at)
            _feed(hasher, repr(row + flags).encode())
        count += len(tokens)
        after = tokens[-1].id
    tables["tokens"] = TableDigest(count, hasher.hexdigest())

    hasher = hashlib.sha256()
    count = 0
    position: tuple[str, str] | None = None
    while entries := await store.scan_entries(position, page):
        for namespace_id, entry in entries:
            _feed(hasher, *_entry_fields(namespace_id, entry))
        count += len(entries)
        position = (entries[-1][0], entries[-1][1].key)
    tables["entries"] = TableDigest(count, hasher.hexdigest())
    return StoreDigest(tables)


async def _settings(store: Store) -> dict[str, str]:
    settings = await store.list_settings()
    settings.pop(PROGRESS_SETTING, None)
    return settings


async def _source_id(source: Store) -> str:
    """Names the source store: its wrapped data keys are random and never change."""
    hasher = hashlib.sha256()
    for key_id, wrapped in await source.data_keys():
        _feed(hasher, _int(key_id), wrapped)
    return hasher.hexdigest()


async def _is_empty(store: Store) -> bool:
    return not (
        await store.data_keys()
        or await _settings(store)
        or await store.scan_namespaces(None, 1)
        or await store.scan_tokens(None, 1)
        or await store.scan_entries(None, 1)
    )


def _next_limit(page: list[tuple[str, SealedEntry]]) -> int:
    """A page size that keeps the next page near PAGE_BYTES of ciphertext."""
    size = sum(len(e.value) + len(e.metadata or b"") + len(e.key) for _, e in page)
    per_entry = max(1, size // max(1, len(page)))
    return max(1, min(MAX_PAGE, PAGE_BYTES // per_entry))


async def copy_store(
    source: Store,
    dest: Store,
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Copy everything in ``source`` to ``dest``, resuming an earlier copy; then verify.

    ``on_total(total, done)`` is called once with the number of entries to copy and how many
    an earlier run already copied; ``progress(n)`` after each page of ``n`` entries.
    Raises StoreMaintenanceError for a destination that is not ours or a failed verification.
    """
    started = time.monotonic()
    source_id = await _source_id(source)
    marker = await dest.get_setting(PROGRESS_SETTING)
    resume: tuple[str, str] | None = None
    done_before = 0
    if marker is not None:
        state = json.loads(marker)
        if state.get("source") != source_id:
            raise StoreMaintenanceError(
                "the destination holds a copy of another store; copy into an empty store"
            )
        if state.get("complete"):
            return await _verify(source, dest, 0, None, started, already_complete=True)
        if state.get("after"):
            resume = (str(state["after"][0]), str(state["after"][1]))
            done_before = int(state.get("copied", 0))
    elif not await _is_empty(dest):
        raise StoreMaintenanceError(
            "the destination store is not empty; copy into a new database, schema or file"
        )

    copied = 0

    async def record(after: tuple[str, str] | None, complete: bool = False) -> None:
        state = {
            "source": source_id,
            "after": list(after) if after else None,
            "copied": done_before + copied,
            "complete": complete,
        }
        await dest.set_setting(PROGRESS_SETTING, json.dumps(state))

    await record(resume)  # claims the destination before anything else is written
    await _copy_small_tables(source, dest)

    floor = await source.last_version()
    if on_total is not None:
        on_total(await source.count_entries(), done_before)

    after = resume
    limit = FIRST_PAGE
    page = await source.scan_entries(after, limit)
    await dest.import_entries([], min_version=floor)  # versions continue above the source's
    while page:
        after = (page[-1][0], page[-1][1].key)
        limit = _next_limit(page)
        # Read the next page while this one is written (overlaps with a networked engine).
        upcoming = asyncio.ensure_future(source.scan_entries(after, limit))
        try:
            await dest.import_entries(page, min_version=floor)
            copied += len(page)
            await record(after)
            if progress is not None:
                progress(len(page))
        except BaseException:
            upcoming.cancel()
            raise
        page = await upcoming

    report = await _verify(source, dest, copied, resume, started)
    await record(after, complete=True)
    return report


async def _copy_small_tables(source: Store, dest: Store) -> None:
    wanted = await source.data_keys()
    for key_id, wrapped in wanted:
        await dest.add_data_key(key_id, wrapped)
    if set(wanted) - set(await dest.data_keys()):
        raise StoreMaintenanceError(
            "the destination has different data keys under the same ids; copy into an empty store"
        )
    for name, value in (await _settings(source)).items():
        await dest.set_setting(name, value)
    after: str | None = None
    while namespaces := await source.scan_namespaces(after, SMALL_PAGE):
        await dest.import_namespaces(namespaces)
        after = namespaces[-1].id
    after = None
    while tokens := await source.scan_tokens(after, SMALL_PAGE):
        await asyncio.gather(*(dest.add_token(t) for t in tokens))
        after = tokens[-1].id


async def _verify(
    source: Store,
    dest: Store,
    copied: int,
    resume: tuple[str, str] | None,
    started: float,
    *,
    already_complete: bool = False,
) -> CopyReport:
    wanted, got = await asyncio.gather(digest_store(source), digest_store(dest))
    differences = wanted.differences(got)
    if differences:
        raise StoreMaintenanceError(
            "the copy does not match its source (was the source written to during the "
            "copy?): " + "; ".join(differences)
        )
    return CopyReport(
        entries_copied=copied,
        resumed_after=resume,
        digest=wanted,
        seconds=time.monotonic() - started,
        already_complete=already_complete,
        counts={name: table.rows for name, table in wanted.tables.items()},
    )
