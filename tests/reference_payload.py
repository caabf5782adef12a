"""
The payload parser as it was before ``antenna_tw.intake.formdata``: ``PayloadParser``
driving the pure-Python ``multipart`` library's ``PushMultipartParser``.

Kept, unchanged but for its name, as the reference the differential tests
(tests/unit/test_formdata_differential.py) and bench/parse_micro.py compare
the collector's own parser with: for every body and every way of cutting it
into pieces, both must give the same CrashReport or the same refusal. The
``multipart`` package is a test dependency only for this module's sake.
"""

from __future__ import annotations

import codecs
import hashlib
import json

import multipart

from antenna_tw.intake import payload
from antenna_tw.intake.payload import (
    BOTH_KINDS_NOTE,
    MAX_JSON_TOKENS,
    MAX_PART_HEADER_SIZE,
    RESERVED_DUMP_NAMES,
    SLOW_CODECS,
    TEXT_PART_TOO_LARGE_NOTE,
    CrashReport,
    Decompressor,
    MalformedCrashReport,
    _clean_value,
    _drop_nuls,
    sanitize_dump_name,
)


class _Part:
    """
    One part being received: its headers, its bytes so far, its checksum.

    A dump keeps the pieces it arrives in (no copy); other parts grow one
    buffer, and a text part stops keeping bytes once it passes ``limit``.
    """

    __slots__ = ("segment", "data", "size", "sha256", "is_dump", "limit", "too_large")

    def __init__(self, segment, is_dump, limit=None):
        self.segment = segment
        self.data = [] if is_dump else bytearray()
        self.size = 0
        self.is_dump = is_dump
        self.sha256 = hashlib.sha256() if is_dump else None
        self.limit = limit
        self.too_large = False

    def add(self, data):
        if self.too_large:
            return
        if self.limit is not None and self.size + len(data) > self.limit:
            self.too_large = True
            self.data = bytearray()
            return
        self.size += len(data)
        if self.sha256 is not None:
            self.data.append(bytes(data) if not isinstance(data, bytes) else data)
            self.sha256.update(data)
        else:
            self.data += data

    def pieces(self):
        data, self.data = self.data, []
        return data

    def content(self):
        data, self.data = self.data, bytearray()
        return bytes(data)


class ReferencePayloadParser:
    """
    Push parser for one upload: ``feed(bytes)`` as the body arrives, then
    ``close()`` for the CrashReport. Either may raise MalformedCrashReport.

    Memory is bounded by what is kept: dumps and annotations, never a second
    copy of the whole body.
    """

    def __init__(self, boundary, encoding="identity", *, max_decompressed_size,
                 max_parts):
        self._report = CrashReport(payload_compressed=encoding != "identity")
        self._decompressor = None
        if encoding != "identity":
            self._decompressor = Decompressor(encoding, max_decompressed_size)
        self._max_decompressed_size = max_decompressed_size
        self._parsed_bytes = 0
        self._parser = multipart.PushMultipartParser(
            boundary,
            max_header_size=MAX_PART_HEADER_SIZE,
            max_header_count=16,
            max_segment_count=max_parts,
        )
        self._part = None
        self._saw_json = False
        self._saw_form = False
        self._form_after_json = False

    def feed(self, data):
        self._report.payload_size += len(data)
        if self._decompressor is None:
            self._parse(data)
        else:
            for piece in self._decompressor.feed(data):
                self._parse(piece)

    @property
    def parsed_bytes(self):
        """Decompressed bytes parsed so far: at most what this upload holds."""
        return self._parsed_bytes

    def close(self):
        if self._decompressor is not None:
            for piece in self._decompressor.close():
                self._parse(piece)
        self._parse(b"")
        if not self._parser.closed:
            raise MalformedCrashReport("malformed_invalid_payload_structure")
        report = self._report
        if self._saw_json and self._saw_form:
            report.notes.append(BOTH_KINDS_NOTE)
        if self._saw_json:
            report.payload = "json"
        if not report.annotations:
            raise MalformedCrashReport("malformed_no_annotations")
        return report

    def _parse(self, data):
        if data:
            # Uncompressed uploads count here against the decompressed cap too.
            self._parsed_bytes += len(data)
            if self._decompressor is None and self._parsed_bytes > self._max_decompressed_size:
                raise MalformedCrashReport("too_large")
        try:
            for event in self._parser.parse(data):
                if isinstance(event, multipart.MultipartSegment):
                    self._start_part(event)
                elif event:
                    if self._part is not None:
                        self._part.add(event)
                else:
                    self._end_part()
        except multipart.MultipartError:
            raise MalformedCrashReport("malformed_invalid_payload_structure") from None

    def _start_part(self, segment):
        if not segment.name:
            self._part = None  # a part without a name is skipped
            return
        ctype = (segment.content_type or "").lower()
        is_text = ctype.startswith("text/plain") or not ctype
        is_json = ctype.startswith("application/json")
        is_dump = not is_json and not (is_text and segment.filename is None)
        # Only text parts have a size cap (Antenna's); dumps and JSON are bounded
        # by MAX_DECOMPRESSED_SIZE, JSON's decoding cost by MAX_JSON_TOKENS.
        limit = payload.MAX_TEXT_PART_SIZE if not (is_dump or is_json) else None
        self._part = _Part(segment, is_dump, limit)

    def _end_part(self):
        part, self._part = self._part, None
        if part is None:
            return
        segment = part.segment
        if part.is_dump:
            self._add_dump(part)
        elif part.too_large:
            self._report.notes.append(TEXT_PART_TOO_LARGE_NOTE)
        elif (segment.content_type or "").lower().startswith("application/json"):
            self._add_json(part.content())
        else:
            self._add_text(segment, part.content())

    def _add_dump(self, part):
        segment = part.segment
        name = sanitize_dump_name(segment.name)
        if name in RESERVED_DUMP_NAMES:
            raise MalformedCrashReport("malformed_invalid_dump_name")
        ctype = segment.header("Content-Type", None)
        if ctype is None or ctype.strip() != "application/octet-stream":
            # Crashpad sends no type at all: the filename alone makes it a dump.
            if ctype is not None:
                self._report.notes.append(f"unknown content type: {name} {ctype.strip()}")
        self._report.dump_pieces[name] = part.pieces()
        self._report.dump_checksums[name] = part.sha256.hexdigest()

    def _add_json(self, content):
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

    def _add_text(self, segment, content):
        charset = segment.charset or "utf-8"
        try:
            value = _decode_text(content, charset)
        except (ValueError, LookupError):  # UnicodeError is a ValueError
            self._report.notes.append(
                f"extract payload text part exception: invalid text or charset: {charset}"
            )
            return
        self._saw_form = True
        self._report.annotations[_drop_nuls(segment.name)] = _drop_nuls(value)


def _decode_text(content, charset):
    """Decode with a client-named charset; refuse codecs that can be made slow."""
    if codecs.lookup(charset).name in SLOW_CODECS:
        raise LookupError(charset)
    return content.decode(charset)


def reference_parse_content_type(header):
    """``payload.parse_content_type`` as it was, on ``multipart.parse_options_header``."""
    if not header or not header.strip():
        raise MalformedCrashReport("malformed_no_content_type")
    media_type, options = multipart.parse_options_header(header)
    if media_type.strip().lower() not in payload.MULTIPART_TYPES:
        raise MalformedCrashReport("malformed_wrong_content_type")
    boundary = options.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise MalformedCrashReport("malformed_no_boundary")
    return boundary
