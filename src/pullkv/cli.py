"""The ``pullkv`` command: servers, and key/namespace/bulk/token commands in the manner of
``wrangler kv``. A thin layer over the library: every command is a call or two on
:class:`pullkv.Client` (or, for ``keyring``, on the store in a data folder)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from pullkv import errors
from pullkv.client import Client, ValueWithMetadata
from pullkv.limits import DEFAULT_LIMITS

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8787"
DEFAULT_DATA = "./pullkv-data"
BULK_BATCH = 1000  # wrangler's batch size: a tenth of the API's 10,000


class Context:
    """Connection settings shared by the client commands."""

    def __init__(self, url: str, token: str | None, account_id: str | None, as_json: bool) -> None:
        self.url = url
        self.token = token
        self.account_id = account_id
        self.as_json = as_json

    def client(self) -> Client:
        """A client for the configured server; errors clearly when there is no token."""
        token = self.token or _token_from_data_dir()
        if not token:
            raise click.UsageError(
                "no token: pass --token, set PULLKV_TOKEN, or run beside the server's data folder"
            )
        return Client(self.url, token, account_id=self.account_id)

    def emit(self, value: Any, human: Callable[[Any], str] | None = None) -> None:
        """Print JSON with --json, else the human form."""
        if self.as_json or human is None:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            click.echo(human(value))


def _token_from_data_dir() -> str | None:
    data = Path(os.environ.get("PULLKV_DATA", DEFAULT_DATA))
    path = data / "admin-token"
    if path.is_file():
        return path.read_text().strip()
    return None


pass_context = click.make_pass_decorator(Context)


def _run(fn: Callable[[], T]) -> T:
    """Turn client errors into a one-line message and exit status 1."""
    try:
        return fn()
    except errors.AuthenticationFailed as exc:
        context = click.get_current_context().find_object(Context)
        url = context.url if context is not None else "the server"
        source = (
            "--token / PULLKV_TOKEN"
            if context is not None and context.token
            else "the admin-token file in $PULLKV_DATA"
        )
        raise click.ClickException(
            f"{url} rejected the token ({exc.message}): check {source}, and that PULLKV_URL "
            "is the server that token belongs to"
        ) from None
    except errors.APIError as exc:
        raise click.ClickException(
            f"{exc.message} [code: {exc.code}, status: {exc.status}]"
        ) from None


def connection_failure(exc: httpx.TransportError, url: str) -> str:
    """One line saying why ``url`` could not be talked to at all."""
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time: is the server running and reachable?"
    cause: BaseException | None = exc
    while cause is not None:  # httpx wraps the ssl error; its text says what failed
        if isinstance(cause, ssl.SSLError):
            return f"TLS error talking to {url}: {cause}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: is the server running? ({exc})"
    return f"cannot talk to {url}: {exc}"


class _Group(click.Group):
    """The root group: an expected failure is one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except httpx.TransportError as exc:
            context = ctx.find_object(Context)
            url = context.url if context is not None else "the server"
            raise click.ClickException(connection_failure(exc, url)) from None


