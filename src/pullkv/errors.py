"""Every error pullkv reports: its HTTP status, Cloudflare error code and message.

Codes that Cloudflare documents or that clients branch on are used as Cloudflare uses them
(10000 authentication, 10009 key not found, 10013 namespace not found, 10014 duplicate title,
7000/7001/7003 routing). For the validation errors whose codes Cloudflare does not publish we
chose codes in the same 10xxx range; messages follow Workers KV's wording, which is what a
Worker sees in the HTTP reason phrase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class KVError(Exception):
    """An error with an HTTP status and a Cloudflare-style error code."""

    def __init__(self, status: int, code: int, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable

    def envelope(self) -> dict[str, Any]:
        """The Cloudflare v4 failure envelope for this error."""
        return {
            "success": False,
            "errors": [{"code": self.code, "message": self.message}],
            "messages": [],
            "result": None,
        }

    def __repr__(self) -> str:
        return f"KVError(status={self.status}, code={self.code}, message={self.message!r})"


# Codes, one home.
AUTHENTICATION = 10000
BAD_REQUEST = 10001
KEY_NOT_FOUND = 10009
NAMESPACE_NOT_FOUND = 10013
DUPLICATE_TITLE = 10014
INVALID_TITLE = 10019
VALUE_TOO_LARGE = 10025
KEY_TOO_LONG = 10026
METADATA_TOO_LARGE = 10027
BULK_GET_KEYS = 10029
INVALID_EXPIRATION = 10033
INVALID_LIST_LIMIT = 10034
INVALID_CURSOR = 10035
INVALID_CACHE_TTL = 10036
INVALID_KEY = 10037
TOO_MANY_NAMESPACES = 10038
BULK_TOO_MANY = 10039
REQUEST_TOO_LARGE = 10040
BULK_GET_NOT_JSON = 10041
RATE_LIMITED = 10049
PRECONDITION_FAILED = 10050
TOKEN_NOT_FOUND = 10060
NO_ROUTE = 7000
METHOD_NOT_ALLOWED = 7001
INVALID_ID = 7003
UNAVAILABLE = 10500
INTERNAL = 10501


def authentication_error() -> KVError:
    """No token, or a token that does not verify."""
    return KVError(401, AUTHENTICATION, "Authentication error")


def permission_denied(reason: str) -> KVError:
    """A valid token that may not do this."""
    return KVError(403, AUTHENTICATION, f"Authentication error: {reason}")


def bad_request(message: str) -> KVError:
    """Malformed input that fits no more specific error."""
    return KVError(400, BAD_REQUEST, message)


def key_not_found(operation: str) -> KVError:
    """The key does not exist or has expired."""
    return KVError(404, KEY_NOT_FOUND, f"{operation}: 'key not found'")


def namespace_not_found(operation: str) -> KVError:
    """The namespace id is unknown in this account."""
    return KVError(404, NAMESPACE_NOT_FOUND, f"{operation}: 'namespace not found'")


def duplicate_title(title: str) -> KVError:
    """Namespace titles are unique per account."""
    return KVError(
        400,
        DUPLICATE_TITLE,
        f"a namespace with this account ID and title already exists: {title!r}",
    )


def invalid_title(reason: str) -> KVError:
    """A namespace title that is empty, too long or not a string."""
    return KVError(400, INVALID_TITLE, f"Invalid namespace title: {reason}")


def too_many_namespaces(limit: int) -> KVError:
    """The account already has the maximum number of namespaces."""
    return KVError(400, TOO_MANY_NAMESPACES, f"An account may have at most {limit} namespaces.")


def empty_key() -> KVError:
    """An empty key name."""
    return KVError(400, INVALID_KEY, "Key names must not be empty")


def illegal_key(key: str) -> KVError:
    """The key names "." and ".." cannot travel in a URL."""
    return KVError(400, INVALID_KEY, f'Illegal key name "{key}". Please use a different name.')


def undecodable_key() -> KVError:
    """A percent-encoded key that does not decode to UTF-8."""
    return KVError(400, INVALID_KEY, "Could not URL-decode key name")


def key_too_long(length: int, limit: int) -> KVError:
    """A key (or list prefix) over the byte limit."""
    return KVError(
        414,
        KEY_TOO_LONG,
        f"UTF-8 encoded length of {length} exceeds key length limit of {limit}.",
    )


def value_too_large(length: int, limit: int) -> KVError:
    """A value over 25 MiB."""
    return KVError(413, VALUE_TOO_LARGE, f"Value length of {length} exceeds limit of {limit}.")


def metadata_too_large(length: int, limit: int) -> KVError:
    """Serialised metadata over 1,024 bytes."""
    return KVError(
        413, METADATA_TOO_LARGE, f"Metadata length of {length} exceeds limit of {limit}."
    )


def invalid_metadata(reason: str) -> KVError:
    """Metadata that is not JSON."""
    return KVError(400, BAD_REQUEST, f"Invalid metadata: {reason}")


def invalid_json(what: str, reason: str) -> KVError:
    """A JSON body or field that does not parse, or nests deeper than pullkv parses."""
    return KVError(400, BAD_REQUEST, f"{what} is {reason}")


def integer_out_of_range(name: str, value: int, minimum: int, maximum: int) -> KVError:
    """An integer parameter outside the range pullkv accepts for it."""
    return KVError(
        400, BAD_REQUEST, f"Invalid {name} of {value}: must be between {minimum} and {maximum}"
    )


def request_too_large(limit: int) -> KVError:
    """A request body over the limit for its endpoint."""
    return KVError(413, REQUEST_TOO_LARGE, f"Request body exceeds the limit of {limit} bytes.")


def invalid_expiration_ttl(raw: object, minimum: int | None = None) -> KVError:
    """An expiration_ttl that is not a positive integer or is under the floor."""
    if minimum is None:
        detail = "Please specify integer greater than 0."
    else:
        detail = f"Expiration TTL must be at least {minimum}."
    return KVError(400, INVALID_EXPIRATION, f"Invalid expiration_ttl of {raw}. {detail}")


def invalid_expiration(raw: object, minimum: int | None = None) -> KVError:
    """An expiration that is not in the future, or not far enough ahead."""
    if minimum is None:
        detail = (
            "Please specify integer greater than the current number of seconds"
            " since the UNIX epoch."
        )
    else:
        detail = f"Expiration times must be at least {minimum} seconds in the future."
    return KVError(400, INVALID_EXPIRATION, f"Invalid expiration of {raw}. {detail}")


def expiration_out_of_range(absolute: int, maximum: int, ttl: int | None = None) -> KVError:
    """An expiry past what a 32-bit epoch can hold (named as the caller gave it)."""
    if ttl is not None:
        message = f"Invalid expiration_ttl of {ttl}: it would expire at {absolute}, after {maximum}"
    else:
        message = f"Invalid expiration of {absolute}: must be at most {maximum}"
    return KVError(400, INVALID_EXPIRATION, message)


def invalid_cache_ttl(raw: object, minimum: int) -> KVError:
    """A cache_ttl under the floor or not an integer."""
    return KVError(
        400, INVALID_CACHE_TTL, f"Invalid cache_ttl of {raw}. Cache TTL must be at least {minimum}."
    )


def invalid_list_limit(raw: object, maximum: int) -> KVError:
    """A key list limit outside 1..maximum."""
    if isinstance(raw, int) and raw > maximum:
        detail = f"Please specify an integer less than {maximum}."
    else:
        detail = "Please specify an integer greater than 0."
    return KVError(400, INVALID_LIST_LIMIT, f"Invalid key_count_limit of {raw}. {detail}")


def invalid_cursor() -> KVError:
    """A cursor this server did not issue."""
    return KVError(400, INVALID_CURSOR, "Invalid cursor: pass back a cursor from a previous list")


def bulk_get_too_few() -> KVError:
    """Bulk get with no keys."""
    return KVError(400, BULK_GET_KEYS, "You must request a minimum of 1 key")


def bulk_get_too_many(limit: int) -> KVError:
    """Bulk get with more than 100 keys."""
    return KVError(400, BULK_GET_KEYS, f"You can request a maximum of {limit} keys")


def bulk_get_bad_type(raw: object) -> KVError:
    """Bulk get supports only text and json."""
    return KVError(400, BAD_REQUEST, f'"{raw}" is not a valid type. Use "json" or "text"')


def bulk_get_not_json() -> KVError:
    """type=json but a value does not parse."""
    return KVError(
        400, BULK_GET_NOT_JSON, "At least one of the requested keys corresponds to a non-json value"
    )


def bulk_get_too_large(limit_bytes: int) -> KVError:
    """The values of a bulk get add up to more than 25 MB."""
    mb = limit_bytes / (1024 * 1024)
    shown = int(mb) if mb == int(mb) else mb
    return KVError(413, REQUEST_TOO_LARGE, f"Total size of request exceeds the limit of {shown}MB")


def bulk_too_many(count: int, limit: int) -> KVError:
    """Bulk write or delete over 10,000 items."""
    return KVError(
        400, BULK_TOO_MANY, f"Bulk request has {count} items; the maximum is {limit} per request."
    )


def rate_limited(key: str) -> KVError:
    """More than the allowed writes per second to one key."""
    return KVError(
        429,
        RATE_LIMITED,
        f"Too Many Requests: key {key!r} was written too recently (writes per second per key)",
    )


class PreconditionFailed(KVError):
    """A conditional write's condition did not hold; nothing was written.

    ``current_version`` is the key's live version (None if it does not exist), sent back as
    the ``ETag`` so the client can retry against it.
    """

    def __init__(self, message: str, current_version: int | None) -> None:
        super().__init__(412, PRECONDITION_FAILED, message)
        self.current_version = current_version


def precondition_failed(key: str, current_version: int | None) -> PreconditionFailed:
    """A write's If-Match or If-None-Match did not hold for the key's live version."""
    state = "does not exist" if current_version is None else f"is at version {current_version}"
    return PreconditionFailed(f"Precondition failed: key {key!r} {state}", current_version)


def no_route(path: str) -> KVError:
    """No endpoint at this path."""
    return KVError(404, NO_ROUTE, f"No route for that URI: {path}")


def method_not_allowed(method: str) -> KVError:
    """An endpoint exists here but not for this method."""
    return KVError(405, METHOD_NOT_ALLOWED, f"Method {method} not allowed for this endpoint")


def invalid_identifier(kind: str, raw: str) -> KVError:
    """An account or namespace id that is not 32 lowercase hex characters."""
    return KVError(
        404,
        INVALID_ID,
        f"Could not route to {kind} {raw!r}: perhaps your object identifier is invalid?",
    )


def token_not_found(token_id: str) -> KVError:
    """No token with this id in the account."""
    return KVError(404, TOKEN_NOT_FOUND, f"token not found: {token_id!r}")


def store_unavailable(reason: str) -> KVError:
    """The store cannot take the request now; safe to retry."""
    return KVError(503, UNAVAILABLE, f"Service unavailable: {reason}", retryable=True)


def feed_unavailable() -> KVError:
    """This node follows no change feed, so it has none to serve."""
    return KVError(
        503,
        UNAVAILABLE,
        "Service unavailable: this node follows no change feed (an edge run with "
        "--invalidation off); watch through its upstream",
    )


def upstream_unavailable(reason: str) -> KVError:
    """The upstream could not answer and nothing cached may stand in; safe to retry."""
    return KVError(503, UNAVAILABLE, f"Upstream unavailable: {reason}", retryable=True)


class UpstreamUnreachable(KVError):
    """The upstream did not answer at all (a timeout or a failed connection), as opposed to
    answering with an error: this is what opens an edge's circuit breaker."""


