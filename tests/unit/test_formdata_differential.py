"""
The collector's multipart parser (``antenna_tw.intake.formdata`` under
``payload.PayloadParser``) against the one it replaced
(``tests.reference_payload``: the same PayloadParser on the ``multipart``
library): for every body and every way of cutting it into pieces, both must
give the same CrashReport (annotations, dump pieces and checksums, notes,
payload kind and sizes) or refuse it with the same reason at the same piece.

Bodies: the captured Crashpad uploads, load-test shaped payloads, the property
tests' strategies, and hand-made ones aimed at the library's quirks and at
piece edges (every truncation, every two-piece cut, one-byte pieces).
"""

from __future__ import annotations

import glob
import gzip
import os
import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antenna_tw.intake import payload
from antenna_tw.intake.payload import MalformedCrashReport, PayloadParser, UploadReader
from antenna_tw.send_crash import build_multipart
from tests import payload_maker
from tests.helpers import CAPTURES
from tests.reference_payload import ReferencePayloadParser, reference_parse_content_type
from tests.strategies import assemble, boundaries, mutated, parts, uploads

LIMITS = dict(max_decompressed_size=100 << 20, max_parts=256)
B = "xyz"
DELIMITER = b"\r\n--xyz"
CD = 'Content-Disposition: form-data; name="{}"'


def outcome(parser_class, boundary, pieces, encoding="identity", **limits):
    """What ``parser_class`` makes of ``pieces``: a comparable tuple."""
    parser = parser_class(boundary, encoding, **{**LIMITS, **limits})
    step = 0
    try:
        for step, piece in enumerate(pieces):
            parser.feed(piece)
        step = len(pieces)
        report = parser.close()
    except MalformedCrashReport as error:
        return ("refused", error.reason, step, parser.parsed_bytes)
    return ("report", repr(report.annotations), report.dump_pieces, report.dump_checksums,
            report.notes, report.payload, report.payload_compressed, report.payload_size,
            parser.parsed_bytes)


def same(boundary, pieces, encoding="identity", **limits):
    """Both parsers' outcome, which must be the same."""
    old = outcome(ReferencePayloadParser, boundary, pieces, encoding, **limits)
    new = outcome(PayloadParser, boundary, pieces, encoding, **limits)
    assert new == old, (boundary, pieces)
    return new


def cut(body, points):
    """``body`` cut at ``points``."""
    points = sorted(point for point in set(points) if 0 < point < len(body))
    return [body[start:end] for start, end in zip([0, *points], [*points, len(body)])]


def every(body, step):
    return [body[start:start + step] for start in range(0, len(body), step)] or [b""]


def cuttings(body, seed=0):
    """Ways to cut ``body``: whole, a few fixed sizes, random, one byte at a time."""
    rng = random.Random(seed)
    ways = [[body], every(body, 65536), every(body, 8192), every(body, 7), every(body, 2)]
    for _ in range(4):
        ways.append(cut(body, [rng.randrange(len(body) + 1) for _ in range(rng.randrange(1, 9))]))
    if len(body) <= 4096:
        ways.append(every(body, 1))
    return ways


def check_all_cuttings(body, boundary=B, **limits):
    outcomes = [same(boundary, pieces, **limits) for pieces in cuttings(body)]
    return outcomes[0]


def check_every_two_piece_cut(body, boundary=B, **limits):
    same(boundary, [body], **limits)
    for point in range(1, len(body)):
        same(boundary, [body[:point], body[point:]], **limits)


class Body(bytes):
    """A body made by ``multipart``, which knows its parts (slices and copies do not)."""

    parts = ()
    options = {}


