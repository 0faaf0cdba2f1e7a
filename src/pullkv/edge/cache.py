"""Edge cache policy and storage: pure functions of the time, and a bytes-bounded LRU.

Nothing here does I/O or reads a clock: callers pass ``now`` (monotonic seconds for cache
ages, epoch seconds for key expirations), so tests drive every transition with a fake clock.

An entry's age counts from when the upstream last vouched for it (fetch or revalidation).
For a read with cache TTL ``ttl``:

- age < min(refresh interval, ttl): FRESH, served with no upstream contact;
- refresh interval <= age < ttl: REVALIDATE, served at once and revalidated in the background;
- age >= ttl: EXPIRED, fetched before answering; if the upstream fails, the entry may still be
  served, marked stale, until age < ttl + max stale.

Key lists, namespace lookups and token records have rules of their own, also here.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar, cast

from pullkv import errors
from pullkv.types import ListedKey, SealedEntry

K = TypeVar("K")
V = TypeVar("V")

# What a cached item costs beyond its bytes: Python objects, dict slots, the key tuple.
ENTRY_OVERHEAD = 400


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The edge's cache settings (the ``pullkv edge`` flags).

    The default cacheTtl is not one of them: it is ``Limits.default_cache_ttl``.
    """

    refresh_interval: float = 60.0
    max_stale: float = 3600.0
    list_ttl: float = 60.0
    token_refresh: float = 20.0
    token_max_age: float = 45.0
    # How long a token record may be trusted, from when the upstream last confirmed it,
    # while the upstream cannot be asked: availability against revocation (docs/security.md).
    auth_max_stale: float = 600.0


class Freshness(enum.Enum):
    """What a read may do with a cached entry."""

    FRESH = "fresh"
    REVALIDATE = "revalidate"
    EXPIRED = "expired"


def freshness(validated_at: float, now: float, ttl: float, policy: CachePolicy) -> Freshness:
    """Classify an entry last vouched for at ``validated_at`` for a read with ``ttl``."""
    age = now - validated_at
    if age >= ttl:
        return Freshness.EXPIRED
    if age >= policy.refresh_interval:
        return Freshness.REVALIDATE
    return Freshness.FRESH


def stale_usable(validated_at: float, now: float, ttl: float, policy: CachePolicy) -> bool:
    """Whether an expired entry may still be served while the upstream is failing."""
    return now - validated_at < ttl + policy.max_stale


class TokenUse(enum.Enum):
    """What a read may do with a cached token record."""

    FRESH = "fresh"  # use it
    REFRESH = "refresh"  # use it, and refresh it in the background
    CHECK = "check"  # too old to use without asking the upstream first
    STALE = "stale"  # too old, but the upstream cannot be asked: use it, within bounds
    REFUSE = "refuse"  # too old to trust without the upstream, which cannot be asked


def token_use(
    validated_at: float, now: float, policy: CachePolicy, upstream_down: bool
) -> TokenUse:
    """Classify a token record the upstream last confirmed at ``validated_at``.

    Within ``token_max_age`` a record is used (refreshed in the background once past
    ``token_refresh``), which bounds how long a revocation at the origin takes to reach this
    edge. Past it, the upstream is asked first, unless it is down: then the record is used
    until ``auth_max_stale`` after its confirmation, and refused after that.
    """
    age = now - validated_at
    if age < policy.token_refresh:
        return TokenUse.FRESH
    if age < policy.token_max_age:
        return TokenUse.REFRESH
    if not upstream_down:
        return TokenUse.CHECK
    if age < policy.auth_max_stale:
        return TokenUse.STALE
    return TokenUse.REFUSE


# The validated_at of an entry a newer change has superseded: older than any cacheTtl and
# any stale bound, so it is refetched before it is served again (and never served stale).
INVALIDATED = float("-inf")


def supersedes(change_version: int, held_version: int) -> bool:
    """Whether a change at ``change_version`` makes an entry held at ``held_version`` stale.

    Only a newer version does, so a late or duplicated feed message never evicts a newer
    value (versions only grow, across deletes and re-creations)."""
    return change_version > held_version


