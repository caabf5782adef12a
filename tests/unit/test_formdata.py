"""
antenna_tw.intake.formdata on its own: the events a sink sees, the header helpers
against the ``multipart`` library's, and the bounds it keeps (memory held
between pieces, caches, work per byte, no reference to the sink).
"""

from __future__ import annotations

import gc
import time
import weakref

import multipart
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antenna_tw.intake import formdata
from antenna_tw.intake.formdata import FormDataError, FormDataParser

LIMITS = dict(max_header_size=8192, max_header_count=16, max_parts=256)


class Recorder:
    """A sink that writes down what it is told."""

    def __init__(self):
        self.events = []

    def part_whole(self, name, part_type, data):
        self.events.append(("whole", name, part_type, data))

    def part_begin(self, name, part_type):
        self.events.append(("begin", name, part_type))

    def part_data(self, data):
        self.events.append(("data", data))

    def part_end(self):
        self.events.append(("end",))


def parse(pieces, boundary="xyz", **limits):
    parser = FormDataParser(boundary, **{**LIMITS, **limits})
    sink = Recorder()
    for piece in pieces:
        parser.feed(piece, sink)
    parser.close()
    return sink.events


def part(name, data, *headers):
    return (f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode()
            + b"".join(h.encode() + b"\r\n" for h in headers) + b"\r\n" + data + b"\r\n")


END = b"--xyz--\r\n"


def test_parts_in_one_piece_come_whole():
    events = parse([part("a", b"1", "Content-Type: text/plain; charset=latin-1")
                    + part("b", b"") + END])
    assert [(kind, name, data) for kind, name, _, data in events] == [
        ("whole", "a", b"1"), ("whole", "b", b"")]
    first, second = events[0][2], events[1][2]
    assert (first.content_type, first.charset, first.filename, first.length) == (
        "text/plain", "latin-1", None, -1)
    assert (second.content_type, second.charset) == (None, None)
    assert first.header("content-type") == "text/plain; charset=latin-1"
    assert first.header("X-Missing", "default") == "default"


def test_parts_across_pieces_come_in_pieces():
    body = part("d", b"0123456789") + END
    at = body.index(b"0123")
    events = parse([body[:at + 4], body[at + 4:]])
    assert [event[0] for event in events] == ["begin", "data", "data", "end"]
    assert events[1][1] + events[2][1] == b"0123456789"


def test_a_piece_without_a_delimiter_is_handed_on_as_it_is():
    parser = FormDataParser("xyz", **LIMITS)
    sink = Recorder()
    parser.feed(b'--xyz\r\nContent-Disposition: form-data; name="d"\r\n\r\n', sink)
    middle = bytes(range(256)) * 100
    parser.feed(middle, sink)
    assert sink.events[-1][1] is middle  # no copy


def test_a_possible_delimiter_start_waits_for_the_next_piece():
    parser = FormDataParser("xyz", **LIMITS)
    sink = Recorder()
    parser.feed(b'--xyz\r\nContent-Disposition: form-data; name="d"\r\n\r\ndata\r\n--x', sink)
    assert sink.events[-1] == ("data", b"data")
    parser.feed(b"y", sink)
    assert sink.events[-1] == ("data", b"data")
    parser.feed(b"z\r\n", sink)
    assert sink.events[-1] == ("end",)
    parser.feed(b"X-Never: ended", sink)  # the next part's headers never end
    with pytest.raises(FormDataError):
        parser.close()


def test_shapes_are_shared_and_names_are_not():
    body = b"".join(part(f"k{i}", b"v", "Content-Type: text/plain; charset=utf-8")
                    for i in range(5)) + END
    events = parse([body])
    assert [event[1] for event in events] == [f"k{i}" for i in range(5)]
    assert len({id(event[2]) for event in events}) == 1


def test_caches_are_bounded():
    body = b"".join(part(f"k{i}", b"v", f"X-Header: {i}") for i in range(200)) + END
    parser = FormDataParser("xyz", **LIMITS)
    parser.feed(body, Recorder())
    assert len(parser._lines) <= formdata.CACHE_ENTRIES
    assert len(parser._shapes) <= formdata.CACHE_ENTRIES
    long_line = "X-Long: " + "x" * formdata.CACHE_LINE_SIZE
    parser = FormDataParser("xyz", **LIMITS)
    parser.feed(part("a", b"v", long_line) + part("b", b"v", long_line) + END, Recorder())
    assert not parser._lines and not parser._shapes


@pytest.mark.parametrize("body", [
    b"no delimiter here at all, none",
    part("a", b"v"),  # no closing delimiter
    part("a", b"v").replace(b"\r\n", b"\n"),
    b"--xyz\r\nContent-Type: text/plain\r\n\r\nv\r\n" + END,  # no Content-Disposition
    b'--xyz\r\nContent-Disposition: attachment; name="a"\r\n\r\nv\r\n' + END,
    part("a", b"v", "Bad Name: x") + END,
    part("a", b"v", "Content-Length: 2") + END,
    part("a", b"v", "Content-Length: 1", "Content-Length: 1") + END,
    part("a", b"v\r\n--xyzX") + END,
])
def test_refused(body):
    with pytest.raises(FormDataError):
        parse([body])


