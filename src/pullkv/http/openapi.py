"""An OpenAPI 3 description of the Workers KV REST routes pullkv serves.

Derived from Cloudflare's published description (``cloudflare/api-schemas``, the
``workers-kv`` subset), cut down to the routes in :mod:`pullkv.http.rest` and tightened to
the shapes pullkv actually returns, so a fuzzer can hold every response to it. Served
unauthenticated at :data:`PATH` (it describes routes, never data).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pullkv import __version__
from pullkv.limits import DEFAULT_LIMITS

PATH = "/client/v4/openapi.json"
_LIMITS = DEFAULT_LIMITS
_NAMESPACES = "/accounts/{account_id}/storage/kv/namespaces"
_NAMESPACE = _NAMESPACES + "/{namespace_id}"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _success(result: Schema, result_info: Schema | None = None) -> Schema:
    """The Cloudflare success envelope around ``result``."""
    properties: Schema = {
        "success": {"type": "boolean", "enum": [True]},
        "errors": _ref("messages"),
        "messages": _ref("messages"),
        "result": result,
    }
    required = ["success", "errors", "messages", "result"]
    if result_info is not None:
        properties["result_info"] = result_info
        required.append("result_info")
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _responses(ok: Schema, description: str) -> Schema:
    """A 200 with ``ok`` and the failure envelope for every error status."""
    failure = {"description": "Failure", "content": _json_content(_ref("failure"))}
    return {"200": {"description": description, **ok}, "4XX": failure, "5XX": failure}


def _envelope_responses(result: Schema, description: str, info: Schema | None = None) -> Schema:
    return _responses({"content": _json_content(_success(result, info))}, description)


def _param(name: str, where: str, schema: Schema, description: str = "") -> Schema:
    parameter: Schema = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _ids(*names: str) -> list[Schema]:
    kinds = {"account_id": "identifier", "namespace_id": "identifier", "key_name": "key_name"}
    return [_param(name, "path", _ref(kinds[name])) for name in names]


def _operation(
    operation_id: str, summary: str, parameters: list[Schema], responses: Schema, **extra: Any
) -> Schema:
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters,
        "responses": responses,
        **extra,
    }


def _json_body(schema: Schema) -> Schema:
    return {"required": True, "content": _json_content(schema)}


_INTEGER = {"type": "integer", "maximum": _LIMITS.max_integer_param}
_EXPIRY_QUERY = [
    _param("expiration", "query", {**_INTEGER}, "Absolute expiry, epoch seconds"),
    _param("expiration_ttl", "query", {**_INTEGER}, "Seconds from now until expiry"),
]
_CACHE_TTL = _param(
    "cache_ttl",
    "query",
    {**_INTEGER, "minimum": _LIMITS.min_cache_ttl},
    "pullkv: how long an edge may serve its cached copy (Workers KV's cacheTtl)",
)
_ETAG = {"schema": {"type": "string", "pattern": '^"[0-9]+"$'}}
_IF_MATCH = _param(
    "If-Match",
    "header",
    {"type": "string"},
    'pullkv: write only if the key is at this ETag ("<version>"); 412 otherwise',
)
_IF_NONE_MATCH = _param(
    "If-None-Match",
    "header",
    {"type": "string", "enum": ["*"]},
    "pullkv: write only if the key does not exist; 412 otherwise",
)


def _written(result: Schema, description: str) -> Schema:
    """A value write's responses: the success envelope, with the new ETag."""
    responses = _envelope_responses(result, description)
    responses["200"]["headers"] = {"etag": _ETAG}
    return responses


_VALUE_HEADERS = {
    "expiration": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "cf-kv-metadata": {"schema": {"type": "string"}},
    "cache-status": {"schema": {"type": "string"}},
    "age": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
}