@click.group(cls=_Group)
@click.option(
    "--url",
    envvar="PULLKV_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Server URL (PULLKV_URL).",
)
@click.option(
    "--token",
    envvar="PULLKV_TOKEN",
    default=None,
    help="API token (PULLKV_TOKEN); defaults to $PULLKV_DATA/admin-token if present.",
)
@click.option(
    "--account-id",
    envvar="PULLKV_ACCOUNT_ID",
    default=None,
    help="Account id (PULLKV_ACCOUNT_ID); found from the token if omitted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.version_option(package_name="pullkv")
@click.pass_context
def main(
    ctx: click.Context, url: str, token: str | None, account_id: str | None, as_json: bool
) -> None:
    """pullkv: a global, read-optimised key-value store that speaks Workers KV."""
    ctx.obj = Context(url, token, account_id, as_json)


# Namespaces.
@main.group()
def namespace() -> None:
    """Create, list, rename and delete namespaces."""


@namespace.command("create")
@click.argument("title")
@pass_context
def namespace_create(ctx: Context, title: str) -> None:
    """Create a namespace called TITLE."""
    with ctx.client() as client:
        created = _run(lambda: client.create_namespace(title))
    ctx.emit(created, lambda n: f"Created namespace {n['title']!r} with id {n['id']}")


@namespace.command("list")
@pass_context
def namespace_list(ctx: Context) -> None:
    """List every namespace."""
    with ctx.client() as client:
        found = _run(client.list_namespaces)
    ctx.emit(found, lambda ns: "\n".join(f"{n['id']}  {n['title']}" for n in ns) or "(none)")


@namespace.command("rename")
@click.argument("namespace_ref", metavar="NAMESPACE")
@click.argument("new_title")
@pass_context
def namespace_rename(ctx: Context, namespace_ref: str, new_title: str) -> None:
    """Rename NAMESPACE (id or title) to NEW_TITLE."""
    with ctx.client() as client:
        renamed = _run(lambda: client.rename_namespace(namespace_ref, new_title))
    ctx.emit(renamed, lambda n: f"Renamed namespace {n['id']} to {n['title']!r}")


@namespace.command("delete")
@click.argument("namespace_ref", metavar="NAMESPACE")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def namespace_delete(ctx: Context, namespace_ref: str, yes: bool) -> None:
    """Delete NAMESPACE (id or title) and every key in it."""
    if not yes:
        click.confirm(f"Delete namespace {namespace_ref!r} and all its keys?", abort=True)
    with ctx.client() as client:
        _run(lambda: client.delete_namespace(namespace_ref))
    ctx.emit({"deleted": namespace_ref}, lambda _: f"Deleted namespace {namespace_ref!r}")


# Keys.
namespace_option = click.option(
    "-n",
    "--namespace",
    "namespace_ref",
    required=True,
    envvar="PULLKV_NAMESPACE",
    help="Namespace id or title (PULLKV_NAMESPACE).",
)


@main.group()
def key() -> None:
    """Put, get, list and delete keys."""


@key.command("put")
@click.argument("name")
@click.argument("value", required=False)
@namespace_option
@click.option(
    "--path",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the value from this file instead.",
)
@click.option("--metadata", help="Metadata as JSON, e.g. '{\"a\":1}'.")
@click.option("--ttl", type=int, help="Expire this many seconds from now (at least 60).")
@click.option("--expiration", type=int, help="Expire at this time (seconds since the epoch).")
@pass_context
def key_put(
    ctx: Context,
    name: str,
    value: str | None,
    namespace_ref: str,
    path: Path | None,
    metadata: str | None,
    ttl: int | None,
    expiration: int | None,
) -> None:
    """Write NAME = VALUE (or the contents of --path)."""
    if (value is None) == (path is None):
        raise click.UsageError("give exactly one of VALUE or --path")
    data: bytes = path.read_bytes() if path is not None else (value or "").encode("utf-8")
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from None
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        _run(lambda: ns.put(name, data, expiration=expiration, expiration_ttl=ttl, metadata=meta))
    ctx.emit({"key": name, "written": True}, lambda _: f"Wrote key {name!r}")


@key.command("get")
@click.argument("name")
@namespace_option
@click.option("--metadata", "with_metadata", is_flag=True, help="Also show metadata and expiry.")
@pass_context
def key_get(ctx: Context, name: str, namespace_ref: str, with_metadata: bool) -> None:
    """Print the value of NAME (raw bytes to stdout)."""
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        found: ValueWithMetadata = _run(lambda: ns.get_with_metadata(name, "bytes"))
    if found.value is None:
        raise click.ClickException(f"key {name!r} not found")
    if ctx.as_json or with_metadata:
        value = found.value.decode("utf-8", errors="replace")
        ctx.emit(
            {
                "key": name,
                "value": value,
                "metadata": found.metadata,
                "expiration": found.expiration,
            }
        )
        return
    sys.stdout.buffer.write(found.value)
    sys.stdout.buffer.flush()


@key.command("list")
@namespace_option
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", type=int, default=None, help="Stop after this many keys.")
@pass_context
def key_list(ctx: Context, namespace_ref: str, prefix: str, limit: int | None) -> None:
    """List keys (following cursors to the end)."""
    keys: list[dict[str, Any]] = []
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        cursor: str | None = None
        while True:
            page = _run(functools.partial(ns.list, prefix=prefix or None, cursor=cursor))
            keys += page.keys
            cursor = page.cursor
            if page.list_complete or (limit is not None and len(keys) >= limit):
                break
    if limit is not None:
        keys = keys[:limit]
    ctx.emit(keys, lambda ks: "\n".join(k["name"] for k in ks) or "(no keys)")


@key.command("delete")
@click.argument("name")
@namespace_option
@pass_context
def key_delete(ctx: Context, name: str, namespace_ref: str) -> None:
    """Delete NAME."""
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        _run(lambda: ns.delete(name))
    ctx.emit({"key": name, "deleted": True}, lambda _: f"Deleted key {name!r}")


# Bulk.
def _load_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path} is not a JSON file: {exc}") from None