def multipart(*parts, boundary=B, preamble=b"", epilogue=b"", close=True):
    """A body from parts given as (header lines, data) with lines as bytes or str."""
    marker = b"--" + boundary.encode()
    pieces = [preamble]
    for headers, data in parts:
        head = b"".join((h.encode() if isinstance(h, str) else h) + b"\r\n" for h in headers)
        pieces.append(marker + b"\r\n" + head + b"\r\n" + data + b"\r\n")
    if close:
        pieces.append(marker + b"--\r\n")
    pieces.append(epilogue)
    body = Body(b"".join(pieces))
    body.parts = parts
    body.options = dict(boundary=boundary, preamble=preamble, epilogue=epilogue, close=close)
    return body


def renamed(part):
    """The same part under another name (its header block has the same shape)."""
    headers, data = part
    return [(h.encode() if isinstance(h, str) else h).replace(b'name="', b'name="2')
            for h in headers], data


def with_repeats(quirks):
    """
    Each body made of parts, also with its parts twice and with renamed copies:
    a part whose headers have the shape of an earlier one is read another way.
    """
    more = dict(quirks)
    for name, body in quirks.items():
        if isinstance(body, Body) and body.parts:
            more[name + "_twice"] = multipart(*body.parts, *body.parts, **body.options)
            more[name + "_renamed"] = multipart(
                *body.parts, *map(renamed, body.parts), **body.options)
    return more


def text(name, value=b"v", ctype="text/plain; charset=utf-8"):
    return [CD.format(name)] + ([f"Content-Type: {ctype}"] if ctype else []), value


def dump(name, data, ctype="application/octet-stream", filename="f.dmp"):
    headers = [f'Content-Disposition: form-data; name="{name}"; filename="{filename}"']
    return headers + ([f"Content-Type: {ctype}"] if ctype else []), data


GOOD = multipart(text("ProductName", b"Firefox"), text("Version", b"1.0"),
                 dump("upload_file_minidump", b"MDMP\x00\r\n-" * 20),
                 text("Extra", b'{"a": 1}', "application/json"))


# -- real and benchmark bodies ------------------------------------------------------


def read_capture(path):
    """(content type, content encoding, body) of a captured HTTP request."""
    with open(path, "rb") as capture:
        head, _, rest = capture.read().partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if not size:
                break
            body, rest = body + rest[:size], rest[size + 2:]
    else:
        body = rest[:int(headers["content-length"])]
    return headers["content-type"], headers.get("content-encoding", "identity"), body


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CAPTURES, "*.http"))),
                         ids=os.path.basename)
def test_captured_uploads(path):
    content_type, encoding, body = read_capture(path)
    boundary = payload.parse_content_type(content_type)
    assert boundary == reference_parse_content_type(content_type)
    for pieces in cuttings(body):
        result = same(boundary, pieces, encoding)
        assert result[0] == "report"
    if encoding != "identity":
        plain = gzip.decompress(body)
        for pieces in cuttings(plain):
            assert same(boundary, pieces)[0] == "report"


@pytest.fixture(scope="module")
def bench_payloads():
    """The load-test shaped payloads (tests/payload_maker.py), made once: {(name, json): payload}."""
    return {(made.name, json_extra): made for json_extra in (False, True)
            for made in payload_maker.make_payloads(json_extra)}


@pytest.mark.parametrize("json_extra", [False, True], ids=["fields", "json"])
@pytest.mark.parametrize("name", payload_maker.NAMES)
def test_bench_payloads(bench_payloads, name, json_extra):
    made = bench_payloads[name, json_extra]
    boundary = payload.parse_content_type(made.headers["Content-Type"])
    encoding = made.headers.get("Content-Encoding", "identity")
    for pieces in [[made.body], every(made.body, 65536), every(made.body, 8192),
                   every(made.body, 1000)]:
        result = same(boundary, pieces, encoding)
        assert result[0] == "report", name
        assert result[3] == made.dump_sha256(), name
    if encoding == "identity" and len(made.body) < 200_000:
        for pieces in cuttings(made.body)[:-1]:
            same(boundary, pieces)


# -- the library's quirks -----------------------------------------------------------

