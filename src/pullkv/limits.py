"""Every limit pullkv enforces, in one place, written as data.

The defaults are Workers KV's published limits, with one exception: Workers KV's same-key
write rate (1 write per second per key) is a limit of Cloudflare's infrastructure, not of the
API, so it is off unless a server is started with one. A server may also be started with a
lowered expiration floor (tests); nothing else is meant to change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024
# The largest integer SQLite and PostgreSQL store (both use signed 64 bits). Versions,
# expirations, offsets, limits and feed positions all end up in SQL, so larger ones are
# refused where they come in.
INT64_MAX = (1 << 63) - 1
# One message of the change feed: a key (512 bytes, escaped up to 6x in JSON) and ids fit.
FEED_LINE_MAX_BYTES = 8192
# Seconds between checks of an open change feed's token: a revoked token's stream ends.
STREAM_TOKEN_RECHECK = 5.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one server. Instances are immutable; use :meth:`with_changes`."""

    max_key_bytes: int = 512
    max_value_bytes: int = 25 * MIB  # 26,214,400
    max_metadata_bytes: int = 1024
    min_expiration_ttl: int = 60
    default_cache_ttl: int = 60
    min_cache_ttl: int = 30
    list_default_limit: int = 1000
    list_max_limit: int = 1000
    bulk_get_max_keys: int = 100
    bulk_get_max_response_bytes: int = 25 * MIB
    bulk_write_max_items: int = 10_000
    bulk_max_body_bytes: int = 100_000_000
    # Multipart framing and the metadata part ride on top of the value.
    multipart_overhead_bytes: int = 64 * 1024
    json_body_max_bytes: int = 1 * MIB
    # Writes per second per key (--same-key-write-rate; Workers KV's is 1); 0: no limit.
    writes_per_key_per_second: float = 0.0
    max_title_chars: int = 512
    max_namespaces_per_account: int = 1000
    namespaces_default_per_page: int = 20
    namespaces_max_per_page: int = 1000
    # Workers KV uses 32-bit signed integers for expirations on the binding.
    max_epoch_seconds: int = 2_147_483_647
    # Other integer parameters (page, cacheTtl) share that bound, which also keeps every
    # number that reaches SQL far from the 64-bit overflow.
    max_integer_param: int = 2_147_483_647
    # JSON nesting: 1,024 bytes of metadata nest at most 512 levels (``[[…]]``) and a bulk
    # body wraps them in two more. Python's parser recurses once per level and the
    # interpreter stops near 1,000 frames, so deeper documents are refused before parsing.
    max_json_depth: int = 600

    # Body caps of the internal API between tiers (http/internal.py). Its messages carry,
    # re-encoded, what clients sent under the limits above, so each cap is a client-side limit
    # plus what re-encoding can add: anything a client may send passes between tiers, and an
    # edge token cannot make a node buffer much more than a client could.
    @property
    def internal_json_max_bytes(self) -> int:
        """Internal JSON messages but deletes: ids, a title, a page request, a batch of keys
        to fetch, a token record (its namespace list came in a client's JSON body)."""
        return self.json_body_max_bytes + 64 * 1024

    @property
    def internal_delete_max_bytes(self) -> int:
        """A bulk delete's keys: they came in a client body, and JSON re-encodes them no
        longer than they came."""
        return self.bulk_max_body_bytes + self.internal_json_max_bytes

    @property
    def internal_write_max_bytes(self) -> int:
        """Framed sealed writes: the values of one put or bulk put, plus per item its
        metadata (re-serialised, so counted whole), its key escaped as ASCII in the frame's
        header (up to 3 bytes per UTF-8 byte) and the sealing's and framing's few dozen."""
        values = max(self.bulk_max_body_bytes, self.max_value_bytes + self.multipart_overhead_bytes)
        per_item = self.max_metadata_bytes + 3 * self.max_key_bytes + 1024
        return values + self.bulk_write_max_items * per_item

    def with_changes(self, **changes: object) -> Limits:
        """Return a copy with some limits changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_LIMITS = Limits()

# The HTTP server's own limits per process (the rest of them are in http.connection.HttpConfig).
# A connection with output pending that the peer has not taken a byte of for this long is
# dropped: a client that never reads cannot keep its buffered responses forever.
DEFAULT_SEND_TIMEOUT = 60.0
# Open connections per server process; the next ones get an immediate 503.
DEFAULT_MAX_CONNECTIONS = 10_000
# A connection remembers its last read if it held one whole request answered on the fast path
# and no longer than this, to answer the same bytes again without parsing them (a client
# repeating a GET on a keep-alive connection). Bounds what each connection keeps.
REPEAT_REQUEST_BYTES = 4096
# Pre-rendered responses with the current Date line put in, kept by the server for one second
# (past this count it starts again empty).
DATED_RESPONSES = 256

# How many token records an edge holds: valid ones, and ids its upstream said it does not know
# (kept apart and fewer, so made-up tokens cannot push out the records of real ones).
EDGE_TOKEN_RECORDS = 10_000
EDGE_UNKNOWN_TOKENS = 1_000

# How many verified tokens an Authenticator remembers (by Authorization header); past it, it
# starts again empty.
VERIFIED_TOKENS = 10_000

# The hot read path's memos: request targets it has resolved (by raw path, query and
# headers; past it, it starts again empty), and responses it has rendered (one per entry and
# protocol, the oldest dropped first; the bytes bound counts each response and its body).
HOT_TARGETS = 10_000
HOT_RENDERED_RESPONSES = 10_000
HOT_RENDERED_BYTES = 64 * MIB
# Seconds a closing TLS connection waits for the peer's close_notify before it is dropped.
TLS_SHUTDOWN_TIMEOUT = 2.0

# The access log (http/accesslog.py). A request target can be as long as the head limit
# (64 KiB): a line shows this much of it.
ACCESS_LOG_TARGET_CHARS = 2048
# Lines buffered before they are written even within one loop turn.
ACCESS_LOG_FLUSH_LINES = 1024
# Rendered fields remembered (see AccessLog._fields) before the memo starts again, and the
# longest field remembered.
ACCESS_LOG_FIELD_MEMO = 4096
ACCESS_LOG_FIELD_MEMO_LENGTH = 1024

# --workers N (workers.py, siblings.py). Slots of the table where workers of one node note the
# versions they acknowledged (8 bytes each: 8 MiB): two keys sharing a slot only cost a fetch.
WORKER_VERSION_SLOTS = 1 << 20
# How long the worker answering /metrics waits for each sibling's own exposition.
WORKER_METRICS_TIMEOUT = 2.0