_COMPONENTS: Schema = {
    "securitySchemes": {"api_token": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "identifier": {"type": "string", "pattern": "^[0-9a-f]{32}$", "maxLength": 32},
        "key_name": {
            "type": "string",
            "minLength": 1,
            "maxLength": _LIMITS.max_key_bytes,
            "description": "At most 512 bytes of UTF-8, percent-encoded in the path.",
        },
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "integer", "minimum": 1000},
                    "message": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
        "failure": {
            "type": "object",
            "required": ["success", "errors", "messages", "result"],
            "properties": {
                "success": {"type": "boolean", "enum": [False]},
                "errors": {"allOf": [_ref("messages"), {"minItems": 1}]},
                "messages": _ref("messages"),
                "result": {"nullable": True, "enum": [None]},
            },
            "additionalProperties": False,
        },
        "namespace": {
            "type": "object",
            "required": ["id", "title", "supports_url_encoding"],
            "properties": {
                "id": _ref("identifier"),
                "title": {"type": "string"},
                "supports_url_encoding": {"type": "boolean", "enum": [True]},
                "jurisdiction": _ref("jurisdiction"),
            },
            "additionalProperties": False,
        },
        "jurisdiction": {"type": "string", "enum": ["eu", "fedramp", "us"]},
        "namespace_body": {
            "type": "object",
            "required": ["title"],
            "properties": {
                "title": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": _LIMITS.max_title_chars,
                },
                "jurisdiction": _ref("jurisdiction"),
            },
        },
        "metadata": {
            "description": "Any JSON, at most 1,024 bytes serialised.",
            "nullable": True,
        },
        "key": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "expiration": {"type": "integer"},
                "metadata": _ref("metadata"),
            },
            "additionalProperties": False,
        },
        "bulk_write": {
            "type": "array",
            "maxItems": _LIMITS.bulk_write_max_items,
            "items": {
                "type": "object",
                "required": ["key", "value"],
                "properties": {
                    "key": _ref("key_name"),
                    "value": {"type": "string"},
                    "base64": {"type": "boolean"},
                    "expiration": {"type": "integer"},
                    "expiration_ttl": {"type": "integer"},
                    "metadata": _ref("metadata"),
                },
            },
        },
        "bulk_delete": {
            "type": "array",
            "maxItems": _LIMITS.bulk_write_max_items,
            "items": _ref("key_name"),
        },
        "bulk_result": {
            "type": "object",
            "required": ["successful_key_count", "unsuccessful_keys"],
            "properties": {
                "successful_key_count": {"type": "integer", "minimum": 0},
                "unsuccessful_keys": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "bulk_get_body": {
            "type": "object",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": _LIMITS.bulk_get_max_keys,
                    "items": _ref("key_name"),
                },
                "type": {"type": "string", "enum": ["text", "json"]},
                "withMetadata": {"type": "boolean"},
            },
        },
        "bulk_get_result": {
            "type": "object",
            "required": ["values"],
            "properties": {
                "values": {
                    "type": "object",
                    "description": "Each key: its value (text or parsed JSON), or with "
                    "withMetadata an object {value, metadata, expiration?}; null if missing.",
                    "additionalProperties": {"nullable": True},
                }
            },
            "additionalProperties": False,
        },
    },
}