QUIRKS = with_repeats({
    "good": GOOD,
    "empty": b"",
    "only_closing": b"--xyz--",
    "only_closing_crlf": b"--xyz--\r\n",
    "closing_then_junk": b"--xyz--junk\r\n--xyz\r\n",
    "closing_too_short": b"--xyz-",
    "junk": b"junk that is not multipart at all, long enough to be searched",
    "preamble": multipart(text("a"), preamble=b"This is a preamble.\r\nIgnore it.\r\n"),
    "preamble_no_crlf": multipart(text("a"), preamble=b"preamble without a line end"),
    "preamble_cr_only": multipart(text("a"), preamble=b"preamble\r"),
    "preamble_lf_only": multipart(text("a"), preamble=b"preamble\n"),
    "preamble_with_delimiter_junk": b"pre\r\n--xyzJUNK\r\n" + multipart(text("a")),
    "preamble_long": multipart(text("a"), preamble=b"p\r" * 5000 + b"\r\n"),
    "first_boundary_lf": multipart(text("a")).replace(b"--xyz\r\n", b"--xyz\n", 1),
    "first_boundary_junk": multipart(text("a")).replace(b"--xyz\r\n", b"--xyz\tx", 1),
    "first_boundary_space": multipart(text("a")).replace(b"--xyz\r\n", b"--xyz \r\n", 1),
    "all_lf": GOOD.replace(b"\r\n", b"\n"),
    "header_lf_only": multipart(([CD.format("a") + "\nContent-Type: text/plain"], b"v")),
    "header_lf_in_value": multipart(([CD.format("a") + "\nX: y", "Content-Type: text/plain"],
                                     b"v")),
    "header_cr_in_value": multipart(([CD.format("a") + "\rX", "Content-Type: a\r"], b"v")),
    "header_crcrlf": multipart(text("a")).replace(b"\r\n", b"\r\r\n", 2),
    "continuation": multipart((['Content-Disposition: form-data;', ' name="a"'], b"v")),
    "continuation_tab": multipart((['Content-Disposition: form-data;', '\tname="a"',
                                    "Content-Type: text/plain;", "  charset=latin-1"], b"\xe9")),
    "continuation_first": multipart(([' Content-Disposition: form-data; name="a"'], b"v")),
    "continuation_blank": multipart(([CD.format("a"), " \t "], b"v")),
    "continuation_of_length": multipart(([CD.format("a"), "Content-Length: 1", " 0"], b"v")),
    "continuation_many": multipart(([CD.format("a"), "X-A: 1"] + [" x"] * 40, b"v")),
    "header_names": multipart(([CD.format("a").lower(), "CONTENT-TYPE: text/plain",
                                " x-odd_Name : y", "\x0bX: z"], b"v")),
    "header_name_space": multipart(([CD.format("a"), "X Y: z"], b"v")),
    "header_name_empty": multipart(([CD.format("a"), ": z"], b"v")),
    "header_name_unicode": multipart(([CD.format("a"), "Ünï: z"], b"v")),
    "header_no_colon": multipart(([CD.format("a"), "no colon"], b"v")),
    "header_not_utf8": multipart(([CD.format("a"), b"X-Bin: \xff\xfe"], b"v")),
    "name_not_utf8": multipart(([b'Content-Disposition: form-data; name="\xff"'], b"v")),
    "name_latin1_in_utf8": multipart(([CD.format("café")], b"v")),
    "no_disposition": multipart((["Content-Type: text/plain"], b"v"), text("b")),
    "no_headers": multipart(([], b"v"), text("b")),
    "attachment": multipart((['Content-Disposition: attachment; name="a"'], b"v")),
    "form_data_upper": multipart((['Content-Disposition: FORM-DATA; name="a"'], b"v")),
    "form_data_spaces": multipart((['Content-Disposition:   form-data ; name = "a" '], b"v")),
    "form_data_token_name": multipart((["Content-Disposition: form-data; name=a"], b"v")),
    "form_data_no_name": multipart((["Content-Disposition: form-data"], b"v"), text("b")),
    "form_data_empty_name": multipart(([CD.format("")], b"v"), text("b")),
    "form_data_filename_first": multipart(([
        'Content-Disposition: form-data; filename="f.dmp"; name="d"'], b"MD"), text("a")),
    "name_percent": multipart(([CD.format("a%22b%0D%0Ac%25")], b"v"),
                              dump("d%22", b"x", filename="f%22.dmp")),
    "name_backslash": multipart((['Content-Disposition: form-data; name="a\\"b"'], b"v")),
    "name_extra_quote": multipart((['Content-Disposition: form-data; name="a"b"'], b"v")),
    "name_after_junk": multipart((['Content-Disposition: form-data; x=1; name="a"'], b"v")),
    "filename_windows_path": multipart(dump("d", b"MD", filename="C:\\dir\\f.dmp"),
                                       text("a")),
    "filename_star": multipart(([
        "Content-Disposition: form-data; name=\"d\"; filename*=UTF-8''f%C3%A9.dmp"], b"MD"),
        text("a")),
    "filename_empty": multipart(dump("d", b"MD", filename=""), text("a")),
    "two_dispositions": multipart(([CD.format("first"), CD.format("second")], b"v")),
    "two_content_types": multipart(([CD.format("d"), "Content-Type: image/png",
                                     "Content-Type: application/octet-stream"], b"MD"),
                                   dump("e", b"x", "image/png"), text("a")),
    "content_types": multipart(text("upper", b"v", "TEXT/PLAIN"),
                               text("spaces", b"v", "text/plain  "),
                               text("quoted", "é".encode("latin-1"),
                                    'text/plain; charset="latin-1"'),
                               text("json_upper", b'{"A": 1}', "Application/JSON"),
                               text("octet", b"v", "application/octet-stream"),
                               text("empty", b"v", ""),
                               text("after", b"w")),
    "charsets": multipart(*[text(f"c{i}", "é".encode("latin-1"),
                                 f"text/plain; charset={charset}")
                            for i, charset in enumerate([
                                "latin-1", "UTF-8", "utf8", "latin1", "utf-16", "punycode",
                                "idna", "undefined", "nonsense", "rot13", "", '"utf-8"',
                                "ascii", "cp1252", "utf\x00"])], text("ok")),
    "content_length_good": multipart(([CD.format("a"), "Content-Length: 3"], b"abc")),
    "content_length_zero": multipart(([CD.format("a"), "Content-Length: 0"], b""), text("b")),
    "content_length_short": multipart(([CD.format("a"), "Content-Length: 2"], b"abc")),
    "content_length_long": multipart(([CD.format("a"), "Content-Length: 4"], b"abc")),
    "content_length_plus": multipart(([CD.format("a"), "Content-Length: +3"], b"abc")),
    "content_length_zeros": multipart(([CD.format("a"), "Content-Length: 03"], b"abc")),
    "content_length_space": multipart(([CD.format("a"), "Content-Length:   3"], b"abc")),
    "content_length_trailing": multipart(([CD.format("a"), "Content-Length: 3 "], b"abc")),
    "content_length_twice": multipart(([CD.format("a"), "Content-Length: 3",
                                        "Content-Length: 3"], b"abc")),
    "content_length_huge": multipart(([CD.format("a"), "Content-Length: " + "9" * 5000],
                                      b"abc")),
    "content_length_dump": multipart(dump("d", b"MDMP" * 100, "application/octet-stream"),
                                     text("a")).replace(
        b'filename="f.dmp"\r\n', b'filename="f.dmp"\r\nContent-Length: 400\r\n'),
    "epilogue": multipart(text("a"), epilogue=b"epilogue\r\n--xyz\r\nnot parsed"),
    "no_closing": multipart(text("a"), close=False),
    "closing_no_crlf": multipart(text("a"))[:-2],
    "closing_cut": multipart(text("a"))[:-3],
    "sixteen_headers": multipart(([CD.format("a")] + [f"X-H{i}: v" for i in range(15)], b"v")),
    "seventeen_headers": multipart(([CD.format("a")] + [f"X-H{i}: v" for i in range(16)],
                                    b"v")),
    "header_8192": multipart(([CD.format("a"), "X-Big: " + "h" * (8192 - 7)], b"v")),
    "header_8193": multipart(([CD.format("a"), "X-Big: " + "h" * (8193 - 7)], b"v")),
    "header_block_big": multipart(([CD.format("a")] + [f"X-{i}: " + "h" * 8000
                                                       for i in range(15)], b"v")),
    "name_line_8192": multipart(([CD.format("n" * (8192 - 39))], b"v")),
    "name_line_8193": multipart(([CD.format("n" * (8193 - 39))], b"v")),
    "boundary_in_dump": multipart(text("a"), *[
        dump(f"d{i}", b"MD" + DELIMITER + tail + b"MD")
        for i, tail in enumerate([b"X", b"-", b"-X", b" ", b"\r", b"\rX", b"\t\r\n"])]),
    "boundary_prefixes_in_dump": multipart(text("a"), dump("d", b"".join(
        b"x" + DELIMITER[:i] for i in range(len(DELIMITER))) + b"\r")),
    "boundary_in_dump_then_crlf": multipart(text("a"), dump("d", b"MD" + DELIMITER + b"\r\nX")),
    "boundary_in_dump_then_end": multipart(text("a"), dump("d", b"MD" + DELIMITER + b"--tail")),
    "dump_ends_with_cr": multipart(text("a"), dump("d", b"MD\r"), dump("e", b"\r\r")),
    "empty_parts": multipart(text("a", b""), dump("d", b""), text("b", b"")),
    "empty_header_block_then_part": b"--xyz\r\n\r\ndata\r\n" + multipart(text("a"))[2:],
    "boundary_in_headers": multipart(([CD.format("a"), "--xyz: header"], b"v")),
    "nuls": multipart(text("Prod\x00uct", b"Fire\x00fox"), dump("d\x00", b"\x00"),
                      text("extra", b'{"K\\u0000": ["v\\u0000"]}', "application/json")),
    "json_after_form": multipart(text("Lost"), text("extra", b'{"A": 1.5e400, "B": NaN}',
                                                    "application/json"), text("After")),
    "json_bad": multipart(text("a"), text("extra", b"{not json", "application/json")),
    "json_list": multipart(text("a"), text("extra", b"[1]", "application/json")),
    "json_then_structure_error": multipart(text("extra", b"{x", "application/json"),
                                           ([], b"v")),
    "reserved_dump": multipart(text("a"), dump("raw_crash!", b"x")),
    "reserved_then_structure_error": multipart(text("a"), dump("dump_names", b"x"),
                                               (["X: y"], b"v")),
    "dump_notes": multipart(text("a"), dump("d", b"x", "image/png"), dump("e", b"y", None),
                            dump("f", b"z", "application/octet-stream; x=y"),
                            dump("g", b"w", " application/octet-stream ")),
    "duplicate_names": multipart(text("a", b"1"), text("a", b"2"), dump("d", b"1"),
                                 dump("d", b"2")),
    "no_annotations": multipart(dump("d", b"x"), text("", b"nameless")),
    "continuation_renames": multipart(([CD.format("a"), ' ; name="z"'], b"v"),
                                      text("b"), ([CD.format("c"), ' ; name="z"'], b"w")),
    "continuation_adds_filename": multipart(([CD.format("a"), ' ; filename="f"'], b"v"),
                                            ([CD.format("c"), ' ; filename="f"'], b"w"),
                                            text("b")),
    "content_type_last_wins": multipart(([CD.format("j"), "Content-Type: application/json",
                                          "Content-Type: text/plain"], b"[1]"),
                                        ([CD.format("t"), "Content-Type: text/plain",
                                          "Content-Type: application/json"], b"{}")),
    "percent_names": multipart(text("a"), text("b%22c"), text("d%0D%0A"), text("e%")),
    "same_shape_lengths": multipart(
        *[([CD.format(f"k{i}"), "Content-Type: text/plain", "Content-Length: 2"], b"v" * size)
          for i, size in enumerate([2, 2, 3, 2])]),
    "same_shape_lengths_good": multipart(
        *[([CD.format(f"k{i}"), "Content-Length: 2"], b"vw") for i in range(3)]),
    "crlf_in_name_after_shape": multipart(
        text("a"), ([b'Content-Disposition: form-data; name="b', b'X-Y: z"',
                     b"Content-Type: text/plain; charset=utf-8"], b"v"), text("c")),
    "quote_then_more_after_shape": multipart(
        text("a"), ([b'Content-Disposition: form-data; name="b"; x=1',
                     b"Content-Type: text/plain; charset=utf-8"], b"v"),
        ([b'Content-Disposition: form-data; name="c"\r\n', b"Content-Type: text/plain"],
         b"w"), text("d")),
    "shape_then_long_name": multipart(text("a"), text("n" * (8192 - 39)),
                                      text("n" * (8193 - 39))),
    "shape_then_bad_name": multipart(text("a"), ([b'Content-Disposition: form-data; name="\xff"',
                                                  b"Content-Type: text/plain; charset=utf-8"],
                                                 b"v")),
    "shape_then_quote_in_name": multipart(text("a"), text('b"c'), text("d")),
    "shape_then_seventeen_headers": multipart(
        ([CD.format("a")] + [f"X-H{i}: v" for i in range(15)], b"v"),
        ([CD.format("b")] + [f"X-H{i}: v" for i in range(15)], b"v"),
        ([CD.format("c")] + [f"X-H{i}: v" for i in range(16)], b"v")),
})


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_quirks_every_cutting(name):
    check_all_cuttings(QUIRKS[name])


