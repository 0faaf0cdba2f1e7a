"""pullkv: a global, read-optimised, eventually consistent key-value store.

It speaks the Workers KV interfaces; this package is its server, CLI and Python client.
"""

from pullkv.client import (
    AsyncClient,
    AsyncNamespace,
    Client,
    ListResult,
    Namespace,
    ValueWithMetadata,
)
from pullkv.errors import (
    APIError,
    AuthenticationFailed,
    BadRequestError,
    NotFoundError,
    PermissionDenied,
    PreconditionFailedError,
    RateLimitedError,
    ServerError,
)
from pullkv.localcache import LocalCache
from pullkv.watch import AsyncWatch, Watch, WatchEvent, WatchReset

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncNamespace",
    "AsyncWatch",
    "AuthenticationFailed",
    "BadRequestError",
    "Client",
    "ListResult",
    "LocalCache",
    "Namespace",
    "NotFoundError",
    "PermissionDenied",
    "PreconditionFailedError",
    "RateLimitedError",
    "ServerError",
    "ValueWithMetadata",
    "Watch",
    "WatchEvent",
    "WatchReset",
    "__version__",
]
