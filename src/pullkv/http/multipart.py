"""multipart/form-data bodies, as the Cloudflare SDK and wrangler send value writes."""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from pullkv import errors


@dataclass(slots=True)
class Part:
    """One part of a form: its field name, filename, content type and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_form(content_type: str, body: bytes) -> dict[str, Part]:
    """Parse a complete multipart body into parts by name; 400 naming what is wrong."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise errors.bad_request("multipart/form-data body has no boundary parameter")
    parts: dict[str, Part] = {}
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[str, str] = {}
    data = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_field.extend(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.extend(buf[start:end])

    def on_header_end() -> None:
        # Latin-1 keeps the bytes as sent: parse_options_header re-encodes to latin-1, and
        # field names in UTF-8 are decoded from those bytes below.
        headers[header_field.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.extend(buf[start:end])

    def on_part_end() -> None:
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise errors.bad_request("multipart part has no Content-Disposition header")
        _, params = parse_options_header(disposition)
        name = params.get(b"name")
        if name is None:
            raise errors.bad_request("multipart part has no name")
        filename = params.get(b"filename")
        key = name.decode("utf-8", "replace")
        parts[key] = Part(
            key,
            filename.decode("utf-8", "replace") if filename is not None else None,
            headers.get("content-type"),
            bytes(data),
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise errors.bad_request(f"Malformed multipart/form-data body: {exc}") from None
    if not parts and body.strip():
        raise errors.bad_request("Malformed multipart/form-data body: no parts found")
    return parts
