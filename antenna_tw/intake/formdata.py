"""
A streaming multipart/form-data parser, made for crash uploads.

Why our own: the collector used the pure-Python ``multipart`` library
(2.0.1), whose ``PushMultipartParser`` yields a generator event per part
start, data piece and part end, decodes and title-cases each header line on
its own and builds a segment object with regular expressions: about 7.5 µs
per part, a quarter of a 40-field crash's parse. This parser handles every
part that is complete in the buffer in one loop, hands a whole part to the
sink in one call, reads a part's header block at once, and keeps what it
parsed of repeated header lines (``Content-Type: text/plain; charset=utf-8``
on every field) for the rest of the upload.

What it accepts and refuses is exactly what the library accepted and refused
in its non-strict mode, for every body and every way of cutting it into
pieces, quirks included (tests/unit/test_formdata_differential.py compares
the two):

* bytes before the first boundary are skipped; a boundary there must start
  the body or follow CRLF. Only what the library keeps of a preamble between
  pieces is kept (the last bytes from a CR that may start a boundary), so a
  stray ``--boundary`` in a preamble is refused only when it is seen whole;
* lines end with CRLF: a header block without any CRLF after a lone LF is
  refused, but an LF inside a header line that a CRLF ends is kept in its
  value (so whether such a line is refused depends on where the pieces were
  cut, as in the library);
* a header line starting with a space or tab continues the previous one;
  names are stripped and title-cased and must be ``[A-Za-z0-9_-]+``; values
  lose leading spaces and tabs only; at most ``max_header_count`` headers of
  at most ``max_header_size`` bytes each (a line still waiting for its CRLF
  counts its bytes so far, CR included);
* a part must have ``Content-Disposition: form-data``; its ``name`` and
  ``filename`` are read as the library's ``parse_content_disposition`` does
  (a part without a name gets ``""``); a part's own ``Content-Length`` must be
  a plain decimal, appear once and match the part's size;
* a delimiter in a part's data must be followed by CRLF (next part) or
  ``--`` (the end); anything after the end is ignored; a body without its
  closing delimiter is refused at ``close()``; the part count is limited by
  ``max_parts``, counted as each part's delimiter is read.

Memory: the parser keeps at most one header line (``max_header_size``), the
headers of the current part, and a partial delimiter between pieces; part
data is handed on as bytes slices of the piece it came in (a piece with no
delimiter in reach is handed on as it is). Work per piece is linear in the
piece plus what was kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

# The library's header grammar, its patterns copied unchanged.
_TOKEN = "[a-zA-Z0-9-!#$%&'*+.^_`|~]+"
_HEADER_NAME_PATTERN = "[a-zA-Z0-9-_]+"
_VALUE = r'"[^\\"]*"|%s|"(?:\\.|[^\\"])*"' % _TOKEN
_OPTION = re.compile(r"; *(%s) *= *(%s)" % (_HEADER_NAME_PATTERN, _VALUE))
_HEADER_NAME = re.compile(_HEADER_NAME_PATTERN, re.ASCII)

KNOWN_HEADERS = frozenset(
    ["Content-Disposition", "Content-Type", "Content-Length", "Content-Range"])
# Header lines kept parsed for the rest of an upload: how many, how long.
CACHE_ENTRIES = 32
CACHE_LINE_SIZE = 200

_PREAMBLE, _HEADER, _BODY, _COMPLETE = range(4)
_FORM_DATA_NAME = b'Content-Disposition: form-data; name="'

#: A part header as read: (name, value as sent, what ``_parse_header_line`` made of it).
Header = tuple[str, str, Any]


if TYPE_CHECKING:  # for mypy only
    class PartSink(Protocol):
        """What ``FormDataParser.feed`` hands each part to (``payload.PayloadParser``)."""

        def part_whole(self, name: str | None, part_type: PartType, data: bytes) -> None:
            """A part with all its data."""

        def part_begin(self, name: str | None, part_type: PartType) -> None:
            """A part whose data comes in pieces."""

        def part_data(self, data: bytes) -> None:
            """The next piece of the part begun."""

        def part_end(self) -> None:
            """The part begun is complete."""


class FormDataError(ValueError):
    """The body is not a multipart stream this parser accepts, or passes a limit."""


def header_unquote(value: str, filename: bool = False) -> str:
    """Unquote a quoted-string option value (``parse_options_header``'s default)."""
    if value and value[0] == value[-1] == '"':
        value = value[1:-1]
        # Internet Explorer 6 sent the full path as the filename.
        if filename and (value[1:3] == ":\\" or value[:2] == "\\\\"):
            value = value.split("\\")[-1]
        return value.replace("\\\\", "\\").replace('\\"', '"')
    return value


def content_disposition_unquote(value: str, filename: bool = False) -> str:
    """
    Unquote a Content-Disposition ``name`` or ``filename`` as browsers quote
    them today (HTML5 percent-escapes), or with backslashes as old ones did.
    """
    if value and '"' == value[0] == value[-1]:
        value = value[1:-1]
        if '\\"' in value:
            value = value.replace("\\\\", "\\").replace('\\"', '"')
        elif "%" in value:
            value = value.replace("%0D", "\r").replace("%0A", "\n").replace("%22", '"')
    elif "%" in value:
        value = value.replace("%0D", "\r").replace("%0A", "\n").replace("%22", '"')
    if filename and (value[1:3] == ":\\" or value[:2] == "\\\\"):
        value = value.rpartition("\\")[-1]
    return value


def parse_options_header(header: str, unquote: Callable[[str, bool], str] = header_unquote,
                         ) -> tuple[str, dict[str, str]]:
    """
    ``"type/sub; key=value; ..."`` -> (lower-cased, stripped type, {lower-cased key: value}).

    Options are found after the first ``;`` wherever they match ``; key=value``
    (a value a token or a quoted string); what does not match is skipped.
    """
    index = header.find(";")
    if index < 0:
        return header.lower().strip(), {}
    options: dict[str, str] = {}
    for key, value in _OPTION.findall(header, index):
        key = key.lower()
        options[key] = unquote(value, key == "filename")
    return header[:index].lower().strip(), options


def parse_content_disposition(value: str) -> tuple[str, str | None, str | None]:
    """A Content-Disposition value -> (disposition, name or None, filename or None)."""
    # What browsers send, without a regular expression.
    split = value.split('"', 4)
    if split[0] == "form-data; name=" and split[-1] == "":
        if len(split) == 3:
            name = split[1]
            if "%" in name:
                name = content_disposition_unquote(name)
            return "form-data", name, None
        if len(split) == 5 and split[2] == "; filename=":
            name, filename = split[1], split[3]
            if "%" in name:
                name = content_disposition_unquote(name)
            if "%" in filename or "\\" in filename:
                filename = content_disposition_unquote(filename, True)
            return "form-data", name, filename
    disposition, options = parse_options_header(value, unquote=content_disposition_unquote)
    return disposition, options.get("name"), options.get("filename")


def _parse_header_line(line: bytes) -> Header:
    """
    One raw header line -> ``(name, value, parsed)``: ``parsed`` is
    (disposition, name, filename) for Content-Disposition, (type, charset) for
    Content-Type, the number for Content-Length, else None.
    """
    try:
        name, colon, value = line.decode("utf8").partition(":")
    except UnicodeDecodeError:
        raise FormDataError("part header is not UTF-8") from None
    if not colon:
        raise FormDataError("part header without a colon")
    if name not in KNOWN_HEADERS:
        name = name.strip().title()
        if name not in KNOWN_HEADERS and not _HEADER_NAME.fullmatch(name):
            raise FormDataError("invalid part header name")
    value = value.lstrip(" \t")
    if name == "Content-Disposition":
        return name, value, parse_content_disposition(value)
    if name == "Content-Type":
        content_type, options = parse_options_header(value)
        return name, value, (content_type, options.get("charset"))
    if name == "Content-Length":
        try:
            length = int(value)
            if length < 0 or str(length) != value:
                raise ValueError(value)
        except ValueError:
            raise FormDataError("invalid part Content-Length") from None
        return name, value, length
    return name, value, None


class PartType:
    """
    What a part's headers say besides its name: ``filename`` (None when
    absent), ``content_type`` (lower-cased, without options, None when
    absent) and ``charset`` (None when absent; both from the last
    Content-Type header), ``length`` (its Content-Length, -1 when absent).

    Uploads repeat the same headers part after part, but for the name, so
    parts share their PartType where they can.
    """

    __slots__ = ("filename", "content_type", "charset", "length", "_headers")

    def __init__(self, filename: str | None, content_type: str | None, charset: str | None,
                 length: int, headers: list[Header]) -> None:
        self.filename = filename
        self.content_type = content_type
        self.charset = charset
        self.length = length
        self._headers = headers

    def header(self, name: str, default: str | None = None) -> str | None:
        """
        The first value of header ``name`` as sent (leading blanks removed),
        or ``default``; Content-Disposition is not kept (see name and filename).
        """
        name = name.title()
        for header in self._headers:
            if header[0] == name:
                return header[1]
        return default


_NO_HEADERS: tuple[()] = ()


class FormDataParser:
    """
    Push parser for one multipart body: ``feed(piece, sink)`` as the body
    arrives, ``close()`` at its end. Both raise FormDataError; after an
    error (or an exception from the sink) the parser is closed.

    For each part ``feed`` calls on ``sink`` either ``part_whole(name,
    part_type, data)``, when the part's headers and all its data are in the
    buffer, or ``part_begin(name, part_type)``, ``part_data(data)`` for each
    non-empty piece, then ``part_end()``. ``name`` is ``""`` for a part
    without one. The sink is passed to each call, not kept, so nothing here
    refers back to it.
    """

    def __init__(self, boundary: str | bytes, *, max_header_size: int, max_header_count: int,
                 max_parts: int) -> None:
        boundary = boundary.encode("utf8") if isinstance(boundary, str) else bytes(boundary)
        if not boundary or b"\n" in boundary:
            raise FormDataError("invalid boundary")
        self._delimiter = b"\r\n--" + boundary
        self._max_header_size = max_header_size
        self._max_header_count = max_header_count
        self._max_parts = max_parts
        self._cache_line_size = min(CACHE_LINE_SIZE, max_header_size)
        self._buffer: bytes | bytearray = b""
        self._state = _PREAMBLE
        self._parts = 0
        # While a part's headers are read:
        self._headers: list[Header] | tuple[()] = _NO_HEADERS  # each header so far
        self._length = -1  # its Content-Length
        # While its data is read:
        self._name: str | None = None  # the part's name and type, while the sink has
        self._type: PartType | None = None  # not been given them
        self._received = 0  # its bytes so far
        self._lines: dict[bytes, Header] = {}  # header line -> _parse_header_line's answer
        # header block after a plain name="..." line -> PartType
        self._shapes: dict[bytes, PartType] = {}
        self.closed = False

    @property
    def complete(self) -> bool:
        """True once the closing delimiter was read."""
        return self._state == _COMPLETE

    def close(self) -> None:
        """The body ended: refuse it unless the closing delimiter was read."""
        self._shut()
        if self._state != _COMPLETE:
            raise FormDataError("the body ended before its closing delimiter")

    def _shut(self):
        self.closed = True
        self._buffer = b""
        self._headers = _NO_HEADERS
        self._type = None

    def feed(self, chunk: bytes | bytearray, sink: PartSink) -> None:
        """Parse the next piece of the body; an empty piece is the end, as ``close()``."""
        if not chunk:
            self.close()
            return
        if self.closed:
            self._shut()
            raise FormDataError("the parser was closed")
        if not isinstance(chunk, (bytes, bytearray)):
            self._shut()
            raise FormDataError("pieces must be bytes")
        if self._state == _COMPLETE:
            return  # what follows the closing delimiter is ignored
        try:
            self._parse(chunk, sink)
        except BaseException:
            self._shut()
            raise

    def _parse(self, chunk: bytes | bytearray, sink: PartSink) -> None:
        """Handle everything ``chunk`` and what was kept allow; keep the rest."""
        kept = self._buffer
        state = self._state
        if kept and state == _HEADER and b"\n" not in chunk:
            # A header line still waits for its line end (small pieces): only its
            # size can change the answer. Grow it in place, not by copies.
            if len(kept) + len(chunk) > self._max_header_size:
                raise FormDataError("part header too long")
            if type(kept) is not bytearray:
                self._buffer = kept = bytearray(kept)
            kept += chunk
            return
        buf = b"".join((kept, chunk)) if kept else bytes(chunk)
        n = len(buf)
        pos = 0
        # What was kept in the header state holds no LF: searches for CRLF start
        # at its last byte, for LF after it.
        clean = len(kept) if state == _HEADER else 0
        delimiter = self._delimiter
        dlen = len(delimiter)
        found = -2  # where _usual_parts() found the next delimiter (-2: it did not look)
        # The current part: not yet given to the sink while part_type is not None.
        name = self._name
        part_type = self._type
        received = self._received
        while pos < n:
            if state == _HEADER:
                if not self._headers and self._shapes:
                    pos, name, part_type, found = self._usual_parts(buf, pos, sink)
                    if part_type is not None:  # its data goes on past this piece
                        received = 0
                        state = _BODY
                        continue
                    if pos == n:
                        break
                if buf.startswith(b"\r\n", pos):  # the header block ends here
                    name, part_type = self._end_headers()
                    pos += 2
                    received = 0
                    state = _BODY
                    continue
                end = buf.find(b"\r\n\r\n", clean - 1 if clean > pos + 1 else pos)
                if end < 0:
                    pos = self._header_lines(buf, pos, clean)
                    break
                if self._headers:  # the block's first lines came in an earlier piece
                    for line in buf[pos:end].split(b"\r\n"):
                        self._header_line(line)
                    name, part_type = self._end_headers()
                else:
                    name, part_type = self._header_block(buf[pos:end])
                pos = end + 4
                received = 0
                state = _BODY
                if pos == n:
                    break
            elif state == _PREAMBLE:  # pos is 0 here
                if n < dlen:
                    break
                index = buf.find(delimiter[2:])
                if index > -1:
                    if index > 0 and buf[index - 2:index] != b"\r\n":
                        raise FormDataError("unexpected bytes before the first boundary")
                    end = index + dlen
                    tail = buf[end - 2:end]
                    if tail == b"\r\n":
                        self._start_part()
                        state = _HEADER
                        pos = end
                        continue
                    if tail == b"--":
                        pos = end
                        state = _COMPLETE
                        break
                    if tail[0:1] == b"\n" or end <= n:
                        raise FormDataError("unexpected bytes after the first boundary")
                    pos = max(0, index - 2)
                    break
                # Skip the preamble but what may be the start of a boundary.
                index = buf.rfind(b"\r", n - (dlen - 1))
                pos = n if index == -1 else index
                break
            # _BODY
            if found == -2:
                index = buf.find(delimiter, pos)
            else:  # _usual_parts() looked already
                index = found
                found = -2
            if index >= 0:
                end = index + dlen
                if buf.startswith(b"\r\n", end):
                    state = _HEADER
                elif buf.startswith(b"--", end):
                    state = _COMPLETE
                elif end + 2 <= n:
                    raise FormDataError("unexpected bytes after a delimiter")
                if state != _BODY:
                    # The part is complete.
                    length = self._length if part_type is None else part_type.length
                    if length >= 0 and received + index - pos != length:
                        raise FormDataError("part size does not match its Content-Length")
                    if part_type is not None:
                        sink.part_whole(name, part_type, buf[pos:index])
                        part_type = None
                    else:
                        if index > pos:
                            sink.part_data(buf[pos:index])
                        sink.part_end()
                    pos = end + 2
                    if state == _COMPLETE:
                        break
                    self._start_part()
                    continue
                stop = index  # the delimiter's last two bytes are yet to come
            else:
                # Hand on all but what may be the start of a delimiter.
                stop = buf.rfind(b"\r", max(pos, n - (dlen - 1)))
                if stop == -1 or not delimiter.startswith(buf[stop:]):
                    stop = n
            if stop > pos:
                received += stop - pos
                length = self._length if part_type is None else part_type.length
                if -1 < length < received:
                    raise FormDataError("part longer than its Content-Length")
                if part_type is not None:
                    sink.part_begin(name, part_type)
                    self._length = part_type.length
                    part_type = None
                sink.part_data(buf[pos:stop] if pos or stop < n else buf)
                pos = stop
            break
        self._state = state
        self._buffer = buf[pos:] if pos < n and state != _COMPLETE else b""
        self._name = name
        self._type = part_type
        self._received = received

    def _usual_parts(self, buf: bytes, pos: int, sink: PartSink,
                     ) -> tuple[int, str | None, PartType | None, int]:
        """
        Hand on the usual parts, one after another from ``pos``: a plain
        ``Content-Disposition: form-data; name="..."`` line, then lines with a
        shape known (see ``_header_block``), and all their data in ``buf``.

        Return (where it stopped, None, None, -2) at a part it cannot read so,
        or (where the data starts, name, PartType, where the next delimiter is
        or -1) for a part whose data does not all come in ``buf``.
        """
        delimiter = self._delimiter
        dlen = len(delimiter)
        shapes = self._shapes
        max_size = self._max_header_size
        max_parts = self._max_parts
        parts = self._parts
        # The shape of the part before, with the block's end: parts in a row
        # usually share one.
        shape_end: bytes | None = None
        part_type: PartType | None = None
        try:
            while buf.startswith(_FORM_DATA_NAME, pos):
                # The line ends at the name's closing quote (every shape starts
                # with CRLF, or is empty) unless the name holds a CRLF.
                quote = buf.find(b'"', pos + 38)
                if quote < 0 or quote + 1 - pos > max_size:
                    break
                if shape_end is not None and buf.startswith(shape_end, quote + 1):
                    # (A shape holds no CRLF CRLF: its block ends after it.)
                    end = quote + len(shape_end) - 3
                else:
                    end = buf.find(b"\r\n\r\n", quote + 1)
                    if end < 0:
                        break
                    shape = buf[quote + 1:end]
                    part_type = shapes.get(shape)
                    if part_type is None:
                        break
                    shape_end = shape + b"\r\n\r\n"
                try:  # (an undecodable header is refused, wherever its lines end)
                    name = buf[pos + 38:quote].decode("utf8")
                except UnicodeDecodeError:
                    raise FormDataError("part header is not UTF-8") from None
                if "\r\n" in name:
                    break
                if "%" in name:
                    name = content_disposition_unquote(name)
                start = end + 4
                index = buf.find(delimiter, start)
                if index < 0 or not buf.startswith(b"\r\n", index + dlen):
                    return start, name, part_type, index
                # (Shapes have no Content-Length to check: see _header_block.)
                assert part_type is not None  # set with shape_end
                sink.part_whole(name, part_type, buf[start:index])
                parts += 1  # _start_part(), inline
                if parts > max_parts:
                    raise FormDataError("too many parts")
                pos = index + dlen + 2
        finally:
            self._parts = parts
        return pos, None, None, -2

    def _start_part(self):
        """A delimiter opened a part: count it; its headers come next."""
        self._parts += 1
        if self._parts > self._max_parts:
            raise FormDataError("too many parts")
        self._headers = _NO_HEADERS
        self._length = -1

    def _header_block(self, block: bytes) -> tuple[str, PartType]:
        """
        (name, PartType) for a whole header block (without its final empty line).

        The usual block is a plain ``Content-Disposition: form-data;
        name="..."`` line and the same other lines part after part: the
        PartType of those other lines is kept as a shape, for the next parts
        that have them.
        """
        for line in block.split(b"\r\n"):
            self._header_line(line)
        name, part_type = self._end_headers()
        if (block.startswith(_FORM_DATA_NAME) and len(self._shapes) < CACHE_ENTRIES
                and part_type.length < 0):
            eol = block.find(b"\r\n")
            line, rest = (block, b"") if eol < 0 else (block[:eol], block[eol:])
            if (line[-1] == 34 and line.count(b'"') == 2  # 34: '"'
                    and len(rest) <= self._cache_line_size and rest[2:3] not in (b" ", b"\t")
                    and all(header[0] != "Content-Disposition" for header in self._headers[1:])):
                self._shapes[rest] = part_type
        return name, part_type

    def _header_lines(self, buf: bytes, pos: int, clean: int) -> int:
        """
        Read the whole lines of a header block that goes on in a later piece;
        return where the rest starts (it is kept for the next piece).
        """
        while True:
            end = buf.find(b"\r\n", clean - 1 if clean > pos + 1 else pos)
            if end < 0:
                break
            self._header_line(buf[pos:end])
            pos = end + 2
        if buf.find(b"\n", clean if clean > pos else pos) != -1:
            raise FormDataError("LF without CR in part headers")
        if len(buf) - pos > self._max_header_size:
            raise FormDataError("part header too long")
        return pos

    def _header_line(self, line: bytes) -> None:
        """Read one header line (a continuation joins the previous header)."""
        headers = self._headers
        if line[0] in b" \t":
            if not headers or line.isspace():
                raise FormDataError("unexpected part header continuation")
            assert isinstance(headers, list)  # not empty
            name, value, _ = headers.pop()
            line = f"{name}: {value}".encode() + b" " + line[1:]
        if len(line) > self._max_header_size:
            raise FormDataError("part header too long")
        if len(headers) >= self._max_header_count:
            raise FormDataError("too many part headers")
        entry = self._lines.get(line)
        if entry is None:
            entry = _parse_header_line(line)
            name = entry[0]
            if name == "Content-Length":
                if self._length >= 0:
                    raise FormDataError("more than one part Content-Length")
                self._length = entry[2]
            elif (name != "Content-Disposition" and len(line) <= self._cache_line_size
                  and len(self._lines) < CACHE_ENTRIES):
                # Content-Disposition names differ part by part; Content-Length
                # must be counted each time.
                self._lines[line] = entry
        if not isinstance(headers, list):  # _NO_HEADERS: the part's first header
            self._headers = headers = []
        headers.append(entry)

    def _end_headers(self) -> tuple[str, PartType]:
        """(name, PartType) for the headers read."""
        disposition = name = filename = content_type = charset = None
        others: list[Header] = []
        for header in self._headers:
            if header[0] == "Content-Disposition":
                disposition, name, filename = header[2]
                continue
            if header[0] == "Content-Type":
                content_type, charset = header[2]
            others.append(header)
        if disposition != "form-data":
            raise FormDataError("part without Content-Disposition: form-data")
        return ("" if name is None else name,
                PartType(filename, content_type, charset, self._length, others))