def upstream_unreachable(reason: str) -> UpstreamUnreachable:
    """A timeout or connection failure on the way to the upstream; safe to retry."""
    return UpstreamUnreachable(503, UNAVAILABLE, f"Upstream unavailable: {reason}", retryable=True)


def upstream_circuit_open(upstream: str, down_for: float, retry_in: float) -> KVError:
    """Refused at once: the upstream stopped answering and has not answered a probe since."""
    check = f"next check in {retry_in:.1f} s" if retry_in > 0 else "checking now"
    return KVError(
        503,
        UNAVAILABLE,
        f"Upstream unavailable: {upstream} is not answering (for {down_for:.0f} s; "
        f"{check}), and this request needs it",
        retryable=True,
    )


def token_unconfirmed(upstream: str, age: float, limit: float) -> KVError:
    """A cached token record too old to trust while its upstream cannot confirm it."""
    return KVError(
        503,
        UNAVAILABLE,
        f"Upstream unavailable: {upstream} has not confirmed this token for {age:.0f} s, "
        f"longer than this edge trusts a token without it (--auth-max-stale {limit:g} s)",
        retryable=True,
    )


def too_many_connections(limit: int) -> KVError:
    """A new connection past ``--max-connections``: refused at once; safe to retry."""
    return KVError(
        503,
        UNAVAILABLE,
        f"Service unavailable: the server has its maximum of {limit} open connections "
        "(--max-connections); retry shortly",
        retryable=True,
    )