def test_limits():
    headers = [f"X-H{i}: v" for i in range(15)]
    assert parse([part("a", b"v", *headers) + END])
    with pytest.raises(FormDataError):
        parse([part("a", b"v", *headers, "X-One-More: v") + END])
    assert parse([part("a", b"v", "X: " + "h" * (8192 - 3)) + END])
    with pytest.raises(FormDataError):
        parse([part("a", b"v", "X: " + "h" * (8193 - 3)) + END])
    body = part("a", b"v") * 3 + END
    assert parse([body], max_parts=3)
    with pytest.raises(FormDataError):
        parse([body], max_parts=2)


def test_after_an_error_the_parser_stays_closed():
    parser = FormDataParser("xyz", **LIMITS)
    with pytest.raises(FormDataError):
        parser.feed(b"--xyz\nContent-Disposition: form-data", Recorder())
    assert parser.closed
    with pytest.raises(FormDataError):
        parser.feed(part("a", b"v") + END, Recorder())


def test_an_empty_piece_is_the_end():
    parser = FormDataParser("xyz", **LIMITS)
    parser.feed(part("a", b"v") + END, Recorder())
    parser.feed(b"", Recorder())
    assert parser.closed and parser.complete
    with pytest.raises(FormDataError):
        parser.feed(b"x", Recorder())
    with pytest.raises(FormDataError):
        FormDataParser("xyz", **LIMITS).feed(b"", Recorder())


def test_what_is_kept_between_pieces_is_bounded():
    body = (b"preamble \r\r\n" * 50 + part("a", b"v", "X-Long: " + "h" * 8000)
            + part("d", b"\r\n--xy\r\n-" * 500) + END)
    parser = FormDataParser("xyz", **LIMITS)
    sink = Recorder()
    most = 0
    for index in range(len(body)):
        parser.feed(body[index:index + 1], sink)
        most = max(most, len(parser._buffer))
    parser.close()
    assert 8000 < most <= 8192  # a header line at most
    begun = [event[1] for event in sink.events if event[0] == "begin"]
    assert begun == ["a", "d"]
    dump_start = sink.events.index(next(e for e in sink.events if e[:2] == ("begin", "d")))
    assert b"".join(event[1] for event in sink.events[dump_start:] if event[0] == "data") == (
        b"\r\n--xy\r\n-" * 500)


def one_byte_at_a_time(body, **limits):
    """CPU seconds to parse ``body`` fed one byte at a time."""
    parser = FormDataParser("xyz", **{**LIMITS, **limits})
    sink = Recorder()
    started = time.process_time()
    for index in range(len(body)):
        parser.feed(body[index:index + 1], sink)
    parser.close()
    assert sink.events[-1][0] == "end"
    return time.process_time() - started


def test_small_pieces_cost_linear_time():
    """A long header line in one-byte pieces is not copied again for each byte."""
    size = 400_000
    header = part("a", b"v", "X-Long: " + "h" * size) + END
    data = part("a", b"d" * size) + END
    # copying the line again for each byte makes the first 10-15 times slower
    assert one_byte_at_a_time(header, max_header_size=1 << 20) < 4 * one_byte_at_a_time(data)


def test_the_sink_is_not_kept():
    parser = FormDataParser("xyz", **LIMITS)
    sink = Recorder()
    body = part("a", b"v") + part("d", b"x" * 100)
    parser.feed(body[:-20], sink)
    ref = weakref.ref(sink)
    del sink
    gc.disable()
    try:
        assert ref() is None
    finally:
        gc.enable()


# -- header helpers, against the library's ------------------------------------------

HEADER_TEXT = st.lists(st.sampled_from(list('abcdefgh;=" \\%:/-_*\'\tÄé\r\n') + [
    "name", "filename", "form-data", "boundary", "charset", "%22", "%0D", "C:\\"]),
    max_size=30).map("".join)


@settings(max_examples=1000)
@given(HEADER_TEXT)
def test_parse_options_header_is_the_librarys(value):
    assert formdata.parse_options_header(value) == multipart.parse_options_header(value)


@settings(max_examples=1000)
@given(HEADER_TEXT | HEADER_TEXT.map(lambda text: "form-data; " + text)
       | HEADER_TEXT.map(lambda text: 'form-data; name="' + text))
def test_parse_content_disposition_is_the_librarys(value):
    assert formdata.parse_content_disposition(value) == (
        multipart.parse_content_disposition(value))


@pytest.mark.parametrize("value", [
    'form-data; name="a"', 'form-data; name="a%22b"', 'form-data; name="a"; filename="f"',
    'form-data; name="a"; filename="C:\\\\dir\\\\f"', 'form-data; name="a"; filename="C:\\dir"',
    'form-data; name="a\\"b"', "form-data; name=a; filename*=UTF-8''x",
    'FORM-DATA ; NAME="a"', "form-data", 'attachment; filename="x"', "",
])
def test_parse_content_disposition_examples(value):
    assert formdata.parse_content_disposition(value) == (
        multipart.parse_content_disposition(value))
