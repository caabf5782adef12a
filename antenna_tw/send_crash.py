"""
Send a crash report, as Breakpad and Crashpad clients do (like Antenna's
mini_poster). For people and for tests; installed as ``antenna-send-crash``::

    antenna-send-crash --url http://127.0.0.1:8000/submit \\
        --dump upload_file_minidump=crash.dmp --annotation ProductName=Test \\
        --annotation Version=1.0 [--json] [--gzip] [--chunked] [--crashpad]

Without ``--dump`` it sends a tiny generated minidump (``tiny_minidump``);
with neither ``--dump`` nor ``--annotation`` it sends a sample crash, that
dump with ``ProductName=Test`` and ``Version=1.0``. ``--crashpad`` leaves the
Content-Type out of every part, as Crashpad does; with ``--gzip --chunked``
the upload has Crashpad's shape.

Prints the answer; the exit status is 0 only when the answer is a CrashID.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import struct
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import cast
from urllib.parse import urlsplit

MINIDUMP_SIGNATURE = b"MDMP"
MINIDUMP_VERSION = 0xA793  # the low 16 bits of every minidump's version; the high ones vary
SAMPLE_ANNOTATIONS = {"ProductName": "Test", "Version": "1.0"}


def tiny_minidump(timestamp: int | None = None) -> bytes:
    """
    The smallest well-formed minidump: a 32-byte MINIDUMP_HEADER (signature,
    version, no streams, the empty stream directory right after the header,
    no checksum, ``timestamp`` or now, flags 0). A collector stores it like
    any dump; a processor finds nothing in it.
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    header = struct.Struct("<4sIIIIIQ")
    return header.pack(MINIDUMP_SIGNATURE, MINIDUMP_VERSION, 0, header.size, 0,
                       stamp & 0xFFFFFFFF, 0)


def build_multipart(annotations: Mapping[str, object] | None = None,
                    dumps: Mapping[str, bytes] | None = None, *, use_json: bool = False,
                    boundary: str | None = None,
                    dump_content_type: str | None = "application/octet-stream",
                    text_content_type: str | None = "text/plain; charset=utf-8",
                    ) -> tuple[bytes, str]:
    """
    A multipart/form-data body: ``(body, content_type)``.

    ``annotations`` become text parts (or one ``extra`` JSON part with
    ``use_json``), sorted by key; ``dumps`` maps part names to bytes and
    become file parts. ``dump_content_type=None`` and
    ``text_content_type=None`` leave the type out, as Crashpad does.
    """
    boundary = boundary or uuid.uuid4().hex
    annotations = annotations or {}
    dumps = dumps or {}
    parts: list[tuple[bytes, bytes]] = []
    if use_json:
        parts.append(
            (b'Content-Disposition: form-data; name="extra"; filename="extra.json"\r\n'
             b"Content-Type: application/json\r\n",
             json.dumps(annotations).encode("utf-8"))
        )
    else:
        for key in sorted(annotations):
            headers = f'Content-Disposition: form-data; name="{key}"\r\n'
            if text_content_type:
                headers += f"Content-Type: {text_content_type}\r\n"
            parts.append((headers.encode("utf-8"), str(annotations[key]).encode("utf-8")))
    for name in sorted(dumps):
        headers = f'Content-Disposition: form-data; name="{name}"; filename="{name}.dmp"\r\n'
        if dump_content_type:
            headers += f"Content-Type: {dump_content_type}\r\n"
        parts.append((headers.encode("utf-8"), dumps[name]))
    marker = b"--" + boundary.encode("ascii")
    body = b"".join(marker + b"\r\n" + head + b"\r\n" + data + b"\r\n" for head, data in parts)
    body += marker + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def iter_chunks(body: bytes, size: int = 65536) -> Iterator[bytes]:
    """``body`` in pieces of ``size`` bytes, for a chunked upload."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def post(url: str, body: bytes, content_type: str, *, compressed: bool = False,
         chunked: bool = False, headers: Mapping[str, str] | None = None,
         timeout: float = 60.0) -> tuple[int, bytes]:
    """POST with http.client; returns ``(status, answer bytes)``."""
    parts = urlsplit(url)
    connection_class: type[http.client.HTTPConnection] = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection)
    # A URL without a host fails in http.client, as it always did.
    connection = connection_class(cast(str, parts.hostname), parts.port, timeout=timeout)
    all_headers = {"Content-Type": content_type}
    if compressed:
        body = gzip.compress(body)
        all_headers["Content-Encoding"] = "gzip"
    all_headers.update(headers or {})
    path = parts.path + ("?" + parts.query if parts.query else "")
    try:
        if chunked:
            all_headers["Transfer-Encoding"] = "chunked"
            connection.request("POST", path, body=iter_chunks(body), headers=all_headers,
                               encode_chunked=True)
        else:
            connection.request("POST", path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """``antenna-send-crash``: send one crash report and print the answer; the exit status."""
    parser = argparse.ArgumentParser(prog="antenna-send-crash",
                                     description="Send a crash report to a collector.")
    parser.add_argument("--url", default="http://127.0.0.1:8000/submit")
    parser.add_argument("--dump", action="append", default=[], metavar="[NAME=]FILE",
                        help="a dump file; NAME defaults to --dump-name "
                             "(without any: a tiny generated minidump)")
    parser.add_argument("--dump-name", default="upload_file_minidump")
    parser.add_argument("--annotation", action="append", default=[], type=_pair,
                        metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="annotations as one JSON extra part")
    parser.add_argument("--gzip", action="store_true", help="gzip the whole body")
    parser.add_argument("--chunked", action="store_true", help="Transfer-Encoding: chunked")
    parser.add_argument("--crashpad", action="store_true",
                        help="parts without a Content-Type, as Crashpad sends them")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    dumps: dict[str, bytes] = {}
    for spec in args.dump:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = args.dump_name, spec
        try:
            with open(path, "rb") as dump_file:
                dumps[name] = dump_file.read()
        except OSError as error:
            print(f"error: {path}: {error.strerror}", file=sys.stderr)
            return 2
    annotations = dict(args.annotation)
    if not dumps:
        if not annotations:
            annotations = dict(SAMPLE_ANNOTATIONS)
        dumps[args.dump_name] = tiny_minidump()
    body, content_type = build_multipart(
        annotations, dumps, use_json=args.json,
        dump_content_type=None if args.crashpad else "application/octet-stream",
        text_content_type=None if args.crashpad else "text/plain; charset=utf-8",
    )
    try:
        status, answer = post(args.url, body, content_type, compressed=args.gzip,
                              chunked=args.chunked, timeout=args.timeout)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = answer.decode("utf-8", "replace").strip()
    print(f"{status} {text}")
    return 0 if status == 200 and text.startswith("CrashID=") else 1


if __name__ == "__main__":
    sys.exit(main())