# Errors the HTTP server itself answers, before any route sees the request.
def malformed_request(detail: str) -> KVError:
    """Bytes that are not a valid HTTP/1.1 request."""
    return KVError(400, BAD_REQUEST, f"Bad Request: {detail}")


def request_timeout(seconds: float) -> KVError:
    """The request head did not arrive in time."""
    return KVError(
        408, BAD_REQUEST, f"Request Timeout: the request head did not arrive in {seconds:g} s"
    )


def uri_too_long(limit: int) -> KVError:
    """A request target over the head size limit."""
    return KVError(414, REQUEST_TOO_LARGE, f"URI Too Long: the limit is {limit} bytes")


def headers_too_large(detail: str) -> KVError:
    """A request head over the size or count limit."""
    return KVError(431, REQUEST_TOO_LARGE, f"Request Header Fields Too Large: {detail}")


def internal_error() -> KVError:
    """An unexpected failure; details are logged, never sent."""
    return KVError(500, INTERNAL, "Internal error")


def decryption_failed(what: str) -> KVError:
    """Ciphertext that does not authenticate: tampered, moved, or a missing key."""
    return KVError(500, INTERNAL, f"Stored data failed integrity check: {what}")


# Store maintenance (pullkv store migrate / copy / backup): no HTTP status, a message for people.
class StoreMaintenanceError(Exception):
    """A store command could not finish; the message says why and what to do."""