@pytest.mark.parametrize("name", sorted(name for name, body in QUIRKS.items()
                                        if len(body) <= 3000))
def test_quirks_every_two_piece_cut(name):
    check_every_two_piece_cut(QUIRKS[name])


def test_quirks_give_both_answers():
    """The quirk bodies are not all refused (nor all accepted)."""
    kinds = {check_all_cuttings(body)[0] for body in QUIRKS.values()}
    assert kinds == {"report", "refused"}


@pytest.mark.parametrize("max_parts", [0, 1, 3, 4, 5])
def test_part_count_limit(max_parts):
    body = multipart(*[text(f"k{i}") for i in range(4)])
    for pieces in cuttings(body):
        same(B, pieces, max_parts=max_parts)


def test_decompressed_cap_counts_parsed_bytes():
    for limit in (1, 50, len(GOOD) - 1, len(GOOD)):
        for pieces in cuttings(GOOD):
            same(B, pieces, max_decompressed_size=limit)


def test_text_part_cap(monkeypatch):
    monkeypatch.setattr(payload, "MAX_TEXT_PART_SIZE", 10)
    body = multipart(text("a", b"x" * 10), text("b", b"y" * 11), text("c", b"z" * 30, None),
                     text("j", b'{"k": "' + b"w" * 20 + b'"}', "application/json"),
                     text("d", b"q"))
    check_all_cuttings(body)
    check_every_two_piece_cut(body)