def answer_older(held_version: int, answer_version: int | None) -> bool:
    """Whether an upstream answer is older than what this cache holds: a fill never
    replaces a newer version with an older one. ``answer_version`` None ("not found")
    carries no version, so it is never known to be older."""
    return answer_version is not None and answer_version < held_version


def answer_behind(floor: int, floor_deleted: bool, answer_version: int | None) -> bool:
    """Whether an answer predates a change at version ``floor`` that arrived while its
    fetch was out: a found value older than the change, or "not found" after a put."""
    if answer_version is None:
        return not floor_deleted
    return answer_version < floor


def upstream_failed(exc: BaseException) -> bool:
    """Whether an error means the upstream is unreachable or broken (not a refusal): the
    case in which held entries, lists and records may be served past their freshness."""
    return isinstance(exc, errors.KVError) and exc.status >= 500


def list_ttl(policy: CachePolicy, default_ttl: int) -> float:
    """How long a list result may be served: the list TTL, at most the default cache TTL."""
    return min(policy.list_ttl, float(default_ttl))


def any_expired(rows: Sequence[ListedKey], epoch_now: float) -> bool:
    """Whether a page of keys lists one that has expired."""
    return any(r.expiration is not None and r.expiration <= epoch_now for r in rows)


def list_fresh(
    fetched_at: float, now: float, epoch_now: float, rows: Sequence[ListedKey], fresh_for: float
) -> bool:
    """Whether a cached page of keys fetched at ``fetched_at`` may be served as it is.

    A page with an expired key is refetched rather than trimmed: a short page would make
    the list look complete when it is not.
    """
    return now - fetched_at < fresh_for and not any_expired(rows, epoch_now)


def list_stale_usable(
    fetched_at: float,
    now: float,
    epoch_now: float,
    rows: Sequence[ListedKey],
    fresh_for: float,
    policy: CachePolicy,
) -> bool:
    """Whether a cached page of keys may still be served while the upstream is failing."""
    return now - fetched_at < fresh_for + policy.max_stale and not any_expired(rows, epoch_now)


def namespace_stale(looked_up_at: float, now: float, default_ttl: int) -> bool:
    """Whether a cached namespace lookup is old enough to be refreshed in the background
    (it is still answered: writes are checked at the origin anyway, so a stale "exists"
    costs nothing but a later 404 there)."""
    return now - looked_up_at >= default_ttl


def unknown_token_remembered(denied_at: float, now: float, policy: CachePolicy) -> bool:
    """Whether the upstream's "no such token" is recent enough to repeat without asking:
    made-up tokens then cost the upstream one call each per ``token_refresh``."""
    return now - denied_at < policy.token_refresh


def remaining(validated_at: float, now: float, ttl: float) -> int:
    """Whole seconds of freshness left (negative once expired)."""
    left = validated_at + ttl - now
    return int(left) if left >= 0 else -int(-left + 0.999999)


def live(entry: SealedEntry | None, epoch_now: float) -> SealedEntry | None:
    """The entry unless its key has expired (Workers KV expiry: expiration <= now)."""
    if entry is None or (entry.expiration is not None and entry.expiration <= epoch_now):
        return None
    return entry


class ValueSlot(NamedTuple):
    """A cached key: the sealed entry (None: "not found"), its version and when the upstream
    last vouched for it. ``written_seq`` orders it against fetches still in flight;
    ``superseded_by`` is the newest version the change feed announced that this slot does
    not hold (0: none), so a later fill or write acknowledgement older than it stays stale.

    Immutable (change it with ``_replace`` and ``ByteLRU.update``) and made of immutable
    parts; the cache stores it frozen (``freeze_slot``) as a plain tuple of atomic values,
    which the garbage collector untracks: full collections stay short however many entries
    the cache holds.
    """

    entry: SealedEntry | None
    version: int
    validated_at: float
    written_seq: int = 0
    superseded_by: int = 0

    @property
    def behind(self) -> bool:
        """Whether the feed announced a version newer than this slot's."""
        return self.superseded_by > self.version

    def size(self, key_bytes: int) -> int:
        """Bytes charged to the cache for this slot."""
        body = 0
        if self.entry is not None:
            body = len(self.entry.value) + len(self.entry.metadata or b"")
        return ENTRY_OVERHEAD + key_bytes + body