def _paths() -> Schema:
    namespace_info = {
        "type": "object",
        "required": ["page", "per_page", "count", "total_count", "total_pages"],
        "properties": {
            name: {"type": "integer", "minimum": 0}
            for name in ("page", "per_page", "count", "total_count", "total_pages")
        },
        "additionalProperties": False,
    }
    keys_info = {
        "type": "object",
        "required": ["count", "cursor"],
        "properties": {"count": {"type": "integer", "minimum": 0}, "cursor": {"type": "string"}},
        "additionalProperties": False,
    }
    null = {"nullable": True, "enum": [None]}
    bulk_delete = _operation(
        "delete-multiple-key-value-pairs",
        "Delete keys (at most 10,000)",
        _ids("account_id", "namespace_id"),
        _envelope_responses(_ref("bulk_result"), "Deleted"),
        requestBody=_json_body(_ref("bulk_delete")),
    )
    return {
        _NAMESPACES: {
            "get": _operation(
                "list-namespaces",
                "List namespaces",
                [
                    *_ids("account_id"),
                    _param("page", "query", {**_INTEGER, "minimum": 1}),
                    _param("per_page", "query", {**_INTEGER, "minimum": 1}),
                    _param("order", "query", {"type": "string", "enum": ["id", "title"]}),
                    _param("direction", "query", {"type": "string", "enum": ["asc", "desc"]}),
                ],
                _envelope_responses(
                    {"type": "array", "items": _ref("namespace")}, "Namespaces", namespace_info
                ),
            ),
            "post": _operation(
                "create-a-namespace",
                "Create a namespace",
                _ids("account_id"),
                _envelope_responses(_ref("namespace"), "Created"),
                requestBody=_json_body(_ref("namespace_body")),
            ),
        },
        _NAMESPACE: {
            "get": _operation(
                "get-a-namespace",
                "Get a namespace",
                _ids("account_id", "namespace_id"),
                _envelope_responses(_ref("namespace"), "The namespace"),
            ),
            "put": _operation(
                "rename-a-namespace",
                "Rename a namespace",
                _ids("account_id", "namespace_id"),
                _envelope_responses(_ref("namespace"), "Renamed"),
                requestBody=_json_body(_ref("namespace_body")),
            ),
            "delete": _operation(
                "remove-a-namespace",
                "Delete a namespace and all its keys",
                _ids("account_id", "namespace_id"),
                _envelope_responses(null, "Deleted"),
            ),
        },
        _NAMESPACE + "/values/{key_name}": {
            "get": _operation(
                "read-key-value-pair",
                "Read a value (raw bytes)",
                [*_ids("account_id", "namespace_id", "key_name"), _CACHE_TTL],
                _responses(
                    {
                        "headers": _VALUE_HEADERS,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "The value",
                ),
            ),
            "put": _operation(
                "write-key-value-pair-with-metadata",
                "Write a value: raw bytes, or multipart with value and metadata",
                [
                    *_ids("account_id", "namespace_id", "key_name"),
                    *_EXPIRY_QUERY,
                    _IF_MATCH,
                    _IF_NONE_MATCH,
                ],
                _written(null, "Written"),
                requestBody={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["value"],
                                "properties": {
                                    "value": {"type": "string"},
                                    "metadata": {
                                        "type": "string",
                                        "description": "JSON text, at most 1,024 bytes",
                                    },
                                },
                            }
                        },
                    },
                },
            ),
            "delete": _operation(
                "delete-key-value-pair",
                "Delete a key (succeeds whether or not it exists, unless conditional)",
                [*_ids("account_id", "namespace_id", "key_name"), _IF_MATCH],
                _envelope_responses(null, "Deleted"),
            ),
        },
        _NAMESPACE + "/metadata/{key_name}": {
            "get": _operation(
                "read-the-metadata-for-a-key",
                "Read a key's metadata",
                _ids("account_id", "namespace_id", "key_name"),
                _envelope_responses(_ref("metadata"), "The metadata (null if none)"),
            ),
        },
        _NAMESPACE + "/keys": {
            "get": _operation(
                "list-a-namespace'-s-keys",
                "List keys in UTF-8 byte order",
                [
                    *_ids("account_id", "namespace_id"),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": _LIMITS.list_max_limit},
                    ),
                    _param(
                        "prefix", "query", {"type": "string", "maxLength": _LIMITS.max_key_bytes}
                    ),
                    _param("cursor", "query", {"type": "string"}),
                ],
                _envelope_responses({"type": "array", "items": _ref("key")}, "Keys", keys_info),
            ),
        },
        _NAMESPACE + "/bulk": {
            "put": _operation(
                "write-multiple-key-value-pairs",
                "Write keys (at most 10,000)",
                _ids("account_id", "namespace_id"),
                _envelope_responses(_ref("bulk_result"), "Written"),
                requestBody=_json_body(_ref("bulk_write")),
            ),
            "delete": bulk_delete,
        },
        _NAMESPACE + "/bulk/delete": {
            "post": {**bulk_delete, "operationId": "delete-multiple-key-value-pairs-post"}
        },
        _NAMESPACE + "/bulk/get": {
            "post": _operation(
                "get-multiple-key-value-pairs",
                "Read up to 100 keys",
                [*_ids("account_id", "namespace_id"), _CACHE_TTL],
                _envelope_responses(_ref("bulk_get_result"), "Values"),
                requestBody=_json_body(_ref("bulk_get_body")),
            ),
        },
    }


def description(server_url: str = "/client/v4") -> Schema:
    """The OpenAPI document as a dict; ``server_url`` is where its paths are rooted."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pullkv: the Workers KV REST API (Cloudflare v4)",
            "version": __version__,
            "description": "The Cloudflare v4 Workers KV routes that pullkv serves, with "
            "pullkv's response shapes. Derived from cloudflare/api-schemas (workers-kv).",
        },
        "servers": [{"url": server_url}],
        "security": [{"api_token": []}],
        "paths": _paths(),
        "components": _COMPONENTS,
    }


@cache
def document() -> bytes:
    """The description as served: JSON bytes, built once."""
    return json.dumps(description(), separators=(",", ":")).encode()