def test_header_line_waiting_for_its_crlf_counts_its_cr():
    """A header line of 8192 bytes is fine, unless a piece ends between its CR and LF."""
    line = b"X-Big: " + b"h" * (8192 - 7)
    body = multipart(([CD.format("a"), line], b"v"))
    end = body.index(line) + len(line)
    assert same(B, [body])[0] == "report"
    assert same(B, [body[:end], body[end:]])[0] == "report"
    assert same(B, [body[:end - 1], body[end - 1:]])[0] == "report"
    assert same(B, [body[:end + 1], body[end + 1:]])[1] == "malformed_invalid_payload_structure"
    longer = multipart(([CD.format("a"), line + b"h"], b"v"))
    assert same(B, [longer[:end], longer[end:]])[0] == "refused"
    assert same(B, [longer[:end + 1], longer[end + 1:]])[0] == "refused"


def test_lf_in_a_header_line_depends_on_the_cut():
    """The library refuses an LF in the headers only while no CRLF follows it in the buffer."""
    body = QUIRKS["header_lf_in_value"]
    at = body.index(b"\nX: y") + 1
    assert same(B, [body])[0] == "report"
    assert same(B, [body[:at], body[at:]])[0] == "refused"


def test_preamble_delimiter_refused_only_when_seen_whole():
    body = b"preamble--xyz\r\n" + multipart(text("a"))
    assert same(B, [body])[0] == "refused"
    assert same(B, [body[:11], body[11:]])[0] == "report"


