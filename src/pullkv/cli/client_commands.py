"""The commands that talk to a server through :class:`pullkv.Client`: ``namespace``, ``key``,
``bulk`` and ``token``, in the manner of ``wrangler kv``."""

from __future__ import annotations

import base64
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pullkv import errors
from pullkv.cli.context import Context, pass_context
from pullkv.client import Namespace, ValueWithMetadata
from pullkv.limits import DEFAULT_LIMITS

T = TypeVar("T")

BULK_BATCH = 1000  # wrangler's batch size: a tenth of the API's 10,000


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


# Namespaces.
@click.group()
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


namespace_option = click.option(
    "-n",
    "--namespace",
    "namespace_ref",
    required=True,
    envvar="PULLKV_NAMESPACE",
    help="Namespace id or title (PULLKV_NAMESPACE).",
)


@namespace.command("stats")
@namespace_option
@pass_context
def namespace_stats(ctx: Context, namespace_ref: str) -> None:
    """Count a namespace's live keys, their stored bytes and how many expire.

    Counted by the server in one query. Bytes are as stored: values are encrypted at rest,
    so each counts its plaintext length plus a small sealing overhead.
    """
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        stats = _run(ns.stats)
    ctx.emit(
        stats,
        lambda s: (
            f"keys:             {s['keys']}\n"
            f"value bytes:      {s['value_bytes']} (stored, encrypted)\n"
            f"with expiration:  {s['expiring']}"
        ),
    )


@click.command()
@pass_context
def info(ctx: Context) -> None:
    """Show what the server is: version, role, your account id, cache figures."""
    with ctx.client() as client:
        found = _run(client.info)
    found = {"url": ctx.url, **found}

    def human(i: dict[str, Any]) -> str:
        cache = i.get("cache")
        lines = [
            f"server:      {i['url']}",
            f"version:     {i['version']}",
            f"role:        {i['role']}",
            f"account id:  {i['account_id']}",
            f"location:    {i['location'] or '-'}",
            f"upstream:    {i['upstream'] or '-'}",
            f"uptime:      {i['uptime_seconds']} s",
        ]
        if cache is None:
            lines.append("cache:       none (an origin reads its store directly)")
        else:
            ratio = cache["hit_ratio"]
            shown = "-" if ratio is None else f"{ratio:.1%}"
            lines.append(
                f"cache:       {cache['entries']} entries, {cache['bytes']} bytes, "
                f"hit ratio {shown} of {cache['reads']} reads"
            )
        return "\n".join(lines)

    ctx.emit(found, human)


# Keys.


@click.group()
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


@click.group()
def bulk() -> None:
    """Bulk put, get and delete from JSON files (wrangler's formats)."""


skip_option = click.option(
    "--skip",
    type=click.IntRange(min=0),
    default=0,
    help="Leave out the first N entries of FILE (to resume after an interruption).",
)


def _send_in_batches(
    ctx: Context,
    items: Sequence[T],
    skip: int,
    send: Callable[[Namespace, list[T]], dict[str, Any]],
    *,
    command: str,
    label: str,
    past: str,
    summary_verb: str,
    file: Path,
    namespace_ref: str,
) -> None:
    """Send ``items`` after the first ``skip``, 1,000 per request, with a progress bar; print
    the summary; exit 1 if any key failed.

    Ctrl-C stops between requests, says how far it got and the ``--skip`` that resumes, and
    exits 130 (SIGINT). The count is of finished requests only: one in flight may or may not
    have been applied, and doing it again is harmless (a put or delete is idempotent).
    """
    done = min(skip, len(items))
    succeeded, failed = 0, []
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        try:
            with click.progressbar(length=len(items), label=label, file=sys.stderr) as bar:
                bar.update(done)
                for batch in _batches(items[done:], BULK_BATCH):
                    result = _run(functools.partial(send, ns, list(batch)))
                    succeeded += result["successful_key_count"]
                    failed += result["unsuccessful_keys"]
                    done += len(batch)
                    bar.update(len(batch))
        except KeyboardInterrupt:
            click.echo(
                f"\nInterrupted: {done} of {len(items)} entries {past}. Resume with:\n"
                f"  pullkv bulk {command} {file} -n {namespace_ref} --skip {done}",
                err=True,
            )
            sys.exit(130)
    summary = {"successful_key_count": succeeded, "unsuccessful_keys": failed}
    ctx.emit(
        summary,
        lambda s: (
            f"{summary_verb} {s['successful_key_count']} keys"
            + (f"; retry these: {', '.join(failed)}" if failed else "")
        ),
    )
    if failed:
        sys.exit(1)


