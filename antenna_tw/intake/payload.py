"""
Turn an upload body into annotations and dumps, as it arrives.

This module knows nothing of Twisted or HTTP connections: it is fed header
values and body bytes, and returns a ``CrashReport`` or raises
``MalformedCrashReport(reason)`` with one of the reasons of docs/intake.rst,
*The order of checks*.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import attr

from antenna_tw.intake import formdata, inflate
from antenna_tw.intake.formdata import PartType

MULTIPART_TYPES = ("multipart/form-data", "multipart/mixed")
SUPPORTED_ENCODINGS = ("gzip", "x-gzip", "deflate", "identity")
MAX_PART_HEADER_SIZE = 8 * 1024
MAX_PART_HEADER_COUNT = 16
# Antenna reads text parts with a 20 MiB buffer and drops bigger ones with a note.
MAX_TEXT_PART_SIZE = 20 * 1024 * 1024
TEXT_PART_TOO_LARGE_NOTE = "extract payload text part exception: body part is too large"
# A JSON part costs up to ~30 bytes of Python objects per byte of "[]," or "{},";
# more commas and brackets than this are refused before decoding. Real
# annotation objects have a few hundred keys.
MAX_JSON_TOKENS = 1 << 18
# Text codecs written in Python whose decoding can take quadratic time.
SLOW_CODECS = frozenset({"punycode", "idna"})
# Charset names that need no codec look-up to know they are none of those.
FAST_CHARSETS = frozenset({"utf-8", "UTF-8", "utf8", "UTF8", "us-ascii", "ascii",
                           "latin-1", "iso-8859-1", "ISO-8859-1"})
# Body bytes are handed to the parser in pieces of at least this size, so a
# client sending one-byte chunks costs about what one sending big ones does.
FEED_STEP = 8 * 1024
RESERVED_DUMP_NAMES = frozenset({"dump_names", "raw_crash", "processed_crash"})
BOTH_KINDS_NOTE = "includes annotations in both json-encoded extra and formdata parts"
_DUMP_NAME_JUNK = re.compile(r"[^A-Za-z0-9_]")
_OUTPUT_STEP = 256 * 1024


class MalformedCrashReport(Exception):
    """The upload is refused; ``reason`` is the part after ``Discarded=``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attr.s(slots=True)
class CrashReport:
    """
    What a client sent, parsed: annotations, dumps and the notes made on the way.

    Each dump is kept as the list of byte pieces it arrived in
    (``dump_pieces``), so it is written out without ever being joined.
    """

    annotations: dict[str, Any] = attr.ib(factory=dict)
    dump_pieces: dict[str, list[bytes]] = attr.ib(factory=dict)
    dump_checksums: dict[str, str] = attr.ib(factory=dict)
    notes: list[str] = attr.ib(factory=list)
    payload: str = attr.ib(default="multipart")
    payload_compressed: bool = attr.ib(default=False)
    payload_size: int = attr.ib(default=0)

    @property
    def dumps(self) -> dict[str, bytes]:
        """The dumps as bytes by name (joined on each call: for tests and tools)."""
        return {name: b"".join(pieces) for name, pieces in self.dump_pieces.items()}


def parse_content_type(header: str | None) -> str:
    """
    Check a Content-Type value; return the multipart boundary.

    Checks 2-4 of docs/intake.rst, *The order of checks*: present, multipart, and with a boundary of
    1-70 characters anywhere in its parameters, quoted or not.
    """
    if not header or not header.strip():
        raise MalformedCrashReport("malformed_no_content_type")
    media_type, options = formdata.parse_options_header(header)
    if media_type.strip().lower() not in MULTIPART_TYPES:
        raise MalformedCrashReport("malformed_wrong_content_type")
    boundary = options.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise MalformedCrashReport("malformed_no_boundary")
    return boundary


def check_content_encoding(header: str | None) -> str:
    """Check 6: return the lower-cased encoding, ``identity`` when absent."""
    encoding = (header or "identity").strip().lower() or "identity"
    if encoding not in SUPPORTED_ENCODINGS:
        raise MalformedCrashReport("malformed_unsupported_content_encoding")
    return encoding