def test_empty_feed_ends_the_body():
    for body in (GOOD, multipart(text("a"), close=False)):
        old, new = ReferencePayloadParser(B, **LIMITS), PayloadParser(B, **LIMITS)
        for parser in (old, new):
            parser.feed(body)
        results = []
        for parser in (old, new):
            try:
                parser.feed(b"")
                parser.feed(b"more")
                results.append("fed")
            except MalformedCrashReport as error:
                results.append(error.reason)
        assert results[0] == results[1]


@pytest.mark.parametrize("boundary", ["b", "xyz", "a:b", "-", "--", "x" * 70, "b0und ary",
                                      "é", "\r", "\r-"])
def test_odd_boundaries(boundary):
    marker = boundary.encode()
    body = multipart(text("a"), dump("d", b"\r\n--" + marker[:-1] + b"\r\n--" + marker + b"X"),
                     boundary=boundary)
    check_all_cuttings(body, boundary)
    for fragment in (b"\r\n--" + marker + b"\r\n", b"--" + marker + b"--", b"\r", b"\r\n"):
        check_all_cuttings(fragment * 3 + body, boundary)


@pytest.mark.parametrize("boundary", ["", "a\nb"])
def test_unusable_boundaries_are_refused_by_both_constructors(boundary):
    # parse_content_type lets neither through; both parsers raise a ValueError
    for parser_class in (ReferencePayloadParser, PayloadParser):
        with pytest.raises(ValueError):
            parser_class(boundary, **LIMITS)