@dataclass(slots=True)
class ListSlot:
    """A cached page of a key list."""

    rows: list[ListedKey]
    fetched_at: float
    generation: int = 0  # the namespace's write generation at this edge when fetched

    def size(self) -> int:
        """Bytes charged to the cache for this slot."""
        return ENTRY_OVERHEAD + sum(
            ENTRY_OVERHEAD // 4 + len(r.key.encode()) + len(r.metadata or b"") for r in self.rows
        )


class ByteLRU(Generic[K, V]):
    """A mapping bounded by the bytes its values are charged, least recently used out first.

    The bound holds after every ``put``: an item larger than the whole capacity is not kept.
    ``freeze``/``thaw`` let a caller keep values in a form the garbage collector ignores
    (plain tuples of immutable values) and see them as richer objects.
    """

    def __init__(
        self,
        capacity: int,
        freeze: Callable[[V], object] = lambda value: value,
        thaw: Callable[[object], V] = lambda stored: stored,  # type: ignore[assignment,return-value]
    ) -> None:
        self.capacity = capacity
        self.bytes = 0
        self.evictions = 0
        self._freeze = freeze
        self._thaw = thaw
        self._items: OrderedDict[K, tuple[object, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        """The value, marked most recently used."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return self._thaw(item[0])

    def get_stored(self, key: K) -> object | None:
        """The value as stored (frozen), marked most recently used: for readers beside the
        freezing code that know the frozen form and want to skip thawing."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def peek(self, key: K) -> V | None:
        """The value, without touching its recency."""
        item = self._items.get(key)
        return None if item is None else self._thaw(item[0])

    def put(self, key: K, value: V, size: int) -> bool:
        """Insert or replace; evict least recently used items until the bound holds."""
        self.pop(key)
        if size > self.capacity:
            return False
        self._items[key] = (self._freeze(value), size)
        self.bytes += size
        while self.bytes > self.capacity:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1
        return True

    def update(self, key: K, value: V) -> bool:
        """Replace an item's value in place: same size, same recency. False if absent."""
        item = self._items.get(key)
        if item is None:
            return False
        self._items[key] = (self._freeze(value), item[1])
        return True

    def pop(self, key: K) -> V | None:
        """Remove an item; its value, or None."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return self._thaw(item[0])

    def snapshot(self) -> list[K]:
        """A copy of the keys, least recently used first (safe to pop while iterating)."""
        return list(self._items)


# Positions in a frozen value slot, for the edge's own readers that skip thawing.
FROZEN_ENTRY, FROZEN_VERSION, FROZEN_VALIDATED_AT = 0, 1, 2
ENTRY_EXPIRATION = 3


def freeze_slot(slot: ValueSlot | ListSlot) -> object:
    """A value slot as a plain tuple of immutable values, which the garbage collector stops
    tracking (an edge holds hundreds of thousands; tracked, they would make every full
    collection scan them all). List slots, which are few, are kept as they are."""
    if isinstance(slot, ListSlot):
        return slot
    entry = slot.entry
    return (
        None if entry is None else tuple(entry),
        slot.version,
        slot.validated_at,
        slot.written_seq,
        slot.superseded_by,
    )


def thaw_slot(stored: object) -> ValueSlot | ListSlot:
    """The inverse of :func:`freeze_slot`."""
    if isinstance(stored, ListSlot):
        return stored
    fields = cast(tuple[Any, int, float, int, int], stored)
    sealed = None if fields[0] is None else SealedEntry._make(fields[0])
    return ValueSlot(sealed, fields[1], fields[2], fields[3], fields[4])