# Errors the Python client raises for a server's error responses.
class APIError(KVError):
    """The server answered with an error envelope (or an error status)."""


class BadRequestError(APIError):
    """400, 413, 414: the request broke a rule; fix it before retrying."""


class AuthenticationFailed(APIError):
    """401: no token, or a wrong one."""


class PermissionDenied(APIError):
    """403: the token may not do this."""


class NotFoundError(APIError):
    """404: no such namespace, key or route."""


class RateLimitedError(APIError):
    """429: the same key was written too recently."""


class PreconditionFailedError(APIError):
    """412: a conditional write's condition did not hold; ``etag`` is the key's current
    ETag (None when the key does not exist)."""

    etag: str | None = None


class ServerError(APIError):
    """5xx: the server or its upstream failed; retrying may help."""


def api_error(status: int, code: int, message: str) -> APIError:
    """The typed client exception for a status."""
    if status in (400, 405, 413, 414):
        cls: type[APIError] = BadRequestError
    elif status == 401:
        cls = AuthenticationFailed
    elif status == 403:
        cls = PermissionDenied
    elif status == 404:
        cls = NotFoundError
    elif status == 412:
        cls = PreconditionFailedError
    elif status == 429:
        cls = RateLimitedError
    elif status >= 500:
        cls = ServerError
    else:
        cls = APIError
    return cls(status, code, message)


def error_from_response(response: httpx.Response) -> APIError:
    """The typed client exception an unsuccessful response carries: its envelope's first
    error, else its status and reason phrase (code 0). A 412 keeps the current ETag."""
    code, message = 0, response.reason_phrase or f"HTTP {response.status_code}"
    try:
        first = response.json()["errors"][0]
        code, message = int(first["code"]), str(first["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    error = api_error(response.status_code, code, message)
    if isinstance(error, PreconditionFailedError):
        error.etag = response.headers.get("etag")
    return error