def test_every_truncation_of_a_small_body():
    body = multipart(text("ProductName", b"Firefox"),
                     ([CD.format("c"), "Content-Type: text/plain;", " charset=latin-1",
                       "Content-Length: 1"], b"\xe9"),
                     dump("upload_file_minidump", b"MD\r\n--xy\r"), preamble=b"pre\r\n")
    for end in range(len(body) + 1):
        same(B, [body[:end]])
        same(B, every(body[:end], 5))
        same(B, [body[:end // 2], body[end // 2:end]])


def test_one_byte_pieces_of_small_bodies():
    for body in QUIRKS.values():
        if len(body) <= 2000:
            same(B, every(body, 1))


def test_compressed_bodies():
    for body in (GOOD, QUIRKS["preamble"], QUIRKS["no_closing"], QUIRKS["boundary_in_dump"]):
        data = gzip.compress(body)
        for pieces in cuttings(data):
            same(B, pieces, "gzip")
        same(B, [data[:-5]], "gzip")


def test_content_types_parse_the_same():
    for header in [None, "", " ", "multipart/form-data; boundary=abc",
                   'multipart/form-data; boundary="a b:c"', "Multipart/Mixed;boundary=x",
                   "multipart/form-data; boundary = x", "multipart/form-data; BOUNDARY=x",
                   'multipart/form-data; boundary="a\\"b"', 'multipart/form-data; boundary="',
                   "multipart/form-data; boundary=" + "a" * 71, "multipart/form-data;; boundary=x",
                   "multipart/form-data; boundary=x; boundary=y", "text/plain; boundary=x",
                   "multipart/form-data boundary=x", 'multipart/form-data; boundary="C:\\x"']:
        assert content_type_outcome(payload.parse_content_type, header) == (
            content_type_outcome(reference_parse_content_type, header)), header


def content_type_outcome(function, header):
    try:
        return function(header)
    except MalformedCrashReport as error:
        return error.reason


# -- properties ---------------------------------------------------------------------

FRAGMENTS = [b"\r\n", b"\r", b"\n", b"--", b"-", b"--xyz", b"\r\n--xyz", b"\r\n--xyz\r\n",
             b"\r\n--xyz--", b"xyz", b":", b" ", b"\t", b'"', b"%22", b"x", b"\x00", b"\xff",
             b'Content-Disposition: form-data; name="a"',
             b'Content-Disposition: form-data; name="d"; filename="f"',
             b"Content-Disposition: form-data", b"Content-Type: text/plain",
             b"Content-Type: application/json", b"Content-Type: application/octet-stream",
             b"Content-Length: 1", b"Content-Length: 0", b'{"a": 1}', b"; charset=latin-1"]


@st.composite
def soups(draw):
    """Bodies made of fragments that matter to a multipart parser."""
    return b"".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=60)))