@bulk.command("put")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@namespace_option
@skip_option
@pass_context
def bulk_put(ctx: Context, file: Path, namespace_ref: str, skip: int) -> None:
    """Write every {key, value, ...} item in FILE, 1,000 per request.

    FILE is wrangler's bulk format, as `pullkv bulk export` writes it. Ctrl-C stops between
    requests and prints the --skip that resumes.
    """
    _send_in_batches(
        ctx,
        _put_items(_load_json_file(file), file),
        skip,
        Namespace.bulk_put,
        command="put",
        label="Writing",
        past="written",
        summary_verb="Wrote",
        file=file,
        namespace_ref=namespace_ref,
    )


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
@skip_option
@pass_context
def bulk_delete(ctx: Context, file: Path, namespace_ref: str, force: bool, skip: int) -> None:
    """Delete every key named in FILE, 1,000 per request.

    Ctrl-C stops between requests and prints the --skip that resumes.
    """
    names = _key_names(_load_json_file(file), file)
    if not force:
        click.confirm(f"Delete {len(names) - min(skip, len(names))} keys?", abort=True)
    _send_in_batches(
        ctx,
        names,
        skip,
        Namespace.bulk_delete,
        command="delete -f",
        label="Deleting",
        past="deleted",
        summary_verb="Deleted",
        file=file,
        namespace_ref=namespace_ref,
    )


def _export_item(key: str, found: ValueWithMetadata, raw: bytes | None) -> dict[str, Any]:
    """One entry in wrangler's bulk format; ``raw`` is the value's bytes when its text form
    could not carry them (not UTF-8), then written base64."""
    item: dict[str, Any] = {"key": key}
    if raw is not None:
        item["value"] = base64.b64encode(raw).decode("ascii")
        item["base64"] = True
    else:
        item["value"] = found.value
    if found.expiration is not None:
        item["expiration"] = found.expiration
    if found.metadata is not None:
        item["metadata"] = found.metadata
    return item


def _export_page(ns: Namespace, keys: list[str]) -> Iterator[dict[str, Any]]:
    """The entries of ``keys`` still there, read with one bulk get where it can be."""
    try:
        got: dict[str, Any] = ns.get_with_metadata(keys, "text")
    except errors.APIError:
        got = {k: None for k in keys}  # e.g. over the bulk get's response cap: one at a time
        for name in keys:
            single = _run(functools.partial(ns.get_with_metadata, name, "bytes"))
            if single.value is not None:
                got[name] = single
    for name in keys:
        found = got.get(name)
        if found is None:
            continue  # deleted since it was listed
        raw: bytes | None = None
        if isinstance(found.value, bytes):
            raw = found.value
        elif "\ufffd" in found.value:
            # The text form replaced bytes that are not UTF-8: fetch them as they are.
            raw = _run(functools.partial(ns.get, name, "bytes"))
            if raw is None:
                continue
        if raw is not None:
            try:
                found = ValueWithMetadata(raw.decode("utf-8"), found.metadata, found.expiration)
                raw = None
            except UnicodeDecodeError:
                pass
        yield _export_item(name, found, raw)


@bulk.command("export")
@namespace_option
@click.option("--prefix", default="", help="Only keys starting with this.")
@pass_context
def bulk_export(ctx: Context, namespace_ref: str, prefix: str) -> None:
    """Write every key of a namespace to stdout as JSON, in wrangler's bulk format.

    Streams a page at a time (list, then bulk get with metadata): values that are not UTF-8
    are written base64 with "base64": true. `pullkv bulk put FILE` reads the file back.
    The progress bar goes to stderr.
    """
    out = sys.stdout
    with ctx.client() as client:
        ns = _run(lambda: client.namespace(namespace_ref))
        total = int(_run(ns.stats)["keys"]) if not prefix else None
        count = 0
        out.write("[")
        # With a prefix the total is unknown until the end: the bar then counts to nothing.
        bar_length = total if total is not None else 0
        with click.progressbar(length=bar_length, label="Exporting", file=sys.stderr) as bar:
            cursor: str | None = None
            while True:
                page = _run(functools.partial(ns.list, prefix=prefix or None, cursor=cursor))
                names = [k["name"] for k in page.keys]
                for start in range(0, len(names), DEFAULT_LIMITS.bulk_get_max_keys):
                    chunk = names[start : start + DEFAULT_LIMITS.bulk_get_max_keys]
                    for item in _export_page(ns, chunk):
                        out.write(("\n" if count == 0 else ",\n") + json.dumps(item))
                        count += 1
                if total is not None:
                    bar.update(len(names))
                cursor = page.cursor
                if page.list_complete or not cursor:
                    break
        out.write("\n]\n" if count else "]\n")
        out.flush()
    click.echo(f"Exported {count} keys", err=True)


# Tokens.
@click.group()
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