def _key_names(items: Any, path: Path) -> list[str]:
    """wrangler's get/delete format: an array of key names or of objects with ``name``."""
    if not isinstance(items, list):
        raise click.ClickException(f"{path} must hold a JSON array")
    names = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
        else:
            raise click.ClickException(f"{path}: item {index} is neither a string nor {{name}}")
    return names


def _put_items(items: Any, path: Path) -> list[dict[str, Any]]:
    """wrangler's put format: an array of {key, value, expiration?, expiration_ttl?,
    metadata?, base64?}."""
    if not isinstance(items, list):
        raise click.ClickException(f"{path} must hold a JSON array")
    bad = [
        i
        for i, item in enumerate(items)
        if not (
            isinstance(item, dict)
            and isinstance(item.get("key"), str)
            and isinstance(item.get("value"), str)
        )
    ]
    if bad:
        shown = ", ".join(str(i) for i in bad[:12])
        raise click.ClickException(f"{path}: items {shown} need a string key and a string value")
    return items


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@main.group()
def bulk() -> None:
    """Bulk put, get and delete from JSON files (wrangler's formats)."""


@bulk.command("put")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@namespace_option
@pass_context
def bulk_put(ctx: Context, file: Path, namespace_ref: str) -> None:
    """Write every {key, value, ...} item in FILE, 1,000 per request."""
    items = _put_items(_load_json_file(file), file)
    written, failed = 0, []
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        with click.progressbar(length=len(items), label="Writing", file=sys.stderr) as bar:
            for batch in _batches(items, BULK_BATCH):
                result = _run(functools.partial(ns.bulk_put, batch))
                written += result["successful_key_count"]
                failed += result["unsuccessful_keys"]
                bar.update(len(batch))
    summary = {"successful_key_count": written, "unsuccessful_keys": failed}
    ctx.emit(
        summary,
        lambda s: (
            f"Wrote {s['successful_key_count']} keys"
            + (f"; retry these: {', '.join(failed)}" if failed else "")
        ),
    )
    if failed:
        sys.exit(1)


@bulk.command("get")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@namespace_option
@click.option("--metadata", "with_metadata", is_flag=True, help="Include metadata.")
@pass_context
def bulk_get(ctx: Context, file: Path, namespace_ref: str, with_metadata: bool) -> None:
    """Read every key named in FILE (100 per request) and print them as JSON."""
    names = _key_names(_load_json_file(file), file)
    values: dict[str, Any] = {}
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        for batch in _batches(names, DEFAULT_LIMITS.bulk_get_max_keys):
            read = ns.get_with_metadata if with_metadata else ns.get
            got: dict[str, Any] = _run(functools.partial(read, list(batch)))
            for name, value in got.items():
                if isinstance(value, ValueWithMetadata):
                    value = {
                        "value": value.value,
                        "metadata": value.metadata,
                        "expiration": value.expiration,
                    }
                values[name] = value
    ctx.emit(values)