@st.composite
def bodies(draw):
    boundary = draw(boundaries)
    body = assemble(draw(st.lists(parts(), max_size=6)), boundary,
                    preamble=draw(st.sampled_from([b"", b"preamble\r\n", b"x", b"\r"])),
                    epilogue=draw(st.sampled_from([b"", b"epilogue", b"\r\n--x"])),
                    close=draw(st.booleans()) or draw(st.booleans()))
    return boundary, draw(mutated(body, boundary))


def pieces_of(draw, body):
    points = draw(st.lists(st.integers(0, len(body)), max_size=12))
    if draw(st.integers(0, 9)) == 0 and len(body) <= 1500:
        return every(body, 1)
    return cut(body, points)


@settings(max_examples=1500)
@given(st.data())
def test_soup_bodies(data):
    body = data.draw(soups())
    same(B, pieces_of(data.draw, body), max_parts=data.draw(st.sampled_from([256, 3])))


@settings(max_examples=800)
@given(st.data())
def test_strategy_bodies(data):
    boundary, body = data.draw(bodies())
    same(boundary, pieces_of(data.draw, body))


@settings(max_examples=500)
@given(uploads(), st.lists(st.integers(0, 4000), max_size=8))
def test_strategy_uploads_through_the_upload_reader(upload, points):
    content_type, encoding, body = upload

    def result():
        reader = UploadReader(content_type, encoding, len(body), max_payload_size=1 << 20,
                              max_decompressed_size=1 << 20, max_parts=16)
        for piece in cut(body, points):
            reader.feed(piece)
        try:
            report = reader.finish()
        except MalformedCrashReport as error:
            return error.reason
        return (repr(report.annotations), report.dump_pieces, report.dump_checksums,
                report.notes, report.payload)

    new = result()
    with mock.patch.object(payload, "PayloadParser", ReferencePayloadParser), \
            mock.patch.object(payload, "parse_content_type", reference_parse_content_type):
        old = result()
    assert new == old


@settings(max_examples=300)
@given(st.text(max_size=80) | st.builds(
    lambda t, b: f"{t}; boundary={b}", st.sampled_from(["multipart/form-data", "x"]),
    st.text(max_size=30)))
def test_any_content_type_parses_the_same(header):
    assert content_type_outcome(payload.parse_content_type, header) == (
        content_type_outcome(reference_parse_content_type, header))


def test_build_multipart_bodies():
    rng = random.Random(5)
    for use_json in (False, True):
        dumps = {"upload_file_minidump": rng.randbytes(20000), "memory_report": b"x"}
        body, ctype = build_multipart({"ProductName": "Test", "Version": "1"}, dumps,
                                      use_json=use_json)
        boundary = payload.parse_content_type(ctype)
        for pieces in cuttings(body):
            assert same(boundary, pieces)[0] == "report"