def sanitize_dump_name(name: str) -> str:
    """Keep only ``[A-Za-z0-9_]`` and at most 30 characters, as Antenna does."""
    return _DUMP_NAME_JUNK.sub("", name)[:30]


def _drop_nuls(text: str) -> str:
    return text.replace("\x00", "") if "\x00" in text else text


class Decompressor:
    """
    Streaming gunzip/inflate that refuses to produce more than ``limit`` bytes.

    The output is produced in bounded steps, so a bomb is stopped after at
    most one step past the cap rather than after inflating a whole chunk.

    ``backend`` names the zlib-compatible module that inflates (see
    ``antenna_tw.intake.inflate``): zlib-ng where it is installed, else zlib. Both
    give the same bytes and the same refusals; ``backend`` says which one
    this decompressor uses.
    """

    def __init__(self, encoding: str, limit: int, backend: str | None = None) -> None:
        self.backend = backend or inflate.DEFAULT_BACKEND
        self._zlib: ModuleType = inflate.BACKENDS[self.backend]
        if encoding == "deflate":
            self._window = zlib.MAX_WBITS  # zlib-wrapped; raw deflate retried below
        else:
            self._window = 16 + zlib.MAX_WBITS
        self._inflater = self._zlib.decompressobj(self._window)
        self._encoding = encoding
        self._limit = limit
        self._produced = 0
        self._started = False

    @property
    def produced(self) -> int:
        """Bytes produced so far."""
        return self._produced

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield decompressed pieces of ``data``."""
        while data:
            if self._inflater.eof:
                # Bytes after the end of the stream are ignored, as gzip does.
                return
            try:
                out = self._inflater.decompress(data, _OUTPUT_STEP)
            except self._zlib.error:
                if self._encoding == "deflate" and not self._started:
                    # Some clients send raw deflate for "deflate".
                    self._inflater = self._zlib.decompressobj(-zlib.MAX_WBITS)
                    self._started = True
                    continue
                raise MalformedCrashReport("malformed_bad_gzip") from None
            self._started = True
            self._produced += len(out)
            if self._produced > self._limit:
                raise MalformedCrashReport("too_large")
            if out:
                yield out
            data = self._inflater.unconsumed_tail

    def close(self) -> Iterator[bytes]:
        """Check the stream ended properly; yield whatever was left."""
        try:
            out = self._inflater.flush()
        except self._zlib.error:
            raise MalformedCrashReport("malformed_bad_gzip") from None
        self._produced += len(out)
        if self._produced > self._limit:
            raise MalformedCrashReport("too_large")
        if not self._inflater.eof:
            raise MalformedCrashReport("malformed_bad_gzip")
        if out:
            yield out


class _Part:
    """
    One part being received in pieces: its name and type, its bytes so far,
    its checksum.

    A dump keeps the pieces it arrives in (no copy); other parts grow one
    buffer, and a text part stops keeping bytes once it passes ``limit``.
    """

    __slots__ = ("name", "type", "chunks", "buffer", "size", "sha256", "is_dump", "limit",
                 "too_large")

    def __init__(self, name: str, part_type: PartType, is_dump: bool,
                 limit: int | None = None) -> None:
        self.name = name
        self.type = part_type
        self.chunks: list[bytes] = []  # a dump's pieces
        self.buffer = bytearray()  # any other part's bytes
        self.size = 0
        self.is_dump = is_dump
        self.sha256 = hashlib.sha256() if is_dump else None
        self.limit = limit
        self.too_large = False

    def add(self, data: bytes | memoryview) -> None:
        if self.too_large:
            return
        if self.limit is not None and self.size + len(data) > self.limit:
            self.too_large = True
            self.buffer = bytearray()
            return
        self.size += len(data)
        if self.sha256 is not None:
            self.chunks.append(bytes(data) if not isinstance(data, bytes) else data)
            self.sha256.update(data)
        else:
            self.buffer += data

    def pieces(self) -> list[bytes]:
        data, self.chunks = self.chunks, []
        return data

    def content(self) -> bytes:
        data, self.buffer = self.buffer, bytearray()
        return bytes(data)


_TEXT, _JSON, _DUMP = range(3)


def _kind(part_type: PartType) -> int:
    """
    What a named part is: JSON annotations (type ``application/json``), one
    text annotation (type ``text/plain`` or none, and no filename) or a dump.
    """
    ctype = (part_type.content_type or "").lower()
    if ctype.startswith("application/json"):
        return _JSON
    if (ctype.startswith("text/plain") or not ctype) and part_type.filename is None:
        return _TEXT
    return _DUMP


class PayloadParser:
    """
    Push parser for one upload: ``feed(bytes)`` as the body arrives, then
    ``close()`` for the CrashReport. Either may raise MalformedCrashReport.

    Memory is bounded by what is kept: dumps and annotations, never a second
    copy of the whole body.

    The multipart structure is read by ``formdata.FormDataParser``, which
    calls back the ``part_*`` methods: ``part_whole`` for a part that came in
    one piece (most annotations), ``part_begin``/``part_data``/``part_end``
    for one that spans pieces (dumps, mostly).
    """

    def __init__(self, boundary: str, encoding: str = "identity", *,
                 max_decompressed_size: int, max_parts: int) -> None:
        self._report = CrashReport(payload_compressed=encoding != "identity")
        self._decompressor: Decompressor | None = None
        if encoding != "identity":
            self._decompressor = Decompressor(encoding, max_decompressed_size)
        self._max_decompressed_size = max_decompressed_size
        self._parsed_bytes = 0
        self._multipart = formdata.FormDataParser(
            boundary,
            max_header_size=MAX_PART_HEADER_SIZE,
            max_header_count=MAX_PART_HEADER_COUNT,
            max_parts=max_parts,
        )
        self._part: _Part | None = None
        self._saw_json = False
        self._saw_form = False

    def feed(self, data: bytes) -> None:
        """Parse the next body bytes (compressed, if the upload is)."""
        self._report.payload_size += len(data)
        if self._decompressor is None:
            self._parse(data)
        else:
            for piece in self._decompressor.feed(data):
                self._parse(piece)

    @property
    def parsed_bytes(self) -> int:
        """Decompressed bytes parsed so far: at most what this upload holds."""
        return self._parsed_bytes

    def close(self) -> CrashReport:
        """The body is complete: the CrashReport, or MalformedCrashReport."""
        if self._decompressor is not None:
            for piece in self._decompressor.close():
                self._parse(piece)
        self._parse(b"")
        report = self._report
        if self._saw_json and self._saw_form:
            report.notes.append(BOTH_KINDS_NOTE)
        if self._saw_json:
            report.payload = "json"
        if not report.annotations:
            raise MalformedCrashReport("malformed_no_annotations")
        return report

    def _parse(self, data: bytes) -> None:
        """Parse a piece (``b""``: the end of the body)."""
        if data:
            # Uncompressed uploads count here against the decompressed cap too.
            self._parsed_bytes += len(data)
            if self._decompressor is None and self._parsed_bytes > self._max_decompressed_size:
                raise MalformedCrashReport("too_large")
        try:
            self._multipart.feed(data, self)
        except formdata.FormDataError:
            raise MalformedCrashReport("malformed_invalid_payload_structure") from None

    def part_whole(self, name: str | None, part_type: PartType, data: bytes) -> None:
        """A part with all its data (``formdata`` sink)."""
        if not name:
            return  # a part without a name is skipped
        ctype = part_type.content_type
        charset = part_type.charset
        if ((ctype is None or ctype == "text/plain") and part_type.filename is None
                and len(data) <= MAX_TEXT_PART_SIZE):
            # The usual text field, known without _kind().
            self._add_text(name, charset, data)
            return
        kind = _kind(part_type)
        if kind == _TEXT:
            if len(data) > MAX_TEXT_PART_SIZE:
                self._report.notes.append(TEXT_PART_TOO_LARGE_NOTE)
            else:
                self._add_text(name, charset, data)
        elif kind == _JSON:
            self._add_json(data)
        else:
            self._add_dump(name, part_type, [data] if data else [],
                           hashlib.sha256(data).hexdigest())

    def part_begin(self, name: str | None, part_type: PartType) -> None:
        """A part whose data comes in pieces (``formdata`` sink)."""
        if not name:
            self._part = None  # a part without a name is skipped
            return
        kind = _kind(part_type)
        # Only text parts have a size cap (Antenna's); dumps and JSON are bounded
        # by MAX_DECOMPRESSED_SIZE, JSON's decoding cost by MAX_JSON_TOKENS.
        limit = MAX_TEXT_PART_SIZE if kind == _TEXT else None
        self._part = _Part(name, part_type, kind == _DUMP, limit)

    def part_data(self, data: bytes | memoryview) -> None:
        """The next piece of the part begun (``formdata`` sink)."""
        if self._part is not None:
            self._part.add(data)

    def part_end(self) -> None:
        """The part begun is complete (``formdata`` sink)."""
        part, self._part = self._part, None
        if part is None:
            return
        if part.is_dump:
            assert part.sha256 is not None  # kept for dumps
            self._add_dump(part.name, part.type, part.pieces(), part.sha256.hexdigest())
        elif part.too_large:
            self._report.notes.append(TEXT_PART_TOO_LARGE_NOTE)
        elif _kind(part.type) == _JSON:
            self._add_json(part.content())
        else:
            self._add_text(part.name, part.type.charset, part.content())

    def _add_dump(self, name: str, part_type: PartType, pieces: list[bytes],
                  checksum: str) -> None:
        name = sanitize_dump_name(name)
        if name in RESERVED_DUMP_NAMES:
            raise MalformedCrashReport("malformed_invalid_dump_name")
        ctype = part_type.header("Content-Type", None)
        if ctype is None or ctype.strip() != "application/octet-stream":
            # Crashpad sends no type at all: the filename alone makes it a dump.
            if ctype is not None:
                self._report.notes.append(f"unknown content type: {name} {ctype.strip()}")
        self._report.dump_pieces[name] = pieces
        self._report.dump_checksums[name] = checksum

    def _add_json(self, content: bytes) -> None:
        tokens = content.count(b",") + content.count(b"[") + content.count(b"{")
        if tokens > MAX_JSON_TOKENS:
            raise MalformedCrashReport("malformed_invalid_json")
        try:
            value = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise MalformedCrashReport("malformed_invalid_json") from None
        if not isinstance(value, dict):
            raise MalformedCrashReport("malformed_invalid_json_value")
        self._saw_json = True
        self._report.annotations = {_drop_nuls(k): _clean_value(v) for k, v in value.items()}

    def _add_text(self, name: str, charset: str | None, content: bytes) -> None:
        charset = charset or "utf-8"
        try:
            value = _decode_text(content, charset)
        except (ValueError, LookupError):  # UnicodeError is a ValueError
            self._report.notes.append(
                f"extract payload text part exception: invalid text or charset: {charset}"
            )
            return
        self._saw_form = True
        self._report.annotations[_drop_nuls(name)] = _drop_nuls(value)


def _decode_text(content: bytes, charset: str) -> str:
    """Decode with a client-named charset; refuse codecs that can be made slow."""
    if charset not in FAST_CHARSETS and codecs.lookup(charset).name in SLOW_CODECS:
        raise LookupError(charset)
    return content.decode(charset)


def _clean_value(value: Any) -> Any:
    """Remove NULs from strings in a JSON annotation value, keeping its type."""
    if isinstance(value, str):
        return _drop_nuls(value)
    if isinstance(value, dict):
        return {_drop_nuls(k): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_value(v) for v in value]
    return value


class UploadReader:
    """
    Judges one upload from its headers and body bytes, in the order of
    docs/intake.rst, *The order of checks*.

    Header checks are made at once, but their verdict waits for the body so
    that a later-counted size limit still wins. The body is parsed only while
    nothing is wrong; after the first error it is counted and dropped, and
    everything the parser held is let go at once.
    """

    def __init__(self, content_type: str | None, content_encoding: str | None,
                 declared_length: int | None, *,
                 max_payload_size: int, max_decompressed_size: int, max_parts: int) -> None:
        self.max_payload_size = max_payload_size
        self.wire_bytes = 0
        self.declared_length = declared_length
        self.error: MalformedCrashReport | None = None
        self._header_error: MalformedCrashReport | None = None
        self._encoding_error: MalformedCrashReport | None = None
        self._parser: PayloadParser | None = None
        self._pending = bytearray()
        self.dropped_bytes = 0  # what the parse held when it was dropped
        try:
            boundary = parse_content_type(content_type)
        except MalformedCrashReport as error:
            self._header_error = _plain(error)
            return
        try:
            encoding = check_content_encoding(content_encoding)
        except MalformedCrashReport as error:
            self._encoding_error = _plain(error)
            return
        self._parser = PayloadParser(
            boundary, encoding,
            max_decompressed_size=max_decompressed_size, max_parts=max_parts,
        )

    @property
    def too_large(self) -> bool:
        """True once the wire size passes the limit (declared or counted)."""
        return (
            self.declared_length is not None and self.declared_length > self.max_payload_size
        ) or self.wire_bytes > self.max_payload_size or (
            self.error is not None and self.error.reason == "too_large"
        )

    @property
    def held_bytes(self) -> int:
        """About how many bytes the parse holds now (0 once it was dropped)."""
        parser = self._parser
        return 0 if parser is None else parser.parsed_bytes + len(self._pending)

    def abandon(self) -> None:
        """Stop parsing and let go of everything held; the body is counted and dropped."""
        self._drop_parser()

    def feed(self, data: bytes) -> None:
        """Take the next body bytes; never raises."""
        self.wire_bytes += len(data)
        if self._parser is None:
            return
        if self.wire_bytes > self.max_payload_size:
            self._drop_parser()
            return
        if not self._pending and len(data) >= FEED_STEP:
            self._parse(data)
            return
        self._pending += data
        if len(self._pending) >= FEED_STEP:
            self._parse_pending()

    def finish(self, complete: bool = True) -> CrashReport:
        """
        The CrashReport, or MalformedCrashReport for the first check that failed.

        ``complete=False``: the client stopped sending before the body's
        declared end, which is a broken structure (check 9) unless an
        earlier check already failed.
        """
        if self.too_large:
            raise MalformedCrashReport("too_large")
        if self._header_error is not None:
            raise self._header_error
        if self.wire_bytes == 0 and (complete or not self.declared_length):
            raise MalformedCrashReport("malformed_no_content_length")
        if self._encoding_error is not None:
            raise self._encoding_error
        if self._parser is not None:
            self._parse_pending()
        if self.error is not None:
            raise self.error
        parser = self._parser
        assert parser is not None  # no header error, so there is one
        self._drop_parser()
        if not complete:
            raise MalformedCrashReport("malformed_invalid_payload_structure")
        try:
            return parser.close()
        except MalformedCrashReport as error:
            failure = _plain(error)
        raise failure

    def _parse_pending(self):
        pending, self._pending = self._pending, bytearray()
        if pending:
            self._parse(bytes(pending))

    def _parse(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None
        try:
            parser.feed(data)
        except MalformedCrashReport as error:
            self.error = _plain(error)
            self._drop_parser()

    def _drop_parser(self):
        if self._parser is not None:
            self.dropped_bytes = self.held_bytes
        self._parser = None
        self._pending = bytearray()


def _plain(error: MalformedCrashReport) -> MalformedCrashReport:
    """
    The same refusal without traceback or context: a kept exception must not
    keep the parser's frames, and with them the dumps, alive.
    """
    return MalformedCrashReport(error.reason)