@bulk.command("delete")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@namespace_option
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def bulk_delete(ctx: Context, file: Path, namespace_ref: str, force: bool) -> None:
    """Delete every key named in FILE, 1,000 per request."""
    names = _key_names(_load_json_file(file), file)
    if not force:
        click.confirm(f"Delete {len(names)} keys?", abort=True)
    deleted, failed = 0, []
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        with click.progressbar(length=len(names), label="Deleting", file=sys.stderr) as bar:
            for batch in _batches(names, BULK_BATCH):
                result = _run(functools.partial(ns.bulk_delete, batch))
                deleted += result["successful_key_count"]
                failed += result["unsuccessful_keys"]
                bar.update(len(batch))
    summary = {"successful_key_count": deleted, "unsuccessful_keys": failed}
    ctx.emit(
        summary,
        lambda s: (
            f"Deleted {s['successful_key_count']} keys"
            + (f"; retry these: {', '.join(failed)}" if failed else "")
        ),
    )
    if failed:
        sys.exit(1)


# Tokens.
@main.group()
def token() -> None:
    """Create, list and revoke API tokens (needs an admin token)."""


@token.command("create")
@click.option("--name", default="", help="A label for the token.")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Limit the token to this namespace id (repeatable).",
)
@click.option("--read-only", is_flag=True, help="The token may only read.")
@click.option("--admin", is_flag=True, help="The token may manage tokens.")
@click.option(
    "--edge",
    is_flag=True,
    help="The token lets a pullkv edge pull this account's data from this server.",
)
@pass_context
def token_create(
    ctx: Context,
    name: str,
    namespaces: tuple[str, ...],
    read_only: bool,
    admin: bool,
    edge: bool,
) -> None:
    """Create a token; its secret is printed once."""
    with ctx.client() as client:
        created = _run(
            lambda: client.create_token(
                name,
                namespaces=list(namespaces) or None,
                read_only=read_only,
                admin=admin,
                edge=edge,
            )
        )
    ctx.emit(
        created,
        lambda t: f"Created token {t['id']}. Store it now; it is not shown again:\n{t['value']}",
    )


@token.command("list")
@pass_context
def token_list(ctx: Context) -> None:
    """List the account's tokens (never their secrets)."""
    with ctx.client() as client:
        tokens = _run(client.list_tokens)

    def human(ts: list[dict[str, Any]]) -> str:
        rows = []
        for t in ts:
            scope = "read-only" if t["read_only"] else "read-write"
            if t["admin"]:
                scope += ", admin"
            if t.get("edge"):
                scope += ", edge"
            if t["namespaces"] is not None:
                scope += f", namespaces {','.join(t['namespaces'])}"
            rows.append(f"{t['id']}  {t['status']:<8} {t['name'] or '-'}  ({scope})")
        return "\n".join(rows)

    ctx.emit(tokens, human)


@token.command("revoke")
@click.argument("token_id")
@pass_context
def token_revoke(ctx: Context, token_id: str) -> None:
    """Revoke TOKEN_ID at once."""
    with ctx.client() as client:
        _run(lambda: client.revoke_token(token_id))
    ctx.emit({"revoked": token_id}, lambda _: f"Revoked token {token_id}")


# Keyring (local: works on a data folder, since the master key never leaves the machine).
data_option = click.option(
    "--data",
    "data_dir",
    envvar="PULLKV_DATA",
    default=DEFAULT_DATA,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Data folder (PULLKV_DATA).",
)


def _check_store(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    from pullkv.cli_servers import check_store_url

    return check_store_url(ctx, param, url)


store_option = click.option(
    "--store",
    "store_url",
    envvar="PULLKV_STORE",
    default=None,
    callback=_check_store,
    help="Store URL (PULLKV_STORE), when the data folder's server runs with --store.",
)


@main.group()
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
@data_option
@store_option
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
@data_option
@store_option
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
@data_option
@store_option
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


def _register_server_commands() -> None:
    from pullkv.cli_servers import cluster, edge, origin, serve
    from pullkv.cli_store import store

    for command in (serve, origin, edge, cluster, store):
        main.add_command(command)


_register_server_commands()
